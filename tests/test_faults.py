"""Nothing lost under faults: a killed process, a locked store, a full disk, a Chroma server that
goes away, a full write-back queue, index writes left behind by a crash."""

from __future__ import annotations

import asyncio
import contextlib
import resource
import signal
import sqlite3
import subprocess
import sys
import threading
import time
from collections.abc import Callable, Iterator
from pathlib import Path

import httpx
import pytest
from openai import OpenAI

from memcubes.config import MemorySettings
from memcubes.cube import MemCube
from memcubes.embedder import Embedder
from memcubes.errors import StoreUnavailable
from memcubes.memory_os import MemoryOS
from memcubes.store import ChangeSet, HistoryEvent, Store
from proxy.dev.scripted_backend import BackendScript, build_scripted_backend
from proxy.dev.serve_thread import ServerThread, free_port
from tests.conftest import Backend, Proxy, proxy_settings
from tests.test_cli import ROOT, start_server

THINGS = ["stamps", "vinyl records", "old maps", "seashells", "comic books", "fountain pens"]


def facts_of(http: httpx.Client, user: str) -> list[str]:
    return [m["content"] for m in http.get("/v1/memories", params={"user": user, "limit": 500}).json()["data"]]


def chat(http: httpx.Client, user: str, text: str) -> httpx.Response:
    """One user turn to the scripted model, as ``user``."""
    return http.post(
        "/v1/chat/completions",
        json={"model": "fake", "user": user, "messages": [{"role": "user", "content": text}]},
    )


def wait_journal(url: str, *, done: int, timeout: float = 60.0) -> dict[str, int]:
    deadline = time.monotonic() + timeout
    journal: dict[str, int] = {}
    while time.monotonic() < deadline:
        with contextlib.suppress(httpx.HTTPError):
            journal = httpx.get(f"{url}/readyz", timeout=5).json()["checks"].get("journal", {})
            settled = not any(journal.get(key) for key in ("pending", "queued", "spilled", "indexing"))
            if journal.get("done", 0) >= done and settled:
                return journal
        time.sleep(0.1)
    raise TimeoutError(f"journal did not settle: {journal}")


def test_kill_9_during_write_back_loses_nothing_and_doubles_nothing(backend: Backend, tmp_path: Path) -> None:
    """The extraction model is slow, so every exchange is still being distilled when the proxy is
    killed with SIGKILL right after answering; the restarted proxy replays the journal."""
    slow = BackendScript(latency=10.0)
    with ServerThread(build_scripted_backend(slow)) as extractor:
        config = tmp_path / "config.yaml"
        config.write_text(
            "model_list:\n"
            f"  - {{model_name: fake, litellm_params: {{model: openai/fake, api_base: '{backend.url}/v1'}}}}\n"
            f"  - {{model_name: slow, litellm_params: {{model: openai/slow, api_base: '{extractor.url}/v1'}}}}\n"
            "memory:\n"
            f"  data_dir: {tmp_path / 'data'}\n"
            "  extraction: {mode: llm, model: slow}\n"
            "  writeback: {retry_seconds: 0.2}\n"
        )
        port = free_port()
        server = start_server(config, port)
        client = OpenAI(base_url=f"http://127.0.0.1:{port}/v1", api_key="x", max_retries=0)
        try:
            for thing in THINGS:
                client.chat.completions.create(
                    model="fake", user="nina", messages=[{"role": "user", "content": f"I collect {thing}."}]
                )
            deadline = time.monotonic() + 10
            while len(slow.received) < 1 and time.monotonic() < deadline:
                time.sleep(0.02)
            assert slow.received, "write-back should be waiting on the extraction model"
            server.send_signal(signal.SIGKILL)
            server.wait(timeout=30)
        finally:
            server.kill()
        slow.latency = 0.0  # the model answers now (not JSON: the heuristic rules take over)
        server = start_server(config, port)
        try:
            journal = wait_journal(f"http://127.0.0.1:{port}", done=len(THINGS))
            assert journal["done"] == len(THINGS)
            with httpx.Client(base_url=f"http://127.0.0.1:{port}") as http:
                stored = facts_of(http, "nina")
        finally:
            server.kill()
            server.wait(timeout=30)
    assert sorted(stored) == sorted(f"I collect {thing}." for thing in THINGS)


