"""Languages: the multilingual test set (``tests/fixtures/multilingual.json``: 8 languages, 20
fact/question pairs each, questions worded otherwise) through the library, per embedder.

Each fact is a user turn distilled by the default (heuristic) reader into one space holding every
language's facts; then each question is searched (``MemoryOS.search``: exactly what chat would
inject, default retrieval settings). *recall* is the share of questions whose fact is among the
injected memories; *p50*/*p99* the search time in ms, one query at a time, the query-embedding
cache off (every question is new to the proxy in real use).
"""

from __future__ import annotations

import argparse
import asyncio
import json
import tempfile
import time
from pathlib import Path

from bench.machine import cpu_description
from bench.stats import percentile, table
from memcubes.config import EmbedderSettings, MemorySettings
from memcubes.exchange import Exchange, Turn
from memcubes.memory_os import MemoryOS

PAIRS_FILE = Path(__file__).resolve().parent.parent / "tests" / "fixtures" / "multilingual.json"
EMBEDDERS = {
    "default": EmbedderSettings(cache_size=0),
    "multilingual": EmbedderSettings(model="multilingual", cache_size=0),
}


def add_arguments(parser: argparse.ArgumentParser) -> None:
    group = parser.add_argument_group("languages")
    group.add_argument("--languages-rounds", type=int, default=3, help="searches of each question (default 3)")


Row = tuple[float, float, float]


async def _measure(settings: MemorySettings, pairs: dict[str, list[list[str]]], rounds: int) -> dict[str, Row]:
    memory = await MemoryOS.open(settings)
    try:
        turns = [Turn(role="user", content=fact) for language in pairs.values() for fact, _, _ in language]
        await memory.add(Exchange(space="polyglot", turns=turns, mode="heuristic"), sync=True)
        results = {}
        for language, items in pairs.items():
            found, times = 0, []
            for _, question, answer in items:
                for _ in range(rounds):
                    started = time.perf_counter()
                    plan = await memory.search(["polyglot"], question)
                    times.append((time.perf_counter() - started) * 1000)
                found += any(answer in item.text for item in plan.items)
            results[language] = (found / len(items), percentile(times, 50), percentile(times, 99))
        return results
    finally:
        await memory.close()


def main(args: argparse.Namespace) -> None:
    pairs = {k: v for k, v in json.loads(PAIRS_FILE.read_text()).items() if not k.startswith("_")}
    print(f"languages: {sum(map(len, pairs.values()))} pairs in {len(pairs)} languages, {cpu_description()}")
    measured = {}
    for name, embedder in EMBEDDERS.items():
        with tempfile.TemporaryDirectory() as data_dir:
            settings = MemorySettings(data_dir=Path(data_dir), embedder=embedder)
            measured[name] = asyncio.run(_measure(settings, pairs, args.languages_rounds))
    rows = []
    for language in pairs:
        row: list[object] = [language]
        for name in EMBEDDERS:
            recall, p50, p99 = measured[name][language]
            row += [recall * 100, p50, p99]
        rows.append(row)
    headers = [f"{name} {column}" for name in EMBEDDERS for column in ("recall %", "p50", "p99")]
    print(table(["language", *headers], rows, digits=1))
