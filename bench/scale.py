"""Scale: how insert rate, search latency, memory and disk grow with the store, and write-back
throughput, so users can size a machine.

memproxy's real store is used in-process through the library API (``MemoryOS`` over ``Store``,
vectors in SQLite, default settings), with ``spaces`` users (default 1,000) grown together to each
checkpoint (10k, 100k, 1M memories in total; ``--max`` picks how far, default 100k).

How to read the tables:

- *insert/s*: memories per second of a bulk insert through the real write path
  (``Store.apply``: cube, vectors, history and outbox rows in one SQLite transaction per space and
  stage, the lexical postings included; then ``IndexSync.drain``: the outbox replayed, into the ANN index only for
  spaces above ``ann_min_entries``). Embedding 1M texts with
  the real model would take hours here, so vectors are precomputed: a pool of real MiniLM
  embeddings of synthetic facts, each memory its pool sentence's vector plus Gaussian noise
  (cosine ~0.9 to it), its text that sentence with a number (still one sentence: a memory of
  several sentences also indexes each of them, which needs the embedder). *store s* / *index s*
  split the time.
- *cold* / *warm*: ``MemoryOS.search`` (what chat injects: real query embedding, dense and
  BM25 retrieval, fusion, loading cubes, token packing), one query at a time, query cache off,
  in ``queries`` distinct random spaces: *cold* is the first search in a space since the store
  grew (its vectors not in RAM: read from SQLite), *warm* a second one in the same space later
  (what memory caches per space, it holds by then). *-embed*: the same in ``queries`` other
  spaces, the query's embedding computed beforehand (an embedder cache hit), i.e. without it.
  *embed*, *dense* (the exact vector search of a space held in RAM) and *lexical*
  (``Store.lexical``: BM25 over the space's postings, ``memcubes.lexicon``) are parts of a
  search timed alone. Times in ms. RSS is this process's (embedding model
  included: see *baseline*); *disk* the data directory (SQLite and Chroma) but SQLite's WAL,
  also per memory; *WAL* the write-ahead log as the bulk insert left it (reset at a checkpoint).
  With ``--store postgresql`` the store is a throwaway PostgreSQL server started for the run
  (``bench.store``; its processes' RSS is not in *RSS*); *disk* is then its data directory
  (``pg_wal`` apart, as *WAL*) plus the data dir (Chroma).
- *write-back*: chat exchanges (a user turn stating a new fact, an answer) journalled through
  ``MemoryOS.record`` in a burst, distilled by the write-back workers with batched embedding
  (real model), reconciled against the space and indexed; memories per second until all are
  searchable. *sync add* is one exchange processed while the caller waits (``sync: true``).
"""

from __future__ import annotations

import argparse
import asyncio
import os
import random
import tempfile
import time
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from pathlib import Path

import numpy as np

from bench import workload
from bench.machine import cpu_description
from bench.servers import proc_status_mib
from bench.stats import percentile, table
from bench.store import databases
from memcubes.config import MemorySettings
from memcubes.cube import MemCube
from memcubes.embedder import Vectors
from memcubes.exchange import Exchange, Turn
from memcubes.memory_os import MemoryOS
from memcubes.retrieval import query_terms
from memcubes.store import ChangeSet, HistoryEvent

CHECKPOINTS = (10_000, 100_000, 1_000_000)


@dataclass(frozen=True)
class Targets:
    """What the largest size must reach, per store (issue 13 for SQLite, issue 14 for PostgreSQL):
    search cold and warm, the query embedding included."""

    search_p50_ms: float
    search_p99_ms: float | None
    writeback: float = 100.0  # memories per second
    sync_add_p50_ms: float | None = None
    rss_mib: float | None = None
    insert: float | None = None  # memories per second, bulk


TARGETS = {
    "sqlite": Targets(search_p50_ms=15.0, search_p99_ms=40.0, sync_add_p50_ms=30.0, rss_mib=2048.0, insert=2000.0),
    "postgresql": Targets(search_p50_ms=20.0, search_p99_ms=None),
}
POOL_SIZE = 2048
NOISE = 0.02  # per dimension: |noise| ~ 0.4 in 384 dimensions, cosine ~0.9 to the pool vector


@dataclass(frozen=True)
class Pool:
    texts: list[str]
    vectors: Vectors


