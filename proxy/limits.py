"""Request body size limit (``general_settings.max_request_size_mb``), as pure ASGI middleware.

Checked on the declared Content-Length first and on the bytes actually received after, so a
chunked upload cannot get around it; either way the answer is a 413 in the route's error shape and no more
than the limit is ever held in memory.
"""

from __future__ import annotations

import json
from collections.abc import Mapping

from starlette.types import ASGIApp, Message, Receive, Scope, Send

from proxy.errors import PayloadTooLarge, error_payload


class BodySizeLimit:
    """``path_limits`` gives some paths their own limit (bundle imports are far larger than chat)."""

    def __init__(self, app: ASGIApp, *, max_bytes: int, path_limits: Mapping[str, int] | None = None) -> None:
        self.app = app
        self.max_bytes = max_bytes
        self.path_limits = dict(path_limits or {})

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        max_bytes = self.path_limits.get(scope["path"], self.max_bytes)
        error = PayloadTooLarge(f"request body exceeds the limit of {max_bytes} bytes")
        declared = dict(scope["headers"]).get(b"content-length")
        if declared is not None and declared.isdigit() and int(declared) > max_bytes:
            await _reject(send, error, scope["path"])
            return
        # Read the body here (never more than the limit) so an oversized one is answered before
        # the app sees it; the app then gets the buffered body as one message.
        body = bytearray()
        while True:
            message = await receive()
            if message["type"] != "http.request":
                await self.app(scope, _replay(message, receive), send)
                return
            body += message.get("body", b"")
            if len(body) > max_bytes:
                await _reject(send, error, scope["path"])
                return
            if not message.get("more_body", False):
                break
        buffered: Message = {"type": "http.request", "body": bytes(body), "more_body": False}
        await self.app(scope, _replay(buffered, receive), send)


def _replay(first: Message, receive: Receive) -> Receive:
    pending = [first]

    async def replay() -> Message:
        return pending.pop() if pending else await receive()

    return replay


async def _reject(send: Send, error: PayloadTooLarge, path: str) -> None:
    payload = error_payload(path, error.status, error.message, type=error.type, code=error.code)
    body = json.dumps(payload).encode()
    await send(
        {
            "type": "http.response.start",
            "status": error.status,
            "headers": [
                (b"content-type", b"application/json"),
                (b"content-length", str(len(body)).encode()),
                (b"connection", b"close"),
            ],
        }
    )
    await send({"type": "http.response.body", "body": body})
