"""One writer per space at a time, across every process serving the data dir.

Write-back reconciles what an exchange says with what its space holds (exact and near
duplicates, a fact's earlier value) and then commits: two processes doing that for one space at
once would both add "Ali lives in Porto". Within a process an asyncio lock per stripe of spaces
serialises them; across processes an exclusive ``flock`` on the stripe's file under
``<data_dir>/locks`` does, taken in a thread (it blocks) once the asyncio lock is held, so a
process asks the kernel for a stripe once at a time. The kernel lets go of a killed process's
locks: nothing is left to expire.
"""

from __future__ import annotations

import asyncio
import contextlib
import fcntl
import os
import zlib
from collections.abc import AsyncIterator
from pathlib import Path

_STRIPES = 64


class SpaceLocks:
    def __init__(self, directory: Path) -> None:
        self._directory = directory
        self._locks = [asyncio.Lock() for _ in range(_STRIPES)]
        self._files: dict[int, int] = {}

    def _file(self, stripe: int) -> int:
        fd = self._files.get(stripe)
        if fd is None:
            self._directory.mkdir(parents=True, exist_ok=True)
            fd = os.open(self._directory / f"space-{stripe:02d}.lock", os.O_CREAT | os.O_RDWR, 0o600)
            self._files[stripe] = fd
        return fd

    @contextlib.asynccontextmanager
    async def hold(self, space: str) -> AsyncIterator[None]:
        """Exclusive use of ``space`` (and of the spaces sharing its stripe) until the block ends."""
        stripe = zlib.crc32(space.encode()) % _STRIPES
        async with self._locks[stripe]:
            fd = self._file(stripe)
            try:
                fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)  # free nearly always: no thread hop
            except BlockingIOError:
                taking = asyncio.ensure_future(asyncio.to_thread(fcntl.flock, fd, fcntl.LOCK_EX))
                try:
                    await asyncio.shield(taking)
                except asyncio.CancelledError:
                    # The thread still takes the lock: let go of it then, or the stripe stays locked.
                    taking.add_done_callback(lambda _: fcntl.flock(fd, fcntl.LOCK_UN))
                    raise
            try:
                yield
            finally:
                fcntl.flock(fd, fcntl.LOCK_UN)

    def close(self) -> None:
        for fd in self._files.values():
            os.close(fd)
        self._files.clear()
