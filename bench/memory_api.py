"""What the benchmarks ask of a running memproxy besides chat: seed a space, wait for write-back."""

from __future__ import annotations

import asyncio
import time
from collections.abc import Awaitable, Callable, Sequence

import aiohttp

from bench import workload
from bench.servers import MASTER_KEY

HEADERS = {"authorization": f"Bearer {MASTER_KEY}"}


async def seed_space(client: aiohttp.ClientSession, url: str, *, user: str, count: int, batch: int = 500) -> int:
    """Add synthetic facts until the space holds ``count`` new memories (near duplicates are
    merged by write-back and do not count). Returns how many were added."""
    added, seed = 0, 7
    while added < count:
        facts = workload.facts(min(batch, count - added), seed=seed)
        seed += 1
        async with client.post(
            f"{url}/v1/memories", json={"user": user, "facts": facts, "sync": True}, headers=HEADERS
        ) as response:
            response.raise_for_status()
            answer = await response.json()
        added += sum(1 for change in answer["results"] if change["event"] == "ADD")
    return added


async def create_key(client: aiohttp.ClientSession, url: str, *, user_prefix: str) -> str:
    """The secret of a new key for the users whose id starts with ``user_prefix`` (created by the
    master key)."""
    async with client.post(f"{url}/v1/keys", json={"user_prefix": user_prefix}, headers=HEADERS) as response:
        response.raise_for_status()
        secret: str = (await response.json())["key"]
    return secret


async def journal(client: aiohttp.ClientSession, url: str) -> dict[str, int]:
    async with client.get(f"{url}/readyz") as response:
        checks = (await response.json()).get("checks", {})
    counts: dict[str, int] = checks.get("journal", {})
    return counts


def settle(client: aiohttp.ClientSession, url: str, *, timeout: float = 120.0) -> Callable[[], Awaitable[None]]:
    """Wait until every journalled exchange is distilled and indexed (nothing pending, queued or
    waiting for the vector index, whose writes memproxy gathers for a moment)."""

    async def wait() -> None:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            counts = await journal(client, url)
            if not any(counts.get(key) for key in ("pending", "queued", "indexing")):
                return
            await asyncio.sleep(0.02)
        raise TimeoutError(f"memproxy write-back did not settle in {timeout:.0f} s: {counts}")

    return wait


def settle_all(client: aiohttp.ClientSession, urls: Sequence[str]) -> Callable[[], Awaitable[None]]:
    """``settle`` for replicas: each one's queue (their journal is shared, their queues in RAM are not)."""
    waits = [settle(client, url) for url in urls]

    async def wait() -> None:
        for each in waits:
            await each()

    return wait
