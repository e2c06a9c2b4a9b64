"""The LOCOMO retrieval benchmark, run through memproxy's HTTP memory API.

    load_samples ─▶ ingest: POST /v1/memories (raw, one message per turn, one request per session)
                 ─▶ every question of categories 1-4: POST /v1/memories/search
                 ─▶ the baselines (``proxy.eval.baselines``) on the same turns, packed the same way
                 ─▶ ``RetrievalReport``: per system and category, a table and JSON

Metrics, per question, averaged over the questions of a category (or of all of them):

- **recall within the budget**: the share of the question's evidence turns found among the
  ``sources`` of the items that fit, in rank order, into ``budget`` cl100k tokens. For memproxy
  these are the results of one search sent with ``token_budget = budget`` (exactly what chat would
  inject; each result's ``tokens`` is checked against ``count_tokens(text)``). For a baseline, its
  ranking of "[date] Speaker: text" items (the proxy's rendering) packed by the same rule: in rank
  order, at most ``top_k`` items, an item that would overflow the budget is skipped and shorter
  ones after it may still fit.
- **recall@k** (k = 5, 10, 20): the same share among the ``sources`` of the first k items of the
  ranking with no token budget (for memproxy a second search with ``top_k = 20`` and an unlimited
  budget). An item whose ``sources`` lists several turns counts all of them.
- **p50/p95**: for memproxy, client-side latency of the budgeted search over HTTP; for the
  baselines, in-process scoring time without query embedding (not comparable with HTTP).
- **tokens**: mean cl100k tokens of the items within the budget.

memproxy is measured twice on the same proxy, each conversation under a user of its own: as
configured (``memproxy``: by default episodes and heuristic facts) and in ``raw`` mode
(``memproxy-raw``: one memory per turn). A held-out conversation (``holdout``), not looked at while tuning, is
also reported on its own.

Evidence ids are normalised (``"D1: 3"``, ``"d1:03"`` → ``"D1:3"``; ``"D8:6; D9:17"`` is two ids);
ids absent from the conversation are skipped and counted, and a question left with no evidence is
not scored (it is still asked by the QA protocol).
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import re
import tempfile
import time
from collections import Counter
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import httpx

from memcubes.embedder import Embedder
from memcubes.tokens import count_tokens
from proxy.config import Settings
from proxy.eval.baselines import BASELINES, rank_all
from proxy.eval.metrics import RECALL_AT, Item, Outcome, Summary, pack, render_table, score, summarize
from proxy.scope import user_space

CATEGORIES = {1: "multi-hop", 2: "temporal", 3: "open-domain", 4: "single-hop"}
MEMPROXY = "memproxy"
MODES: dict[str, str | None] = {MEMPROXY: None, f"{MEMPROXY}-raw": "raw"}
"""memproxy's systems: the extraction mode each ingests with (None: the proxy's configured mode)."""
HOLDOUT = "conv-41"  # the dev conversation kept out of tuning
UNLIMITED_BUDGET = 1_000_000  # the memory API's largest token_budget

_DIA_ID = re.compile(r"D\s*:?\s*(\d+)\s*:\s*(\d+)", re.IGNORECASE)
_SESSION = re.compile(r"session_(\d+)")
_SESSION_TIME = re.compile(
    r"(\d{1,2}):(\d{2})\s*([ap])\.?m\.?\s+on\s+(\d{1,2})\s+([A-Za-z]+),?\s+(\d{4})", re.IGNORECASE
)
_MONTHS = ("jan", "feb", "mar", "apr", "may", "jun", "jul", "aug", "sep", "oct", "nov", "dec")


class EvalError(Exception):
    """The benchmark cannot run: unreadable data, an unknown sample, a proxy that refuses requests."""


def canonical_ids(raw: str) -> list[str]:
    """Turn ids in a LOCOMO id string, normalised to ``D<session>:<turn>`` (an unparseable string
    stands for itself, stripped)."""
    found = [f"D{int(session)}:{int(turn)}" for session, turn in _DIA_ID.findall(raw)]
    return list(dict.fromkeys(found)) or ([raw.strip()] if raw.strip() else [])


def parse_session_time(text: str) -> datetime:
    """``"1:56 pm on 8 May, 2023"`` → 2023-05-08T13:56Z. LOCOMO gives no zone; UTC keeps the date."""
    match = _SESSION_TIME.search(text)
    if match is None or match.group(5)[:3].lower() not in _MONTHS:
        raise EvalError(f"unreadable session time {text!r} (expected like '1:56 pm on 8 May, 2023')")
    month = _MONTHS.index(match.group(5)[:3].lower()) + 1
    hour = int(match.group(1)) % 12 + (12 if match.group(3).lower() == "p" else 0)
    return datetime(int(match.group(6)), month, int(match.group(4)), hour, int(match.group(2)), tzinfo=UTC)


@dataclass(frozen=True)
class Turn:
    dia_id: str
    session: int
    speaker: str
    text: str
    created_at: datetime

    @property
    def content(self) -> str:
        """What the raw reader stores for this turn."""
        return f"{self.speaker}: {self.text}"

    @property
    def rendered(self) -> str:
        """How the proxy shows the stored memory in a prompt (``memcubes.retrieval.render_item``)."""
        return f"[{self.created_at.date().isoformat()}] {self.content}"

    def message(self) -> dict[str, Any]:
        return {
            "role": "user",
            "content": self.text,
            "name": self.speaker,
            "id": self.dia_id,
            "created_at": self.created_at.isoformat(),
        }


@dataclass(frozen=True)
class Question:
    text: str
    answer: str
    category: int
    evidence: tuple[str, ...]
    unknown_evidence: int = 0


@dataclass(frozen=True)
class Sample:
    sample_id: str
    turns: tuple[Turn, ...]
    questions: tuple[Question, ...]

    @property
    def user(self) -> str:
        """The memory owner this sample is stored under (one space per conversation)."""
        return f"locomo-{self.sample_id}"

    @property
    def scored(self) -> list[Question]:
        return [question for question in self.questions if question.evidence]

    def sessions(self) -> list[list[Turn]]:
        grouped: dict[int, list[Turn]] = {}
        for turn in self.turns:
            grouped.setdefault(turn.session, []).append(turn)
        return list(grouped.values())


def _turn_text(turn: dict[str, Any], *, captions: bool) -> str:
    """The turn's words; a shared photo is kept as ``[shares a photo: <caption>]`` because
    questions ask about what was shown and LOCOMO's own baselines read the captions too."""
    text = str(turn.get("text") or "").strip()
    caption = str(turn.get("blip_caption") or "").strip()
    if captions and caption:
        text = f"{text} [shares a photo: {caption}]".strip()
    return text


