"""Knowledge updates: does a change told in chat supersede the fact it replaces, and only that?

Each scenario of the corpus (``tests/fixtures/updates_corpus.txt``) is a user who stated a few
facts earlier and now says something in a chat request. An *update* ("Big news: I just moved to
Porto last week!") must retire exactly the fact it replaces ("I live in Lisbon ..."); a
*non-update* ("my sister moved to Porto", "I might move to Porto", "I visited Porto", "I used to
live in Lisbon") must retire nothing. Everything goes through memproxy's HTTP API as a client's
would: the earlier facts through ``POST /v1/memories`` (heuristic, synchronous, dated in the past),
the new statement through ``/v1/chat/completions``, then the states of the earlier facts are read
back once write-back is idle. The rates are those LongMemEval's "knowledge update" category needs.
"""

from __future__ import annotations

import contextlib
import json
import tempfile
import time
from collections import Counter
from collections.abc import Callable, Iterator, Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import httpx

from memcubes.embedder import Embedder
from proxy.dev.scripted_backend import BackendScript, build_scripted_backend
from proxy.eval.locomo import EvalError

FIELD_SEPARATOR, FACT_SEPARATOR, TARGET = " | ", ";;", "*"
_EARLIER = "2025-03-01T09:00:00Z"  # when the earlier facts were said: a past the change can end


@dataclass(frozen=True)
class Scenario:
    number: int
    slot: str
    facts: tuple[str, ...]
    target: int | None  # the fact the statement replaces; None for a non-update
    say: str

    @property
    def user(self) -> str:
        return f"updates-{self.number}"


def load_corpus(path: Path) -> list[Scenario]:
    """Scenarios of a corpus file: ``slot | fact;; *replaced fact | statement`` a line."""
    scenarios: list[Scenario] = []
    try:
        lines = path.read_text(encoding="utf-8").splitlines()
    except OSError as exc:
        raise EvalError(f"cannot read the corpus {path}: {exc}") from exc
    for line_number, line in enumerate(lines, start=1):
        if not line.strip() or line.startswith("#"):
            continue
        fields = [field.strip() for field in line.split(FIELD_SEPARATOR)]
        if len(fields) != 3:
            raise EvalError(f"{path}:{line_number}: expected 'slot | facts | statement'")
        slot, facts, say = fields
        stated = [fact.strip() for fact in facts.split(FACT_SEPARATOR)]
        targets = [index for index, fact in enumerate(stated) if fact.startswith(TARGET)]
        if len(targets) > 1 or not all(stated) or not say:
            raise EvalError(f"{path}:{line_number}: at most one '*' fact, and no empty field")
        clean = tuple(fact.removeprefix(TARGET).strip() for fact in stated)
        scenarios.append(Scenario(len(scenarios), slot, clean, targets[0] if targets else None, say))
    return scenarios


@dataclass(frozen=True)
class Outcome:
    scenario: Scenario
    retired: tuple[int, ...]  # earlier facts no longer active

    @property
    def correct(self) -> bool:
        expected = () if self.scenario.target is None else (self.scenario.target,)
        return self.retired == expected

    @property
    def wrongly_retired(self) -> bool:
        """A non-update that retired something."""
        return self.scenario.target is None and bool(self.retired)


