"""Shared fixtures: a real scripted backend over HTTP and real proxies on real sockets.

The embedding model is loaded once per test session and shared by every proxy through
``build_app``'s ``embedder`` seam (loading it costs seconds; it is stateless apart from its cache).
"""

from __future__ import annotations

import contextlib
import os
import subprocess
import sys
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import httpx
import pytest
from openai import OpenAI

from memcubes.config import EmbedderSettings
from memcubes.embedder import Embedder, build_embedder
from memcubes.store import Store
from proxy import Settings, build_app
from proxy.dev.scripted_backend import BackendScript, build_scripted_backend
from proxy.dev.serve_thread import ServerThread, free_port
from tests.postgres import PostgresServer, missing_reason

os.environ.setdefault("HF_HUB_OFFLINE", "1")
CHROMA = Path(sys.executable).parent / "chroma"


@pytest.fixture(scope="session")
def embedder() -> Iterator[Embedder]:
    model = build_embedder(EmbedderSettings())
    yield model
    model.close()


@dataclass
class Backend:
    url: str
    script: BackendScript

    @property
    def received(self) -> list[dict[str, Any]]:
        return self.script.received

    def last_body(self) -> dict[str, Any]:
        return self.script.received[-1]["body"]

    def queue(self, *steps: dict[str, Any]) -> None:
        self.script.steps.extend(steps)


@pytest.fixture(scope="session")
def _backend_server() -> Iterator[tuple[ServerThread, BackendScript]]:
    script = BackendScript()
    with ServerThread(build_scripted_backend(script)) as server:
        yield server, script


@pytest.fixture
def backend(_backend_server: tuple[ServerThread, BackendScript]) -> Backend:
    server, script = _backend_server
    script.steps.clear()
    script.received.clear()
    script.latency = 0.0
    script.chunk_interval = 0.0
    return Backend(url=server.url, script=script)


@dataclass
class Proxy:
    server: ServerThread
    settings: Settings
    api_key: str = "sk-test"

    @property
    def url(self) -> str:
        return self.server.url

    def openai(self, **kwargs: Any) -> OpenAI:
        kwargs.setdefault("api_key", self.api_key)
        return OpenAI(base_url=f"{self.url}/v1", max_retries=0, **kwargs)

    def http(self) -> httpx.Client:
        return httpx.Client(base_url=self.url, headers={"authorization": f"Bearer {self.api_key}"}, timeout=60)

    def wait_writeback(self, timeout: float = 30.0) -> None:
        """Until the journal holds no pending work (the exchange was distilled and stored)."""
        deadline = time.monotonic() + timeout
        with self.http() as http:
            while time.monotonic() < deadline:
                journal = http.get("/readyz").json()["checks"].get("journal", {})
                if not any(journal.get(key) for key in ("pending", "queued", "spilled", "indexing")):
                    return
                time.sleep(0.05)
        raise TimeoutError(f"write-back still pending after {timeout}s: {journal}")

    def stop(self) -> None:
        self.server.stop()


def proxy_settings(backend_url: str, data_dir: Path, **overrides: Any) -> Settings:
    """A config pointing one model, ``fake``, at the scripted backend."""
    data: dict[str, Any] = {
        "model_list": [
            {
                "model_name": "fake",
                "litellm_params": {"model": "openai/fake", "api_base": f"{backend_url}/v1", "api_key": "x"},
            }
        ],
        "memory": {"data_dir": str(data_dir)},
    }
    for key, value in overrides.items():
        if isinstance(value, dict) and isinstance(data.get(key), dict):
            data[key] = {**data[key], **value}
        else:
            data[key] = value
    return Settings.from_mapping(data, env={})


@contextlib.contextmanager
def own_proxy(embedder: Embedder, data_dir: Path, **overrides: Any) -> Iterator[Proxy]:
    """A proxy with its own scripted backend (answers at once, records nothing), for a module's
    fixture that many cases share; ``overrides`` as for ``proxy_settings``."""
    with ServerThread(build_scripted_backend(BackendScript(record=False))) as backend:
        settings = proxy_settings(backend.url, data_dir, **overrides)
        proxy = Proxy(ServerThread(build_app(settings, embedder=embedder)).start(), settings)
        try:
            yield proxy
        finally:
            proxy.stop()


@pytest.fixture(scope="module")
def chroma(tmp_path_factory: pytest.TempPathFactory) -> Iterator[int]:
    """The port of a ``chroma run`` server (from the venv): the vector index several memproxy
    processes share."""
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


@pytest.fixture
def start_proxy(embedder: Embedder, tmp_path: Path) -> Iterator[Callable[..., Proxy]]:
    started: list[Proxy] = []

    def start(settings: Settings) -> Proxy:
        proxy = Proxy(ServerThread(build_app(settings, embedder=embedder)).start(), settings)
        started.append(proxy)
        return proxy

    yield start
    for proxy in started:
        proxy.stop()


@pytest.fixture
def proxy(backend: Backend, start_proxy: Callable[..., Proxy], tmp_path: Path) -> Proxy:
    return start_proxy(proxy_settings(backend.url, tmp_path / "data"))


@pytest.fixture(scope="session")
def postgres_server() -> Iterator[PostgresServer]:
    """One throwaway PostgreSQL for the session (``tests/postgres.py``); skipped, saying why,
    only where the binaries are not installed. Not under pytest's temporary directory: that one
    is private to root, and the server runs as ``postgres``."""
    reason = missing_reason()
    if reason is not None:
        pytest.skip(reason)
    with PostgresServer.start() as server:
        yield server


@pytest.fixture
def postgres_url(postgres_server: PostgresServer) -> str:
    """The URL of a new, empty database of the session's server."""
    return postgres_server.fresh_database()


@pytest.fixture(scope="session")
def postgres_template(postgres_server: PostgresServer) -> str:
    """A database at the current schema, copied by each test that wants a store (a copy takes
    tens of milliseconds; migrating afresh each time would take longer)."""
    url = postgres_server.create_database("memproxy_template")
    Store.open(Path("/nonexistent"), database_url=url).close()
    return "memproxy_template"


@pytest.fixture(params=["sqlite", "postgresql"])
def store_engine(request: pytest.FixtureRequest) -> str:
    """The engine a store-level test runs on: each such test runs on both."""
    return str(request.param)


@pytest.fixture
def database_url(store_engine: str, request: pytest.FixtureRequest) -> str:
    """``memory.database_url`` for the test's engine: empty (SQLite under the data dir) or a new
    PostgreSQL database of the session's server."""
    if store_engine == "sqlite":
        return ""
    server: PostgresServer = request.getfixturevalue("postgres_server")
    return server.fresh_database(template=request.getfixturevalue("postgres_template"))


@pytest.fixture
def open_store(store_engine: str, request: pytest.FixtureRequest) -> Iterator[Callable[[Path], Store]]:
    """``Store.open`` on the test's engine: a SQLite file, or for each path a database of its own
    (two stores opened on one path share it, like two processes on one data dir)."""
    urls: dict[Path, str] = {}
    opened: list[Store] = []

    def open_store(path: Path) -> Store:
        if store_engine == "postgresql" and path not in urls:
            server: PostgresServer = request.getfixturevalue("postgres_server")
            urls[path] = server.fresh_database(template=request.getfixturevalue("postgres_template"))
        store = Store.open(path, database_url=urls.get(path, ""))
        opened.append(store)
        return store

    yield open_store
    for store in opened:
        with contextlib.suppress(Exception):
            store.close()
