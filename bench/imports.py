"""Imports: a large mem0 export imported over HTTP while other users work, as in production.

memproxy (``memproxy serve``) and the scripted backend run as child processes. While one request
imports ``--items`` mem0 memories (default 20,000, distinct texts) into ``user:bench-import``,
two other users keep working: one adds a memory through ``POST /v1/memories`` every
``--every`` seconds (``sync: true``, alternating with ``sync: false``), the other chats (one
request at a time, each journalled for write-back). Afterwards the space is checked: every item
stored, listed and searchable.

How to read the table: *import s* is the import request's wall time (upload, parse, embedding,
store, index); *add p50/max* the other user's add latencies in ms while the import ran, by kind
(*sync* answers once the memory is searchable, *queued* once it is journalled); *chat p50/max*
likewise for chat; *spilled* how many chat exchanges the journal could not take in time (they
wait in the spill file: the store writer was held too long).
"""

from __future__ import annotations

import argparse
import asyncio
import functools
import json
import math
import os
import tempfile
import time
from collections.abc import Awaitable, Callable
from contextlib import ExitStack
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import aiohttp

from bench import memory_api, workload
from bench.machine import cpu_description
from bench.servers import memproxy, scripted_backend
from bench.stats import percentile, table

IMPORT_SPACE = "user:bench-import"


def mem0_export(count: int, *, seed: int = 11) -> bytes:
    """A mem0 ``get_all`` answer with ``count`` memories of distinct text."""
    texts = workload.facts(count, seed=seed)
    items = [
        {
            "id": f"bench-{n:06d}",
            "memory": f"{text[:-1]}, note {n}.",  # one sentence: one entry in the index
            "hash": f"{n:032x}",
            "user_id": "bench-import",
            "created_at": "2024-05-08T10:00:00-07:00",
            "updated_at": None,
            "metadata": None,
        }
        for n, text in enumerate(texts)
    ]
    return json.dumps({"results": items}).encode()


@dataclass
class Latencies:
    """(when it started, on the import's clock; how long it took) of each request, by kind."""

    sync: list[tuple[float, float]] = field(default_factory=list)
    queued: list[tuple[float, float]] = field(default_factory=list)
    chat: list[tuple[float, float]] = field(default_factory=list)
    errors: list[str] = field(default_factory=list)


async def _timed(call: Callable[[], Awaitable[None]], into: list[tuple[float, float]], errors: list[str]) -> None:
    started = time.perf_counter()
    try:
        await call()
    except Exception as exc:
        errors.append(f"{type(exc).__name__}: {exc}"[:200])
        return
    into.append((started, time.perf_counter() - started))


async def _others(client: aiohttp.ClientSession, url: str, *, every: float, stop: asyncio.Event) -> Latencies:
    """The other users' work until ``stop``: adds (sync and queued in turn) and chats."""
    measured = Latencies()
    rng_facts = iter(workload.facts(100_000, seed=23))
    bodies = workload.chat_bodies(user="bench-chat", seed=5)

    async def add(sync: bool) -> None:
        body = {"user": "bench-other", "facts": [next(rng_facts)], "sync": sync}
        async with client.post(f"{url}/v1/memories", json=body, headers=memory_api.HEADERS) as response:
            response.raise_for_status()
            await response.read()

    async def chat() -> None:
        async with client.post(f"{url}/v1/chat/completions", json=next(bodies), headers=memory_api.HEADERS) as response:
            response.raise_for_status()
            await response.read()

    async def adds() -> None:
        sync = True
        while not stop.is_set():
            await _timed(functools.partial(add, sync), measured.sync if sync else measured.queued, measured.errors)
            sync = not sync
            await asyncio.sleep(every)

    async def chats() -> None:
        while not stop.is_set():
            await _timed(chat, measured.chat, measured.errors)
            await asyncio.sleep(every)

    await asyncio.gather(adds(), chats())
    return measured


async def _import(client: aiohttp.ClientSession, url: str, data: bytes) -> tuple[int, dict[str, Any], list[float]]:
    """The import with progress lines: (status, reply, when each progress line came)."""
    params = {"space": IMPORT_SPACE, "format": "mem0"}
    headers = {**memory_api.HEADERS, "content-type": "application/json", "accept": "application/x-ndjson"}
    marks: list[float] = []
    reply: dict[str, Any] = {}
    async with client.post(f"{url}/v1/spaces/import", params=params, data=data, headers=headers) as response:
        async for line in response.content:
            if line.strip():
                reply = json.loads(line)
                marks.append(time.perf_counter())
        return response.status, reply, marks[:-1]