@dataclass(frozen=True)
class Growth:
    memories: int
    store_seconds: float
    index_seconds: float


@dataclass(frozen=True)
class Searches:
    cold: list[float]
    warm: list[float]
    cold_bare: list[float]  # the query's embedding computed beforehand
    warm_bare: list[float]
    embed: list[float]
    dense: list[float]
    lexical: list[float]


@dataclass(frozen=True)
class WriteBackRun:
    exchanges: int
    written: int
    seconds: float
    sync_add: list[float]


def rss_mib() -> float:
    return proc_status_mib(os.getpid(), "VmRSS")


def disk_bytes(*paths: Path | None) -> tuple[int, int]:
    """Bytes of the store's files but the write-ahead log, and of the log (SQLite's ``-wal`` file
    keeps the size it grew to in a burst of writes until a checkpoint resets it; PostgreSQL's
    ``pg_wal`` segments)."""
    files = [f for path in paths if path is not None for f in path.rglob("*") if f.is_file()]
    wal = sum(f.stat().st_size for f in files if f.name.endswith("-wal") or f.parent.name == "pg_wal")
    return sum(f.stat().st_size for f in files) - wal, wal


async def build_pool(memory: MemoryOS, size: int) -> Pool:
    texts = workload.facts(size, seed=2024)
    vectors = [await memory.embedder.embed(texts[i : i + 256], urgent=False) for i in range(0, size, 256)]
    return Pool(texts, np.concatenate(vectors))


def synthetic(space: str, count: int, pool: Pool, rng: np.random.Generator) -> tuple[list[MemCube], Vectors]:
    picks = rng.integers(0, len(pool.texts), size=count)
    vectors = pool.vectors[picks] + rng.normal(0.0, NOISE, size=(count, pool.vectors.shape[1])).astype(np.float32)
    vectors /= np.linalg.norm(vectors, axis=1, keepdims=True)
    start = datetime(2024, 1, 1, tzinfo=UTC)
    cubes = [
        MemCube(
            space=space,
            content=f"{pool.texts[pick].rstrip('.')} (note {rng.integers(1_000_000)}).",
            created_at=start + timedelta(minutes=int(rng.integers(0, 500_000))),
        )
        for pick in picks
    ]
    return cubes, vectors.astype(np.float32)


async def grow(memory: MemoryOS, spaces: Sequence[str], add_per_space: int, pool: Pool, seed: int) -> Growth:
    """Add ``add_per_space`` memories to every space through the store's one write path (vectors
    with their cubes) and the index outbox, with precomputed vectors (no embedding, no
    reconcile: a bulk import)."""
    rng = np.random.default_rng(seed)
    store_seconds = index_seconds = 0.0
    for space in spaces:
        cubes, vectors = synthetic(space, add_per_space, pool, rng)
        changes = ChangeSet(cubes=cubes, events=[HistoryEvent(cube, "ADD", "bench import") for cube in cubes])
        started = time.perf_counter()
        known = {cube.id: vector for cube, vector in zip(cubes, vectors, strict=True)}
        await memory.vectors.attach(changes, known, embedder=memory.embedder)
        await asyncio.to_thread(memory.store.apply, changes)
        stored = time.perf_counter()
        await memory.index_sync.drain(urgent=True)
        store_seconds += stored - started
        index_seconds += time.perf_counter() - stored
    return Growth(add_per_space * len(spaces), store_seconds, index_seconds)


def query(rng: random.Random) -> str:
    return f"{workload.fact(rng)} What do you remember about {rng.choice(workload.TOPICS)}?"