def _sample(raw: dict[str, Any], *, max_sessions: int | None, max_questions: int | None, captions: bool) -> Sample:
    sample_id = str(raw.get("sample_id", "?"))
    conversation = raw.get("conversation")
    if not isinstance(conversation, dict):
        raise EvalError(f"sample {sample_id} has no conversation")
    numbers = sorted(int(m.group(1)) for key in conversation if (m := _SESSION.fullmatch(key)))
    turns: list[Turn] = []
    for number in numbers[:max_sessions]:
        stamp = conversation.get(f"session_{number}_date_time")
        if not isinstance(stamp, str):
            raise EvalError(f"sample {sample_id}: session_{number} has no session_{number}_date_time")
        start = parse_session_time(stamp)
        for position, turn in enumerate(conversation[f"session_{number}"] or []):
            text = _turn_text(turn, captions=captions)
            if text:  # the raw reader stores nothing for an empty message
                when = start + timedelta(seconds=position)  # keeps the order within the session
                turns.append(Turn(str(turn["dia_id"]), number, str(turn["speaker"]), text, when))
    known = {canonical for turn in turns for canonical in canonical_ids(turn.dia_id)}
    questions: list[Question] = []
    for qa in raw.get("qa") or []:
        category = int(qa.get("category", 0))
        if category not in CATEGORIES:
            continue
        ids = list(dict.fromkeys(i for entry in qa.get("evidence") or [] for i in canonical_ids(str(entry))))
        evidence = tuple(i for i in ids if i in known)
        answer = str(qa.get("answer", ""))
        questions.append(Question(str(qa["question"]), answer, category, evidence, len(ids) - len(evidence)))
    return Sample(sample_id, tuple(turns), tuple(questions[:max_questions]))


