"""Moving a data dir of the previous layout (vectors only in Chroma, one collection per space) to
vectors in SQLite (``memcubes.vector_store``), once, when it is opened.

Each space's entries are read back from its Chroma collection (no embedding: a million memories
move in minutes, not hours); live cubes the collection lacks (their index write was still in the
outbox) are embedded afresh. A space at or below ``ann_min_entries`` entries then loses its
collection: it is searched exactly from now on. Progress is logged per space (at most every
couple of seconds), and the data dir is marked done only at the end, so an interrupted migration
starts again where it stopped (spaces already holding vectors are skipped).
"""

from __future__ import annotations

import asyncio
import logging
import time

from memcubes.embedder import Embedder
from memcubes.errors import IndexUnavailable
from memcubes.store import Store
from memcubes.vector_store import VectorStore, cube_entries
from memcubes.vectors import VectorIndex

log = logging.getLogger(__name__)

LAYOUT_META = "vectors_layout"
LAYOUT = "sqlite"
_PROGRESS_SECONDS = 2.0
_BATCH = 256


def _pending_spaces(store: Store, vectors: VectorStore) -> list[str] | None:
    """Spaces still to migrate, or ``None`` when the data dir is of the current layout (a new
    data dir is marked so at once)."""
    if store.get_meta(LAYOUT_META) == LAYOUT:
        return None
    spaces = [space for space in store.spaces() if store.count(space) and vectors.missing(space)]
    if not spaces:
        store.set_meta(LAYOUT_META, LAYOUT)
        return None
    return spaces


async def migrate_vectors(
    store: Store, vectors: VectorStore, index: VectorIndex, *, embedder: Embedder, ann_min_entries: int
) -> int:
    """Copy every space's vectors from the index into the store; returns the cubes migrated."""
    spaces = await asyncio.to_thread(_pending_spaces, store, vectors)
    if spaces is None:
        return 0
    total = await asyncio.to_thread(lambda: sum(store.count(space) for space in spaces))
    log.info("moving the vectors of %d memories in %d spaces from Chroma into SQLite", total, len(spaces))
    started = last = time.monotonic()
    done = embedded = 0
    for number, space in enumerate(spaces, 1):
        missing = set(await asyncio.to_thread(vectors.missing, space))
        try:
            entries = [entry for entry in await index.entries(space) if entry.cube_id in missing]
        except IndexUnavailable as exc:
            log.warning("cannot read the vectors of a space from Chroma (embedding them again): %s", exc)
            entries = []
        await asyncio.to_thread(vectors.put, space, entries)
        unindexed = sorted(missing - {entry.cube_id for entry in entries})
        for start in range(0, len(unindexed), _BATCH):
            cubes = await asyncio.to_thread(store.get_many, unindexed[start : start + _BATCH])
            fresh = await cube_entries(list(cubes.values()), embedder=embedder, known={})
            await asyncio.to_thread(vectors.put, space, fresh)
        embedded += len(unindexed)
        done += len(missing)
        if await asyncio.to_thread(vectors.count, space) <= ann_min_entries:
            try:
                if await index.holds(space):
                    await index.drop_space(space)
            except IndexUnavailable as exc:  # derived data: a stale collection is only disk
                log.warning("could not drop a migrated space's Chroma collection: %s", exc)
        now = time.monotonic()
        if now - last >= _PROGRESS_SECONDS or number == len(spaces):
            last = now
            log.info(
                "vectors into SQLite: %d/%d spaces, %d/%d memories (%d embedded again), %.0f s",
                number,
                len(spaces),
                done,
                total,
                embedded,
                now - started,
            )
    await asyncio.to_thread(store.set_meta, LAYOUT_META, LAYOUT)
    return done