def test_graceful_shutdown_keeps_queued_work(backend: Backend, tmp_path: Path) -> None:
    config = tmp_path / "config.yaml"
    config.write_text(
        "model_list:\n"
        f"  - {{model_name: fake, litellm_params: {{model: openai/fake, api_base: '{backend.url}/v1', api_key: x}}}}\n"
        f"memory: {{data_dir: {tmp_path / 'data'}}}\n"
    )
    port = free_port()
    server = start_server(config, port)
    try:
        with httpx.Client(base_url=f"http://127.0.0.1:{port}") as http:
            for thing in THINGS:
                http.post(
                    "/v1/memories",
                    json={"user": "otto", "messages": [{"role": "user", "content": f"I collect {thing}."}]},
                )
        server.send_signal(signal.SIGTERM)
        server.wait(timeout=60)  # uvicorn re-raises SIGTERM after a clean shutdown: the exit code says -15
        assert server.stderr is not None and b"Application shutdown complete" in server.stderr.read()
    finally:
        server.kill()
    server = start_server(config, port)
    try:
        wait_journal(f"http://127.0.0.1:{port}", done=len(THINGS))
        with httpx.Client(base_url=f"http://127.0.0.1:{port}") as http:
            assert sorted(facts_of(http, "otto")) == sorted(f"I collect {thing}." for thing in THINGS)
    finally:
        server.kill()
        server.wait(timeout=30)


def test_a_locked_store_delays_nothing_and_loses_nothing(
    backend: Backend, start_proxy: Callable[..., Proxy], tmp_path: Path
) -> None:
    proxy = start_proxy(proxy_settings(backend.url, tmp_path / "data", memory={"writeback": {"retry_seconds": 0.2}}))
    with proxy.http() as http:
        http.post("/v1/memories", json={"user": "pia", "facts": ["Pia plays chess"], "sync": True})
        blocker = sqlite3.connect(tmp_path / "data" / "memproxy.db", isolation_level=None)
        blocker.execute("BEGIN EXCLUSIVE")  # a backup or migration holding the write lock
        try:
            response = chat(http, "pia", "I also play go. Chess?")
            assert response.status_code == 200
            assert response.headers["x-memory-status"] == "ok"  # reads go on (WAL)
            assert "chess" in str(backend.last_body()["messages"])
            journal = http.get("/readyz").json()["checks"]["journal"]
            assert journal["spilled"] == 1
            assert (tmp_path / "data" / "journal-spill.jsonl").exists()
        finally:
            blocker.execute("COMMIT")
            blocker.close()
    proxy.wait_writeback()
    with proxy.http() as http:
        assert sorted(facts_of(http, "pia")) == ["I also play go.", "Pia plays chess"]
    assert not (tmp_path / "data" / "journal-spill.jsonl").exists()


def test_writers_of_one_process_queue_for_the_store_and_give_up_in_time(tmp_path: Path) -> None:
    """In-process writers wait on a lock (no SQLite sleep-polling), bounded by their ``wait``."""
    store = Store.open(tmp_path / "memproxy.db")
    entered, release = threading.Event(), threading.Event()

    def hold() -> None:
        with store._write():  # a long write-back transaction
            entered.set()
            release.wait(10)

    holder = threading.Thread(target=hold)
    holder.start()
    assert entered.wait(10)
    with pytest.raises(StoreUnavailable, match="gave up waiting"):
        store.journal_put("req-1", "user:ada", {"id": "req-1"}, wait=0.05)
    landed: list[bool] = []
    waiter = threading.Thread(target=lambda: landed.append(store.journal_put("req-1", "user:ada", {"id": "req-1"})))
    waiter.start()
    release.set()
    holder.join(10)
    waiter.join(10)
    assert landed == [True] and store.journal_counts() == {"pending": 1}
    store.close()