async def search(memory: MemoryOS, spaces: Sequence[str], count: int, seed: int) -> Searches:
    """``count`` searches in distinct random spaces, each the first in its space since the store
    grew (cold: not in RAM), then one more in each of them, in the same order (warm); the same
    in ``count`` other spaces with each query embedded beforehand; then the parts alone."""
    rng = random.Random(seed)
    chosen = rng.sample(list(spaces), min(2 * count, len(spaces)))
    picked = [(space, query(rng)) for space in chosen[:count]]
    bare = [(space, query(rng)) for space in chosen[count:]]
    for space in chosen:
        memory.hot.drop(space)
    # What the process loads once on its first search (the tokenizer: ~0.9 s here) is not a search's.
    if rest := sorted(set(spaces) - set(chosen)):
        await memory.search([rest[0]], "warm-up")
    result = Searches([], [], [], [], [], [], [])
    for timings in (result.cold, result.warm):
        for space, text in picked:
            started = time.perf_counter()
            await memory.search([space], f"{text} ({len(timings)})")
            timings.append(time.perf_counter() - started)
    for timings in (result.cold_bare, result.warm_bare):
        for space, text in bare:
            asked = f"{text} ({len(timings)})"
            await memory.embedder.embed([asked])  # now a cache hit
            started = time.perf_counter()
            await memory.search([space], asked)
            timings.append(time.perf_counter() - started)
    for space, text in picked:
        started = time.perf_counter()
        vector = (await memory.embedder.embed([f"{text} (parts)"]))[0]
        result.embed.append(time.perf_counter() - started)
        started = time.perf_counter()
        await memory.retriever.dense(space, vector)
        result.dense.append(time.perf_counter() - started)
        started = time.perf_counter()
        await asyncio.to_thread(
            memory.store.lexical, space, query_terms(text), limit=memory.settings.retrieval.candidates
        )
        result.lexical.append(time.perf_counter() - started)
    return result


def exchange(space: str, rng: random.Random) -> Exchange:
    turns = [
        Turn(role="user", content=f"{workload.fact(rng)} Any ideas for this weekend? (#{rng.getrandbits(40)})"),
        Turn(role="assistant", content="Here are a few ideas for your weekend."),
    ]
    return Exchange(space=space, turns=turns, mode="heuristic", skip_seen=True)


