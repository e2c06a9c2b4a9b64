"""Readers distil candidate memories from the turns of an exchange.

Three modes, one small base class:

- ``raw``: one memory per message ("Speaker: text"); lossless, used by benchmarks and imports.
- ``heuristic``: offline rules (``memcubes.heuristics``; other languages: ``memcubes.languages``)
  keep what the speaker states about themselves and drop chit-chat, questions and requests.
- ``llm``: an extraction model answers in JSON; relative dates are resolved against the messages'
  timestamps and the user's language is kept. When its answer is unusable the heuristic reader
  takes over, so write-back never fails because a model misbehaved.
"""

from __future__ import annotations

import json
import logging
import re
from abc import ABC, abstractmethod
from collections.abc import Awaitable, Callable, Sequence
from dataclasses import dataclass
from datetime import UTC, date, datetime
from typing import Any

from memcubes import heuristics, languages
from memcubes.config import ExtractionSettings
from memcubes.errors import ExtractionFailed
from memcubes.exchange import Turn
from memcubes.layout import strip_memory_blocks

log = logging.getLogger(__name__)

LLMComplete = Callable[[list[dict[str, Any]]], Awaitable[str]]
"""Sends chat messages to the extraction model and returns the text of its answer."""


@dataclass(frozen=True)
class Candidate:
    """A memory the reader proposes; lifecycle decides whether it is new, a change or a duplicate."""

    content: str
    turns: tuple[Turn, ...]
    occurred_at: datetime | None = None
    episode: bool = False  # a message kept as said (the evidence), not a fact distilled from it


def _when(turns: Sequence[Turn]) -> datetime | None:
    times = [turn.created_at for turn in turns if turn.created_at is not None]
    return min(times) if times else None


class Reader(ABC):
    mode: str

    @abstractmethod
    async def distill(self, turns: Sequence[Turn]) -> list[Candidate]: ...


class RawReader(Reader):
    """Episodes: one memory per message, as said ("Speaker: text"). In ``raw`` mode they are all
    that is kept; in the other modes they are kept beside the facts (``extraction.episodes``)."""

    mode = "raw"

    def __init__(self, roles: Sequence[str] | None = None) -> None:
        self._roles = None if roles is None else set(roles)

    async def distill(self, turns: Sequence[Turn]) -> list[Candidate]:
        candidates = []
        for turn in turns:
            # Beside facts (roles given), only the messages of those roles that say something.
            if self._roles is not None and (turn.role not in self._roles or heuristics.says_nothing(turn.content)):
                continue
            text = strip_memory_blocks(turn.content).strip()
            if text:
                candidates.append(Candidate(f"{turn.speaker}: {text}", (turn,), turn.created_at, episode=True))
        return candidates


class HeuristicReader(Reader):
    mode = "heuristic"

    def __init__(self, settings: ExtractionSettings) -> None:
        self._roles = set(settings.roles)

    async def distill(self, turns: Sequence[Turn]) -> list[Candidate]:
        candidates = []
        for turn in turns:
            if turn.role not in self._roles:
                continue
            for fact in languages.extract_facts(strip_memory_blocks(turn.content)):
                content = f"{turn.name}: {fact}" if turn.name else fact
                candidates.append(Candidate(content, (turn,), turn.created_at))
        return candidates


EXTRACTION_PROMPT = """You extract long-term memories about the user from a conversation.
Answer with JSON only, of this shape:
{"memories": [{"text": "<one self-contained fact>", "date": "YYYY-MM-DD or null", "sources": [<message numbers>]}]}
Rules:
- Keep facts about the user and their world: personal details, preferences, plans, relationships, events.
- Write each memory in the language the user wrote in, in the third person ("Lives in Porto").
- Resolve relative dates ("yesterday", "next Friday", "last year") to absolute dates using each
  message's timestamp, and put the date the fact refers to in "date".
- Skip chit-chat, questions, requests to the assistant, and what the assistant said unless the
  user confirmed it.
- "sources" lists the numbers of the messages the memory comes from.
- If nothing is worth remembering, answer {"memories": []}."""

_FENCE = re.compile(r"^```(?:json)?\s*|\s*```$", re.MULTILINE)


class LLMReader(Reader):
    mode = "llm"

    def __init__(self, settings: ExtractionSettings, complete: LLMComplete) -> None:
        self._roles = set(settings.roles)
        self._complete = complete
        self._fallback = HeuristicReader(settings)

    def _prompt(self, turns: Sequence[Turn]) -> list[dict[str, Any]]:
        lines = []
        for number, turn in enumerate(turns, start=1):
            stamp = turn.created_at.isoformat() if turn.created_at else "unknown time"
            lines.append(f"[{number}] ({stamp}, {turn.speaker}) {strip_memory_blocks(turn.content).strip()}")
        return [
            {"role": "system", "content": EXTRACTION_PROMPT},
            {"role": "user", "content": "Messages:\n" + "\n".join(lines)},
        ]

    def _parse(self, answer: str, turns: Sequence[Turn]) -> list[Candidate]:
        try:
            data = json.loads(_FENCE.sub("", answer.strip()))
            items = data["memories"] if isinstance(data, dict) else data
            if not isinstance(items, list):
                raise TypeError("memories is not a list")
            candidates = []
            for item in items:
                text = str(item["text"]).strip() if isinstance(item, dict) else str(item).strip()
                if not text:
                    continue
                numbers = item.get("sources") or [] if isinstance(item, dict) else []
                sources = tuple(turns[n - 1] for n in numbers if isinstance(n, int) and 0 < n <= len(turns))
                sources = sources or tuple(turns)
                occurred = _parse_date(item.get("date")) if isinstance(item, dict) else None
                candidates.append(Candidate(text, sources, occurred or _when(sources)))
            return candidates
        except (ValueError, KeyError, TypeError, AttributeError) as exc:
            raise ExtractionFailed(f"extraction model answered unusable JSON: {exc}") from exc

    async def distill(self, turns: Sequence[Turn]) -> list[Candidate]:
        wanted = [turn for turn in turns if turn.role in self._roles]
        if not wanted:
            return []
        try:
            return self._parse(await self._complete(self._prompt(turns)), turns)
        except Exception as exc:  # a model or network failure must not lose the exchange
            log.warning("llm extraction failed, falling back to heuristic rules: %s", exc)
            return await self._fallback.distill(turns)


def _parse_date(value: Any) -> datetime | None:
    if not isinstance(value, str) or not value.strip():
        return None
    try:
        parsed = date.fromisoformat(value.strip()[:10])
    except ValueError:
        return None
    return datetime(parsed.year, parsed.month, parsed.day, tzinfo=UTC)


def build_readers(settings: ExtractionSettings, complete: LLMComplete | None) -> dict[str, Reader]:
    readers: dict[str, Reader] = {"raw": RawReader(), "heuristic": HeuristicReader(settings)}
    if complete is not None:
        readers["llm"] = LLMReader(settings, complete)
    return readers


def episode_reader(settings: ExtractionSettings) -> Reader | None:
    """What keeps episodes beside the facts of ``heuristic`` and ``llm`` mode (None: facts only)."""
    return RawReader(settings.episode_roles) if settings.episodes else None
