"""Reconcile: how a candidate memory changes what a space already holds.

Memories must evolve instead of piling up ("I moved to Porto" retires "I live in Lisbon"). Each
candidate is compared with the space's similar and same-subject cubes and gets one decision:

- ADD: new information;
- UPDATE: a statement of change ("I moved to Porto", "I quit my nursing job; I'm now a tester",
  "I no longer live in Lisbon") or a new value for a fact that holds one: a new cube that
  ``supersedes`` the old one, whose state becomes ``superseded`` and whose ``valid_to`` is the new
  ``valid_from`` (when the change happened, where the text says: "last week"). The old fact stays in
  history and answers questions about the past;
- DELETE: the judge model says a memory was never true; its history is kept;
- NOOP: an exact or near duplicate; the existing cube only gains the new message ids as sources.

In ``heuristic`` mode rules decide (near duplicate → NOOP; a retraction, the same fact key with a
new value, or a change found by meaning among the embedding neighbours (``memcubes.updates``) →
UPDATE); in ``llm`` mode a judge model decides, shown the similar memories and those the rules
find replaced under small integer ids, and the rules decide whenever its answer is unusable;
``raw`` memories are kept verbatim. Decisions are deterministic given the inputs (the candidates,
their vectors, the store, and the judge's answer).
"""

from __future__ import annotations

import asyncio
import json
import logging
from collections.abc import Sequence
from dataclasses import dataclass, replace
from enum import StrEnum

import numpy as np

from memcubes import heuristics, updates
from memcubes.cube import MemCube
from memcubes.dates import became_true
from memcubes.embedder import Vectors
from memcubes.hot_vectors import HotVectors
from memcubes.reader import Candidate, LLMComplete
from memcubes.sentences import split_speaker
from memcubes.store import Store, content_hash

# Attributes that hold one value at a time: a new value replaces the old one. Others ("likes")
# accumulate, so they are never updated by rule.
SINGLE_VALUED = frozenset({"residence", "employer", "job", "age", "name", "diet", "relationship status", "school"})
_NEIGHBOURS = 5  # shown to the judge
_UPDATE_NEIGHBOURS = 20  # searched for the fact a change replaces (exact, in RAM: cheap)
log = logging.getLogger(__name__)


class Decision(StrEnum):
    ADD = "ADD"
    UPDATE = "UPDATE"
    DELETE = "DELETE"
    NOOP = "NOOP"
    QUARANTINE = "QUARANTINE"  # stored, but held back until approved (memcubes.quarantine)


@dataclass(frozen=True)
class Resolution:
    decision: Decision
    candidate: Candidate
    target: MemCube | None = None
    reason: str = ""
    replaces: int | None = None  # UPDATE of a cube added earlier in the same exchange (its position)


def fact_slot(text: str) -> str | None:
    """``speaker|subject|attribute`` of a single-valued fact: the key two versions of a fact share.
    The speaker matters: in a conversation between Alice and Bob, Bob's "I live in Oslo" says
    nothing about where Alice lives."""
    key = heuristics.fact_key(_statement(text))
    if key is None or not (key.attribute in SINGLE_VALUED or key.attribute.startswith("favorite")):
        return None
    return _slot_of(text, key)


def _statement(text: str) -> str:
    """Drop a "Speaker: " prefix added by readers for named turns."""
    return split_speaker(text)[1]


RECONCILE_PROMPT = """You maintain a user's long-term memory. Decide how one NEW fact changes the
EXISTING memories, which are numbered. Answer with JSON only:
{"event": "ADD" | "UPDATE" | "DELETE" | "NOOP", "id": <number of the existing memory concerned, or null>}
- UPDATE: the new fact replaces or ends existing memory <id>: the same person's same attribute changed
  (where they live, work, their job or role, partner or relationship status, diet, phone, email, pets,
  car, school, a health condition, a preference that flipped). Changes are often told in other words:
  "moved to", "quit", "switched", "no longer", "broke up with", "my new number is", "sold the car",
  "stopped eating meat", "passed away", "recovered". The old memory is kept as history.
- ADD: the new fact is new information, including what does not replace anything: a fact about
  someone else ("my sister moved"), a plan or possibility ("I might move"), a visit or trip, a past
  fact ("I used to live in Lisbon"), an addition ("I also work at a bakery", "we adopted a second dog").
- DELETE: the new fact says existing memory <id> was never true, and states nothing else.
- NOOP: the new fact is already known (existing memory <id> says the same)."""