async def write_back(memory: MemoryOS, spaces: Sequence[str], count: int, seed: int) -> WriteBackRun:
    """A burst of ``count`` journalled exchanges until all are searchable; then synchronous adds."""
    rng = random.Random(seed)
    before = await asyncio.to_thread(memory.store.count)
    started = time.perf_counter()
    for _ in range(count):
        await memory.record(exchange(rng.choice(spaces), rng))
    await memory.writeback.wait_idle()
    await memory.index_sync.drain(urgent=True)  # written to the index, not only staged
    seconds = time.perf_counter() - started
    written = await asyncio.to_thread(memory.store.count) - before
    sync_add = []
    for _ in range(max(20, count // 10)):
        added = exchange(rng.choice(spaces), rng)
        started = time.perf_counter()
        await memory.add(added, sync=True)
        sync_add.append(time.perf_counter() - started)
    return WriteBackRun(count, written, seconds, sync_add)


def ms(values: Sequence[float], q: float) -> float:
    return percentile(values, q) * 1e3


async def run(args: argparse.Namespace) -> str:
    checkpoints = sorted({c for c in CHECKPOINTS if c <= args.max} | {args.max})
    spaces = [f"user:scale-{i:04d}" for i in range(args.spaces)]
    load_before = os.getloadavg()[0]
    with tempfile.TemporaryDirectory(prefix="memproxy-scale-", dir=args.workdir) as tmp, databases(args.store) as store:
        data_dir = Path(tmp)
        settings = MemorySettings(data_dir=data_dir, database_url=store.url())
        memory = await MemoryOS.open(settings)
        await memory.start()
        try:
            baseline = rss_mib()
            pool = await build_pool(memory, POOL_SIZE)
            grown, per_space = [], 0
            write_backs = []
            for number, total in enumerate(checkpoints):
                target = total // len(spaces)
                growth = await grow(memory, spaces, target - per_space, pool, seed=number)
                per_space = target
                searches = await search(memory, spaces, args.queries, seed=100 + number)
                grown.append((total, per_space, growth, searches, rss_mib(), disk_bytes(data_dir, store.files)))
                write_backs.append((total, await write_back(memory, spaces, args.writeback, seed=200 + number)))
                print(f"  scale: {total:,} memories done", flush=True)
            peak = proc_status_mib(os.getpid(), "VmHWM")
        finally:
            await memory.close()
    header = (
        f"scale: {args.spaces:,} spaces grown together to {', '.join(f'{c:,}' for c in checkpoints)} memories "
        f"in {store.description}; "
        f"bulk insert with precomputed vectors ({POOL_SIZE} real MiniLM embeddings + noise); "
        f"{args.queries} cold and {args.queries} warm searches per checkpoint, one at a time, each query new "
        f"(and as many with the query embedded beforehand); ann_min_entries "
        f"{MemorySettings().vector_index.ann_min_entries:,}, vectors {MemorySettings().vector_index.precision}; "
        f"RSS baseline (model loaded, store empty) {baseline:.0f} MiB, peak {peak:.0f} MiB; "
        f"{cpu_description()}, load average {load_before:.1f} before, {os.getloadavg()[0]:.1f} after"
    )
    growth_rows = [
        [
            f"{total:,}",
            per,
            g.memories / (g.store_seconds + g.index_seconds),
            g.store_seconds,
            g.index_seconds,
            ms(s.cold, 50),
            ms(s.cold, 99),
            ms(s.warm, 50),
            ms(s.warm, 99),
            ms(s.cold_bare, 50),
            ms(s.cold_bare, 99),
            ms(s.warm_bare, 50),
            ms(s.warm_bare, 99),
            ms(s.embed, 50),
            ms(s.dense, 50),
            ms(s.dense, 99),
            ms(s.lexical, 50),
            ms(s.lexical, 99),
            rss,
            disk / 2**20,
            wal / 2**20,
            disk / total,
        ]
        for total, per, g, s, rss, (disk, wal) in grown
    ]
    growth_table = table(
        [
            "memories",
            "per space",
            "insert/s",
            "store s",
            "index s",
            "cold p50",
            "p99",
            "warm p50",
            "p99",
            "cold-embed p50",
            "p99",
            "warm-embed p50",
            "p99",
            "embed p50",
            "dense p50",
            "p99",
            "lexical p50",
            "p99",
            "RSS MiB",
            "disk MiB",
            "WAL MiB",
            "bytes/memory",
        ],
        growth_rows,
    )
    wb_rows = [
        [
            f"{total:,}",
            w.exchanges,
            w.written,
            w.exchanges / w.seconds,
            w.written / w.seconds,
            ms(w.sync_add, 50),
            ms(w.sync_add, 99),
        ]
        for total, w in write_backs
    ]
    wb_header = (
        f"write-back at each size: a burst of {args.writeback} chat exchanges into random spaces "
        "(heuristic extraction, real embedder, batched), until searchable"
    )
    wb_table = table(
        ["memories", "exchanges", "memories written", "exchanges/s", "memories/s", "sync add p50 ms", "p99"],
        wb_rows,
    )
    total, _, growth, last, _, _ = grown[-1]
    goal = TARGETS[args.store]
    wb = write_backs[-1][1]
    checks = [
        (f"search {name} p{q}", ms(values, q), "ms", limit, True)
        for name, values in (("cold", last.cold), ("warm", last.warm))
        for q, limit in ((50, goal.search_p50_ms), (99, goal.search_p99_ms))
    ]
    checks += [
        ("write-back", wb.written / wb.seconds, "memories/s", goal.writeback, False),
        ("sync add p50", ms(wb.sync_add, 50), "ms", goal.sync_add_p50_ms, True),
        ("peak RSS", peak, "MiB", goal.rss_mib, True),
        ("bulk insert", growth.memories / (growth.store_seconds + growth.index_seconds), "/s", goal.insert, False),
    ]
    verdicts = [
        f"{total:,} memories: {name} {value:.1f} {unit} {'<=' if upper else '>='} {limit:g}: "
        + ("met" if (value <= limit if upper else value >= limit) else "MISSED")
        for name, value, unit, limit, upper in checks
        if limit is not None
    ]
    return "\n".join([header, growth_table, "", wb_header, wb_table, "", *verdicts])


def add_arguments(parser: argparse.ArgumentParser) -> None:
    group = parser.add_argument_group("scale")
    group.add_argument("--max", type=int, default=100_000, help="grow the store to this many memories (1000000 for 1M)")
    group.add_argument("--spaces", type=int, default=1000, help="spaces (users) the memories are spread over")
    group.add_argument("--queries", type=int, default=200, help="searches per checkpoint")
    group.add_argument("--writeback", type=int, default=200, help="exchanges per write-back burst")
    group.add_argument("--workdir", type=Path, default=None, help="where the temporary store goes (default: /tmp)")


def main(args: argparse.Namespace) -> None:
    print(asyncio.run(run(args)), flush=True)
