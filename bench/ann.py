"""ANN threshold: at what size of a space does its exact search (vectors read from SQLite,
decoded, one matrix product) cost more than a query of its Chroma collection? The answer is the
default of ``vector_index.ann_min_entries``.

For each size, one space of that many entries (MiniLM-sized random unit vectors, stored as
configured: float16 by default) is written to a fresh store and to an embedded Chroma collection,
then searched ``--ann-queries`` times, one at a time:

- *exact cold*: ``HotVectors.space`` with nothing in RAM (one range read of the ``vectors`` table,
  decoding, building the space's matrix) plus the ranking: a search of a space not held;
- *exact warm*: the ranking alone over the matrix held in RAM (whole texts and sentences scored
  together, ``SpaceVectors.ranked``);
- *chroma*: ``ChromaIndex.query`` for the 50 nearest whole texts (HNSW), the collection warm in
  Chroma's own cache (after one query); *chroma first* is that first query after opening the
  collection.

Times in ms (p50). The threshold is where *exact cold* passes *chroma*: above it a space is
searched through the ANN index (and held in RAM only if it fits the budget anyway).
"""

from __future__ import annotations

import argparse
import asyncio
import os
import tempfile
import time
from pathlib import Path

import numpy as np

from bench.machine import cpu_description
from bench.stats import percentile, table
from memcubes.config import VectorIndexSettings
from memcubes.cube import MemCube
from memcubes.hot_vectors import HotVectors
from memcubes.store import ChangeSet, Store
from memcubes.vector_store import WHOLE, VectorEntry, VectorStore
from memcubes.vectors import ChromaIndex

DIMENSION = 384
SPACE = "user:ann"


def entries_of(count: int, rng: np.random.Generator) -> tuple[list[MemCube], list[VectorEntry]]:
    vectors = rng.standard_normal((count, DIMENSION)).astype(np.float32)
    vectors /= np.linalg.norm(vectors, axis=1, keepdims=True)
    cubes = [MemCube(space=SPACE, content=f"memory number {i}") for i in range(count)]
    return cubes, [VectorEntry(cube.id, WHOLE, vectors[i]) for i, cube in enumerate(cubes)]


async def measure(size: int, queries: int, workdir: Path | None) -> list[float]:
    rng = np.random.default_rng(size)
    with tempfile.TemporaryDirectory(prefix="memproxy-ann-", dir=workdir) as tmp:
        store = Store.open(Path(tmp) / "memproxy.db")
        vectors = VectorStore(store, dimension=DIMENSION)
        index = ChromaIndex(VectorIndexSettings(), Path(tmp))
        try:
            cubes, entries = entries_of(size, rng)
            for start in range(0, size, 5000):
                changes = ChangeSet(cubes=cubes[start : start + 5000])
                changes.vectors = vectors.encoded(entries[start : start + 5000])
                store.apply(changes)
            await index.upsert(SPACE, entries)
            asked = rng.standard_normal((queries, DIMENSION)).astype(np.float32)
            asked /= np.linalg.norm(asked, axis=1, keepdims=True)
            cold, warm, ann = [], [], []
            for query in asked:
                hot = HotVectors(vectors, index, budget_bytes=2**34, ann_min_entries=size)
                started = time.perf_counter()
                held = await hot.space(SPACE)
                assert held is not None
                held.ranked(query, sentence_weight=0.5, limit=50)
                cold.append(time.perf_counter() - started)
                started = time.perf_counter()
                held.ranked(query, sentence_weight=0.5, limit=50)
                warm.append(time.perf_counter() - started)
            reopened = ChromaIndex(VectorIndexSettings(), Path(tmp))
            started = time.perf_counter()
            await reopened.query(SPACE, asked[0], limit=50)
            first = time.perf_counter() - started
            for query in asked:
                started = time.perf_counter()
                await reopened.query(SPACE, query, limit=50)
                ann.append(time.perf_counter() - started)
        finally:
            store.close()
    return [1e3 * percentile(cold, 50), 1e3 * percentile(warm, 50), 1e3 * percentile(ann, 50), 1e3 * first]


def run(args: argparse.Namespace) -> str:
    rows = []
    for size in args.ann_sizes:
        rows.append([f"{size:,}", *asyncio.run(measure(size, args.ann_queries, args.workdir))])
        print(f"  ann: {size:,} entries done", flush=True)
    header = (
        f"ann: one space of N entries ({DIMENSION} dimensions, {VectorIndexSettings().precision} in SQLite), "
        f"{args.ann_queries} queries each, p50 ms; {cpu_description()}, load average {os.getloadavg()[0]:.1f}"
    )
    return "\n".join([header, table(["entries", "exact cold", "exact warm", "chroma", "chroma first"], rows)])


def add_arguments(parser: argparse.ArgumentParser) -> None:
    group = parser.add_argument_group("ann")
    group.add_argument(
        "--ann-sizes", type=int, nargs="+", default=[1_000, 10_000, 30_000, 100_000], help="entries per space"
    )
    group.add_argument("--ann-queries", type=int, default=20, help="searches per size")


def main(args: argparse.Namespace) -> None:
    print(run(args), flush=True)
