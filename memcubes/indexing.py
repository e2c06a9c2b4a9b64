"""Keeps what is derived from the vectors the store holds in step with it, by replaying the
outbox: the in-RAM vectors of spaces held (``HotVectors``) and the ANN index of large spaces.

The store commits a cube, its vectors (``memcubes.vector_store``) and an outbox row in one
transaction; this module applies the rows and then deletes them. A crash in between leaves rows
behind, which the next drain (at start-up at the latest) applies again: every operation is
idempotent. A live cube committed without vectors (an edit, an approval, a data dir of the
previous layout) is embedded here, whole text and sentences, and its vectors written then.

A drain applies rows to the in-RAM vectors at once, so retrieval sees a write as soon as it is
committed. Only spaces above ``vector_index.ann_min_entries`` have an ANN index (Chroma): their
writes are gathered and written in one call per space once writes pause for ``write_idle_ms``,
or at the latest ``write_delay_ms`` after the first, when no request is retrieving (an embedded
Chroma upsert holds the GIL for 10-15 ms, ~40 ms for 64 entries). A space's first ANN write
builds its collection from the store; the collection of a space that shrank below the threshold
is dropped.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field

from memcubes.embedder import Embedder
from memcubes.errors import IndexUnavailable
from memcubes.foreground import Foreground
from memcubes.hot_vectors import HotVectors
from memcubes.store import OP_DELETE, OP_DROP_SPACE, OP_UPSERT, Store
from memcubes.vector_store import VectorStore, cube_entries
from memcubes.vectors import VectorIndex

log = logging.getLogger(__name__)

_FLUSH_ENTRIES = 512  # staged cubes that are written without waiting for the delay
_QUIET_SECONDS = 0.1  # longest a background write waits for no request to be retrieving
_UPSERT_CHUNK = 64  # entries per index call in the background: the GIL is held ~40 ms for 64


@dataclass
class _Staged:
    """One space's writes not yet in the ANN index: cubes whose entries go (deleted, or re-indexed
    with possibly fewer sentences) and cubes whose entries are (re)written, read from the store."""

    removed: set[str] = field(default_factory=set)
    upserted: set[str] = field(default_factory=set)

    def size(self) -> int:
        return len(self.removed) + len(self.upserted)


class IndexSync:
    def __init__(
        self,
        *,
        store: Store,
        vectors: VectorStore,
        index: VectorIndex,
        embedder: Embedder,
        hot: HotVectors,
        foreground: Foreground,
        write_delay: float,
        write_idle: float,
        ann_min_entries: int,
    ) -> None:
        self._store = store
        self._vectors = vectors
        self._index = index
        self._ann_min = ann_min_entries
        self._embedder = embedder
        self._hot = hot
        self._foreground = foreground
        self._write_delay = write_delay
        self._write_idle = write_idle
        self._last_staged = 0.0
        self._lock = asyncio.Lock()
        self._staged: dict[str, _Staged] = {}
        self._staged_rows: list[int] = []  # outbox rows done once the staged writes are in the index
        self._flush_task: asyncio.Task[None] | None = None
        self._due = asyncio.Event()  # enough is staged: write without waiting for the delay

    async def drain(self, *, urgent: bool = False) -> int:
        """Stage every pending outbox row (the in-RAM vectors change at once); write the ANN index
        now when ``urgent`` (a caller waits), else in the background: once writes pause, after
        the delay, or as soon as enough is staged."""
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
                    self._hot.drop(row.space)
                    if await self._index.holds(row.space):
                        await self._index.drop_space(row.space)
                elif row.op == OP_DELETE:
                    upserts.get(row.space, {}).pop(row.cube_id, None)
                    self._remove(row.space, [row.cube_id])
                elif row.op == OP_UPSERT:
                    upserts.setdefault(row.space, {})[row.cube_id] = None
            for space, ids in upserts.items():
                await self._upsert(space, list(ids), urgent=urgent)
            self._staged_rows += [row.seq for row in rows]
            applied += len(rows)
        return applied

    def _remove(self, space: str, cube_ids: Sequence[str]) -> None:
        if not cube_ids:
            return
        staged = self._staged.setdefault(space, _Staged())
        staged.upserted.difference_update(cube_ids)
        staged.removed.update(cube_ids)
        self._hot.remove(space, cube_ids)

    async def _upsert(self, space: str, cube_ids: list[str], *, urgent: bool) -> None:
        missing = await asyncio.to_thread(self._vectors.missing, space, cube_ids)
        if missing:  # committed without vectors: embedded now
            cubes = await asyncio.to_thread(self._store.get_many, missing)
            entries = await cube_entries(list(cubes.values()), embedder=self._embedder, known={}, urgent=urgent)
            await asyncio.to_thread(self._vectors.put, space, entries)
        staged = self._staged.setdefault(space, _Staged())
        # An edited cube may have fewer sentences now: its old entries go first.
        staged.removed.update(cube_ids)
        staged.upserted.update(cube_ids)
        await self._hot.refresh(space, cube_ids)

    async def _flush(self, *, paced: bool = False) -> None:
        """Per space above the threshold, one delete and one upsert (``paced``: in chunks, each
        once no request is retrieving); then the rows are done. On failure nothing is kept: the
        rows are read from the outbox again by a later drain."""
        staged, rows = self._staged, self._staged_rows
        self._staged, self._staged_rows = {}, []
        for space, writes in staged.items():
            await self._write_ann(space, writes, paced=paced)
        if rows:
            await asyncio.to_thread(self._store.outbox_done, rows)

    async def _write_ann(self, space: str, writes: _Staged, *, paced: bool) -> None:
        if await asyncio.to_thread(self._vectors.count, space) <= self._ann_min:
            # Searched exactly: a collection left from when the space was larger would go stale.
            # Best effort: a small space must not depend on the ANN index being up.
            try:
                if await self._index.holds(space):
                    await self._index.drop_space(space)
            except IndexUnavailable as exc:
                log.warning("could not drop the ANN collection of a small space: %s", exc)
            return
        held = await self._index.holds(space)
        if held:
            if writes.removed:
                await self._pace(paced)
                await self._index.delete_cubes(space, sorted(writes.removed))
            read = await asyncio.to_thread(self._vectors.matrix, space, sorted(writes.upserted))
        else:  # crossed the threshold: the whole space
            read = await asyncio.to_thread(self._vectors.matrix, space)
        entries = read.entries()
        chunk = _UPSERT_CHUNK if paced else max(len(entries), 1)
        for start in range(0, len(entries), chunk):
            await self._pace(paced)
            await self._index.upsert(space, entries[start : start + chunk])

    async def _pace(self, paced: bool) -> None:
        if paced:
            await self._foreground.quiet(settle=0.0, at_most=_QUIET_SECONDS)

    async def reindex(
        self, space: str | None = None, *, batch: int = 256, progress: Callable[[int], None] | None = None
    ) -> int:
        """Re-embed every live cube into the store, and rebuild the ANN index of large spaces
        (``memproxy reindex``: after changing the embedder); ``progress`` hears how many cubes
        each batch embedded (for a progress bar)."""
        spaces = [space] if space else await asyncio.to_thread(self._store.spaces)
        total = 0
        async with self._lock:
            await self._flush()
            for name in spaces:
                if await self._index.holds(name):
                    await self._index.drop_space(name)
                self._hot.drop(name)
                cubes = await asyncio.to_thread(self._store.live_cubes, name)
                for start in range(0, len(cubes), batch):
                    entries = await cube_entries(cubes[start : start + batch], embedder=self._embedder, known={})
                    await asyncio.to_thread(self._vectors.put, name, entries)
                    if progress is not None:
                        progress(min(batch, len(cubes) - start))
                cube_ids = [cube.id for cube in cubes]
                await self._write_ann(name, _Staged(upserted=set(cube_ids)), paced=False)
                total += len(cubes)
                log.info("reindexed %d cubes of %s", len(cubes), name)
        return total
