"""Added latency of the proxy over calling the backend directly, memory off and on.

One run, one scripted backend with a fixed latency, one load generator; the configurations are
measured in interleaved rounds. "memory on" uses a space of 1,000 memories: every request
retrieves and injects from it and is journalled and distilled (write-back) in the background.
"""

from __future__ import annotations

import argparse
import asyncio
import itertools
import random
import tempfile
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx

from bench.harness import Sample, load, memproxy, model_entry, percentile, scripted_backend, table

WORDS = (
    "tea coffee hiking Lisbon Porto cats dogs jazz piano cello marathon sushi pasta Berlin garden bees tomatoes "
    "chess novels cycling yoga Python painting sailing tennis ramen Tokyo violin"
).split()


def facts(count: int, seed: int = 7) -> list[str]:
    rng = random.Random(seed)
    return [
        f"Note {i}: the user {rng.choice(['likes', 'owns', 'visited', 'plans'])} "
        f"{rng.choice(WORDS)} and {rng.choice(WORDS)} ({rng.randint(1990, 2025)})."
        for i in range(count)
    ]


def bodies(model: str, user: str, seed: int = 11) -> Iterator[dict[str, Any]]:
    rng = random.Random(seed)
    for i in itertools.count():
        text = f"I enjoy {rng.choice(WORDS)} on weekends. What goes well with {rng.choice(WORDS)}? ({i})"
        yield {
            "model": model,
            "user": user,
            "messages": [
                {"role": "system", "content": "You are a helpful assistant."},
                {"role": "user", "content": text},
            ],
        }


async def seed_space(url: str, user: str, count: int) -> None:
    async with httpx.AsyncClient(base_url=url, timeout=300) as client:
        items = facts(count)
        for start in range(0, count, 200):
            response = await client.post(
                "/v1/memories", json={"user": user, "facts": items[start : start + 200], "sync": True}
            )
            response.raise_for_status()


async def measure(
    targets: dict[str, tuple[str, dict[str, str]]],
    *,
    concurrency: int,
    requests: int,
    rounds: int,
    stream: bool,
    user: str,
) -> dict[str, Sample]:
    results = {name: Sample() for name in targets}
    limits = httpx.Limits(max_connections=concurrency * 2, max_keepalive_connections=concurrency * 2)
    async with httpx.AsyncClient(timeout=120, limits=limits) as client:
        for url, headers in targets.values():  # warm-up: connections, caches, code paths
            await load(
                client,
                url,
                bodies("bench", user, seed=99),
                requests=max(100, concurrency * 8),
                concurrency=concurrency,
                headers=headers,
                stream=stream,
            )
        for round_number in range(rounds):
            for name, (url, headers) in targets.items():
                results[name].extend(
                    await load(
                        client,
                        url,
                        bodies("bench", user, seed=round_number),
                        requests=requests // rounds,
                        concurrency=concurrency,
                        headers=headers,
                        stream=stream,
                    )
                )
    return results


def rows(results: dict[str, Sample], concurrency: int, mode: str) -> list[list[object]]:
    direct = results["direct"]
    out: list[list[object]] = []
    for name, sample in results.items():
        p50, p99 = percentile(sample.latencies, 50) * 1e3, percentile(sample.latencies, 99) * 1e3
        added50 = p50 - percentile(direct.latencies, 50) * 1e3
        added99 = p99 - percentile(direct.latencies, 99) * 1e3
        ttft = percentile(sample.ttfts, 50) * 1e3 if sample.ttfts else float("nan")
        out.append(
            [
                mode,
                concurrency,
                name,
                p50,
                p99,
                added50 if name != "direct" else 0.0,
                added99 if name != "direct" else 0.0,
                ttft,
                sample.rps,
                sample.errors,
            ]
        )
    return out


async def run(args: argparse.Namespace) -> str:
    user = "bench-user"
    with (
        tempfile.TemporaryDirectory() as tmp,
        scripted_backend(latency=args.latency, chunk_interval=args.chunk_interval) as backend,
    ):
        work = Path(tmp)
        config = {
            "model_list": [model_entry("bench", backend.url)],
            "memory": {"data_dir": str(work / "data"), "extraction": {"mode": "heuristic"}},
        }
        with memproxy(config, work) as proxy:
            await seed_space(proxy.url, user, args.memories)
            targets = {
                "direct": (f"{backend.url}/v1/chat/completions", {}),
                "memory off": (f"{proxy.url}/v1/chat/completions", {"X-Memory-Mode": "off"}),
                "memory on": (f"{proxy.url}/v1/chat/completions", {}),
            }
            all_rows: list[list[object]] = []
            for stream in args.stream_modes:
                for concurrency in args.concurrency:
                    requests = args.requests if concurrency == 1 else args.requests * 4
                    results = await measure(
                        targets,
                        concurrency=concurrency,
                        requests=requests,
                        rounds=args.rounds,
                        stream=stream,
                        user=user,
                    )
                    all_rows += rows(results, concurrency, "stream" if stream else "json")
            peak = proxy.rss_mb()
    header = (
        f"proxy overhead: scripted backend latency {args.latency * 1e3:.0f} ms, "
        f"{args.memories} memories in the space, rounds={args.rounds}; proxy peak RSS {peak:.0f} MiB"
    )
    return (
        header
        + "\n"
        + table(
            ["mode", "conc", "target", "p50 ms", "p99 ms", "added p50", "added p99", "ttft p50", "req/s", "errors"],
            all_rows,
        )
    )


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--latency", type=float, default=0.02, help="backend latency, seconds")
    parser.add_argument("--chunk-interval", type=float, default=0.0)
    parser.add_argument("--memories", type=int, default=1000)
    parser.add_argument("--requests", type=int, default=200, help="per target at concurrency 1 (x4 at higher)")
    parser.add_argument("--rounds", type=int, default=2)
    parser.add_argument("--concurrency", type=int, nargs="+", default=[1, 16])
    parser.add_argument("--stream-modes", type=lambda v: v == "stream", nargs="+", default=[False])


def main(args: argparse.Namespace) -> None:
    print(asyncio.run(run(args)), flush=True)