@dataclass(frozen=True)
class UpdatesReport:
    mode: str
    outcomes: list[Outcome]

    def _rate(self, updates: bool, predicate: Callable[[Outcome], bool]) -> tuple[int, int]:
        chosen = [o for o in self.outcomes if (o.scenario.target is not None) == updates]
        return sum(predicate(o) for o in chosen), len(chosen)

    @property
    def update_rate(self) -> float:
        hit, total = self._rate(True, lambda o: o.correct)
        return hit / total if total else 0.0

    @property
    def false_rate(self) -> float:
        hit, total = self._rate(False, lambda o: o.wrongly_retired)
        return hit / total if total else 0.0

    def failures(self) -> list[str]:
        return [
            f"{'update' if o.scenario.target is not None else 'non-update'} [{o.scenario.slot}] "
            f"{list(o.scenario.facts)} <- {o.scenario.say!r}: retired {list(o.retired)}"
            for o in self.outcomes
            if not o.correct
        ]

    def table(self) -> str:
        hit, total = self._rate(True, lambda o: o.correct)
        wrong, keeps = self._rate(False, lambda o: o.wrongly_retired)
        per_slot: Counter[str] = Counter()
        per_slot_hit: Counter[str] = Counter()
        for outcome in self.outcomes:
            if outcome.scenario.target is not None:
                per_slot[outcome.scenario.slot] += 1
                per_slot_hit[outcome.scenario.slot] += outcome.correct
        lines = [
            f"Knowledge updates through chat (extraction mode: {self.mode})",
            f"  updates that superseded the right fact   {hit:4d} / {total:<4d} {100 * self.update_rate:5.1f}%",
            f"  non-updates that superseded anything     {wrong:4d} / {keeps:<4d} {100 * self.false_rate:5.1f}%",
            "  per slot: " + ", ".join(f"{slot} {per_slot_hit[slot]}/{n}" for slot, n in sorted(per_slot.items())),
        ]
        return "\n".join(lines)

    def to_json(self) -> dict[str, Any]:
        return {
            "mode": self.mode,
            "update_rate": self.update_rate,
            "false_update_rate": self.false_rate,
            "failures": self.failures(),
        }


def _check(response: httpx.Response, what: str) -> dict[str, Any]:
    if response.status_code >= 400:
        raise EvalError(f"{what} answered {response.status_code}: {response.text[:300]}")
    data: dict[str, Any] = response.json()
    return data


def _seed(http: httpx.Client, scenario: Scenario) -> list[str]:
    """Forget the user, then store its earlier facts (one memory each); their ids, in order."""
    _check(http.delete(f"/v1/spaces/user:{scenario.user}"), "forgetting a user")
    messages = [
        {"role": "user", "content": fact, "id": f"fact-{index}", "created_at": _EARLIER}
        for index, fact in enumerate(scenario.facts)
    ]
    body = {"user": scenario.user, "messages": messages, "mode": "heuristic", "sync": True}
    results = _check(http.post("/v1/memories", json=body), "adding the earlier facts")["results"]
    ids: dict[str, str] = {r["sources"][0]: r["id"] for r in results if r["event"] == "ADD" and len(r["sources"]) == 1}
    if len(results) != len(messages) or len(ids) != len(messages):
        raise EvalError(f"scenario {scenario.number}: each earlier fact must be kept as one memory: {results}")
    return [ids[f"fact-{index}"] for index in range(len(messages))]


def _say(http: httpx.Client, scenario: Scenario, model: str) -> None:
    body = {"model": model, "user": scenario.user, "messages": [{"role": "user", "content": scenario.say}]}
    _check(http.post("/v1/chat/completions", json=body), "the chat request")


