"""200 concurrent streaming clients for 60 s through a real `memproxy serve` process (loopback):
zero errors, every exchange's write-back landed exactly once, memory stable. Slow: `make test-slow`."""

from __future__ import annotations

import asyncio
import contextlib
import json
import subprocess
import sys
import time
from collections import Counter
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest

from proxy.dev.serve_thread import free_port
from tests.test_cli import ROOT, start_server
from tests.test_faults import wait_journal

CLIENTS = 200
SECONDS = 60.0
USERS = 20


def rss_mib(pid: int) -> float:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1]) / 1024
    return 0.0


@contextlib.contextmanager
def scripted_backend() -> Iterator[str]:
    port = free_port()
    process = subprocess.Popen(
        [
            sys.executable,
            "-m",
            "proxy.cli",
            "dev",
            "scripted-backend",
            "--port",
            str(port),
            "--chunk-interval",
            "0.005",
            "--no-record",
        ],
        cwd=ROOT,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    url = f"http://127.0.0.1:{port}"
    for _ in range(300):
        with contextlib.suppress(httpx.HTTPError):
            if httpx.get(f"{url}/v1/models", timeout=1).status_code == 200:
                break
        time.sleep(0.1)
    try:
        yield url
    finally:
        process.kill()
        process.wait(timeout=30)


async def client(
    http: httpx.AsyncClient, number: int, deadline: float, sent: list[tuple[str, str]], errors: list[str]
) -> None:
    turn = 0
    while time.monotonic() < deadline:
        turn += 1
        user = f"load-{number % USERS}"
        body = {
            "model": "fake",
            "user": user,
            "stream": True,
            "messages": [{"role": "user", "content": f"Note {number}-{turn}: remember order {number * 1000 + turn}."}],
        }
        try:
            async with http.stream("POST", "/v1/chat/completions", json=body) as response:
                lines = [line async for line in response.aiter_lines() if line.startswith("data: ")]
            if response.status_code != 200 or lines[-1] != "data: [DONE]" or any('"error"' in x for x in lines):
                errors.append(f"{response.status_code}: {lines[-2:]}")
                continue
            sent.append((user, response.headers["x-request-id"]))
        except httpx.HTTPError as exc:
            errors.append(repr(exc))


@pytest.mark.slow
def test_200_streaming_clients_for_a_minute(tmp_path: Path) -> None:
    with scripted_backend() as backend_url:
        config = tmp_path / "config.yaml"
        config.write_text(
            "model_list:\n"
            f"  - {{model_name: fake, litellm_params: {{model: openai/fake, api_base: '{backend_url}/v1'}}}}\n"
            f"memory: {{data_dir: {tmp_path / 'data'}, extraction: {{mode: raw}}}}\n"
            # No access line per request: start_server keeps the server's stderr in a pipe it
            # reads only if the server dies, and ~20,000 lines fill it (the server then blocks).
            "server: {log_level: warning}\n"
        )
        port = free_port()
        server = start_server(config, port)
        url = f"http://127.0.0.1:{port}"
        try:
            sent: list[tuple[str, str]] = []
            errors: list[str] = []

            async def run() -> float:
                limits = httpx.Limits(max_connections=CLIENTS, max_keepalive_connections=CLIENTS)
                async with httpx.AsyncClient(base_url=url, timeout=120, limits=limits) as http:
                    deadline = time.monotonic() + SECONDS
                    tasks = [asyncio.create_task(client(http, n, deadline, sent, errors)) for n in range(CLIENTS)]
                    await asyncio.sleep(SECONDS / 2)
                    middle = rss_mib(server.pid)
                    await asyncio.gather(*tasks)
                    return middle

            rss_middle = asyncio.run(run())
            rss_end = rss_mib(server.pid)
            assert errors == []
            assert len(sent) > CLIENTS  # every client got answers, many times over
            wait_journal(url, done=len(sent), timeout=900)
            # Every exchange was distilled exactly once: each of its messages is a source of
            # exactly one memory (raw mode keeps the user's turn and the answer), except an answer
            # whose every sentence restates a memory injected into its prompt (the scripted backend
            # echoes what it was sent): that is not stored again (``quarantine.without_restated``).
            sources: Counter[str] = Counter()
            with httpx.Client(base_url=url, timeout=60) as http:
                for user in {user for user, _ in sent}:
                    cursor = None
                    while True:
                        params = {"user": user, "limit": 500, **({"cursor": cursor} if cursor else {})}
                        page = http.get("/v1/memories", params=params).json()
                        sources.update(s for memory in page["data"] for s in memory["sources"])
                        if not page["has_more"]:
                            break
                        cursor = page["next_cursor"]
            for _, request_id in sent:
                assert sources[f"{request_id}-0"] == 1, request_id
                assert sources[f"{request_id}-answer"] <= 1, request_id
            expected = {f"{request_id}-{part}" for _, request_id in sent for part in ("0", "answer")}
            assert set(sources) <= expected, sorted(set(sources) - expected)[:10]
            # Memory is stable: the second half of the run did not keep growing the process.
            assert rss_end - rss_middle < 200, (rss_middle, rss_end)
            print(json.dumps({"requests": len(sent), "rss_middle_mib": rss_middle, "rss_end_mib": rss_end}))
        finally:
            server.kill()
            server.wait(timeout=30)
