"""The HTTP server's options, and the guard against slow clients that uvicorn lacks.

uvicorn closes idle keep-alive connections but has no limit on how long a client may take to send
its request: one connection that sent half its headers stayed open 50 s, and 20,000 of them (no
credentials needed) made every request fail, ``/healthz`` included, until the attacker stopped.
``guarded_protocol`` is uvicorn's httptools protocol with three limits from ``server.*``:

- ``header_timeout_seconds``: from connecting (or from the first byte of a keep-alive request) to
  the end of the headers; a slower client is disconnected;
- ``body_timeout_seconds``: the longest pause between two pieces of a request body;
- ``max_connections``: past it, the connection idle the longest (no request in progress, or
  headers still arriving) is closed to make room, so a flood of half-sent requests cannot keep a
  normal client out; only when every connection is busy with a request is the new one refused.
"""

from __future__ import annotations

import asyncio
from collections import OrderedDict
from typing import Any

from uvicorn.protocols.http.httptools_impl import HttpToolsProtocol

from proxy.config import ServerSettings


def guarded_protocol(settings: ServerSettings) -> type[HttpToolsProtocol]:
    """A protocol class for one server (its idle-connection registry is shared by its connections
    and by nothing else)."""
    idle: OrderedDict[HttpToolsProtocol, None] = OrderedDict()

    class GuardedProtocol(HttpToolsProtocol):
        _deadline: asyncio.TimerHandle | None = None
        _body_seen = 0.0

        def connection_made(self, transport: asyncio.Transport) -> None:  # type: ignore[override]
            super().connection_made(transport)
            self._idle()
            self._arm(settings.header_timeout_seconds, self._headers_late)
            if len(self.connections) > settings.max_connections:
                oldest = next((c for c in idle if c is not self), self)
                oldest.transport.close()

        def connection_lost(self, exc: Exception | None) -> None:
            idle.pop(self, None)
            self._disarm()
            super().connection_lost(exc)

        def on_message_begin(self) -> None:
            super().on_message_begin()
            self._arm(settings.header_timeout_seconds, self._headers_late)

        def on_headers_complete(self) -> None:
            idle.pop(self, None)
            self._body_seen = self.loop.time()
            self._arm(settings.body_timeout_seconds, self._body_late)
            super().on_headers_complete()

        def on_body(self, body: bytes) -> None:
            self._body_seen = self.loop.time()
            super().on_body(body)

        def on_message_complete(self) -> None:
            self._disarm()
            super().on_message_complete()

        def on_response_complete(self) -> None:
            super().on_response_complete()
            self._idle()

        def _idle(self) -> None:
            idle[self] = None
            idle.move_to_end(self)

        def _arm(self, delay: float, callback: Any) -> None:
            self._disarm()
            self._deadline = self.loop.call_later(delay, callback)

        def _disarm(self) -> None:
            if self._deadline is not None:
                self._deadline.cancel()
                self._deadline = None

        def _headers_late(self) -> None:
            if self in idle and not self.transport.is_closing():
                self.transport.close()

        def _body_late(self) -> None:
            waited = self.loop.time() - self._body_seen
            if waited < settings.body_timeout_seconds:
                self._arm(settings.body_timeout_seconds - waited, self._body_late)
            elif not self.transport.is_closing():
                self.transport.close()

    return GuardedProtocol


def uvicorn_options(settings: ServerSettings) -> dict[str, Any]:
    """Keyword arguments for ``uvicorn.Config`` that apply ``server.*``."""
    return {
        "http": guarded_protocol(settings),
        "timeout_keep_alive": int(settings.keep_alive_seconds),
    }
