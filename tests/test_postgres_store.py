"""The memory layer on PostgreSQL end to end: two proxies with data dirs of their own sharing one
database, as replicas on two machines would (the replicas' own test runs them as processes).
What one writes the other injects on its next request, an edit is seen through the other, a
purge leaves no row anywhere, and forgetting a user through one is visible through the other.
And an import that fails half way is undone (the undo log's SQL on PostgreSQL)."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path
from typing import Any

import httpx
import psycopg
import pytest

from memcubes.config import MemorySettings
from memcubes.embedder import Embedder
from memcubes.errors import IndexUnavailable
from memcubes.importing import CHUNK
from memcubes.memory_os import MemoryOS
from tests.conftest import Backend, Proxy, proxy_settings
from tests.postgres import PostgresServer
from tests.test_imports import SPACE, FailingVectors, body, mem0, seeded


def ask(proxy: Proxy, user: str, question: str) -> httpx.Response:
    body = {"model": "fake", "user": user, "messages": [{"role": "user", "content": question}]}
    with proxy.http() as http:
        answer = http.post("/v1/chat/completions", json=body)
    assert answer.status_code == 200, answer.text
    return answer


def test_two_replicas_share_one_database(
    backend: Backend,
    start_proxy: Callable[..., Proxy],
    tmp_path: Path,
    postgres_server: PostgresServer,
    postgres_template: str,
) -> None:
    url = postgres_server.fresh_database(template=postgres_template)
    memory: dict[str, Any] = {"database_url": url}
    one = start_proxy(proxy_settings(backend.url, tmp_path / "one", memory=memory))
    two = start_proxy(proxy_settings(backend.url, tmp_path / "two", memory=memory))
    fact = "Ola keeps a brass compass in the top drawer."
    ask(two, "ola", "What do you know about me?")  # the second's caches hold the space now
    with one.http() as http:
        added = http.post("/v1/memories", json={"user": "ola", "facts": [fact], "sync": True})
        assert added.status_code == 200, added.text
        memory_id = added.json()["results"][0]["id"]
    ask(two, "ola", "Where is my brass compass?")
    assert fact in backend.last_body()["messages"][-1]["content"]

    moved = fact.replace("top drawer", "hall cupboard")
    with one.http() as http:
        assert http.patch(f"/v1/memories/{memory_id}", json={"content": moved}).status_code == 200
    ask(two, "ola", "Where is my brass compass?")
    prompt = backend.last_body()["messages"][-1]["content"]
    assert moved in prompt and fact not in prompt
    with two.http() as http:
        history = http.get(f"/v1/memories/{memory_id}/history").json()["data"]
        assert len(history) == 2  # written through the one, read through the other

    with two.http() as http:
        kept = http.post("/v1/memories", json={"user": "ola", "facts": ["Ola plays the cello."], "sync": True})
        assert http.delete(f"/v1/memories/{memory_id}", params={"purge": "true"}).json()["purged"] is True
    with one.http() as http:
        assert http.get(f"/v1/memories/{memory_id}").status_code == 404
    with psycopg.connect(url) as conn:
        for table, column in (("cubes", "id"), ("history", "cube_id"), ("vectors", "cube_id")):
            count = conn.execute(f"SELECT count(*) FROM {table} WHERE {column} = %s", (memory_id,)).fetchone()
            assert count == (0,), table
        assert conn.execute("SELECT count(*) FROM cubes WHERE doc LIKE '%compass%'").fetchone() == (0,)
        assert conn.execute("SELECT count(*) FROM cubes WHERE space = 'user:ola'").fetchone() == (1,)

    with one.http() as http:
        assert http.delete("/v1/spaces/user:ola").json() == {"space": "user:ola", "deleted": 1}
    with two.http() as http:
        assert http.get("/v1/memories", params={"user": "ola"}).json()["data"] == []
    assert ask(two, "ola", "Do I play an instrument?").headers["x-memory-injected"] == "0"
    assert kept.status_code == 200


def _state(memory: MemoryOS, space: str) -> dict[str, list[tuple[Any, ...]]]:
    """Everything of ``space`` in the database, and no import log left behind."""
    read = memory.store.read
    return {
        "cubes": [
            tuple(r) for r in read("SELECT id, state, doc, hits FROM cubes WHERE space = ? ORDER BY id", (space,))
        ],
        "history": [
            tuple(r) for r in read("SELECT cube_id, event, doc FROM history WHERE space = ? ORDER BY seq", (space,))
        ],
        "space": [tuple(r) for r in read("SELECT space FROM spaces WHERE space = ?", (space,))],
        "imports": [
            tuple(r) for r in read("SELECT (SELECT count(*) FROM imports), (SELECT count(*) FROM import_undo)")
        ],
    }


async def test_an_import_failing_half_way_leaves_nothing(
    embedder: Embedder, tmp_path: Path, postgres_url: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The undo log on PostgreSQL: three chunks committed (two cubes overwritten), the fourth
    chunk's vectors fail, and the space is exactly as it was."""
    failing = FailingVectors(monkeypatch)
    memory = await MemoryOS.open(
        MemorySettings(data_dir=tmp_path / "data", database_url=postgres_url), embedder=embedder
    )
    await memory.start()
    try:
        await seeded(memory)
        before = _state(memory, SPACE)
        assert len(before["cubes"]) == 4
        upload = body(mem0(4 * CHUNK - 10, text="Changed note {n}: Ivy now studies subject {n} at night"))
        plan = await memory.prepare_import(upload, space=SPACE, format="mem0", on_conflict="overwrite")
        failing.fail_after = 3 * CHUNK
        with pytest.raises(IndexUnavailable):
            await memory.run_import(plan)
        assert _state(memory, SPACE) == before
        report = await memory.run_import(
            await memory.prepare_import(upload, space=SPACE, format="mem0", on_conflict="overwrite")
        )
        assert (report.imported, report.overwritten) == (4 * CHUNK - 12, 2)
    finally:
        await memory.close()