def test_a_full_disk_answers_chat_and_lands_the_writes_once_space_is_back(backend: Backend, tmp_path: Path) -> None:
    """The proxy's file size limit (RLIMIT_FSIZE, set from outside with prlimit) is lowered so that
    no file of its data dir can grow: SQLite fails with "database or disk is full", as on a full
    disk, for the journal and the memories alike. Chat is answered with what is stored; the
    exchange waits in memory and lands when the limit is lifted."""
    config = tmp_path / "config.yaml"
    config.write_text(
        "model_list:\n"
        f"  - {{model_name: fake, litellm_params: {{model: openai/fake, api_base: '{backend.url}/v1'}}}}\n"
        "memory:\n"
        f"  data_dir: {tmp_path / 'data'}\n"
        "  writeback: {retry_seconds: 0.2}\n"
    )
    port = free_port()
    server = start_server(config, port)
    url = f"http://127.0.0.1:{port}"
    unlimited = resource.getrlimit(resource.RLIMIT_FSIZE)
    try:
        with httpx.Client(base_url=url, timeout=30) as http:
            http.post("/v1/memories", json={"user": "fay", "facts": ["Fay keeps bees"], "sync": True})
            resource.prlimit(server.pid, resource.RLIMIT_FSIZE, (4096, unlimited[1]))
            response = chat(http, "fay", "I sold my honey. Bees?")
            assert response.status_code == 200
            assert response.json()["choices"][0]["message"]["content"]
            assert "bees" in str(backend.last_body()["messages"])  # reads go on
            time.sleep(1.0)  # write-back has tried (and failed) meanwhile
            journal = http.get("/readyz").json()["checks"]["journal"]
            assert journal["spilled"] == 1, journal
            assert facts_of(http, "fay") == ["Fay keeps bees"]
            resource.prlimit(server.pid, resource.RLIMIT_FSIZE, unlimited)
            wait_journal(url, done=2)
            assert sorted(facts_of(http, "fay")) == ["Fay keeps bees", "I sold my honey."]
    finally:
        server.kill()
        server.wait(timeout=30)


