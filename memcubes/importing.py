"""Writing a planned import: all or nothing, and polite to everyone else while it runs.

Measured on 2 cores before this module (one transaction, then an urgent drain), a 20,000-memory
mem0 import took 368 s, and another user's ``sync`` add waited 363 s of it: its drain queued
behind the import's on the index sync's lock, which embedded all 20,000 texts and wrote them to
Chroma in calls that held the GIL for seconds. Now the import goes in chunks of ``CHUNK`` cubes:

1. embed the chunk's active cubes (the background embedder thread, so requests' queries keep
   their own; the next chunk is embedded while this one is written);
2. record in the undo log (``memcubes.import_log``) what the store holds for them now;
3. commit the chunk's cubes, their vectors (``memcubes.vector_store``), history and lexical
   index in one short transaction (~20 ms); the outbox brings them to RAM (and to the ANN
   index for a space past ``vector_index.ann_min_entries``) in the background.

Other writers (chat journalling, adds) get the store between chunks. Committing the import is
one small transaction at the end; until then a failure of any step, a cancelled request or a
crash (found at the next start) rolls every chunk back. What an import has written so far can be
listed and searched while it runs.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import Callable, Sequence

from memcubes import import_log
from memcubes.bundle import ImportPlan
from memcubes.cube import MemCube
from memcubes.embedder import Embedder
from memcubes.ids import new_id
from memcubes.indexing import IndexSync
from memcubes.store import HistoryEvent, Store
from memcubes.vector_store import VectorEntry, VectorStore, cube_entries

log = logging.getLogger(__name__)

CHUNK = 256  # cubes per transaction: ~20 ms of the store's writer, ~0.3 s of embedding

Progress = Callable[[int, int], None]  # (cubes written, cubes in all)

_undoing: set[asyncio.Task[None]] = set()  # roll-backs outliving the request that started them


async def write_import(
    plan: ImportPlan,
    *,
    store: Store,
    index_sync: IndexSync,
    vectors: VectorStore,
    embedder: Embedder,
    progress: Progress | None = None,
) -> None:
    """Write ``plan`` in chunks, all or nothing: on any failure (or cancellation) everything
    written is rolled back before the error propagates."""
    cubes = plan.changes.cubes
    if not cubes:
        return
    space = plan.report.space
    chunks = [cubes[start : start + CHUNK] for start in range(0, len(cubes), CHUNK)]
    events = _events_by_chunk(chunks, plan.changes.events)
    import_id = new_id()

    def embedded(chunk: Sequence[MemCube]) -> asyncio.Task[list[VectorEntry]]:
        live = [cube for cube in chunk if cube.is_live()]
        return asyncio.ensure_future(cube_entries(live, embedder=embedder, known=plan.vectors, urgent=False))

    await asyncio.to_thread(import_log.begin, store, import_id, space)
    pending = embedded(chunks[0])
    try:
        done = 0
        if progress is not None:
            progress(done, len(cubes))
        for number, chunk in enumerate(chunks):
            entries = await pending
            if number + 1 < len(chunks):
                pending = embedded(chunks[number + 1])
            await asyncio.to_thread(import_log.hold, store, import_id, [cube.id for cube in chunk])
            encoded = vectors.encoded(entries)
            await asyncio.to_thread(import_log.write, store, import_id, chunk, events[number], encoded)
            done += len(chunk)
            if progress is not None:
                progress(done, len(cubes))
        await asyncio.to_thread(import_log.commit, store, import_id)
    except BaseException as exc:
        pending.cancel()
        log.warning("import into %s failed, rolling it back: %s", space, exc or type(exc).__name__)
        await _roll_back(store, index_sync, import_id)
        raise


async def recover(store: Store, index_sync: IndexSync) -> None:
    """Roll back the imports a dead process left half written; drop finished ones' logs."""
    running, finished = await asyncio.to_thread(import_log.abandoned, store)
    for import_id in finished:
        await asyncio.to_thread(import_log.forget, store, import_id)
    for import_id in running:
        log.warning("rolling back import %s, left unfinished by a process that stopped", import_id)
        await _roll_back(store, index_sync, import_id)


async def _roll_back(store: Store, index_sync: IndexSync, import_id: str) -> None:
    """Undo in a task of its own that a second cancellation cannot stop half way; the index
    follows through the outbox (now, or once it is back)."""

    async def undo() -> None:
        await asyncio.to_thread(import_log.roll_back, store, import_id)
        with contextlib.suppress(Exception):
            await index_sync.drain()

    task = asyncio.ensure_future(undo())
    _undoing.add(task)
    task.add_done_callback(_undoing.discard)
    await asyncio.wait([task])
    if not task.cancelled() and task.exception() is not None:
        log.error("could not roll back import %s now (the next start does): %s", import_id, task.exception())


def _events_by_chunk(chunks: Sequence[Sequence[MemCube]], events: Sequence[HistoryEvent]) -> list[list[HistoryEvent]]:
    """Each chunk's history events, in their order."""
    chunk_of = {cube.id: number for number, chunk in enumerate(chunks) for cube in chunk}
    grouped: list[list[HistoryEvent]] = [[] for _ in chunks]
    for event in events:
        grouped[chunk_of[event.cube.id]].append(event)
    return grouped
