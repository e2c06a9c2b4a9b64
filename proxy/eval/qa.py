"""LLM-judged question answering on LOCOMO, the protocol of the mem0 and MemOS papers, run
through memproxy's chat endpoint with the OpenAI SDK, as an application would.

For each question of categories 1-4:

1. **answer**: ``POST /v1/chat/completions`` with model M, ``user`` = the sample's memory owner
   and ``X-Memory-Mode: read`` (memproxy injects the memories; the question is not learnt), an
   answering system prompt and the question as the user message;
2. **judge**: model J through the same endpoint with ``X-Memory-Mode: off`` grades the answer
   CORRECT or WRONG against the gold answer (LLM-as-judge, generous about wording and date
   formats, as in mem0's evaluation).

Chat injects within the proxy's configured ``memory.retrieval.token_budget``: the proxy that
``memproxy eval locomo`` starts itself is configured with ``--budget``; one given by ``--url``
keeps its own. J is the share of CORRECT per category and overall. A judge reply that names neither label, or
both, counts as WRONG and is reported as unparsed.
"""

from __future__ import annotations

import json
import re
import time
from collections.abc import Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from typing import Any

from proxy.eval.locomo import CATEGORIES, EvalError, Sample
from proxy.eval.metrics import Summary, mean, percentile, render_table

ANSWER_PROMPT = """You answer questions about two people from memories of their past conversations.
The memories come with the question; each is dated [YYYY-MM-DD] with the day it was said and starts
with the name of the person who said it.
- Base your answer on the memories. If they disagree, the most recent one wins.
- Turn relative times ("last year", "two weeks ago", "next month") into the actual date, month or
  year, counted from the date of the memory that mentions them.
- Keep speakers apart from the people they talk about.
- Answer in at most six words, without explanation."""

JUDGE_PROMPT = """You grade an answer to a question about past conversations between two people.

You are given the question, a short gold answer that is right by definition, and a generated
answer. Grade generously: the generated answer may be longer or worded differently, and it is
CORRECT as long as it refers to the same thing as the gold answer. For a question about time it is
CORRECT when it points to the same date or period, whatever the format ("7 May" and "May 7th" agree).
It is WRONG when it names something else, misses the point of the gold answer, or does not answer.

Question: {question}
Gold answer: {gold}
Generated answer: {generated}

Give one sentence of reasoning, then the label. Reply with JSON only, of this shape:
{{"reasoning": "<one sentence>", "label": "CORRECT" or "WRONG"}}"""

_LABEL = re.compile(r"\b(CORRECT|INCORRECT|WRONG)\b")
_OBJECT = re.compile(r"\{.*\}", re.DOTALL)


def parse_verdict(reply: str) -> bool | None:
    """True for CORRECT, False for WRONG (or INCORRECT), None when the reply is not a verdict.

    A JSON ``label`` decides; otherwise the upper-case label words, or failing those any-case
    ones, must all agree ("The answer is CORRECT." but not "CORRECT or WRONG")."""
    match = _OBJECT.search(reply)
    if match is not None:
        try:
            data = json.loads(match.group(0))
        except ValueError:
            data = None
        if isinstance(data, dict) and isinstance(data.get("label"), str):
            label = data["label"].strip().upper()
            return {"CORRECT": True, "WRONG": False, "INCORRECT": False}.get(label)
    labels = set(_LABEL.findall(reply)) or set(_LABEL.findall(reply.upper()))
    verdicts = {label == "CORRECT" for label in labels}
    return verdicts.pop() if len(verdicts) == 1 else None


@dataclass(frozen=True)
class QAItem:
    sample_id: str
    user: str
    question: str
    gold: str
    category: int


def qa_items(samples: Sequence[Sample]) -> list[QAItem]:
    """Every question of categories 1-4, with or without evidence ids."""
    return [
        QAItem(sample.sample_id, sample.user, question.text, question.answer, question.category)
        for sample in samples
        for question in sample.questions
    ]


@dataclass(frozen=True)
class QAOutcome:
    item: QAItem
    generated: str
    verdict: bool | None
    judge_reply: str
    prompt_tokens: int | None
    memory_tokens: int
    memory_status: str
    latency_ms: float

    @property
    def correct(self) -> bool:
        return self.verdict is True


