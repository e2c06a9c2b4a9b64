"""Run an ASGI app on a real loopback socket in a background thread.

Tests, the demo and the benchmarks need real HTTP servers (the OpenAI SDK must go through a
socket) without the start-up cost of a subprocess per server.
"""

from __future__ import annotations

import socket
import threading
import time
from types import TracebackType
from typing import Any

import uvicorn


def free_port() -> int:
    """A loopback port that was free a moment ago (good enough for tests)."""
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


class ServerThread:
    """``with ServerThread(app) as server: httpx.get(server.url)``; stops the server on exit."""

    def __init__(self, app: Any, *, port: int | None = None, **config: Any) -> None:
        self.port = port or free_port()
        config.setdefault("log_level", "warning")
        config.setdefault("lifespan", "on")
        config.setdefault("timeout_graceful_shutdown", 2)  # don't wait out requests left hanging
        self._server = uvicorn.Server(uvicorn.Config(app, host="127.0.0.1", port=self.port, **config))
        self._thread = threading.Thread(target=self._server.run, daemon=True)

    @property
    def app(self) -> Any:
        return self._server.config.app

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def start(self, timeout: float = 60.0) -> ServerThread:
        self._thread.start()
        deadline = time.monotonic() + timeout
        while not self._server.started:
            if not self._thread.is_alive():
                raise RuntimeError("server thread exited during start-up")
            if time.monotonic() > deadline:
                raise TimeoutError("server did not start in time")
            time.sleep(0.01)
        return self

    def stop(self) -> None:
        self._server.should_exit = True
        self._thread.join(timeout=30)

    def __enter__(self) -> ServerThread:
        return self.start()

    def __exit__(
        self, exc_type: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        self.stop()
