"""Vectors of recently used spaces held in RAM, for exact search at sentence level.

A space of a thousand memories is a few thousand entries (whole texts and sentences): a matrix
product over all of them takes a fraction of a millisecond, is exact rather than approximate, and
scores a cube by its whole text and its best sentence together, which an ANN query per entry
cannot do without a second round trip (measured here: a Chroma query for 150 entries ~3 ms, a get
of 400 vectors ~8 ms). Chroma stays the persistent index; a space is loaded from it on first use
(in the background: that request uses Chroma directly) and kept up to date by the index sync.
A byte budget bounds RAM; the least recently used spaces are dropped. Writes reach RAM before the
index (``IndexSync`` gathers index writes), so the writes the index may still lack are kept per
space and replayed onto a space loaded from it.

Everything here runs on the event loop thread, so no locks are needed.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections import OrderedDict
from collections.abc import Iterable, Sequence
from dataclasses import dataclass

import numpy as np
import numpy.typing as npt

from memcubes import deadline
from memcubes.embedder import Vectors
from memcubes.vectors import WHOLE, VectorEntry, VectorIndex

log = logging.getLogger(__name__)

_RELOAD_SECONDS = 600.0  # another process may have written to the space meanwhile
_MIN_CAPACITY = 64


@dataclass(frozen=True)
class _Grouping:
    whole_rows: npt.NDArray[np.int64]
    whole_slots: npt.NDArray[np.int64]
    part_rows: npt.NDArray[np.int64]  # sentence rows, grouped by cube
    part_starts: npt.NDArray[np.int64]  # where each cube's group starts in part_rows
    part_slots: npt.NDArray[np.int64]  # the cube of each group


_Write = tuple[Sequence[VectorEntry], list[str]]  # upserts, removed cube ids


class SpaceVectors:
    """All entries of one space in a growable matrix; replaced entries are masked, compacted later."""

    def __init__(self, dimension: int) -> None:
        self.loaded_at = time.monotonic()
        self._matrix = np.zeros((_MIN_CAPACITY, dimension), dtype=np.float32)
        self._owner = np.zeros(_MIN_CAPACITY, dtype=np.int64)  # entry → cube slot
        self._sentence = np.zeros(_MIN_CAPACITY, dtype=np.int64)
        self._alive = np.zeros(_MIN_CAPACITY, dtype=bool)
        self._size = 0
        self._slots: dict[str, int] = {}
        self._cube_ids: list[str] = []
        self._entries: dict[str, list[int]] = {}  # cube id → its entry rows
        self._view: _Grouping | None = None

    @property
    def nbytes(self) -> int:
        return int(self._matrix.nbytes)

    def __contains__(self, cube_id: str) -> bool:
        return cube_id in self._entries

    def remove(self, cube_ids: Iterable[str]) -> None:
        self._view = None
        for cube_id in cube_ids:
            for row in self._entries.pop(cube_id, []):
                self._alive[row] = False

    def add(self, entries: Sequence[VectorEntry]) -> None:
        """Insert or replace: a cube's entries given here replace all its earlier ones."""
        self.remove({entry.cube_id for entry in entries})
        self._view = None
        self._reserve(len(entries))
        for entry in entries:
            slot = self._slots.get(entry.cube_id)
            if slot is None:
                slot = self._slots[entry.cube_id] = len(self._cube_ids)
                self._cube_ids.append(entry.cube_id)
            row = self._size
            self._matrix[row] = entry.vector
            self._owner[row] = slot
            self._sentence[row] = entry.sentence
            self._alive[row] = True
            self._entries.setdefault(entry.cube_id, []).append(row)
            self._size += 1

    def _reserve(self, extra: int) -> None:
        if self._size + extra <= len(self._matrix):
            return
        live = int(self._alive[: self._size].sum())
        if live + extra <= len(self._matrix) // 2:
            self._compact()
            return
        capacity = max(_MIN_CAPACITY, 2 * (live + extra))
        self._compact(capacity)

    def _compact(self, capacity: int | None = None) -> None:
        rows = np.flatnonzero(self._alive[: self._size])
        size = len(self._matrix) if capacity is None else capacity
        matrix = np.zeros((size, self._matrix.shape[1]), dtype=np.float32)
        matrix[: len(rows)] = self._matrix[rows]
        owner, sentence, alive = np.zeros(size, np.int64), np.zeros(size, np.int64), np.zeros(size, bool)
        owner[: len(rows)], sentence[: len(rows)], alive[: len(rows)] = self._owner[rows], self._sentence[rows], True
        self._matrix, self._owner, self._sentence, self._alive = matrix, owner, sentence, alive
        self._size = len(rows)
        self._entries = {}
        for row in range(self._size):
            self._entries.setdefault(self._cube_ids[int(self._owner[row])], []).append(row)

    def _grouping(self) -> _Grouping:
        """Row indices arranged for per-cube reductions; rebuilt only after writes."""
        if self._view is None:
            size = self._size
            alive = self._alive[:size]
            whole_rows = np.flatnonzero(alive & (self._sentence[:size] == WHOLE))
            part_rows = np.flatnonzero(alive & (self._sentence[:size] != WHOLE))
            part_rows = part_rows[np.argsort(self._owner[part_rows], kind="stable")]
            part_owner = self._owner[part_rows]
            starts = np.flatnonzero(np.r_[True, part_owner[1:] != part_owner[:-1]]) if len(part_rows) else part_rows
            self._view = _Grouping(
                whole_rows=whole_rows,
                whole_slots=self._owner[whole_rows],
                part_rows=part_rows,
                part_starts=starts,
                part_slots=part_owner[starts] if len(part_rows) else part_owner,
            )
        return self._view

    def ranked(
        self, query: Vectors, *, sentence_weight: float, limit: int | None = None, floor: float = -np.inf
    ) -> list[tuple[str, float]]:
        """Cubes best first, at most ``limit``, none below ``floor``. A cube scores
        (1 - w) * similarity of its whole text + w * that of its best sentence (a cube of one
        sentence scores its whole text). Exhaustive and exact; only the head is sorted, in numpy."""
        if not self._size:
            return []
        view = self._grouping()
        sims = self._matrix[: self._size] @ query
        whole = np.full(len(self._cube_ids), -np.inf, dtype=np.float32)
        whole[view.whole_slots] = sims[view.whole_rows]
        best = whole.copy()
        if len(view.part_rows):
            sentence_best = np.maximum.reduceat(sims[view.part_rows], view.part_starts)
            best[view.part_slots] = np.maximum(best[view.part_slots], sentence_best)
        slots = view.whole_slots
        mixed = (1.0 - sentence_weight) * whole[slots] + sentence_weight * best[slots]
        keep = np.flatnonzero(mixed >= floor)
        if limit is not None and len(keep) > limit:
            keep = keep[np.argpartition(-mixed[keep], limit - 1)[:limit]]
        keep = keep[np.argsort(-mixed[keep], kind="stable")]
        return [(self._cube_ids[slots[i]], float(mixed[i])) for i in keep]

    def best_sentence(self, cube_id: str, query: Vectors) -> int | None:
        """Which sentence of a cube is most similar to the query (``None``: it has only one)."""
        rows = [row for row in self._entries.get(cube_id, []) if self._sentence[row] != WHOLE]
        if not rows:
            return None
        sims = self._matrix[rows] @ query
        return int(self._sentence[rows[int(np.argmax(sims))]])