@dataclass(frozen=True)
class QAReport:
    model: str
    judge: str
    outcomes: list[QAOutcome]

    def summary(self) -> Summary:
        groups = {
            "all": self.outcomes,
            **{str(c): [o for o in self.outcomes if o.item.category == c] for c in CATEGORIES},
        }
        return {
            name: {
                "questions": len(group),
                "accuracy": mean([float(o.correct) for o in group]),
                "unparsed": sum(1 for o in group if o.verdict is None),
                "prompt_tokens": mean([float(o.prompt_tokens) for o in group if o.prompt_tokens is not None]),
                "memory_tokens": mean([float(o.memory_tokens) for o in group]),
                "p50_ms": percentile([o.latency_ms for o in group], 50),
                "p95_ms": percentile([o.latency_ms for o in group], 95),
            }
            for name, group in groups.items()
        }

    def to_json(self) -> dict[str, Any]:
        return {
            "model": self.model,
            "judge": self.judge,
            "summary": self.summary(),
            "per_question": [
                {
                    "sample": o.item.sample_id,
                    "question": o.item.question,
                    "category": o.item.category,
                    "gold": o.item.gold,
                    "generated": o.generated,
                    "verdict": o.verdict,
                    "judge_reply": o.judge_reply,
                    "memory_status": o.memory_status,
                }
                for o in self.outcomes
            ],
        }

    def table(self) -> str:
        summary = self.summary()
        columns = ["J all", *(f"J {c} {name}" for c, name in CATEGORIES.items())]
        columns += ["prompt tok", "memory tok", "p50 ms", "p95 ms"]
        values = [summary[g]["accuracy"] for g in ("all", *map(str, CATEGORIES))]
        values += [summary["all"][key] for key in ("prompt_tokens", "memory_tokens", "p50_ms", "p95_ms")]
        degraded = sum(1 for o in self.outcomes if o.memory_status != "ok")
        return "\n".join(
            [
                f"LOCOMO LLM-judged QA through memproxy chat: answer model {self.model}, judge {self.judge}, "
                f"{summary['all']['questions']} questions of categories 1-4",
                "",
                render_table(columns, [("memproxy", values)], digits=[3] * 5 + [0, 0, 0, 0]),
                "",
                f"Unparsed judge replies (counted WRONG): {summary['all']['unparsed']}; "
                f"answers without memory (status not ok): {degraded}. Latency: the answering request, client-side.",
            ]
        )


def run_qa(
    items: Sequence[QAItem],
    *,
    url: str,
    model: str,
    judge: str,
    api_key: str | None = None,
    concurrency: int = 4,
) -> QAReport:
    """Answer and judge every item through the proxy at ``url``; ``concurrency`` questions at once."""
    import openai

    client = openai.OpenAI(base_url=f"{url}/v1", api_key=api_key or "unused", max_retries=2, timeout=300)

    def one(item: QAItem) -> QAOutcome:
        try:
            started = time.perf_counter()
            raw = client.chat.completions.with_raw_response.create(
                model=model,
                user=item.user,
                temperature=0,
                messages=[{"role": "system", "content": ANSWER_PROMPT}, {"role": "user", "content": item.question}],
                extra_headers={"X-Memory-Mode": "read"},
            )
            latency_ms = (time.perf_counter() - started) * 1000
            answer = raw.parse()
            generated = (answer.choices[0].message.content or "").strip()
            prompt = JUDGE_PROMPT.format(question=item.question, gold=item.gold, generated=generated)
            graded = client.chat.completions.create(
                model=judge,
                temperature=0,
                messages=[{"role": "user", "content": prompt}],
                extra_headers={"X-Memory-Mode": "off"},
            )
        except openai.OpenAIError as exc:
            raise EvalError(f"QA request for {item.sample_id} {item.question!r} failed: {exc}") from exc
        reply = graded.choices[0].message.content or ""
        return QAOutcome(
            item=item,
            generated=generated,
            verdict=parse_verdict(reply),
            judge_reply=reply,
            prompt_tokens=answer.usage.prompt_tokens if answer.usage else None,
            memory_tokens=int(raw.headers.get("x-memory-tokens", "0")),
            memory_status=raw.headers.get("x-memory-status", "unknown"),
            latency_ms=latency_ms,
        )

    pool = ThreadPoolExecutor(max_workers=max(1, concurrency))
    try:
        outcomes = list(pool.map(one, items))
    finally:
        pool.shutdown(cancel_futures=True)  # after a failure, don't send the questions still queued
        client.close()
    return QAReport(model=model, judge=judge, outcomes=outcomes)
