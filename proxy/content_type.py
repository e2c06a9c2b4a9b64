"""The memory API reads its body as JSON whatever the declared content type, so that
``curl -d '{"user": ...}'`` works as typed (curl sends ``application/x-www-form-urlencoded``).
FastAPI parses a body as JSON only when the content type says so; this pure ASGI middleware
rewrites a missing or form content type on the memory API's JSON routes before it looks. Any
other content type is left alone (and answered 400 as before), and so are the chat routes, whose
OpenAI SDK clients always send JSON."""

from __future__ import annotations

from starlette.types import ASGIApp, Receive, Scope, Send

JSON_ROUTES = ("/v1/memories",)  # and everything below it: search, edits
_LENIENT = {b"", b"application/x-www-form-urlencoded"}


class JsonByDefault:
    def __init__(self, app: ASGIApp) -> None:
        self.app = app

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] == "http" and scope["path"].startswith(JSON_ROUTES):
            declared = next((v for k, v in scope["headers"] if k == b"content-type"), b"")
            if declared.split(b";")[0].strip().lower() in _LENIENT:
                # in place: outer middleware reads what routing records on this same scope
                headers = [(k, v) for k, v in scope["headers"] if k != b"content-type"]
                scope["headers"] = [*headers, (b"content-type", b"application/json")]
        await self.app(scope, receive, send)
