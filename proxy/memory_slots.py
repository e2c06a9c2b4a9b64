"""How much memory work one API key may have in flight, so that one key cannot starve the others.

Memory work (a chat's lookup, a memory API call) runs on a few shared worker threads and cores;
eight heavy searches of one key once raised another user's search from 0.12 s to 7.5 s. Each key
created with ``POST /v1/keys`` gets ``general_settings.memory_concurrency_per_key`` slots; work
beyond them waits up to ``memory_queue_ms`` for one, and then:

    chat (any surface)   ─▶ answered without memory, ``x-memory-status: degraded``
                            (``memproxy_retrieval_total{outcome="busy"}``): memory trouble
                            never breaks a chat
    /v1/memories, /v1/spaces, bundles, /mcp
                         ─▶ 429 ``rate_limit_error`` / ``memory_concurrency_exceeded`` with
                            ``retry-after`` (an MCP call: its HTTP request)

The master key, and a server without one, is the operator: not bounded. Waiting is per key, so a
key's flood queues behind its own slots only, never in front of another key's work.
"""

from __future__ import annotations

import asyncio
import contextlib
import math
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from dataclasses import dataclass

from fastapi import Request

from proxy.auth import CurrentPrincipal
from proxy.config import GeneralSettings
from proxy.errors import MemoryBusy


@dataclass
class _Slots:
    free: asyncio.Semaphore
    users: int = 0  # holding a slot or waiting for one: the entry goes when none is left


class MemorySlots:
    def __init__(self, *, per_key: int, queue_seconds: float) -> None:
        self.per_key = per_key
        self.queue_seconds = queue_seconds
        self._keys: dict[str, _Slots] = {}

    @classmethod
    def of(cls, limits: GeneralSettings) -> MemorySlots:
        return cls(per_key=limits.memory_concurrency_per_key, queue_seconds=limits.memory_queue_ms / 1000)

    @asynccontextmanager
    async def hold(self, key_id: str | None) -> AsyncIterator[None]:
        """One slot of ``key_id`` for the work inside (``None``, the master key: no bound);
        ``MemoryBusy`` when none frees up within ``queue_seconds``."""
        if key_id is None:
            yield
            return
        slots = self._keys.get(key_id)
        if slots is None:
            slots = self._keys[key_id] = _Slots(asyncio.Semaphore(self.per_key))
        slots.users += 1
        try:
            await self._acquire(slots.free)
            try:
                yield
            finally:
                slots.free.release()
        finally:
            slots.users -= 1
            if slots.users == 0:
                del self._keys[key_id]

    async def _acquire(self, free: asyncio.Semaphore) -> None:
        if not free.locked():
            await free.acquire()  # free: returns at once
            return
        if self.queue_seconds > 0:
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(free.acquire(), self.queue_seconds)
                return
        retry = max(1, math.ceil(self.queue_seconds))
        raise MemoryBusy(
            f"this API key has {self.per_key} memory operations in flight already "
            f"(general_settings.memory_concurrency_per_key); retry in {retry} s",
            headers={"retry-after": str(retry)},
        )


async def memory_work(request: Request, caller: CurrentPrincipal) -> AsyncIterator[None]:
    """Dependency of the memory API's routers: the request holds one of its key's slots."""
    slots: MemorySlots = request.app.state.memory_slots
    async with slots.hold(caller.key_id):
        yield
