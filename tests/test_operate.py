"""Operating memproxy through real HTTP: /metrics, access and failure log lines, trace spans."""

from __future__ import annotations

import io
import json
import logging
import subprocess
import sys
import time
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest
from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter
from prometheus_client.parser import text_string_to_metric_families

from memcubes.embedder import Embedder
from proxy import Settings, build_app
from proxy.dev.serve_thread import ServerThread
from proxy.logs import log_handler
from proxy.metrics import prompt_cache_tokens
from tests.conftest import Backend, Proxy, proxy_settings

CHAT = {"model": "fake", "messages": [{"role": "user", "content": "Where do I live these days?"}]}
KEY = "sk-operate"
LogLines = Callable[[], list[dict[str, object]]]


def samples(text: str) -> dict[tuple[str, tuple[tuple[str, str], ...]], float]:
    """Every sample of an exposition, by name and sorted labels."""
    return {
        (s.name, tuple(sorted(s.labels.items()))): s.value
        for family in text_string_to_metric_families(text)
        for s in family.samples
    }


def value(found: dict[tuple[str, tuple[tuple[str, str], ...]], float], name: str, **labels: str) -> float:
    return found.get((name, tuple(sorted(labels.items()))), 0.0)


def test_metrics_count_requests_memory_upstream_prompt_cache_and_writeback(
    backend: Backend, start_proxy: Callable[..., Proxy], tmp_path: Path
) -> None:
    settings = proxy_settings(backend.url, tmp_path / "d", general_settings={"master_key": KEY})
    proxy = start_proxy(settings)
    proxy.api_key = KEY
    with proxy.http() as http:
        fact = b'{"user": "ann", "sync": true, "facts": ["I live in Porto."]}'  # as `curl -d` sends it
        added = http.post("/v1/memories", content=fact, headers={"content-type": "application/x-www-form-urlencoded"})
        cube_id = added.json()["results"][0]["id"]
        assert http.patch(f"/v1/memories/{cube_id}", json={"pinned": True}).status_code == 200
        backend.queue({"usage": {"prompt_tokens_details": {"cached_tokens": 3}}})
        assert http.post("/v1/chat/completions", json={**CHAT, "user": "ann"}).status_code == 200
        backend.queue({"usage": {"prompt_tokens_details": {"cached_tokens": 2}}})
        stream = {**CHAT, "user": "ann", "stream": True, "stream_options": {"include_usage": True}}
        assert http.post("/v1/chat/completions", json=stream).status_code == 200
        assert http.post("/v1/chat/completions", json={**CHAT, "model": "nope"}).status_code == 404
        assert http.get("/metrics", headers={"authorization": "Bearer wrong"}).status_code == 401
        proxy.wait_writeback()
        response = http.get("/metrics")
    assert response.status_code == 200 and response.headers["content-type"].startswith("text/plain")
    found = samples(response.text)
    chat = "/v1/chat/completions"
    assert value(found, "memproxy_requests_total", route=chat, model="fake", status="200") == 2
    assert value(found, "memproxy_requests_total", route=chat, model="", status="404") == 1
    assert value(found, "memproxy_requests_total", route="/metrics", model="", status="401") == 1
    assert value(found, "memproxy_requests_total", route="/v1/memories", model="", status="200") == 1
    assert value(found, "memproxy_requests_total", route="/v1/memories/{memory_id}", model="", status="200") == 1
    assert value(found, "memproxy_request_duration_seconds_count", route=chat) == 3
    assert value(found, "memproxy_retrieval_total", outcome="ok") == 2
    assert value(found, "memproxy_memory_duration_seconds_count") == 2
    assert value(found, "memproxy_memories_injected_sum") >= 2  # the pinned memory, both times
    assert value(found, "memproxy_memory_tokens_sum") > 0
    assert value(found, "memproxy_upstream_first_token_seconds_count", model="fake", stream="false") == 1
    assert value(found, "memproxy_upstream_first_token_seconds_count", model="fake", stream="true") == 1
    assert value(found, "memproxy_prompt_cached_tokens_total", model="fake") == 5
    assert value(found, "memproxy_prompt_tokens_total", model="fake") >= 5
    assert value(found, "memproxy_stable_block_requests_total") == 2
    assert value(found, "memproxy_stable_block_changes_total") >= 1  # the pin
    assert value(found, "memproxy_writeback_journal_entries", state="done") >= 3
    for gauge in ("memproxy_writeback_queue_depth", "memproxy_writeback_lag_seconds", "memproxy_index_outbox"):
        assert (gauge, ()) in found
    assert ("memproxy_writeback_failures_total", ()) in found


@pytest.mark.parametrize(("setting", "status"), [("open", 200), ("off", 404)])
def test_metrics_setting_opens_or_closes_the_endpoint(
    backend: Backend, start_proxy: Callable[..., Proxy], tmp_path: Path, setting: str, status: int
) -> None:
    settings = proxy_settings(
        backend.url, tmp_path / "d", general_settings={"master_key": KEY}, server={"metrics": setting}
    )
    proxy = start_proxy(settings)
    with proxy.http() as http:  # its key is not the master key
        assert http.get("/metrics").status_code == status


@pytest.fixture
def log_lines() -> Iterator[LogLines]:
    """JSON log lines of everything logged at info and above while the test runs."""
    stream = io.StringIO()
    handler = log_handler(Settings.from_mapping({"server": {"log_format": "json"}}, env={}).server, stream)
    root = logging.getLogger()
    level = root.level
    root.addHandler(handler)
    root.setLevel(logging.INFO)
    try:
        yield lambda: [json.loads(line) for line in stream.getvalue().splitlines()]
    finally:
        root.removeHandler(handler)
        root.setLevel(level)


