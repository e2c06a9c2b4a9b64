"""Retrieval metrics: packing a ranking into a token budget, evidence recall, summaries, tables.

Every system (memproxy over HTTP, each in-process baseline) is scored by these functions alone,
so a difference in the numbers is a difference in ranking, never in accounting. Nothing here
knows a data set: evidence and sources are opaque turn ids, already in one canonical form.
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from dataclasses import dataclass

import numpy as np

from memcubes.retrieval import fit

RECALL_AT = (5, 10, 20)

Summary = dict[str, dict[str, float | int | None]]


@dataclass(frozen=True)
class Item:
    """One ranked memory as the metrics see it: the turns it stands for and what it costs."""

    sources: tuple[str, ...]
    tokens: int


def pack(items: Iterable[Item], *, budget: int, top_k: int) -> list[Item]:
    """What fits, in rank order, by memproxy's own rule (``memcubes.retrieval.fit``)."""
    return fit(items, top_k=top_k, token_budget=budget)


def found(evidence: Sequence[str], items: Iterable[Item]) -> list[str]:
    """The evidence ids among the items' sources, in evidence order."""
    sources = {source for item in items for source in item.sources}
    return [turn for turn in evidence if turn in sources]


@dataclass(frozen=True)
class Outcome:
    """One system's answer to one question."""

    sample_id: str
    question: str
    category: int
    evidence: tuple[str, ...]
    missed: tuple[str, ...]
    recall_at: dict[int, float]
    tokens: int
    latency_ms: float

    @property
    def recall(self) -> float:
        """Recall within the budget: the share of the evidence that was not missed."""
        return 1.0 - len(self.missed) / len(self.evidence)


def score(
    sample_id: str,
    question: str,
    *,
    category: int,
    evidence: tuple[str, ...],
    within: Sequence[Item],
    ranked: Sequence[Item],
    latency_ms: float,
) -> Outcome:
    """``within``: the items inside the budget; ``ranked``: the ranking with no budget, for recall@k."""
    if not evidence:
        raise ValueError("a question without evidence cannot be scored")
    hits = set(found(evidence, within))
    return Outcome(
        sample_id=sample_id,
        question=question,
        category=category,
        evidence=evidence,
        missed=tuple(turn for turn in evidence if turn not in hits),
        recall_at={k: len(found(evidence, ranked[:k])) / len(evidence) for k in RECALL_AT},
        tokens=sum(item.tokens for item in within),
        latency_ms=latency_ms,
    )


def mean(values: Sequence[float]) -> float | None:
    return float(np.mean(values)) if values else None


def percentile(values: Sequence[float], q: float) -> float | None:
    return float(np.percentile(values, q)) if values else None


def summarize(outcomes: Sequence[Outcome], *, categories: Iterable[int]) -> Summary:
    """Per group (``all``, then each category as a string): mean recalls, latency, tokens."""
    groups = {"all": list(outcomes), **{str(c): [o for o in outcomes if o.category == c] for c in categories}}
    summary: Summary = {}
    for name, group in groups.items():
        latencies = [o.latency_ms for o in group]
        summary[name] = {
            "questions": len(group),
            "recall_budget": mean([o.recall for o in group]),
            **{f"recall@{k}": mean([o.recall_at[k] for o in group]) for k in RECALL_AT},
            "p50_ms": percentile(latencies, 50),
            "p95_ms": percentile(latencies, 95),
            "tokens": mean([float(o.tokens) for o in group]),
        }
    return summary


def render_table(
    columns: Sequence[str], rows: Sequence[tuple[str, Sequence[float | None]]], *, digits: Sequence[int]
) -> str:
    """Fixed-width text: a name column, then one right-aligned column per value (``-`` for none)."""
    widths = [max(8, len(column) + 2) for column in columns]
    lines = [f"{'system':<10}" + "".join(f"{column:>{width}}" for column, width in zip(columns, widths, strict=True))]
    for name, values in rows:
        cells = (
            f"{'-' if value is None else f'{value:.{places}f}':>{width}}"
            for value, places, width in zip(values, digits, widths, strict=True)
        )
        lines.append(f"{name:<10}" + "".join(cells))
    return "\n".join(lines)