def load_samples(
    path: Path,
    *,
    sample_ids: Sequence[str] | None = None,
    max_sessions: int | None = None,
    max_questions: int | None = None,
    captions: bool = True,
) -> list[Sample]:
    """LOCOMO samples (the ``locomo10.json`` format), categories 1-4 only; ``max_sessions`` keeps
    the first sessions of each conversation and ``max_questions`` the first questions."""
    try:
        data = json.loads(Path(path).read_text(encoding="utf-8"))
    except (OSError, ValueError) as exc:
        raise EvalError(f"cannot read LOCOMO data from {path}: {exc}") from exc
    if not isinstance(data, list):
        raise EvalError(f"{path}: expected a JSON list of samples")
    samples = [_sample(raw, max_sessions=max_sessions, max_questions=max_questions, captions=captions) for raw in data]
    if sample_ids:
        by_id = {sample.sample_id: sample for sample in samples}
        unknown = [s for s in sample_ids if s not in by_id]
        if unknown:
            raise EvalError(f"unknown sample {', '.join(unknown)}; {path} has {', '.join(by_id)}")
        samples = [by_id[s] for s in sample_ids]
    return samples


# -- the proxy side -------------------------------------------------------------------------------


@contextlib.contextmanager
def local_proxy(settings: Settings, *, budget: int, top_k: int, embedder: Embedder | None) -> Iterator[str]:
    """A proxy of its own on a loopback port over a temporary data dir, with ``budget``/``top_k``
    as its retrieval settings so chat injects what search returns. Yields its URL. Other settings
    (extraction mode, models, retrieval knobs) come from ``settings``."""
    from proxy.app import build_app
    from proxy.dev.serve_thread import ServerThread

    with tempfile.TemporaryDirectory(prefix="memproxy-eval-") as data_dir:
        memory = settings.memory.model_copy(
            update={
                "data_dir": Path(data_dir),
                "retrieval": settings.memory.retrieval.model_copy(update={"token_budget": budget, "top_k": top_k}),
            }
        )
        app = build_app(settings.model_copy(update={"memory": memory}), embedder=embedder)
        with ServerThread(app) as server:
            yield server.url


def _post(http: httpx.Client, path: str, body: dict[str, Any]) -> dict[str, Any]:
    try:
        response = http.post(path, json=body)
    except httpx.HTTPError as exc:
        raise EvalError(f"POST {path} failed: {exc!r}") from exc
    if response.status_code >= 400:
        raise EvalError(f"POST {path} answered {response.status_code}: {response.text[:500]}")
    data: dict[str, Any] = response.json()
    return data


def user_of(sample: Sample, system: str) -> str:
    """Each system stores the conversation under a user of its own; the configured mode under
    ``sample.user`` (the one QA asks as)."""
    mode = MODES[system]
    return sample.user if mode is None else f"{sample.user}-{mode}"


def ingest(http: httpx.Client, sample: Sample, *, system: str = MEMPROXY) -> Counter[str]:
    """Store the conversation, one synchronous request per session, in ``system``'s mode; whatever
    the space held before is forgotten first. Returns the memory events (ADD, NOOP ...)."""
    user = user_of(sample, system)
    try:
        http.delete(f"/v1/spaces/{user_space(user)}").raise_for_status()
    except httpx.HTTPError as exc:
        raise EvalError(f"cannot reset the space of {user}: {exc!r}") from exc
    events: Counter[str] = Counter()
    mode = MODES[system]
    for session in sample.sessions():
        body: dict[str, Any] = {"user": user, "sync": True, "messages": [turn.message() for turn in session]}
        if mode is not None:
            body["mode"] = mode
        events.update(change["event"] for change in _post(http, "/v1/memories", body)["results"])
    return events


@dataclass
class _Checks:
    """Ways the proxy's answers could make the numbers wrong, counted rather than trusted."""

    token_mismatches: int = 0
    over_budget: int = 0


def _canonical_sources(sources: Sequence[str]) -> tuple[str, ...]:
    return tuple(dict.fromkeys(canonical for source in sources for canonical in canonical_ids(source)))


def _search(
    http: httpx.Client, user: str, query: str, *, top_k: int, budget: int, checks: _Checks
) -> tuple[list[Item], float]:
    started = time.perf_counter()
    data = _post(http, "/v1/memories/search", {"user": user, "query": query, "top_k": top_k, "token_budget": budget})
    latency_ms = (time.perf_counter() - started) * 1000
    items = []
    for result in data["results"]:
        checks.token_mismatches += int(count_tokens(result["text"]) != result["tokens"])
        items.append(Item(_canonical_sources(result["sources"]), int(result["tokens"])))
    return items, latency_ms


def _score(sample: Sample, question: Question, *, within: list[Item], ranked: list[Item], latency_ms: float) -> Outcome:
    return score(
        sample.sample_id,
        question.text,
        category=question.category,
        evidence=question.evidence,
        within=within,
        ranked=ranked,
        latency_ms=latency_ms,
    )


