"""Several ``memproxy serve`` processes on one data dir (real processes, a real ``chroma run``
server for the vector index they share): what one writes, the other injects on the next request;
a space deleted through one is gone for the other; and a worker killed (-9) in the middle of a
write-back burst leaves its claimed exchanges to the other, each distilled exactly once."""

from __future__ import annotations

import contextlib
import json
import os
import signal
import sqlite3
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest

from proxy.dev.serve_thread import free_port
from tests.conftest import Backend
from tests.test_cli import ROOT, start_server

CHROMA = Path(sys.executable).parent / "chroma"
WORDS = (
    "amber basalt cedar dune ember fjord garnet harbor indigo juniper kelp lagoon marble nectar onyx pebble quartz "
    "reef saffron tundra umber velvet willow xenon yarrow zephyr"
).split()


@pytest.fixture(scope="module")
def chroma(tmp_path_factory: pytest.TempPathFactory) -> Iterator[int]:
    port = free_port()
    server = subprocess.Popen(
        [str(CHROMA), "run", "--path", str(tmp_path_factory.mktemp("chroma")), "--port", str(port)],
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    deadline = time.monotonic() + 60
    while time.monotonic() < deadline:
        try:
            if httpx.get(f"http://127.0.0.1:{port}/api/v2/heartbeat", timeout=1).status_code == 200:
                break
        except httpx.HTTPError:
            time.sleep(0.2)
    yield port
    server.terminate()
    server.wait(timeout=30)


def shared_config(path: Path, backend: Backend, data_dir: Path, chroma_port: int) -> Path:
    path.write_text(
        "model_list:\n"
        "  - model_name: fake\n"
        f"    litellm_params: {{model: openai/fake, api_base: '{backend.url}/v1', api_key: x}}\n"
        "memory:\n"
        f"  data_dir: {data_dir}\n"
        "  extraction: {mode: raw}\n"
        f"  vector_index: {{host: 127.0.0.1, port: {chroma_port}}}\n"
        "  writeback: {lease_seconds: 2, retry_seconds: 0.5}\n"
    )
    return path


def ask(port: int, user: str, question: str) -> httpx.Response:
    body = {"model": "fake", "user": user, "messages": [{"role": "user", "content": question}]}
    return httpx.post(f"http://127.0.0.1:{port}/v1/chat/completions", json=body, timeout=60)


def test_what_one_process_writes_the_other_injects_on_the_next_request(
    backend: Backend, chroma: int, tmp_path: Path
) -> None:
    config = shared_config(tmp_path / "c.yaml", backend, tmp_path / "data", chroma)
    ports = [free_port(), free_port()]
    servers = [start_server(config, port) for port in ports]
    try:
        for round_ in range(6):  # alternating: written through one, asked through the other
            writer, reader = ports[round_ % 2], ports[(round_ + 1) % 2]
            ask(reader, "ola", "What do you know about me?")  # the reader's caches hold the space now
            fact = f"Ola keeps a {WORDS[round_]} {WORDS[round_ + 10]} in drawer {round_}."
            added = httpx.post(
                f"http://127.0.0.1:{writer}/v1/memories", json={"user": "ola", "facts": [fact], "sync": True}
            )
            assert added.status_code == 200, added.text
            question = f"What is in drawer {round_}? The {WORDS[round_]} one?"
            assert ask(reader, "ola", question).status_code == 200
            assert fact in backend.last_body()["messages"][-1]["content"], round_
            # Changed through the writer (the reader holds the cube now): the reader shows the new words.
            moved = fact.replace("in drawer", "on shelf")
            memory_id = added.json()["results"][0]["id"]
            edited = httpx.patch(f"http://127.0.0.1:{writer}/v1/memories/{memory_id}", json={"content": moved})
            assert edited.status_code == 200, edited.text
            assert ask(reader, "ola", question).status_code == 200
            prompt = backend.last_body()["messages"][-1]["content"]
            assert moved in prompt and fact not in prompt, round_
        forgotten = httpx.delete(f"http://127.0.0.1:{ports[0]}/v1/spaces/user:ola", timeout=60)
        assert forgotten.status_code == 200, forgotten.text
        listed = httpx.get(f"http://127.0.0.1:{ports[1]}/v1/memories", params={"user": "ola"}).json()
        assert listed["data"] == []
        assert ask(ports[1], "ola", "What is in drawer 3?").headers["x-memory-injected"] == "0"
    finally:
        for server in servers:
            server.terminate()
            server.wait(timeout=30)


@pytest.mark.slow
def test_a_worker_killed_during_a_write_back_burst_leaves_its_claims_to_the_other(
    backend: Backend, chroma: int, tmp_path: Path
) -> None:
    config = shared_config(tmp_path / "c.yaml", backend, tmp_path / "data", chroma)
    ports = [free_port(), free_port()]
    victim, survivor = (start_server(config, port) for port in ports)
    database = tmp_path / "data" / "memproxy.db"
    said = [f"Note {n}: the {WORDS[n % 26]} {WORDS[(n * 7) % 26]} box holds {n * 13} marbles." for n in range(240)]
    try:
        with httpx.Client(timeout=60) as http:
            for n, text in enumerate(said):  # the burst, split between the two, answered 202 each
                port = ports[n % 2]
                body = {"user": f"burst{n % 3}", "messages": [{"role": "user", "content": text}]}
                assert http.post(f"http://127.0.0.1:{port}/v1/memories", json=body).status_code == 202
        with sqlite3.connect(database) as db:
            held = db.execute(
                "SELECT count(*) FROM journal WHERE state = 'pending' AND claimed_by LIKE ?", (f"{victim.pid}-%",)
            ).fetchone()[0]
        os.kill(victim.pid, signal.SIGKILL)  # its claims are taken over at once: its pid is gone
        victim.wait(timeout=30)
        assert held > 0  # the kill left claimed work behind: the test is about taking it over
        deadline = time.monotonic() + 180
        while time.monotonic() < deadline:
            with sqlite3.connect(database) as db:
                states = dict(db.execute("SELECT state, count(*) FROM journal GROUP BY state").fetchall())
            if states == {"done": len(said)}:
                break
            time.sleep(0.5)
        assert states == {"done": len(said)}
        with sqlite3.connect(database) as db:
            rows = db.execute("SELECT json_extract(doc, '$.content'), doc FROM cubes").fetchall()
            results = [json.loads(r[0]) for r in db.execute("SELECT result FROM journal").fetchall()]
        contents = [content for content, _ in rows]
        assert sorted(contents) == sorted(f"user: {text}" for text in said)  # each exchange's memory, exactly once
        added = sorted(change["id"] for result in results for change in result["changes"] if change["event"] == "ADD")
        assert added == sorted(json.loads(doc)["id"] for _, doc in rows)
    finally:
        for server in (victim, survivor):
            if server.poll() is None:
                server.terminate()
                server.wait(timeout=30)


@pytest.mark.slow
def test_serve_workers_restarts_a_killed_worker_and_stops_them_all(
    backend: Backend, chroma: int, tmp_path: Path
) -> None:
    config = shared_config(tmp_path / "c.yaml", backend, tmp_path / "data", chroma)
    port = free_port()
    command = [sys.executable, "-m", "proxy.cli", "serve", "--config", str(config), "--port", str(port)]
    parent = subprocess.Popen([*command, "--workers", "2"], cwd=ROOT, stderr=subprocess.PIPE)
    try:
        wait_ready(port, parent)
        workers = children(parent.pid)
        assert len(workers) == 2
        os.kill(workers[0], signal.SIGKILL)
        deadline = time.monotonic() + 120
        while time.monotonic() < deadline and (len(now := children(parent.pid)) < 2 or workers[0] in now):
            time.sleep(0.5)
        assert len(now) == 2 and workers[0] not in now and workers[1] in now
        for n in range(4):  # both answer (the kernel picks which)
            added = httpx.post(
                f"http://127.0.0.1:{port}/v1/memories", json={"user": "wk", "facts": [f"Fact {n}."], "sync": True}
            )
            assert added.status_code == 200
    finally:
        parent.terminate()
        assert parent.wait(timeout=60) == 0
    assert children(parent.pid) == []
    assert parent.stderr is not None and b"exited with status -9: starting another" in parent.stderr.read()


def children(pid: int) -> list[int]:
    """The worker processes of ``pid`` (multiprocessing's resource tracker left out)."""
    found = []
    for status in Path("/proc").glob("[0-9]*/status"):
        with contextlib.suppress(OSError):
            fields = dict(line.split(":\t", 1) for line in status.read_text().splitlines() if ":\t" in line)
            cmdline = (status.parent / "cmdline").read_bytes()
            if fields.get("PPid", "").strip() == str(pid) and b"spawn_main" in cmdline:
                found.append(int(status.parent.name))
    return sorted(found)


def wait_ready(port: int, process: subprocess.Popen[bytes]) -> None:
    deadline = time.monotonic() + 120
    while time.monotonic() < deadline:
        assert process.poll() is None, process.stderr.read() if process.stderr else process.returncode
        with contextlib.suppress(httpx.HTTPError):
            if httpx.get(f"http://127.0.0.1:{port}/readyz", timeout=1).status_code == 200:
                return
        time.sleep(0.3)
    raise TimeoutError("memproxy serve --workers 2 did not become ready")
