"""One record per HTTP request, and the middleware that opens it and, when the last byte is out,
writes the access line, counts the request in the metrics and closes its trace span.

The record lives in a context variable so that code deep in the request (the chat service, an
error handler, a log call in a stream) can add to it or read its id without every signature
carrying it; asyncio copies the context into tasks, so a streamed body still sees it. The access
line names the route template, never the path (paths carry space names, i.e. user ids), and the
user only when ``server.log_user_ids`` is set; it never holds message text.
"""

from __future__ import annotations

import logging
import time
from contextvars import ContextVar
from dataclasses import dataclass

from starlette.datastructures import MutableHeaders
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from memcubes.ids import new_id
from proxy.metrics import Metrics
from proxy.tracing import Tracing

log = logging.getLogger("memproxy.access")

_IN_PREFIX = ("method", "route", "request_id")  # the text line shows these before its fields
UNMATCHED = "unmatched"  # the route label of 404s: raw paths would make unbounded label values


def new_request_id() -> str:
    return f"req_{new_id()}"


@dataclass
class RequestRecord:
    """What the access line and the request metrics say about one request; handlers fill in
    ``model`` (a configured model name only), ``memory_status`` and ``user``."""

    request_id: str
    model: str | None = None
    memory_status: str | None = None
    user: str | None = None


_current: ContextVar[RequestRecord | None] = ContextVar("memproxy_request", default=None)


def current_request() -> RequestRecord:
    """The running request's record; outside a request (a script, a test calling a service
    directly) a fresh one nobody reads."""
    record = _current.get()
    return record if record is not None else RequestRecord(request_id=new_request_id())


def current_request_id() -> str | None:
    record = _current.get()
    return record.request_id if record is not None else None


def route_of(scope: Scope) -> str:
    """The matched route's template (``/v1/memories/{memory_id}``), set on the scope by routing."""
    return str(getattr(scope.get("route"), "path", UNMATCHED))


class AccessLog:
    """Pure ASGI middleware, outermost, so that what inner layers refuse (413s) is counted too.
    Every response gets ``x-request-id``."""

    def __init__(self, app: ASGIApp, *, metrics: Metrics, tracing: Tracing, log_user_ids: bool) -> None:
        self.app = app
        self.metrics = metrics
        self.tracing = tracing
        self.log_user_ids = log_user_ids

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        record = RequestRecord(request_id=new_request_id())
        token = _current.set(record)
        status = 500
        started = time.perf_counter()

        async def send_with_id(message: Message) -> None:
            nonlocal status
            if message["type"] == "http.response.start":
                status = int(message["status"])
                headers = MutableHeaders(scope=message)
                if "x-request-id" not in headers:
                    headers.append("x-request-id", record.request_id)
            await send(message)

        method = str(scope.get("method", ""))
        try:
            with self.tracing.span(f"{method} request", {"http.request.method": method}) as span:
                try:
                    await self.app(scope, receive, send_with_id)
                finally:
                    if span is not None:
                        span.update_name(f"{method} {route_of(scope)}")
                        span.set_attribute("http.route", route_of(scope))
                        span.set_attribute("http.response.status_code", status)
                        span.set_attribute("memproxy.request_id", record.request_id)
        finally:
            _current.reset(token)
            self._finish(record, scope, method=method, status=status, seconds=time.perf_counter() - started)

    def _finish(self, record: RequestRecord, scope: Scope, *, method: str, status: int, seconds: float) -> None:
        route = route_of(scope)
        self.metrics.request(route=route, model=record.model or "", status=status, seconds=seconds)
        fields: dict[str, object] = {
            "method": method,
            "route": route,
            "status": status,
            "ms": round(seconds * 1000, 1),
            "request_id": record.request_id,
            "model": record.model,
            "memory": record.memory_status,
        }
        if self.log_user_ids and record.user is not None:
            fields["user"] = record.user
        text = " ".join(f"{k}={v}" for k, v in fields.items() if v is not None and k not in _IN_PREFIX)
        log.info("%s %s %s", method, route, text, extra={"access": fields, "request_id": record.request_id})