def _ask(
    http: httpx.Client, user: str, sample: Sample, question: Question, *, budget: int, top_k: int, checks: _Checks
) -> Outcome:
    """One budgeted search (timed; what chat would inject) and one unbudgeted (for recall@k)."""
    answered, latency_ms = _search(http, user, question.text, top_k=top_k, budget=budget, checks=checks)
    within = pack(answered, budget=budget, top_k=top_k)
    checks.over_budget += int(len(within) != len(answered))
    ranked, _ = _search(http, user, question.text, top_k=max(RECALL_AT), budget=UNLIMITED_BUDGET, checks=checks)
    return _score(sample, question, within=within, ranked=ranked, latency_ms=latency_ms)


async def _baseline_outcomes(
    sample: Sample, *, budget: int, top_k: int, embedder: Embedder
) -> dict[str, list[Outcome]]:
    """Each baseline over the sample's turns, as the raw reader stores them ("Speaker: text"),
    each counted as the proxy renders it ("[date] Speaker: text")."""
    questions = sample.scored
    items = [Item(_canonical_sources([turn.dia_id]), count_tokens(turn.rendered)) for turn in sample.turns]
    rankings = await rank_all([t.content for t in sample.turns], [q.text for q in questions], embedder=embedder)
    return {
        name: [
            _score(
                sample,
                question,
                within=pack((items[i] for i in ranking.order), budget=budget, top_k=top_k),
                ranked=[items[i] for i in ranking.order[: max(RECALL_AT)]],
                latency_ms=ranking.seconds * 1000,
            )
            for question, ranking in zip(questions, per_question, strict=True)
        ]
        for name, per_question in rankings.items()
    }


@dataclass(frozen=True)
class RetrievalReport:
    budget: int
    top_k: int
    samples: list[Sample]
    outcomes: dict[str, list[Outcome]]
    """Per system (memproxy's modes first, then the baselines), one outcome per scored question,
    in the same order for every system."""
    events: dict[str, dict[str, int]]
    """Per memproxy system, the memory events of ingestion."""
    ingest_seconds: dict[str, float]
    token_mismatches: int
    over_budget: int
    holdout: str | None = None

    def summary(self, *, sample_ids: Sequence[str] | None = None) -> dict[str, Summary]:
        """Per system, over every sample or only ``sample_ids``."""
        return {
            name: summarize(
                [o for o in outcomes if sample_ids is None or o.sample_id in sample_ids], categories=CATEGORIES
            )
            for name, outcomes in self.outcomes.items()
        }

    def writeback_rate(self, system: str) -> tuple[int, int, float]:
        """Exchanges (sessions) ingested, memories they created, and memories per second."""
        exchanges = sum(len(sample.sessions()) for sample in self.samples)
        created = sum(n for event, n in self.events.get(system, {}).items() if event in ("ADD", "UPDATE"))
        seconds = self.ingest_seconds.get(system, 0.0)
        return exchanges, created, created / seconds if seconds else 0.0

    def counts(self) -> dict[str, int]:
        questions = [q for sample in self.samples for q in sample.questions]
        return {
            "samples": len(self.samples),
            "turns": sum(len(sample.turns) for sample in self.samples),
            "questions": len(questions),
            "scored": sum(1 for q in questions if q.evidence),
            "unscored": sum(1 for q in questions if not q.evidence),
            "skipped_evidence": sum(q.unknown_evidence for q in questions),
        }

    def _details(self) -> list[dict[str, Any]]:
        rows = []
        for index, first in enumerate(next(iter(self.outcomes.values()))):
            row: dict[str, Any] = {
                "sample": first.sample_id,
                "question": first.question,
                "category": first.category,
                "evidence": list(first.evidence),
            }
            for name, outcomes in self.outcomes.items():
                mine = outcomes[index]
                row[name] = {"recall_budget": mine.recall, "missed": list(mine.missed), "tokens": mine.tokens}
            rows.append(row)
        return rows

    def to_json(self) -> dict[str, Any]:
        return {
            "budget": self.budget,
            "top_k": self.top_k,
            "sample_ids": [sample.sample_id for sample in self.samples],
            **self.counts(),
            "ingestion": {
                system: {"seconds": round(seconds, 3), "events": self.events.get(system, {})}
                for system, seconds in self.ingest_seconds.items()
            },
            "checks": {"token_mismatches": self.token_mismatches, "over_budget": self.over_budget},
            "systems": self.summary(),
            "holdout": {"sample": self.holdout, "systems": self._holdout_summary()},
            "per_question": self._details(),
        }

    def _holdout_summary(self) -> dict[str, Summary] | None:
        if self.holdout is None or all(sample.sample_id != self.holdout for sample in self.samples):
            return None
        return self.summary(sample_ids=[self.holdout])

    def table(self) -> str:
        counts = self.counts()
        columns = ["all", *(f"{c} {name}" for c, name in CATEGORIES.items())]
        columns += [f"r@{k}" for k in RECALL_AT] + ["p50 ms", "p95 ms", "tokens"]
        cells = [("all", "recall_budget"), *((str(c), "recall_budget") for c in CATEGORIES)]
        cells += [("all", f"recall@{k}") for k in RECALL_AT] + [("all", "p50_ms"), ("all", "p95_ms"), ("all", "tokens")]

        def rows(summaries: dict[str, Summary]) -> list[tuple[str, list[float | None]]]:
            return [(name, [summary[g][key] for g, key in cells]) for name, summary in summaries.items()]

        lines = [
            f"LOCOMO evidence recall within {self.budget} cl100k tokens (columns all .. 4) and recall@k without "
            f"budget: {counts['samples']} samples, {counts['turns']} turns, {counts['scored']} questions of "
            f"categories 1-4 ({counts['unscored']} more without evidence, {counts['skipped_evidence']} unknown "
            "evidence ids skipped)",
            "",
            render_table(columns, rows(self.summary()), digits=[3] * 8 + [1, 1, 0]),
            "",
            "Latency: memproxy, client-side HTTP search; baselines, in-process scoring only.",
        ]
        held = self._holdout_summary()
        if held is not None:
            lines += [
                "",
                f"Held out while tuning: {self.holdout} alone",
                "",
                render_table(columns, rows(held), digits=[3] * 8 + [1, 1, 0]),
            ]
        lines.append("")
        for system in self.ingest_seconds:
            exchanges, created, rate = self.writeback_rate(system)
            lines.append(
                f"Write-back, {system}: {exchanges} exchanges (one per session) made {created} memories in "
                f"{self.ingest_seconds[system]:.1f} s ({rate:.0f} memories/s, "
                f"{self.ingest_seconds[system] / max(exchanges, 1) * 1000:.0f} ms per exchange); "
                f"events {dict(sorted(self.events.get(system, {}).items()))}"
            )
        if self.token_mismatches:
            lines.append(f"WARNING: {self.token_mismatches} results had tokens != count_tokens(text)")
        if self.over_budget:
            lines.append(f"WARNING: {self.over_budget} searches returned more than the budget (cut client-side)")
        return "\n".join(lines)


