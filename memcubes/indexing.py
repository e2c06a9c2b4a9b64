"""Keeps the vector index (and the in-RAM copy of hot spaces) in step with the store by replaying
the outbox.

The store commits cube changes and their outbox rows in one transaction; this module applies
those rows to the index and deletes them. A crash between the two leaves rows behind, which the
next drain (at start-up at the latest) applies again: every operation is idempotent. A cube is
indexed as its whole text plus, when it has several sentences, each sentence.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Mapping, Sequence

import numpy as np

from memcubes.cube import MemCube
from memcubes.embedder import Embedder, Vectors
from memcubes.hot_vectors import HotVectors
from memcubes.sentences import sentence_texts
from memcubes.store import OP_DELETE, OP_DROP_SPACE, OP_UPSERT, Store
from memcubes.vectors import WHOLE, VectorEntry, VectorIndex

log = logging.getLogger(__name__)


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


class IndexSync:
    def __init__(self, *, store: Store, index: VectorIndex, embedder: Embedder, hot: HotVectors) -> None:
        self._store = store
        self._index = index
        self._embedder = embedder
        self._hot = hot
        self._lock = asyncio.Lock()

    async def drain(self, known: Mapping[str, Vectors] | None = None, *, urgent: bool = False) -> int:
        """Apply every pending outbox row; ``known`` spares re-embedding freshly written cubes."""
        known = known or {}
        applied = 0
        async with self._lock:
            while rows := await asyncio.to_thread(self._store.outbox_pending, limit=512):
                # Deletes and drops apply at once; upserts are collected per space (later rows win)
                # and flushed in batches, so a bulk import embeds in a few large calls.
                upserts: dict[str, dict[str, None]] = {}
                for row in rows:
                    if row.op == OP_DROP_SPACE:
                        upserts.pop(row.space, None)
                        await self._index.drop_space(row.space)
                        self._hot.drop(row.space)
                    elif row.op == OP_DELETE:
                        upserts.get(row.space, {}).pop(row.cube_id, None)
                        await self._remove(row.space, [row.cube_id])
                    elif row.op == OP_UPSERT:
                        upserts.setdefault(row.space, {})[row.cube_id] = None
                for space, ids in upserts.items():
                    await self._upsert(space, list(ids), known, urgent=urgent)
                await asyncio.to_thread(self._store.outbox_done, [row.seq for row in rows])
                applied += len(rows)
        return applied

    async def _remove(self, space: str, cube_ids: list[str]) -> None:
        if cube_ids:
            await self._index.delete_cubes(space, cube_ids)
            self._hot.apply(space, removed=cube_ids)

    async def _upsert(self, space: str, cube_ids: list[str], known: Mapping[str, Vectors], *, urgent: bool) -> None:
        cubes = await asyncio.to_thread(self._store.get_many, cube_ids)
        live = [cubes[i] for i in cube_ids if i in cubes and cubes[i].is_live()]
        await self._remove(space, [i for i in cube_ids if i not in cubes or not cubes[i].is_live()])
        if not live:
            return
        entries = await cube_entries(live, embedder=self._embedder, known=known, urgent=urgent)
        # An edited cube (a later version, same id) may have fewer sentences now: its old entries go.
        await self._index.delete_cubes(space, [cube.id for cube in live if cube.version > 1])
        await self._index.upsert(space, entries)
        self._hot.apply(space, upserts=entries)

    async def reindex(self, space: str | None = None, *, batch: int = 256) -> int:
        """Rebuild the index from the store (``memproxy reindex``): drop, re-embed, re-insert."""
        spaces = [space] if space else await asyncio.to_thread(self._store.spaces)
        total = 0
        async with self._lock:
            for name in spaces:
                await self._index.drop_space(name)
                self._hot.drop(name)
                cubes = await asyncio.to_thread(self._store.live_cubes, name)
                for start in range(0, len(cubes), batch):
                    entries = await cube_entries(cubes[start : start + batch], embedder=self._embedder, known={})
                    await self._index.upsert(name, entries)
                total += len(cubes)
                log.info("reindexed %d cubes of %s", len(cubes), name)
        return total
