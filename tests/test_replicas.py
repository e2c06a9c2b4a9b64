"""Replicas: two real ``memproxy serve`` processes, each with a data dir of its own, sharing one
PostgreSQL (the throwaway server of ``tests/postgres.py``) and one ``chroma run`` server, as
replicas behind a load balancer on different machines would: what one writes the other injects
on its next request, a space deleted through one is gone for the other, a key revoked through
one is refused by the other, and a replica killed (-9) in the middle of a write-back burst leaves
its claimed exchanges to the other, each distilled exactly once."""

from __future__ import annotations

import subprocess
from collections.abc import Iterator, Sequence
from pathlib import Path
from typing import Any

import httpx
import psycopg
import pytest

from proxy.dev.serve_thread import free_port
from tests.conftest import Backend
from tests.sharing import (
    ask,
    check_a_killed_process_leaves_its_claims_to_the_other,
    check_written_through_one_injected_through_the_other,
    shared_config,
)
from tests.test_cli import start_server

MASTER = "sk-replicas-master"
ADMIN = {"authorization": f"Bearer {MASTER}"}


class Replicas:
    def __init__(self, processes: Sequence[subprocess.Popen[bytes]], ports: Sequence[int]) -> None:
        self.processes, self.ports = list(processes), list(ports)

    def url(self, index: int) -> str:
        return f"http://127.0.0.1:{self.ports[index]}"


@pytest.fixture
def replicas(backend: Backend, chroma: int, postgres_url: str, tmp_path: Path) -> Iterator[Replicas]:
    """Two replicas on one database: each its own data dir (and config file), as on two machines."""
    ports = [free_port(), free_port()]
    configs = [
        shared_config(
            tmp_path / f"replica{n}.yaml",
            backend,
            tmp_path / f"replica{n}",
            chroma,
            database_url=postgres_url,
            master_key=MASTER,
        )
        for n in range(2)
    ]
    started: list[subprocess.Popen[bytes]] = []
    try:
        for config, port in zip(configs, ports, strict=True):
            started.append(start_server(config, port))
        yield Replicas(started, ports)
    finally:
        for process in started:
            if process.poll() is None:
                process.terminate()
                process.wait(timeout=30)


def test_replicas_share_memories_forgetting_and_revoked_keys(replicas: Replicas, backend: Backend) -> None:
    check_written_through_one_injected_through_the_other(replicas.ports, backend, ADMIN)
    created = httpx.post(f"{replicas.url(0)}/v1/keys", json={"user": "rep-alice"}, headers=ADMIN, timeout=60)
    assert created.status_code == 200, created.text
    key = {"authorization": f"Bearer {created.json()['key']}"}
    assert ask(replicas.ports[1], "rep-alice", "hi", key).status_code == 200  # the other replica knows it now
    revoked = httpx.delete(f"{replicas.url(0)}/v1/keys/{created.json()['id']}", headers=ADMIN, timeout=60)
    assert revoked.json()["revoked"] is True
    refused = ask(replicas.ports[1], "rep-alice", "hi", key)
    assert (refused.status_code, refused.json()["error"]["code"]) == (401, "key_revoked")
    audit = httpx.get(f"{replicas.url(1)}/v1/audit", headers=ADMIN, timeout=60).json()["data"]
    assert [row["action"] for row in audit[:2]] == ["key.revoke", "key.create"]  # one trail for both


@pytest.mark.slow
def test_a_replica_killed_during_a_write_back_burst_leaves_its_claims_to_the_other(
    replicas: Replicas, postgres_url: str
) -> None:
    def query(statement: str) -> list[tuple[Any, ...]]:
        with psycopg.connect(postgres_url) as db:
            return db.execute(statement).fetchall()

    check_a_killed_process_leaves_its_claims_to_the_other(replicas.ports, replicas.processes[0], query, headers=ADMIN)
