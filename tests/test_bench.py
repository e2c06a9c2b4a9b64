"""The benchmark harness itself (no timings asserted: benchmarks are not tests): percentiles,
tables, the section registry, and a load generator that counts every failure by kind."""

from __future__ import annotations

import math

import httpx

from bench.__main__ import SECTIONS, build_parser
from bench.backend import REPLY, SameStep
from bench.load import Target, run_load, session
from bench.prefix_cache import PrefixCache
from bench.stats import percentile, table
from bench.workload import chat_bodies, facts
from proxy.dev.scripted_backend import BackendScript, build_scripted_backend
from proxy.dev.serve_thread import ServerThread
from tests.conftest import Backend


def test_percentile_is_nearest_rank() -> None:
    values = [float(v) for v in range(100, 0, -1)]
    assert percentile(values, 50) == 50.0
    assert percentile(values, 99) == 99.0
    assert percentile(values, 100) == 100.0
    assert percentile([7.0], 99) == 7.0
    assert math.isnan(percentile([], 50))


def test_table_aligns_columns_and_marks_missing_values() -> None:
    text = table(["name", "ms"], [["a", 1.25], ["long name", None], ["c", float("nan")]])
    lines = text.splitlines()
    assert lines[0] == "     name |  ms"
    assert set(lines[1]) <= {"-", "+"}
    assert lines[2].endswith("| 1.2") or lines[2].endswith("| 1.3")
    assert lines[3].endswith("|   -") and lines[4].endswith("|   -")
    assert len({len(line) for line in lines}) == 1


def test_every_section_registers_its_options_without_clashes() -> None:
    args = build_parser().parse_args(["scale", "--max", "1000", "--concurrency", "1", "--modes", "json"])
    assert args.sections == ["scale"] and args.max == 1000 and args.concurrency == [1]
    assert args.store == "sqlite" and args.replicas == 1
    args = build_parser().parse_args(["overhead", "scale", "--store", "postgresql", "--replicas", "2"])
    assert (args.store, args.replicas) == ("postgresql", 2)  # one option for both sections
    for section in SECTIONS.values():
        assert callable(section.add_arguments) and callable(section.main)
        assert section.__doc__


def test_workload_is_deterministic_and_never_repeats_a_turn() -> None:
    assert facts(50, seed=3) == facts(50, seed=3)
    bodies = chat_bodies(user="u", seed=1)
    turns = [next(bodies)["messages"][-1]["content"] for _ in range(200)]
    assert len(set(turns)) == 200


def test_the_bench_backend_answers_every_request_alike() -> None:
    script = BackendScript(steps=SameStep({"text": REPLY}), record=False)
    with ServerThread(build_scripted_backend(script)) as server:
        for _ in range(3):
            body = {"model": "m", "messages": [{"role": "user", "content": "<memories>\n- a fact\n</memories> hi"}]}
            answer = httpx.post(f"{server.url}/v1/chat/completions", json=body).json()
            assert answer["choices"][0]["message"]["content"] == REPLY


async def test_load_counts_failures_by_kind_and_times_only_successes(backend: Backend) -> None:
    target = Target("scripted", f"{backend.url}/v1/chat/completions")
    backend.queue({"text": "fine"}, {"status": 500}, {"invalid_json": True})
    async with session(1) as client:
        sample = await run_load(client, target, chat_bodies(user="u", seed=1), requests=3, concurrency=1, stream=False)
    assert sample.completed == 1 and sample.errors == {"HTTP 500": 1, "no choices in answer": 1}

    backend.queue({"text": "one two three four"}, {"text": "one two three four", "drop_after": 2})
    async with session(1) as client:
        sample = await run_load(client, target, chat_bodies(user="u", seed=2), requests=2, concurrency=1, stream=True)
    assert sample.completed == 1 and len(sample.ttfts) == 1 and sample.error_count == 1


async def test_load_counts_a_missing_memory_status_as_an_error(backend: Backend) -> None:
    target = Target("memory on", f"{backend.url}/v1/chat/completions", memory_status="ok")
    async with session(2) as client:
        sample = await run_load(client, target, chat_bodies(user="u", seed=3), requests=4, concurrency=2, stream=False)
    assert sample.completed == 0 and sample.errors == {"x-memory-status None": 4}


def test_the_prefix_cache_backend_counts_the_longest_common_token_prefix() -> None:
    cache = PrefixCache()
    system = {"role": "system", "content": "You are helpful."}
    first = [system, {"role": "user", "content": "hi"}]
    opened = cache.serve(first)
    assert opened.cached_tokens == 0 and opened.prefill_tokens == opened.prompt_tokens
    second = [*first, {"role": "assistant", "content": "Hello!"}, {"role": "user", "content": "more"}]
    resent = cache.serve(second)
    assert resent.cached_tokens == opened.prompt_tokens  # the whole first request is its prefix
    assert opened.prompt_tokens < resent.history_tokens < resent.prompt_tokens
    changed = cache.serve([{"role": "system", "content": "You are terse."}, *second[1:]])
    assert 0 < changed.cached_tokens < 12  # only the template start and "You are" are shared