class HotVectors:
    def __init__(self, index: VectorIndex, *, dimension: int, budget_bytes: int) -> None:
        self._index = index
        self._dimension = dimension
        self._budget = budget_bytes
        self._spaces: OrderedDict[str, SpaceVectors] = OrderedDict()
        self._loading: dict[str, asyncio.Task[SpaceVectors]] = {}
        # Writes the index may not have yet (until ``flushed``), and those landing while a space is
        # being read from the index: replayed onto what was read, in order (they are idempotent).
        self._unflushed: dict[str, list[_Write]] = {}
        self._pending: dict[str, list[_Write]] = {}

    def get(self, space: str) -> SpaceVectors | None:
        """The space's vectors if held (and fresh); otherwise start loading them and return None."""
        vectors = self._spaces.get(space)
        if vectors is not None and time.monotonic() - vectors.loaded_at < _RELOAD_SECONDS:
            self._spaces.move_to_end(space)
            return vectors
        if space not in self._loading and self._budget > 0:
            # shared by the requests to come: not cut short at the deadline of the one that started it
            task = asyncio.get_running_loop().create_task(self.load(space), context=deadline.detached())
            self._loading[space] = task
            task.add_done_callback(lambda _: self._loading.pop(space, None))
        return vectors

    async def load(self, space: str) -> SpaceVectors:
        self._pending[space] = list(self._unflushed.get(space, []))
        try:
            entries = await self._index.entries(space)
            vectors = SpaceVectors(self._dimension)
            vectors.add(entries)
            for upserts, removed in self._pending.get(space, []):
                vectors.remove(removed)
                vectors.add(upserts)
        finally:
            self._pending.pop(space, None)
        self._spaces[space] = vectors
        self._spaces.move_to_end(space)
        self._evict()
        return vectors

    async def nearest(self, space: str, vector: Vectors, *, limit: int) -> list[tuple[str, float]]:
        """Most similar cubes by whole text: exact from RAM when the space is held, else the index."""
        vectors = self.get(space)
        if vectors is None:
            return await self._index.query(space, vector, limit=limit)
        return vectors.ranked(vector, sentence_weight=0.0, limit=limit)

    def apply(self, space: str, *, upserts: Sequence[VectorEntry] = (), removed: Iterable[str] = ()) -> None:
        """Mirror a write on its way to the index (into RAM only for spaces held; others load
        when next used, and get it replayed until ``flushed``)."""
        removed = list(removed)
        self._unflushed.setdefault(space, []).append((upserts, removed))
        if space in self._pending:
            self._pending[space].append((upserts, removed))
        vectors = self._spaces.get(space)
        if vectors is None:
            return
        vectors.remove(removed)
        if upserts:
            vectors.add(upserts)
        self._evict()

    def flushed(self, space: str) -> None:
        """The index has every write of ``space`` applied so far (or will read them again from
        the outbox): a load no longer needs them replayed."""
        self._unflushed.pop(space, None)

    async def refresh(self, space: str, cube_ids: Sequence[str]) -> None:
        """Another process wrote these cubes' entries to the index: read just them again, into the
        space if it is held (one that is not reads everything when next used anyway)."""
        if space not in self._spaces:
            return
        entries = await self._index.entries(space, cube_ids)
        vectors = self._spaces.get(space)
        if vectors is not None:
            vectors.remove(cube_ids)
            vectors.add(entries)
            self._evict()

    def forget(self, space: str) -> None:
        """Another process wrote to the space's index: read it again when next used (writes of
        this process the index may not have yet are replayed onto it, as after any load)."""
        self._spaces.pop(space, None)
        task = self._loading.pop(space, None)
        if task is not None:
            task.cancel()

    def drop(self, space: str) -> None:
        self._spaces.pop(space, None)
        self._pending.pop(space, None)
        self._unflushed.pop(space, None)
        task = self._loading.pop(space, None)
        if task is not None:
            task.cancel()

    def _evict(self) -> None:
        total = sum(v.nbytes for v in self._spaces.values())
        while total > self._budget and len(self._spaces) > 1:
            _, dropped = self._spaces.popitem(last=False)
            total -= dropped.nbytes
