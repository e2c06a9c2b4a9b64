"""Keeps the vector index in step with the store by replaying the outbox.

The store commits cube changes and their outbox rows in one transaction; this module applies
those rows to the index and deletes them. A crash between the two leaves rows behind, which the
next drain (at start-up at the latest) applies again: every operation is idempotent.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Mapping

import numpy as np

from memcubes.embedder import Embedder, Vectors
from memcubes.store import OP_DELETE, OP_DROP_SPACE, OP_UPSERT, Store
from memcubes.vectors import VectorIndex

log = logging.getLogger(__name__)


class IndexSync:
    def __init__(self, *, store: Store, index: VectorIndex, embedder: Embedder) -> None:
        self._store = store
        self._index = index
        self._embedder = embedder
        self._lock = asyncio.Lock()

    async def drain(self, known: Mapping[str, Vectors] | None = None) -> int:
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
                    elif row.op == OP_DELETE:
                        upserts.get(row.space, {}).pop(row.cube_id, None)
                        await self._index.delete(row.space, [row.cube_id])
                    elif row.op == OP_UPSERT:
                        upserts.setdefault(row.space, {})[row.cube_id] = None
                for space, ids in upserts.items():
                    await self._upsert(space, list(ids), known)
                await asyncio.to_thread(self._store.outbox_done, [row.seq for row in rows])
                applied += len(rows)
        return applied

    async def _upsert(self, space: str, cube_ids: list[str], known: Mapping[str, Vectors]) -> None:
        cubes = await asyncio.to_thread(self._store.get_many, cube_ids)
        live = [cubes[i] for i in cube_ids if i in cubes and cubes[i].is_live()]
        gone = [i for i in cube_ids if i not in cubes or not cubes[i].is_live()]
        await self._index.delete(space, gone)
        missing = [cube for cube in live if cube.id not in known]
        fresh: Vectors | list[Vectors] = await self._embedder.embed([cube.content for cube in missing], urgent=False) if missing else []
        vectors = {cube.id: vector for cube, vector in zip(missing, fresh, strict=True)}
        vectors.update({cube.id: known[cube.id] for cube in live if cube.id in known})
        if live:
            await self._index.upsert(space, [cube.id for cube in live], np.stack([vectors[c.id] for c in live]))

    async def reindex(self, space: str | None = None, *, batch: int = 256) -> int:
        """Rebuild the index from the store (``memproxy reindex``): drop, re-embed, re-insert."""
        spaces = [space] if space else await asyncio.to_thread(self._store.spaces)
        total = 0
        async with self._lock:
            for name in spaces:
                await self._index.drop_space(name)
                cubes = await asyncio.to_thread(self._store.live_cubes, name)
                for start in range(0, len(cubes), batch):
                    chunk = cubes[start : start + batch]
                    vectors = await self._embedder.embed([cube.content for cube in chunk], urgent=False)
                    await self._index.upsert(name, [cube.id for cube in chunk], vectors)
                total += len(cubes)
                log.info("reindexed %d cubes of %s", len(cubes), name)
        return total