async def _metric(client: aiohttp.ClientSession, url: str, name: str) -> float:
    async with client.get(f"{url}/metrics", headers=memory_api.HEADERS) as response:
        text = await response.text()
    return sum(float(line.split()[-1]) for line in text.splitlines() if line.startswith(name + " "))


def _ms(samples: list[tuple[float, float]], q: float, since: float = -math.inf, until: float = math.inf) -> float:
    return percentile([took for at, took in samples if since <= at < until], q) * 1e3


async def run(args: argparse.Namespace) -> str:
    data = mem0_export(args.items)
    load_before = os.getloadavg()[0]
    with tempfile.TemporaryDirectory(prefix="memproxy-bench-") as tmp, ExitStack() as stack:
        work = Path(tmp)
        backend = stack.enter_context(scripted_backend(latency=0.02, workdir=work))
        proxy = stack.enter_context(memproxy(backend_url=backend.url, workdir=work))
        timeout = aiohttp.ClientTimeout(total=1800)
        async with aiohttp.ClientSession(timeout=timeout) as client:
            await memory_api.seed_space(client, proxy.url, user="bench-other", count=20)
            stop = asyncio.Event()
            others = asyncio.create_task(_others(client, proxy.url, every=args.every, stop=stop))
            await asyncio.sleep(1.0)  # the other users are under way before the import starts
            started = time.perf_counter()
            status, reply, marks = await _import(client, proxy.url, data)
            ended = time.perf_counter()
            stop.set()
            measured = await others
            spilled = await _metric(client, proxy.url, "memproxy_writeback_spilled")
            await memory_api.settle(client, proxy.url)()
            async with client.get(f"{proxy.url}/v1/spaces/{IMPORT_SPACE}", headers=memory_api.HEADERS) as response:
                stats = await response.json()
        spill_file = work / "memproxy-data" / "journal-spill.jsonl"
        spill_lines = len(spill_file.read_text().splitlines()) if spill_file.exists() else 0
    writing = marks[0] if marks else ended
    header = (
        f"imports: {args.items:,} mem0 memories imported over HTTP into one space while another user adds a "
        f"memory and a third chats every {args.every:g} s; times in ms but the import's (s); phases: *read* "
        "(upload, parse, plan) until the first progress line, *write* (embed, index, store) after it; "
        f"{cpu_description()}, load average {load_before:.1f} before, {os.getloadavg()[0]:.1f} after"
    )
    phases = {"read": (started, writing), "write": (writing, ended), "all": (started, ended)}
    body = table(
        ["phase", "s", "sync n", "sync p50", "sync max", "queued p50", "queued max", "chat n", "chat p50", "chat max"],
        [
            [
                name,
                until - since,
                sum(1 for at, _ in measured.sync if since <= at < until),
                _ms(measured.sync, 50, since, until),
                _ms(measured.sync, 100, since, until),
                _ms(measured.queued, 50, since, until),
                _ms(measured.queued, 100, since, until),
                sum(1 for at, _ in measured.chat if since <= at < until),
                _ms(measured.chat, 50, since, until),
                _ms(measured.chat, 100, since, until),
            ]
            for name, (since, until) in phases.items()
        ],
    )
    summary = (
        f"status {status}; imported {reply.get('imported')}; {args.items / (ended - started):.0f} memories/s; "
        f"stored {stats.get('memories', {})}; "
        f"spilled {max(int(spilled), spill_lines)}; errors {len(measured.errors)}"
    )
    slowest = sorted(measured.sync + measured.queued + measured.chat, key=lambda sample: -sample[1])[:3]
    notes = [
        summary,
        "slowest requests (s after the import started, ms): "
        + ", ".join(f"{at - started:.1f}: {took * 1e3:.0f}" for at, took in slowest),
        *[f"error: {e}" for e in measured.errors[:5]],
    ]
    return "\n".join([header, body, *notes])


def add_arguments(parser: argparse.ArgumentParser) -> None:
    group = parser.add_argument_group("imports")
    group.add_argument("--items", type=int, default=20_000, help="memories in the mem0 export (default 20,000)")
    group.add_argument("--every", type=float, default=0.25, help="seconds between the other users' requests")


def main(args: argparse.Namespace) -> None:
    print(asyncio.run(run(args)), flush=True)
