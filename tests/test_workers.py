"""Several ``memproxy serve`` processes on one data dir (real processes, a real ``chroma run``
server for the vector index they share): what one writes, the other injects on the next request;
a space deleted through one is gone for the other; and a worker killed (-9) in the middle of a
write-back burst leaves its claimed exchanges to the other, each distilled exactly once."""

from __future__ import annotations

import contextlib
import os
import signal
import sqlite3
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import httpx
import pytest

from proxy.dev.serve_thread import free_port
from tests.conftest import Backend
from tests.sharing import (
    check_a_killed_process_leaves_its_claims_to_the_other,
    check_written_through_one_injected_through_the_other,
    shared_config,
)
from tests.test_cli import ROOT, start_server


def test_what_one_process_writes_the_other_injects_on_the_next_request(
    backend: Backend, chroma: int, tmp_path: Path
) -> None:
    config = shared_config(tmp_path / "c.yaml", backend, tmp_path / "data", chroma)
    ports = [free_port(), free_port()]
    servers = [start_server(config, port) for port in ports]
    try:
        check_written_through_one_injected_through_the_other(ports, backend)
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

    def query(sql: str) -> list[tuple[Any, ...]]:
        with sqlite3.connect(database) as db:
            return db.execute(sql).fetchall()

    try:
        check_a_killed_process_leaves_its_claims_to_the_other(ports, victim, query)
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
