"""Keeps the vector index (and the in-RAM copy of hot spaces) in step with the store by replaying
the outbox.

The store commits cube changes and their outbox rows in one transaction; this module applies
those rows and then deletes them. A crash in between leaves rows behind, which the next drain (at
start-up at the latest) applies again: every operation is idempotent. A cube is indexed as its
whole text plus, when it has several sentences, each sentence.

A drain applies rows to the in-RAM vectors at once, so retrieval sees a write as soon as it is
committed, but writes the index itself at once only when a caller waits for it (``urgent``).
Background writes are gathered and written in one call per space once writes pause for
``write_idle_ms``, or at the latest ``write_delay_ms`` after the first, when no request is retrieving.
Measured here, an embedded Chroma upsert costs ~7 ms of CPU for one entry and ~15 ms for ten,
and holds the GIL for 10-15 ms of it (~40 ms for 64 entries), stalling the event loop: at one
write per exchange it was the largest cost of write-back after embedding, and every write is a
slow request for whoever is waiting then, so they are few, and made in chunks. Until
then the rows stay in the outbox, and ``HotVectors`` replays the staged writes onto a space it
loads from the index meanwhile.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field

import numpy as np

from memcubes.cube import MemCube
from memcubes.embedder import Embedder, Vectors
from memcubes.foreground import Foreground
from memcubes.hot_vectors import HotVectors
from memcubes.sentences import sentence_texts
from memcubes.store import OP_DELETE, OP_DROP_SPACE, OP_UPSERT, Store
from memcubes.vectors import WHOLE, VectorEntry, VectorIndex

log = logging.getLogger(__name__)

_FLUSH_ENTRIES = 512  # staged entries that are written without waiting for the delay
_QUIET_SECONDS = 0.1  # longest a background write waits for no request to be retrieving
_UPSERT_CHUNK = 64  # entries per index call in the background: the GIL is held ~40 ms for 64


async def cube_entries(
    cubes: Sequence[MemCube], *, embedder: Embedder, known: Mapping[str, Vectors], urgent: bool = False
) -> list[VectorEntry]:
    """Whole-text and sentence entries of cubes, embedding in one batch what is not ``known``."""
    texts: list[str] = []
    slots: list[tuple[str, int]] = []
    for cube in cubes:
        if cube.id not in known:
            texts.append(cube.content)
            slots.append((cube.id, WHOLE))
        for number, sentence in enumerate(sentence_texts(cube.content)):
            texts.append(sentence)
            slots.append((cube.id, number))
    vectors = await embedder.embed(texts, urgent=urgent) if texts else np.zeros((0, 0), dtype=np.float32)
    entries = [VectorEntry(cube.id, WHOLE, known[cube.id]) for cube in cubes if cube.id in known]
    entries += [VectorEntry(cube_id, number, vector) for (cube_id, number), vector in zip(slots, vectors, strict=True)]
    return entries


@dataclass
class _Staged:
    """One space's writes not yet in the index: cubes whose entries go (deleted, or re-indexed
    with possibly fewer sentences), then the entries to upsert, by cube."""

    removed: set[str] = field(default_factory=set)
    entries: dict[str, list[VectorEntry]] = field(default_factory=dict)

    def size(self) -> int:
        return len(self.removed) + sum(len(entries) for entries in self.entries.values())


class IndexSync:
    def __init__(
        self,
        *,
        store: Store,
        index: VectorIndex,
        embedder: Embedder,
        hot: HotVectors,
        foreground: Foreground,
        write_delay: float,
        write_idle: float,
    ) -> None:
        self._store = store
        self._index = index
        self._embedder = embedder
        self._hot = hot
        self._foreground = foreground
        self._write_delay = write_delay
        self._write_idle = write_idle
        self._last_staged = 0.0
        self._lock = asyncio.Lock()
        self._known: dict[str, Vectors] = {}  # vectors of committed cubes, waiting for their rows
        self._staged: dict[str, _Staged] = {}
        self._staged_rows: list[int] = []  # outbox rows done once the staged writes are in the index
        self._flush_task: asyncio.Task[None] | None = None
        self._due = asyncio.Event()  # enough is staged: write without waiting for the delay

    def remember(self, vectors: Mapping[str, Vectors]) -> None:
        """Vectors of cubes about to be committed, so that indexing them embeds nothing again."""
        self._known.update(vectors)

    async def drain(self, *, urgent: bool = False) -> int:
        """Stage every pending outbox row (the in-RAM vectors change at once); write the index now
        when ``urgent`` (a caller waits to search), else in the background: once writes pause,
        after the delay, or as soon as enough is staged."""
        async with self._lock:
            applied = await self._stage(urgent=urgent)
            if applied:
                self._last_staged = asyncio.get_running_loop().time()
            if urgent:
                await self._flush()
                return applied
            if sum(staged.size() for staged in self._staged.values()) >= _FLUSH_ENTRIES:
                self._due.set()  # written now, but paced like any background write
            if self._staged_rows and self._flush_task is None:
                self._flush_task = asyncio.get_running_loop().create_task(self._flush_later())
        return applied

    async def write_through(self, space: str, entries: Sequence[VectorEntry]) -> None:
        """Write entries of cubes not committed yet straight to the index, in paced chunks, then
        to RAM: for a bulk writer (an import) that keeps its own undo log. Neither the outbox nor
        this sync's lock is involved, so a request's urgent drain never waits behind thousands
        of an import's entries."""
        for start in range(0, len(entries), _UPSERT_CHUNK):
            await self._pace(True)
            await self._index.upsert(space, entries[start : start + _UPSERT_CHUNK])
        self._hot.apply(space, upserts=entries, indexed=True)

    async def flush(self) -> None:
        """Write whatever is staged now (shutdown, tests, callers about to read the index)."""
        async with self._lock:
            await self._flush()

    async def _flush_later(self) -> None:
        loop = asyncio.get_running_loop()
        deadline = loop.time() + self._write_delay
        try:
            while (wait := min(self._last_staged + self._write_idle, deadline) - loop.time()) > 0:
                with contextlib.suppress(TimeoutError):
                    await asyncio.wait_for(self._due.wait(), wait)
                    break
            async with self._lock:
                self._due.clear()
                await self._flush(paced=True)
        except Exception as exc:  # the rows stay in the outbox; the next drain stages them again
            log.warning("vector index write failed (will retry): %s", exc)
        finally:
            self._flush_task = None

    async def close(self) -> None:
        """Write what is staged (best effort: what fails stays in the outbox for the next start)."""
        with contextlib.suppress(Exception):
            await self.flush()
        if self._flush_task is not None:  # asleep by now: nothing is left for it to write
            self._flush_task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._flush_task

    async def _stage(self, *, urgent: bool) -> int:
        applied = 0
        while rows := await asyncio.to_thread(self._store.outbox_pending, skip=self._staged_rows, limit=512):
            # Deletes and drops apply in order; upserts are collected per space (later rows win)
            # and read from the store afterwards, so a bulk import embeds in a few large calls.
            upserts: dict[str, dict[str, None]] = {}
            for row in rows:
                if row.op == OP_DROP_SPACE:
                    upserts.pop(row.space, None)
                    self._staged.pop(row.space, None)
                    await self._index.drop_space(row.space)
                    self._hot.drop(row.space)
                elif row.op == OP_DELETE:
                    upserts.get(row.space, {}).pop(row.cube_id, None)
                    self._remove(row.space, [row.cube_id])
                elif row.op == OP_UPSERT:
                    upserts.setdefault(row.space, {})[row.cube_id] = None
            for space, ids in upserts.items():
                await self._upsert(space, list(ids), urgent=urgent)
            self._staged_rows += [row.seq for row in rows]
            applied += len(rows)
        if not self._staged_rows:
            # Nothing pending: vectors still remembered belong to rows another drain took first.
            self._known.clear()
        return applied

    def _remove(self, space: str, cube_ids: Sequence[str]) -> None:
        if not cube_ids:
            return
        staged = self._staged.setdefault(space, _Staged())
        for cube_id in cube_ids:
            staged.entries.pop(cube_id, None)
            staged.removed.add(cube_id)
        self._hot.apply(space, removed=cube_ids)

    async def _upsert(self, space: str, cube_ids: list[str], *, urgent: bool) -> None:
        cubes = await asyncio.to_thread(self._store.get_many, cube_ids)
        live = [cubes[i] for i in cube_ids if i in cubes and cubes[i].is_live()]
        self._remove(space, [i for i in cube_ids if i not in cubes or not cubes[i].is_live()])
        if not live:
            return
        known = {cube.id: self._known.pop(cube.id) for cube in live if cube.id in self._known}
        entries = await cube_entries(live, embedder=self._embedder, known=known, urgent=urgent)
        by_cube: dict[str, list[VectorEntry]] = {cube.id: [] for cube in live}
        for entry in entries:
            by_cube[entry.cube_id].append(entry)
        staged = self._staged.setdefault(space, _Staged())
        staged.entries.update(by_cube)  # a cube staged twice: the later entries replace the earlier
        # An edited cube (a later version, same id) may have fewer sentences now: its old entries go.
        staged.removed.update(cube.id for cube in live if cube.version > 1)
        self._hot.apply(space, upserts=entries)

    async def _flush(self, *, paced: bool = False) -> None:
        """One delete and one upsert per space (``paced``: in chunks, each once no request is
        retrieving), then the rows are done. On failure nothing is kept: the rows are read from
        the outbox again (and re-embedded) by a later drain."""
        staged, rows = self._staged, self._staged_rows
        self._staged, self._staged_rows = {}, []
        try:
            for space, writes in staged.items():
                if writes.removed:
                    await self._pace(paced)
                    await self._index.delete_cubes(space, sorted(writes.removed))
                entries = [entry for cube_entries in writes.entries.values() for entry in cube_entries]
                chunk = _UPSERT_CHUNK if paced else max(len(entries), 1)
                for start in range(0, len(entries), chunk):
                    await self._pace(paced)
                    await self._index.upsert(space, entries[start : start + chunk])
            if rows:
                await asyncio.to_thread(self._store.outbox_done, rows)
        finally:
            for space in staged:
                self._hot.flushed(space)

    async def _pace(self, paced: bool) -> None:
        if paced:
            await self._foreground.quiet(settle=0.0, at_most=_QUIET_SECONDS)

    async def reindex(
        self, space: str | None = None, *, batch: int = 256, progress: Callable[[int], None] | None = None
    ) -> int:
        """Rebuild the index from the store (``memproxy reindex``): drop, re-embed, re-insert;
        ``progress`` hears how many cubes each batch indexed (for a progress bar)."""
        spaces = [space] if space else await asyncio.to_thread(self._store.spaces)
        total = 0
        async with self._lock:
            await self._flush()
            for name in spaces:
                await self._index.drop_space(name)
                self._hot.drop(name)
                cubes = await asyncio.to_thread(self._store.live_cubes, name)
                for start in range(0, len(cubes), batch):
                    entries = await cube_entries(cubes[start : start + batch], embedder=self._embedder, known={})
                    await self._index.upsert(name, entries)
                    if progress is not None:
                        progress(min(batch, len(cubes) - start))
                total += len(cubes)
                log.info("reindexed %d cubes of %s", len(cubes), name)
        return total