def test_access_lines_and_upstream_failures_with_request_ids_and_no_user_data(
    backend: Backend, start_proxy: Callable[..., Proxy], tmp_path: Path, log_lines: LogLines
) -> None:
    proxy = start_proxy(proxy_settings(backend.url, tmp_path / "d"))
    secret = {"model": "fake", "user": "ulrike-private", "messages": [{"role": "user", "content": "my pin is 4711"}]}
    with proxy.http() as http:
        ok = http.post("/v1/chat/completions", json=secret)
        backend.queue({"status": 500, "message": "backend exploded"})
        failed = http.post("/v1/chat/completions", json=secret)
        backend.queue({"text": "one two three", "drop_after": 1})
        dropped = http.post("/v1/chat/completions", json={**secret, "stream": True})
        health = http.get("/healthz")
        proxy.wait_writeback()
    assert (ok.status_code, failed.status_code, dropped.status_code) == (200, 502, 200)
    lines = log_lines()
    access = {line["request_id"]: line for line in lines if line["logger"] == "memproxy.access"}
    line = access[ok.headers["x-request-id"]]
    assert line["method"] == "POST" and line["route"] == "/v1/chat/completions" and line["status"] == 200
    assert line["model"] == "fake" and line["memory"] == "ok" and isinstance(line["ms"], float)
    assert access[failed.headers["x-request-id"]]["status"] == 502
    assert access[health.headers["x-request-id"]]["route"] == "/healthz"
    warnings = [line for line in lines if line["level"] == "warning"]
    assert any(
        w["request_id"] == failed.headers["x-request-id"] and "upstream failed" in str(w["message"]) for w in warnings
    )
    assert any(
        w["request_id"] == dropped.headers["x-request-id"] and "after it started" in str(w["message"]) for w in warnings
    )
    everything = json.dumps(lines)
    assert "ulrike-private" not in everything and "4711" not in everything


def test_access_lines_carry_the_user_only_when_configured(
    backend: Backend, start_proxy: Callable[..., Proxy], tmp_path: Path, log_lines: LogLines
) -> None:
    proxy = start_proxy(proxy_settings(backend.url, tmp_path / "d", server={"log_user_ids": True}))
    with proxy.http() as http:
        response = http.post("/v1/chat/completions", json={**CHAT, "user": "vera"})
    line = next(line for line in log_lines() if line["request_id"] == response.headers["x-request-id"])
    assert line["user"] == "vera"


def test_spans_for_retrieve_forward_and_writeback_under_the_request_span(
    backend: Backend, embedder: Embedder, tmp_path: Path
) -> None:
    exporter = InMemorySpanExporter()
    settings = proxy_settings(backend.url, tmp_path / "d")
    with ServerThread(build_app(settings, embedder=embedder, span_exporter=exporter)) as server:
        proxy = Proxy(server, settings)
        with proxy.http() as http:
            response = http.post("/v1/chat/completions", json={**CHAT, "user": "tom"})
        assert response.status_code == 200
        deadline = time.monotonic() + 10
        while len(exporter.get_finished_spans()) < 4 and time.monotonic() < deadline:
            time.sleep(0.02)
    spans = {span.name: span for span in exporter.get_finished_spans()}
    request = spans["POST /v1/chat/completions"]
    assert request.attributes is not None and request.attributes["http.response.status_code"] == 200
    for name in ("memproxy.retrieve", "memproxy.forward", "memproxy.writeback"):
        span = spans[name]
        assert span.parent is not None and span.parent.span_id == request.context.span_id, name
    retrieve = spans["memproxy.retrieve"].attributes
    assert retrieve is not None and retrieve["memproxy.memory_status"] == "ok"


def test_multiprocess_mode_adds_up_every_worker(tmp_path: Path) -> None:
    """Two processes record with $PROMETHEUS_MULTIPROC_DIR set; either one's /metrics shows both."""
    script = (
        "import sys; from pathlib import Path; from proxy.metrics import Metrics\n"
        "m = Metrics(multiproc_dir=Path(sys.argv[1]))\n"
        "m.request(route='/v1/chat/completions', model='fake', status=200, seconds=0.1)\n"
        "print(m.render()[0].decode())\n"
    )
    env = {"PROMETHEUS_MULTIPROC_DIR": str(tmp_path), "PATH": "/usr/bin:/bin"}
    run = [sys.executable, "-c", script, str(tmp_path)]
    subprocess.run(run, check=True, env=env, capture_output=True, cwd=Path(__file__).parent.parent)
    second = subprocess.run(run, check=True, env=env, capture_output=True, text=True, cwd=Path(__file__).parent.parent)
    found = samples(second.stdout)
    assert value(found, "memproxy_requests_total", route="/v1/chat/completions", model="fake", status="200") == 2


def test_prompt_cache_tokens_read_openai_litellm_and_anthropic_usage() -> None:
    assert prompt_cache_tokens({"prompt_tokens": 2000, "prompt_tokens_details": {"cached_tokens": 1536}}) == (
        2000,
        1536,
    )
    assert prompt_cache_tokens({"prompt_tokens": 900, "cache_read_input_tokens": 800}) == (900, 800)
    anthropic = {"input_tokens": 20, "cache_read_input_tokens": 1000, "cache_creation_input_tokens": 5}
    assert prompt_cache_tokens(anthropic) == (1025, 1000)
    assert prompt_cache_tokens({"prompt_tokens": 10, "prompt_tokens_details": None}) == (10, 0)
    assert prompt_cache_tokens(None) is None and prompt_cache_tokens({"completion_tokens": 3}) is None