class Lifecycle:
    def __init__(
        self,
        *,
        store: Store,
        vectors: HotVectors,
        dedupe_threshold: float,
        judge: LLMComplete | None = None,
    ) -> None:
        self._store = store
        self._vectors = vectors
        self._threshold = dedupe_threshold
        self._judge = judge

    async def reconcile(
        self, space: str, candidates: Sequence[Candidate], vectors: Vectors, *, mode: str
    ) -> list[Resolution]:
        """One resolution per candidate, in order. ``raw`` memories are kept verbatim (only exact
        duplicates merge); ``llm`` asks the judge model and falls back to the rules."""
        resolutions: list[Resolution] = []
        batch_hashes: set[str] = set()
        batch_slots: dict[str, int] = {}
        for position, (said, vector) in enumerate(zip(candidates, vectors, strict=True)):
            candidate = _dated(said) if mode == "heuristic" else said
            digest = content_hash(candidate.content)
            if digest in batch_hashes:
                resolutions.append(Resolution(Decision.NOOP, candidate, None, "duplicate within the exchange"))
                continue
            batch_hashes.add(digest)
            if mode == "raw" or candidate.episode:
                existing = await asyncio.to_thread(self._store.find_by_hash, space, digest)
                decision = Decision.NOOP if existing is not None else Decision.ADD
                resolutions.append(Resolution(decision, candidate, existing, "raw"))
                continue
            resolution = await self._decide(space, candidate, vector, digest, vectors[:position], mode=mode)
            slot = fact_slot(candidate.content)
            if resolution.decision is Decision.ADD and slot is not None and slot in batch_slots:
                # The same exchange states a fact twice with different values: the later one wins.
                resolution = Resolution(
                    Decision.UPDATE, candidate, None, f"new value for {slot}", replaces=batch_slots[slot]
                )
            if resolution.decision is Decision.ADD and (earlier := _replaced_earlier(candidate, resolutions)):
                # "I work as a nurse. Last month I quit and became a tester." in one exchange.
                resolution = Resolution(Decision.UPDATE, candidate, None, f"changed {earlier[1]}", replaces=earlier[0])
            if resolution.decision in (Decision.ADD, Decision.UPDATE) and slot is not None:
                batch_slots[slot] = position
            resolutions.append(resolution)
        return resolutions

    async def _decide(
        self, space: str, candidate: Candidate, vector: Vectors, digest: str, earlier: Vectors, *, mode: str
    ) -> Resolution:
        existing = await asyncio.to_thread(self._store.find_by_hash, space, digest)
        if existing is not None:
            return Resolution(Decision.NOOP, candidate, existing, "exact duplicate")
        if len(earlier) and float(np.max(earlier @ vector)) >= self._threshold:
            return Resolution(Decision.NOOP, candidate, None, "near duplicate within the exchange")
        hits = await self._vectors.nearest(space, vector, limit=_UPDATE_NEIGHBOURS)
        if mode == "llm" and self._judge is not None:
            judged = await self._ask(space, candidate, hits)
            if judged is not None:
                return judged
        return await self._by_rules(space, candidate, hits)

    async def _by_rules(self, space: str, candidate: Candidate, hits: list[tuple[str, float]]) -> Resolution:
        statement = _statement(candidate.content)
        retracted = heuristics.negation_of(statement)
        if retracted is not None:
            slot = _slot_of(candidate.content, retracted)
            for cube in await asyncio.to_thread(self._store.by_slot, space, slot):
                value = heuristics.fact_key(_statement(cube.content))
                if not retracted.value or (value is not None and value.value == retracted.value):
                    return Resolution(Decision.UPDATE, candidate, cube, f"ended {slot}")
        close = [(cube_id, sim) for cube_id, sim in hits if sim >= self._threshold]
        if close:
            cubes = await asyncio.to_thread(self._store.get_many, [cube_id for cube_id, _ in close])
            for cube_id, sim in close:
                near = cubes.get(cube_id)
                if near is not None and near.is_live() and not near.is_episode:
                    return Resolution(Decision.NOOP, candidate, near, f"near duplicate ({sim:.3f})")
        own_slot = fact_slot(candidate.content)
        if own_slot is not None and retracted is None:
            new_value = heuristics.fact_key(statement)
            for cube in await asyncio.to_thread(self._store.by_slot, space, own_slot):
                old_value = heuristics.fact_key(_statement(cube.content))
                if old_value is not None and new_value is not None and old_value.value == new_value.value:
                    return Resolution(Decision.NOOP, candidate, cube, f"same value for {own_slot}")
                return Resolution(Decision.UPDATE, candidate, cube, f"new value for {own_slot}")
        replaced = await self._replaced(candidate, hits)
        if replaced is not None:
            cube, slot = replaced
            return Resolution(Decision.UPDATE, candidate, cube, f"changed {slot}")
        return Resolution(Decision.ADD, candidate, None, "new")

    async def _replaced(self, candidate: Candidate, hits: list[tuple[str, float]]) -> tuple[MemCube, str] | None:
        """The live fact among the candidate's neighbours (most similar first) that it replaces
        by meaning, with the slot, when it states a change (``memcubes.updates``)."""
        return await asyncio.to_thread(self._replaced_now, candidate, [cube_id for cube_id, _ in hits])

    def _replaced_now(self, candidate: Candidate, neighbours: list[str]) -> tuple[MemCube, str] | None:
        claim = _claim(candidate)
        if claim is None or claim.settled:
            return None
        cubes = self._store.get_many(neighbours)
        for cube_id in neighbours:
            cube = cubes.get(cube_id)
            if cube is None or not cube.is_live() or cube.is_episode or cube.source.reader == "raw":  # no facts
                continue
            old_speaker, old_statement = _said(cube.content, cube.source.names)
            old = updates.claim_of(old_statement, speaker=old_speaker)
            slot = updates.replaces(claim, old) if old is not None else None
            if slot is not None:
                return cube, slot
        return None

    async def _ask(self, space: str, candidate: Candidate, hits: list[tuple[str, float]]) -> Resolution | None:
        """Let the judge model decide. It sees existing memories as small integers, never raw ids,
        so it cannot name a memory that does not exist; an unusable answer means "use the rules"."""
        assert self._judge is not None
        cubes = await asyncio.to_thread(self._store.get_many, [cube_id for cube_id, _ in hits])
        shown = [
            cubes[cube_id]
            for cube_id, _ in hits
            if cube_id in cubes and cubes[cube_id].is_live() and not cubes[cube_id].is_episode
        ][:_NEIGHBOURS]
        slot = fact_slot(candidate.content)
        same = await asyncio.to_thread(self._store.by_slot, space, slot) if slot is not None else []
        replaced = await self._replaced(candidate, hits)
        same += [replaced[0]] if replaced is not None else []
        shown += [cube for cube in same if cube.id not in {c.id for c in shown}]
        if not shown:
            return Resolution(Decision.ADD, candidate, None, "llm: nothing similar")
        listing = "\n".join(f"[{number}] {cube.content}" for number, cube in enumerate(shown))
        prompt = [
            {"role": "system", "content": RECONCILE_PROMPT},
            {"role": "user", "content": f"EXISTING memories:\n{listing}\n\nNEW fact: {candidate.content}"},
        ]
        try:
            answer = json.loads(_strip_fence(await self._judge(prompt)))
            event = Decision(str(answer["event"]).upper())
            number = answer.get("id")
        except Exception as exc:  # model or network trouble: the rules decide instead
            log.warning("llm reconcile unusable (%s); using rules", exc)
            return None
        if event is Decision.ADD:
            return Resolution(Decision.ADD, candidate, None, "llm")
        if not isinstance(number, int) or not 0 <= number < len(shown):
            return None if event is not Decision.NOOP else Resolution(Decision.NOOP, candidate, None, "llm")
        return Resolution(event, candidate, shown[number], "llm")


