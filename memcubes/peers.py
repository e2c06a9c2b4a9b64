"""What other processes serving the same data dir committed, noticed before each request reads
from this process's caches.

Every write transaction records the spaces it changed in the store's ``changes`` log (with the
cubes, when known, and whose write it was). Before a request reads memories, ``catch_up`` asks
the store whether anything was committed since it last looked (SQLite's ``PRAGMA data_version``:
a few microseconds, no page read; PostgreSQL's current snapshot, in a worker thread), and only
then reads the log's new rows, skipping this process's own (its caches were updated as it
wrote). One user's write drops that user's space from the caches, not everyone's.
"""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable

from memcubes.store import CHANGE_PERSON, Change, Store

ChangeListener = Callable[[Change], Awaitable[None]]


class PeerWatch:
    def __init__(self, store: Store, on_change: ChangeListener) -> None:
        self._store = store
        self._on_change = on_change
        self._version: int | str | None = None
        self._seq = -1
        self._lock = asyncio.Lock()

    async def catch_up(self) -> None:
        """Hand every change other processes committed since the last call to the listener."""
        if await self._version_now() == self._version:
            return
        async with self._lock:  # concurrent requests wait for one reading of the log
            version = await self._version_now()
            if version == self._version:
                return
            if self._seq < 0:
                self._seq = await asyncio.to_thread(self._store.last_change)
            changes, self._seq = await asyncio.to_thread(self._store.changes_since, self._seq)
            if changes is None:  # this process fell behind the log: every space may have changed
                spaces = await asyncio.to_thread(self._store.spaces)
                changes = [Change(space, CHANGE_PERSON, None) for space in spaces]
            for change in changes:
                await self._on_change(change)
            self._version = version

    async def _version_now(self) -> int | str:
        if self._store.version_is_local:
            return self._store.data_version()
        return await asyncio.to_thread(self._store.data_version)