def wait_idle(http: httpx.Client, *, timeout: float = 120.0) -> None:
    """Until the proxy's journal holds no pending write-back."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        journal = _check(http.get("/readyz"), "/readyz")["checks"].get("journal", {})
        if not any(journal.get(key) for key in ("pending", "queued", "spilled", "indexing")):
            return
        time.sleep(0.05)
    raise EvalError(f"write-back still pending after {timeout:.0f}s")


def _retired(http: httpx.Client, ids: Sequence[str]) -> tuple[int, ...]:
    states = [_check(http.get(f"/v1/memories/{cube_id}"), "reading a memory")["state"] for cube_id in ids]
    return tuple(index for index, state in enumerate(states) if state != "active")


def evaluate_updates(
    scenarios: Sequence[Scenario],
    *,
    url: str,
    model: str,
    mode: str = "heuristic",
    api_key: str | None = None,
    before_each: Callable[[Scenario], None] | None = None,
    concurrency: int = 4,
) -> UpdatesReport:
    """Run every scenario against the proxy at ``url`` (whose extraction mode is ``mode``).
    ``before_each`` (e.g. scripting a backend's answers) makes the run one scenario at a time."""
    headers = {"authorization": f"Bearer {api_key}"} if api_key else {}
    with httpx.Client(base_url=url, headers=headers, timeout=120) as http:
        try:
            with ThreadPoolExecutor(max(1, concurrency)) as pool:
                ids = list(pool.map(lambda scenario: _seed(http, scenario), scenarios))
                if before_each is None:
                    list(pool.map(lambda scenario: _say(http, scenario, model), scenarios))
                    wait_idle(http)
            if before_each is not None:
                for scenario in scenarios:
                    before_each(scenario)
                    _say(http, scenario, model)
                    wait_idle(http)
            outcomes = [Outcome(s, _retired(http, fact_ids)) for s, fact_ids in zip(scenarios, ids, strict=True)]
        except httpx.HTTPError as exc:
            raise EvalError(f"the proxy at {url} failed: {exc!r}") from exc
    return UpdatesReport(mode, outcomes)


def scripted_answers(scenario: Scenario) -> list[dict[str, Any]]:
    """What the scripted backend answers for one scenario in ``llm`` mode: the chat reply, an
    extraction that keeps the statement as said, and a judge that names the replaced fact when it
    is shown (``{pick}``: the number it is listed under) and ADDs otherwise. It measures the
    plumbing (is the replaced fact shown to the judge, is its answer applied), not a model."""
    extraction = {"memories": [{"text": scenario.say, "date": None, "sources": [1]}]}
    judge: dict[str, Any] = {"text": json.dumps({"event": "ADD", "id": None})}
    if scenario.target is not None:
        judge = {"text": '{"event": "UPDATE", "id": {pick}}', "pick": scenario.facts[scenario.target]}
    return [{"text": "Noted."}, {"text": json.dumps(extraction)}, judge]


@contextlib.contextmanager
def scripted_proxy(mode: str, *, embedder: Embedder | None = None) -> Iterator[tuple[str, BackendScript]]:
    """A proxy of its own (temporary data dir, extraction ``mode``) whose one model, ``scripted``,
    is a scripted backend; yields the proxy's URL and the backend's script."""
    from proxy.app import build_app
    from proxy.config import Settings
    from proxy.dev.serve_thread import ServerThread

    script = BackendScript(record=False)
    with (
        ServerThread(build_scripted_backend(script)) as backend,
        tempfile.TemporaryDirectory(prefix="memproxy-eval-updates-") as data_dir,
    ):
        model = {"model": "openai/scripted", "api_base": f"{backend.url}/v1", "api_key": "unused"}
        settings = Settings.from_mapping(
            {
                "model_list": [{"model_name": "scripted", "litellm_params": model}],
                "memory": {  # write-back at once: one scenario at a time waits for it
                    "data_dir": data_dir,
                    "extraction": {"mode": mode},
                    "writeback": {"defer_ms": 0},
                    "vector_index": {"write_idle_ms": 0},
                },
            },
            env={},
        )
        with ServerThread(build_app(settings, embedder=embedder)) as proxy:
            yield proxy.url, script


def evaluate_locally(scenarios: Sequence[Scenario], *, mode: str, embedder: Embedder | None = None) -> UpdatesReport:
    """The corpus against a proxy of its own in ``mode``; in ``llm`` mode the scripted model
    answers as ``scripted_answers`` says, one scenario at a time."""
    with scripted_proxy(mode, embedder=embedder) as (url, script):

        def answer(scenario: Scenario) -> None:
            script.steps[:] = scripted_answers(scenario)

        before_each = answer if mode == "llm" else None
        return evaluate_updates(scenarios, url=url, model="scripted", mode=mode, before_each=before_each)
