"""The load generator: ``concurrency`` closed-loop workers posting chat requests over aiohttp.

aiohttp rather than httpx: measured here, httpx's client spent ~2.5 ms of CPU per request at
concurrency 32 against ~0.1 ms for aiohttp, and on 2 cores the client's CPU is taken from the
servers under test. One connection pool per target, sized to the concurrency, kept alive.

A request counts as an error (by kind, never hidden) unless it answers 200 with a completion, or,
streamed, a stream with no error event that ends as its API ends one (``data: [DONE]``,
``message_stop``, ``response.completed``: ``bench.wires``); for memproxy also unless
``x-memory-status`` says what was asked for (``degraded`` means memory was skipped). Time to first token is the
first event whose delta carries non-empty content.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import time
from collections import Counter
from collections.abc import Awaitable, Callable, Iterator, Mapping
from dataclasses import dataclass, field
from typing import Any

import aiohttp

from bench.servers import MASTER_KEY, Server
from bench.wires import CHAT, Wire


@dataclass(frozen=True)
class Target:
    """One thing to measure: a chat-completions URL, its headers, the process behind it (for RSS)
    and, for memproxy with memory on, how to wait for its background write-back to finish."""

    name: str
    url: str
    headers: Mapping[str, str] = field(default_factory=dict)
    server: Server | None = None
    settle: Callable[[], Awaitable[None]] | None = None
    memory_status: str | None = None  # the x-memory-status every answer must carry, if any
    wire: Wire = CHAT  # the API it speaks (the url is that API's path)
    # the same URL on other replicas: requests alternate between ``url`` and these, as a
    # round-robin load balancer would send them
    replicas: tuple[str, ...] = ()

    def url_of(self, request: int) -> str:
        urls = (self.url, *self.replicas)
        return urls[request % len(urls)]


@dataclass
class Sample:
    latencies: list[float] = field(default_factory=list)  # seconds, whole response, successes only
    ttfts: list[float] = field(default_factory=list)  # seconds, streams only
    memory_ms: list[float] = field(default_factory=list)  # memproxy's x-memory-overhead-ms
    errors: Counter[str] = field(default_factory=Counter)
    wall: float = 0.0  # seconds of load, plus the time the target needed to settle afterwards
    peak_rss_mib: float = float("nan")

    def extend(self, other: Sample) -> None:
        self.latencies += other.latencies
        self.ttfts += other.ttfts
        self.memory_ms += other.memory_ms
        self.errors.update(other.errors)
        self.wall += other.wall
        if not other.peak_rss_mib <= self.peak_rss_mib:  # NaN-safe max
            self.peak_rss_mib = other.peak_rss_mib

    @property
    def completed(self) -> int:
        return len(self.latencies)

    @property
    def error_count(self) -> int:
        return sum(self.errors.values())

    @property
    def rps(self) -> float:
        return self.completed / self.wall if self.wall else float("nan")


def session(concurrency: int) -> aiohttp.ClientSession:
    """A connection pool for one target. Idle connections are dropped after 4 s, before uvicorn's
    5 s keep-alive timeout closes them under a request being sent (a target sits idle while the
    others take their turn)."""
    connector = aiohttp.TCPConnector(
        limit=concurrency, limit_per_host=concurrency, keepalive_timeout=4.0, ttl_dns_cache=None
    )
    return aiohttp.ClientSession(connector=connector, timeout=aiohttp.ClientTimeout(total=120))


@dataclass(frozen=True)
class Outcome:
    latency: float = 0.0
    ttft: float | None = None
    memory_ms: float | None = None
    error: str | None = None


async def _request(client: aiohttp.ClientSession, target: Target, body: bytes, *, stream: bool, url: str) -> Outcome:
    headers = {"content-type": "application/json", "authorization": f"Bearer {MASTER_KEY}", **target.headers}
    started = time.perf_counter()
    ttft: float | None = None
    try:
        async with client.post(url, data=body, headers=headers) as response:
            if response.status != 200:
                await response.read()
                return Outcome(error=f"HTTP {response.status}")
            status = response.headers.get("x-memory-status")
            if target.memory_status is not None and status != target.memory_status:
                await response.read()
                return Outcome(error=f"x-memory-status {status}")
            overhead = response.headers.get("x-memory-overhead-ms")
            memory_ms = float(overhead) if overhead else None
            wire = target.wire
            if not stream:
                if wire.answered not in await response.read():
                    return Outcome(error=wire.missing_answer)
                return Outcome(time.perf_counter() - started, None, memory_ms)
            done = False
            async for line in response.content:
                if not line.startswith(b"data:"):
                    continue
                payload = line[5:].strip()
                if wire.is_end(payload):
                    done = True
                elif wire.is_error(payload):
                    return Outcome(error="error event in stream")
                elif ttft is None and wire.first_content(payload):
                    ttft = time.perf_counter() - started
            if not done:
                return Outcome(error=f"stream ended without {wire.end_name}")
            return Outcome(time.perf_counter() - started, ttft, memory_ms)
    except TimeoutError:
        return Outcome(error="timeout")
    except aiohttp.ClientError as exc:
        return Outcome(error=type(exc).__name__)


async def _sample_rss(server: Server, peak: list[float], stop: asyncio.Event) -> None:
    while not stop.is_set():
        rss = server.rss_mib()
        if rss == rss:  # not NaN
            peak[0] = max(peak[0], rss)
        with contextlib.suppress(TimeoutError):
            await asyncio.wait_for(stop.wait(), 0.2)


async def run_load(
    client: aiohttp.ClientSession,
    target: Target,
    bodies: Iterator[dict[str, Any]],
    *,
    requests: int,
    concurrency: int,
    stream: bool,
    seconds: float = float("inf"),
) -> Sample:
    """``requests`` POSTs of successive ``bodies`` by ``concurrency`` workers, fewer if ``seconds``
    run out first; then wait for the target to settle (that time counts towards the wall clock,
    so req/s is a sustained rate)."""
    sample = Sample()
    remaining = requests
    deadline = time.perf_counter() + seconds

    async def worker() -> None:
        nonlocal remaining
        while remaining > 0 and time.perf_counter() < deadline:
            remaining -= 1
            body = json.dumps({**target.wire.request(next(bodies)), "stream": stream}).encode()
            outcome = await _request(client, target, body, stream=stream, url=target.url_of(remaining))
            if outcome.error is not None:
                sample.errors[outcome.error] += 1
                continue
            sample.latencies.append(outcome.latency)
            if outcome.ttft is not None:
                sample.ttfts.append(outcome.ttft)
            if outcome.memory_ms is not None:
                sample.memory_ms.append(outcome.memory_ms)

    peak = [0.0]
    stop = asyncio.Event()
    sampler = asyncio.create_task(_sample_rss(target.server, peak, stop)) if target.server else None
    started = time.perf_counter()
    await asyncio.gather(*(worker() for _ in range(concurrency)))
    if target.settle is not None:
        try:
            await target.settle()
        except TimeoutError:
            sample.errors["background work did not settle"] += 1
    sample.wall = time.perf_counter() - started
    stop.set()
    if sampler is not None:
        await sampler
    sample.peak_rss_mib = peak[0] or float("nan")
    return sample