def _dated(candidate: Candidate) -> Candidate:
    """The candidate dated by when its fact became true, where its words say ("last week")."""
    if candidate.occurred_at is None:
        return candidate
    began = became_true(candidate.content, candidate.occurred_at)
    return replace(candidate, occurred_at=began) if began is not None else candidate


def _claim(candidate: Candidate) -> updates.Claim | None:
    speaker, statement = _said(candidate.content, [turn.name for turn in candidate.turns if turn.name])
    return updates.claim_of(statement, speaker=speaker)


def _replaced_earlier(candidate: Candidate, resolutions: Sequence[Resolution]) -> tuple[int, str] | None:
    """The position of a fact added earlier in the same exchange that the candidate replaces, and
    the slot; the latest such fact when several are."""
    claim = _claim(candidate)
    if claim is None or claim.settled:
        return None
    for position in reversed(range(len(resolutions))):
        earlier = resolutions[position]
        old = _claim(earlier.candidate) if earlier.decision in (Decision.ADD, Decision.UPDATE) else None
        slot = updates.replaces(claim, old) if old is not None else None
        if slot is not None:
            return position, slot
    return None


def _said(content: str, names: list[str]) -> tuple[str, str]:
    """(speaker, statement) of a memory: readers prefix a named speaker's memories with the name."""
    for name in names:
        if content.startswith(f"{name}: "):
            return name, content[len(name) + 2 :]
    return "", content


def _slot_of(text: str, key: heuristics.FactKey) -> str:
    return f"{_speaker(text)}|{key.subject}|{key.attribute}"


def _speaker(text: str) -> str:
    return (split_speaker(text)[0] or "").lower()


def _strip_fence(text: str) -> str:
    return text.strip().removeprefix("```json").removeprefix("```").removesuffix("```").strip()