def evaluate_retrieval(
    samples: Sequence[Sample],
    *,
    url: str,
    embedder: Embedder,
    budget: int = 1000,
    top_k: int = 50,
    api_key: str | None = None,
    systems: Sequence[str] = tuple(MODES),
    holdout: str | None = HOLDOUT,
) -> RetrievalReport:
    """Ingest every sample into the proxy at ``url`` once per memproxy system (see ``MODES``), ask
    its scored questions, and rank the same turns with the baselines (``embedder`` serves the
    dense one)."""
    headers = {"authorization": f"Bearer {api_key}"} if api_key else {}
    outcomes: dict[str, list[Outcome]] = {name: [] for name in (*systems, *BASELINES)}
    events: dict[str, Counter[str]] = {system: Counter() for system in systems}
    checks = _Checks()
    ingest_seconds = dict.fromkeys(systems, 0.0)
    with httpx.Client(base_url=url, headers=headers, timeout=600) as http:
        for system in systems:
            for sample in samples:
                started = time.perf_counter()
                events[system] += ingest(http, sample, system=system)
                ingest_seconds[system] += time.perf_counter() - started
                user = user_of(sample, system)
                outcomes[system] += [
                    _ask(http, user, sample, question, budget=budget, top_k=top_k, checks=checks)
                    for question in sample.scored
                ]
    for sample in samples:  # after memproxy's searches, so they never find their queries embedded already
        baselines = asyncio.run(_baseline_outcomes(sample, budget=budget, top_k=top_k, embedder=embedder))
        for name, sample_outcomes in baselines.items():
            outcomes[name] += sample_outcomes
    return RetrievalReport(
        budget=budget,
        top_k=top_k,
        samples=list(samples),
        outcomes=outcomes,
        events={system: dict(counter) for system, counter in events.items()},
        ingest_seconds=ingest_seconds,
        token_mismatches=checks.token_mismatches,
        over_budget=checks.over_budget,
        holdout=holdout,
    )
