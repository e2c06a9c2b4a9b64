"""Write-back waits for a moment when no request is retrieving, but never longer than allowed."""

from __future__ import annotations

import asyncio
import time

from memcubes.foreground import Foreground


async def test_quiet_waits_for_retrievals_in_flight_then_returns() -> None:
    foreground = Foreground()
    started = time.perf_counter()
    await foreground.quiet(settle=0.01, at_most=5.0)  # nobody retrieving: just the settle time
    assert time.perf_counter() - started < 1.0

    released = asyncio.Event()

    async def request() -> None:
        async with foreground.busy():
            await released.wait()

    task = asyncio.create_task(request())
    await asyncio.sleep(0)
    waiter = asyncio.create_task(foreground.quiet(settle=0.0, at_most=5.0))
    await asyncio.sleep(0.05)
    assert not waiter.done()  # a request is retrieving
    released.set()
    await asyncio.wait_for(waiter, 1.0)
    await task


async def test_quiet_gives_up_waiting_after_at_most() -> None:
    foreground = Foreground()
    async with foreground.busy():
        started = time.perf_counter()
        await foreground.quiet(settle=0.0, at_most=0.05)
        assert 0.04 <= time.perf_counter() - started < 1.0
