"""Reconcile: how a candidate memory changes what a space already holds.

Memories must evolve instead of piling up ("I moved to Porto" retires "I live in Lisbon"). Each
candidate is compared with the space's similar and same-subject cubes and gets one decision:

- ADD: new information;
- UPDATE: same subject and attribute as a live cube, new value: a new cube that ``supersedes``
  the old one, whose state becomes ``superseded`` and whose ``valid_to`` is the new ``valid_from``;
- DELETE: an explicit retraction ("I no longer live in Lisbon"): the old cube's state becomes
  ``deleted``; its history is kept;
- NOOP: an exact or near duplicate; the existing cube only gains the new message ids as sources.

The rules are deterministic given the inputs (the candidates, their vectors and the store).
"""

from __future__ import annotations

import asyncio
from collections.abc import Sequence
from dataclasses import dataclass
from enum import StrEnum

import numpy as np

from memcubes import heuristics
from memcubes.cube import MemCube
from memcubes.embedder import Vectors
from memcubes.reader import Candidate
from memcubes.store import Store, content_hash
from memcubes.vectors import VectorIndex

# Attributes that hold one value at a time: a new value replaces the old one. Others ("likes")
# accumulate, so they are never updated by rule.
SINGLE_VALUED = frozenset({"residence", "employer", "job", "age", "name", "diet", "relationship status", "school"})
_NEIGHBOURS = 5


class Decision(StrEnum):
    ADD = "ADD"
    UPDATE = "UPDATE"
    DELETE = "DELETE"
    NOOP = "NOOP"


@dataclass(frozen=True)
class Resolution:
    decision: Decision
    candidate: Candidate
    target: MemCube | None = None
    reason: str = ""


def fact_slot(text: str) -> str | None:
    """``subject|attribute`` of a single-valued fact, the key two versions of a fact share."""
    key = heuristics.fact_key(_statement(text))
    if key is None or not (key.attribute in SINGLE_VALUED or key.attribute.startswith("favorite")):
        return None
    return f"{key.subject}|{key.attribute}"


def _statement(text: str) -> str:
    """Drop a "Speaker: " prefix added by readers for named turns."""
    head, sep, rest = text.partition(": ")
    return rest if sep and len(head.split()) <= 3 else text


class Lifecycle:
    def __init__(self, *, store: Store, index: VectorIndex, dedupe_threshold: float) -> None:
        self._store = store
        self._index = index
        self._threshold = dedupe_threshold

    async def reconcile(self, space: str, candidates: Sequence[Candidate], vectors: Vectors) -> list[Resolution]:
        """One resolution per candidate, in order."""
        resolutions: list[Resolution] = []
        batch_hashes: set[str] = set()
        for position, (candidate, vector) in enumerate(zip(candidates, vectors, strict=True)):
            digest = content_hash(candidate.content)
            if digest in batch_hashes:
                resolutions.append(Resolution(Decision.NOOP, candidate, None, "duplicate within the exchange"))
                continue
            batch_hashes.add(digest)
            resolutions.append(await self._decide(space, candidate, vector, digest, vectors[:position]))
        return resolutions

    async def _decide(
        self, space: str, candidate: Candidate, vector: Vectors, digest: str, earlier: Vectors
    ) -> Resolution:
        existing = await asyncio.to_thread(self._store.find_by_hash, space, digest)
        if existing is not None:
            return Resolution(Decision.NOOP, candidate, existing, "exact duplicate")
        if len(earlier) and float(np.max(earlier @ vector)) >= self._threshold:
            return Resolution(Decision.NOOP, candidate, None, "near duplicate within the exchange")
        statement = _statement(candidate.content)
        retracted = heuristics.negation_of(statement)
        if retracted is not None:
            slot = f"{retracted.subject}|{retracted.attribute}"
            for cube in await asyncio.to_thread(self._store.by_slot, space, slot):
                value = heuristics.fact_key(_statement(cube.content))
                if not retracted.value or (value is not None and value.value == retracted.value):
                    return Resolution(Decision.DELETE, candidate, cube, f"retracted {slot}")
        hits = await self._index.query(space, vector, limit=_NEIGHBOURS)
        if hits and hits[0][1] >= self._threshold:
            near = await asyncio.to_thread(self._store.get, hits[0][0])
            if near is not None and near.is_live():
                return Resolution(Decision.NOOP, candidate, near, f"near duplicate ({hits[0][1]:.3f})")
        own_slot = fact_slot(candidate.content)
        if own_slot is not None and retracted is None:
            new_value = heuristics.fact_key(statement)
            for cube in await asyncio.to_thread(self._store.by_slot, space, own_slot):
                old_value = heuristics.fact_key(_statement(cube.content))
                if old_value is not None and new_value is not None and old_value.value == new_value.value:
                    return Resolution(Decision.NOOP, candidate, cube, f"same value for {own_slot}")
                return Resolution(Decision.UPDATE, candidate, cube, f"new value for {own_slot}")
        return Resolution(Decision.ADD, candidate, None, "new")
