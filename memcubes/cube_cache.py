"""Parsed cubes for the retrieval path, so a request does not re-read and re-parse from SQLite
the same memories the previous request just loaded.

Every search loads the head of its fused ranking (about 50 cubes); reading and parsing those
took ~1 ms of a lookup and ~3 ms of CPU per request under load (``python -m bench overhead``),
mostly for cubes the space's previous requests had loaded already. Entries are dropped when this
process changes them (``forget``) and live at most ``ttl`` seconds, in case another process
wrote to the same store; a load that raced with a change is not kept. Cubes handed out are
shared: callers must not modify them. Only the retrieval path reads through here; the access
statistics on cached cubes may be stale, which retrieval does not use.
"""

from __future__ import annotations

import asyncio
import time
from collections import OrderedDict
from collections.abc import Iterable, Sequence

from memcubes.cube import MemCube
from memcubes.store import Store


class CubeCache:
    def __init__(self, store: Store, *, size: int = 20_000, ttl: float = 5.0) -> None:
        self._store = store
        self._size = size
        self._ttl = ttl
        self._items: OrderedDict[str, tuple[float, MemCube]] = OrderedDict()
        self._generation = 0  # bumped by every forget: loads started before it are not kept

    async def get_many(self, cube_ids: Sequence[str]) -> dict[str, MemCube]:
        """The cubes that exist, by id, in the order asked; only the ones not held (or expired) are
        read, in a thread."""
        now = time.monotonic()
        found: dict[str, MemCube] = {}
        missing: list[str] = []
        for cube_id in cube_ids:
            entry = self._items.get(cube_id)
            if entry is not None and now - entry[0] < self._ttl:
                self._items.move_to_end(cube_id)
                found[cube_id] = entry[1]
            else:
                missing.append(cube_id)
        if not missing:
            return found
        generation = self._generation
        loaded = await asyncio.to_thread(self._store.get_many, missing)
        if generation == self._generation:
            for cube_id, cube in loaded.items():
                self._items[cube_id] = (now, cube)
                self._items.move_to_end(cube_id)
            while len(self._items) > self._size:
                self._items.popitem(last=False)
        found.update(loaded)
        return {cube_id: found[cube_id] for cube_id in cube_ids if cube_id in found}  # ties keep their order

    def forget(self, cube_ids: Iterable[str] | None = None) -> None:
        """These cubes changed (``None``: unknown which, drop everything)."""
        self._generation += 1
        if cube_ids is None:
            self._items.clear()
            return
        for cube_id in cube_ids:
            self._items.pop(cube_id, None)