@contextlib.contextmanager
def chroma_server(path: Path, port: int) -> Iterator[subprocess.Popen[bytes]]:
    chroma = Path(sys.executable).parent / "chroma"
    process = subprocess.Popen(
        [str(chroma), "run", "--path", str(path), "--port", str(port)],
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    deadline = time.monotonic() + 60
    while time.monotonic() < deadline:
        with contextlib.suppress(httpx.HTTPError):
            if httpx.get(f"http://127.0.0.1:{port}/api/v2/heartbeat", timeout=1).status_code == 200:
                break
        time.sleep(0.1)
    else:
        process.kill()
        raise TimeoutError("chroma run did not start")
    try:
        yield process
    finally:
        process.kill()
        process.wait(timeout=30)


def test_chroma_server_mode_survives_the_server_going_away(
    backend: Backend, start_proxy: Callable[..., Proxy], tmp_path: Path
) -> None:
    """Small spaces are searched exactly from SQLite: with the ANN server gone, memory works as
    before, nothing degraded (``tests/test_indexing.py`` covers refused writes to the ANN index)."""
    port = free_port()
    settings = proxy_settings(
        backend.url,
        tmp_path / "data",
        memory={"vector_index": {"host": "127.0.0.1", "port": port}, "writeback": {"retry_seconds": 0.2}},
    )
    with chroma_server(tmp_path / "chroma", port):
        proxy = start_proxy(settings)
        with proxy.http() as http:
            http.post("/v1/memories", json={"user": "quin", "facts": ["Quin lives in Oslo"], "sync": True})
            assert "Oslo" in str(http.post("/v1/memories/search", json={"user": "quin", "query": "Oslo"}).json())
    # Chroma is gone: chat is answered, what the user says is stored, searchable, by vector too.
    with proxy.http() as http:
        response = chat(http, "quin", "I adopted a cat named Miso.")
        assert response.status_code == 200 and response.headers["x-memory-status"] == "ok"
        deadline = time.monotonic() + 30
        while "I adopted a cat named Miso." not in facts_of(http, "quin") and time.monotonic() < deadline:
            time.sleep(0.1)
        assert "I adopted a cat named Miso." in facts_of(http, "quin")
        proxy.server.app.state.memory.hot.drop("user:quin")
        response = chat(http, "quin", "Do I still live in Oslo?")
        assert response.status_code == 200 and response.headers["x-memory-status"] == "ok"
        assert "Quin lives in Oslo" in str(backend.last_body()["messages"])
    assert proxy.server.app.state.memory.vectors.count("user:quin") == 2


def test_a_full_queue_delays_write_back_but_drops_nothing(
    backend: Backend, start_proxy: Callable[..., Proxy], tmp_path: Path
) -> None:
    proxy = start_proxy(
        proxy_settings(backend.url, tmp_path / "data", memory={"writeback": {"queue_size": 1, "retry_seconds": 0.2}})
    )
    things = [*THINGS, "pressed flowers", "train tickets", "chess sets", "snow globes", "tea tins", "fossils"]

    def send(thing: str) -> None:
        with proxy.http() as http:
            chat(http, "rita", f"I collect {thing}.")

    threads = [threading.Thread(target=send, args=(thing,)) for thing in things]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(60)
    proxy.wait_writeback(timeout=120)
    with proxy.http() as http:
        assert sorted(facts_of(http, "rita")) == sorted(f"I collect {thing}." for thing in things)


async def test_index_writes_left_by_a_crash_are_replayed(embedder: Embedder, tmp_path: Path) -> None:
    settings = MemorySettings(data_dir=tmp_path / "data")
    memory = await MemoryOS.open(settings, embedder=embedder)
    cube = MemCube(space="user:sam", content="Sam keeps bees on the roof")
    # Committed to SQLite with its outbox row but without vectors (as an edit is), and never
    # indexed: as after a crash.
    await asyncio.to_thread(memory.store.apply, ChangeSet(cubes=[cube], events=[HistoryEvent(cube, "ADD")]))
    assert memory.vectors.missing("user:sam") == [cube.id]
    await memory.close()
    memory = await MemoryOS.open(settings, embedder=embedder)
    await memory.start()
    try:
        for _ in range(100):
            if memory.vectors.count("user:sam") == 1:
                break
            await asyncio.sleep(0.05)
        assert memory.vectors.count("user:sam") == 1
    finally:
        await memory.close()


COUNT_VECTORS = """
import asyncio, sys
from memcubes.exchange import Exchange
from memcubes.memory_os import MemoryOS
from proxy.config import Settings

async def main():
    memory = await MemoryOS.open(Settings.from_yaml(sys.argv[1]).memory)
    try:
        if sys.argv[2] == "seed":
            exchange = Exchange(space="user:tia", facts=["Tia sails", "Tia bakes bread"], mode="heuristic")
            await memory.add(exchange, sync=True)
        print(memory.vectors.count("user:tia"))
    finally:
        await memory.close()

asyncio.run(main())
"""


def test_reindex_embeds_every_memory_again(tmp_path: Path) -> None:
    """Each step in its own process: Chroma caches an opened store per process."""
    config = tmp_path / "config.yaml"
    config.write_text(f"memory: {{data_dir: {tmp_path / 'data'}}}\n")

    def run(*args: str) -> str:
        result = subprocess.run([sys.executable, *args], cwd=ROOT, capture_output=True, text=True, timeout=300)
        assert result.returncode == 0, result.stderr
        return result.stdout.strip()

    assert run("-c", COUNT_VECTORS, str(config), "seed") == "2"
    with sqlite3.connect(tmp_path / "data" / "memproxy.db") as db:
        db.execute("DELETE FROM vectors")
    assert run("-c", COUNT_VECTORS, str(config), "count") == "0"
    assert "reindexed 2 memories" in run("-m", "proxy.cli", "reindex", "--config", str(config))
    assert run("-c", COUNT_VECTORS, str(config), "count") == "2"
