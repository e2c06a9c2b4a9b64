"""Vectors of recently searched spaces held in RAM, for exact search at sentence level: a cache
over the vectors the store holds (``memcubes.vector_store``), never a requirement.

A space of a thousand memories is a few thousand entries (whole texts and sentences): a matrix
product over all of them takes a fraction of a millisecond, is exact rather than approximate, and
scores a cube by its whole text and its best sentence together, which an ANN query per entry
cannot do without a second round trip. A space not held is read from SQLite (one range read,
a few milliseconds for a thousand memories) when first searched; a space above
``ann_min_entries`` entries is searched through the ANN index instead. A byte budget bounds RAM;
the least recently used spaces are dropped. Writes reach the spaces held through the index sync,
which re-reads the entries of the cubes written (``refresh``) once they are committed.

Everything here runs on the event loop thread (reads in worker threads), so no locks are needed.
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
from memcubes.vector_store import WHOLE, SpaceMatrix, VectorEntry, VectorStore
from memcubes.vectors import VectorIndex

log = logging.getLogger(__name__)

_RELOAD_SECONDS = 600.0  # another process may have written to the space meanwhile
_MIN_CAPACITY = 64
_LOAD_TRIES = 3  # reads of a space written to while it was being read


@dataclass(frozen=True)
class _Grouping:
    whole_rows: npt.NDArray[np.int64]
    whole_slots: npt.NDArray[np.int64]
    part_rows: npt.NDArray[np.int64]  # sentence rows, grouped by cube
    part_starts: npt.NDArray[np.int64]  # where each cube's group starts in part_rows
    part_slots: npt.NDArray[np.int64]  # the cube of each group
    group_of: npt.NDArray[np.int64]  # cube slot → its group in part_starts (-1: one sentence only)


class SpaceVectors:
    """All entries of one space in a growable matrix; replaced entries are masked, compacted later."""

    def __init__(self, dimension: int) -> None:
        self.loaded_at = time.monotonic()
        self._matrix = np.zeros((_MIN_CAPACITY, dimension), dtype=np.float32)
        self._owner = np.zeros(_MIN_CAPACITY, dtype=np.int64)  # entry → cube slot
        self._sentence = np.zeros(_MIN_CAPACITY, dtype=np.int64)
        self._alive = np.zeros(_MIN_CAPACITY, dtype=bool)
        self._size = 0
        self._slots: dict[str, int] = {}  # cube id → slot (slots are not reused)
        self._cube_ids: list[str] = []  # slot → cube id
        self._held: set[str] = set()  # cubes with live entries
        self._view: _Grouping | None = None

    @property
    def nbytes(self) -> int:
        return int(self._matrix.nbytes)

    def __contains__(self, cube_id: str) -> bool:
        return cube_id in self._held

    def _rows_of(self, slots: Sequence[int]) -> npt.NDArray[np.int64]:
        size = self._size
        return np.flatnonzero(self._alive[:size] & np.isin(self._owner[:size], slots))

    def remove(self, cube_ids: Iterable[str]) -> None:
        gone = [self._slots[cube_id] for cube_id in cube_ids if cube_id in self._held]
        if gone:
            self._view = None
            self._alive[self._rows_of(gone)] = False
            self._held.difference_update(self._cube_ids[slot] for slot in gone)

    def add(self, entries: Sequence[VectorEntry]) -> None:
        """Insert or replace: a cube's entries given here replace all its earlier ones."""
        if entries:
            self.add_matrix(
                SpaceMatrix(
                    cube_ids=[entry.cube_id for entry in entries],
                    sentences=np.array([entry.sentence for entry in entries], dtype=np.int64),
                    matrix=np.stack([np.asarray(entry.vector, dtype=np.float32) for entry in entries]),
                )
            )

    def add_matrix(self, read: SpaceMatrix) -> None:
        """``add`` for entries as read from the store, in numpy (a space's whole matrix at once:
        ~1 ms per thousand entries where a loop per entry took ~10)."""
        self.remove(set(read.cube_ids))
        self._view = None
        count = len(read.cube_ids)
        self._reserve(count)
        known = len(self._cube_ids)
        slots = self._slots
        owners = np.fromiter((slots.setdefault(c, len(slots)) for c in read.cube_ids), dtype=np.int64, count=count)
        if len(slots) > known:
            self._cube_ids.extend(list(slots)[known:])
        self._held.update(read.cube_ids)
        rows = slice(self._size, self._size + count)
        self._matrix[rows] = read.matrix
        self._owner[rows] = owners
        self._sentence[rows] = read.sentences
        self._alive[rows] = True
        self._size += count

    def _reserve(self, extra: int) -> None:
        if self._size + extra <= len(self._matrix):
            return
        live = int(self._alive[: self._size].sum())
        if live + extra <= len(self._matrix) // 2:
            self._compact()
            return
        # An eighth of headroom for the writes to come: doubling, a space read whole (the usual
        # way one arrives) took twice its size in RAM, and the budget held half as many spaces.
        needed = live + extra
        self._compact(max(_MIN_CAPACITY, needed + needed // 8))

    def _compact(self, capacity: int | None = None) -> None:
        rows = np.flatnonzero(self._alive[: self._size])
        size = len(self._matrix) if capacity is None else capacity
        matrix = np.zeros((size, self._matrix.shape[1]), dtype=np.float32)
        matrix[: len(rows)] = self._matrix[rows]
        owner, sentence, alive = np.zeros(size, np.int64), np.zeros(size, np.int64), np.zeros(size, bool)
        owner[: len(rows)], sentence[: len(rows)], alive[: len(rows)] = self._owner[rows], self._sentence[rows], True
        self._matrix, self._owner, self._sentence, self._alive = matrix, owner, sentence, alive
        self._size = len(rows)

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
            part_slots = part_owner[starts] if len(part_rows) else part_owner
            group_of = np.full(len(self._cube_ids), -1, dtype=np.int64)
            group_of[part_slots] = np.arange(len(part_slots))
            self._view = _Grouping(
                whole_rows=whole_rows,
                whole_slots=self._owner[whole_rows],
                part_rows=part_rows,
                part_starts=starts,
                part_slots=part_slots,
                group_of=group_of,
            )
        return self._view

    def _mixed(self, query: Vectors, sentence_weight: float) -> tuple[npt.NDArray[np.int64], npt.NDArray[np.float32]]:
        """Each cube with a whole-text entry (its slot) and its score: (1 - w) * similarity of its
        whole text + w * that of its best sentence (a cube of one sentence scores its whole text)."""
        view = self._grouping()
        sims = self._matrix[: self._size] @ query
        whole = np.full(len(self._cube_ids), -np.inf, dtype=np.float32)
        whole[view.whole_slots] = sims[view.whole_rows]
        best = whole.copy()
        if len(view.part_rows):
            sentence_best = np.maximum.reduceat(sims[view.part_rows], view.part_starts)
            best[view.part_slots] = np.maximum(best[view.part_slots], sentence_best)
        slots = view.whole_slots
        return slots, (1.0 - sentence_weight) * whole[slots] + sentence_weight * best[slots]

    def ranked(
        self, query: Vectors, *, sentence_weight: float, limit: int | None = None, floor: float = -np.inf
    ) -> list[tuple[str, float]]:
        """Cubes best first (scored as ``_mixed`` says), at most ``limit``, none below ``floor``.
        Exhaustive and exact; only the head is sorted, in numpy."""
        if not self._size:
            return []
        slots, mixed = self._mixed(query, sentence_weight)
        keep = np.flatnonzero(mixed >= floor)
        if limit is not None and len(keep) > limit:
            keep = keep[np.argpartition(-mixed[keep], limit - 1)[:limit]]
        keep = keep[np.argsort(-mixed[keep], kind="stable")]
        return [(self._cube_ids[slots[i]], float(mixed[i])) for i in keep]

    def ranked_among(self, query: Vectors, cube_ids: Iterable[str], *, sentence_weight: float) -> list[str]:
        """``ranked``'s order of only these cubes (those held): a subset of a space is ranked
        without building the whole space's list."""
        if not self._size:
            return []
        slots, mixed = self._mixed(query, sentence_weight)
        by_slot = np.full(len(self._cube_ids), -np.inf, dtype=np.float32)
        by_slot[slots] = mixed
        wanted = np.array(sorted({self._slots[c] for c in cube_ids if c in self._held}), dtype=np.int64)
        wanted = wanted[np.isfinite(by_slot[wanted])]  # a cube without a whole-text entry is not ranked
        order = wanted[np.argsort(-by_slot[wanted], kind="stable")]
        return [self._cube_ids[slot] for slot in order]

    def best_sentence(self, cube_id: str, query: Vectors) -> int | None:
        """Which sentence of a cube is most similar to the query (``None``: it has only one)."""
        if cube_id not in self._held:
            return None
        view = self._grouping()
        group = int(view.group_of[self._slots[cube_id]])
        if group < 0:
            return None
        start = int(view.part_starts[group])
        end = int(view.part_starts[group + 1]) if group + 1 < len(view.part_starts) else len(view.part_rows)
        rows = view.part_rows[start:end]
        sims = self._matrix[rows] @ query
        return int(self._sentence[rows[int(np.argmax(sims))]])


class HotVectors:
    def __init__(self, vectors: VectorStore, index: VectorIndex, *, budget_bytes: int, ann_min_entries: int) -> None:
        self._vectors = vectors
        self._index = index
        self._budget = budget_bytes
        self._ann_min = ann_min_entries
        self._spaces: OrderedDict[str, SpaceVectors] = OrderedDict()
        self._large: dict[str, float] = {}  # spaces searched through the ANN index, since when
        self._loading: dict[str, asyncio.Future[SpaceVectors | None]] = {}
        self._writes: dict[str, int] = {}  # per space, so a read that raced a write is read again

    def get(self, space: str) -> SpaceVectors | None:
        """The space's vectors if held (and fresh), without reading anything."""
        vectors = self._spaces.get(space)
        if vectors is not None and time.monotonic() - vectors.loaded_at < _RELOAD_SECONDS:
            self._spaces.move_to_end(space)
            return vectors
        return None

    async def space(self, space: str) -> SpaceVectors | None:
        """The space's vectors, read from the store if not held; ``None`` for a space above
        ``ann_min_entries`` (searched through the ANN index)."""
        held = self.get(space)
        if held is not None:
            return held
        since = self._large.get(space)
        if since is not None and time.monotonic() - since < _RELOAD_SECONDS:
            return None
        loading = self._loading.get(space)
        if loading is None:
            # shared by the requests to come: not cut short at the deadline of the one that started it
            loading = asyncio.get_running_loop().create_task(self._load(space), context=deadline.detached())
            self._loading[space] = loading
            loading.add_done_callback(lambda _: self._loading.pop(space, None))
        return await asyncio.shield(loading)

    async def _load(self, space: str) -> SpaceVectors | None:
        for _ in range(_LOAD_TRIES):
            writes = self._writes.get(space, 0)
            count = await asyncio.to_thread(self._vectors.count, space)
            if count > self._ann_min:
                self._large[space] = time.monotonic()
                self._spaces.pop(space, None)
                return None
            read = await asyncio.to_thread(self._vectors.matrix, space)
            if self._writes.get(space, 0) == writes:
                break
        self._large.pop(space, None)
        vectors = SpaceVectors(self._vectors.dimension)
        vectors.add_matrix(read)
        if self._budget > 0:
            self._spaces[space] = vectors
            self._spaces.move_to_end(space)
            self._evict()
        return vectors

    async def nearest(self, space: str, vector: Vectors, *, limit: int) -> list[tuple[str, float]]:
        """Most similar cubes by whole text: exact when the space is small, else the ANN index."""
        vectors = await self.space(space)
        if vectors is None:
            return await self._index.query(space, vector, limit=limit)
        return vectors.ranked(vector, sentence_weight=0.0, limit=limit)

    async def refresh(self, space: str, cube_ids: Sequence[str]) -> None:
        """These cubes were written (committed): a space held re-reads their entries (none: the
        cube is gone or not live any more)."""
        self._writes[space] = self._writes.get(space, 0) + 1
        if space not in self._spaces or not cube_ids:
            return
        read = await asyncio.to_thread(self._vectors.matrix, space, cube_ids)
        vectors = self._spaces.get(space)
        if vectors is None:
            return
        vectors.remove(cube_ids)
        vectors.add_matrix(read)
        self._evict()

    def remove(self, space: str, cube_ids: Iterable[str]) -> None:
        self._writes[space] = self._writes.get(space, 0) + 1
        vectors = self._spaces.get(space)
        if vectors is not None:
            vectors.remove(cube_ids)

    def drop(self, space: str) -> None:
        """Read the space again when next used (it was deleted, or another process changed it)."""
        self._writes[space] = self._writes.get(space, 0) + 1
        self._spaces.pop(space, None)
        self._large.pop(space, None)

    def _evict(self) -> None:
        total = sum(v.nbytes for v in self._spaces.values())
        while total > self._budget and len(self._spaces) > 1:
            _, dropped = self._spaces.popitem(last=False)
            total -= dropped.nbytes
