"""One writer per space at a time, across every process serving the store.

Write-back reconciles what an exchange says with what its space holds (exact and near
duplicates, a fact's earlier value) and then commits: two processes doing that for one space at
once would both add "Ali lives in Porto". Within a process an asyncio lock per stripe of spaces
serialises them; across processes the store's engine locks the stripe (``Engine.stripe_locks``):
on SQLite an exclusive ``flock`` on the stripe's file under ``<data_dir>/locks`` (``FileStripes``;
the kernel lets go of a killed process's locks), on PostgreSQL a session advisory lock (the
server lets go of a dead connection's). The cross-process lock is taken in a thread (it blocks)
once the asyncio lock is held, so a process asks for a stripe once at a time. The block runs
with ``held_stripe`` set: a PostgreSQL session lost while the block runs took the lock with it
(another replica may hold it now), and the engine then refuses to commit the block's writes.
"""

from __future__ import annotations

import asyncio
import contextlib
import fcntl
import os
import zlib
from collections.abc import AsyncIterator
from pathlib import Path
from typing import TYPE_CHECKING

from memcubes.store.engine import held_stripe

if TYPE_CHECKING:
    from memcubes.store.engine import StripeLocks

STRIPES = 64


class FileStripes:
    """Stripes as ``flock``-ed files: processes of one host sharing a data dir."""

    local = True

    def __init__(self, directory: Path) -> None:
        self._directory = directory
        self._files: dict[int, int] = {}

    def _file(self, stripe: int) -> int:
        fd = self._files.get(stripe)
        if fd is None:
            self._directory.mkdir(parents=True, exist_ok=True)
            fd = os.open(self._directory / f"space-{stripe:02d}.lock", os.O_CREAT | os.O_RDWR, 0o600)
            self._files[stripe] = fd
        return fd

    def try_take(self, stripe: int) -> bool:
        try:
            fcntl.flock(self._file(stripe), fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            return False
        return True

    def take(self, stripe: int) -> None:
        fcntl.flock(self._file(stripe), fcntl.LOCK_EX)

    def release(self, stripe: int) -> None:
        fcntl.flock(self._file(stripe), fcntl.LOCK_UN)

    def close(self) -> None:
        for fd in self._files.values():
            os.close(fd)
        self._files.clear()


class SpaceLocks:
    def __init__(self, stripes: StripeLocks) -> None:
        self._stripes = stripes
        self._locks = [asyncio.Lock() for _ in range(STRIPES)]

    @contextlib.asynccontextmanager
    async def hold(self, space: str) -> AsyncIterator[None]:
        """Exclusive use of ``space`` (and of the spaces sharing its stripe) until the block ends."""
        stripe = zlib.crc32(space.encode()) % STRIPES
        async with self._locks[stripe]:
            if not (self._stripes.local and self._stripes.try_take(stripe)):  # free nearly always: no thread hop
                taking = asyncio.ensure_future(asyncio.to_thread(self._stripes.take, stripe))
                try:
                    await asyncio.shield(taking)
                except asyncio.CancelledError:
                    # The thread still takes the lock: let go of it then, or the stripe stays locked.
                    taking.add_done_callback(lambda _: self._stripes.release(stripe))
                    raise
            holding = held_stripe.set(stripe)
            try:
                yield
            finally:
                held_stripe.reset(holding)
                if self._stripes.local:
                    self._stripes.release(stripe)
                else:  # asks a server: in a thread, finished even if this task is cancelled
                    await asyncio.shield(asyncio.to_thread(self._stripes.release, stripe))

    def close(self) -> None:
        self._stripes.close()
