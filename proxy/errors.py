"""Every error a client sees, in OpenAI's shape, decided in this one place.

    ProxyError                      {"error": {"message", "type", "param", "code"}}
    ├── InvalidRequest          400 invalid_request_error
    ├── AuthenticationFailed    401 authentication_error
    ├── PermissionDenied        403 permission_error (code permission_denied): the key may not
    ├── KeyRateLimited          429 rate_limit_error, with retry-after: the key's own rpm
    ├── MemoryBusy              429 rate_limit_error, with retry-after: the key's memory work in
    │                           flight is at its bound (``proxy.memory_slots``)
    ├── NotFound                404 invalid_request_error (code model_not_found / memory_not_found)
    ├── PayloadTooLarge         413 invalid_request_error
    ├── MemoryUnavailable       503 memory_unavailable (only with memory.fail_closed)
    └── BackendError            502 upstream_error: the model backend failed
        ├── BackendRejected     the upstream's own 4xx, status kept (bad params ...)
        ├── BackendAuthenticationFailed  502 upstream_authentication_error (upstream 401/403,
        │                       or no backend key configured): never the client's own 401
        ├── BackendRateLimited  429 rate_limit_error
        ├── BackendTimeout      504 timeout
        ├── BackendUnreachable  502 upstream_unreachable
        └── BackendUnavailable  503 (upstream 503)

Errors of the layers below are translated where they are raised (litellm and httpx in the
backends, ``memcubes`` errors here); after a stream has started an error is an SSE event
(``sse_error``), never a status code.

Anthropic's Messages API (``/v1/messages...``) answers in Anthropic's shape instead, so the
Anthropic SDK raises its own exception classes: ``{"type": "error", "error": {"type", "message"}}``
with Anthropic's type names (``error_response`` picks the shape by path, for every error).

A backend error tells the client its status class, a fixed message, the request id and the
upstream's error ``code``/``param`` when they are plain identifiers; never the upstream's own
words (they have echoed keys back), URLs, hosts or exception reprs. Those go to the proxy's log
(``str(error)``, with anything key-like redacted), at warning, under the request id.
"""

from __future__ import annotations

import json
import logging
import re
from collections.abc import Mapping
from typing import Any, cast

from fastapi import FastAPI, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse
from starlette.exceptions import HTTPException as StarletteHTTPException

from memcubes.errors import BundleError, CubeNotFound, InvalidMemoryInput, MemoryOSError, SpaceNotFound
from proxy.sse import sse

log = logging.getLogger(__name__)

_IDENTIFIER = re.compile(r"[A-Za-z0-9][A-Za-z0-9_.-]{0,63}")
_SECRET = re.compile(
    r"(?i)\bbearer\s+\S+|\b(?:sk|pk|rk|ak|key|token|secret)[-_][A-Za-z0-9_\-]{6,}|[A-Za-z0-9_\-+/=]{32,}"
)


def redact(text: str) -> str:
    """``text`` with bearer tokens, ``sk-...``-style keys and long opaque strings replaced."""
    return _SECRET.sub("[redacted]", text)


def identifier(value: object) -> str | None:
    """``value`` when it is a plain identifier an upstream may safely pass on (``invalid_model``)."""
    return value if isinstance(value, str) and _IDENTIFIER.fullmatch(value) else None


class ProxyError(Exception):
    status: int = 500
    type: str = "server_error"
    code: str | None = None

    def __init__(
        self, message: str, *, param: str | None = None, code: str | None = None, headers: dict[str, str] | None = None
    ) -> None:
        super().__init__(message)
        self.message = message
        self.param = param
        self.headers = headers
        if code is not None:
            self.code = code

    @property
    def client_message(self) -> str:
        """What the client is told (a backend's own words never are: see ``BackendError``)."""
        return self.message

    def body(self) -> dict[str, Any]:
        return error_body(self.client_message, type=self.type, param=self.param, code=self.code)


class InvalidRequest(ProxyError):
    status = 400
    type = "invalid_request_error"


class AuthenticationFailed(ProxyError):
    status = 401
    type = "authentication_error"
    code = "invalid_api_key"


class PermissionDenied(ProxyError):
    """The key is valid but may not do this (another user, a space or model it was not given)."""

    status = 403
    type = "permission_error"
    code = "permission_denied"


class KeyRateLimited(ProxyError):
    """The key's own ``rpm`` is spent; ``retry-after`` says when the next request is accepted."""

    status = 429
    type = "rate_limit_error"
    code = "rate_limit_exceeded"


class MemoryBusy(ProxyError):
    """The key has ``general_settings.memory_concurrency_per_key`` memory operations in flight."""

    status = 429
    type = "rate_limit_error"
    code = "memory_concurrency_exceeded"


class NotFound(ProxyError):
    status = 404
    type = "invalid_request_error"


class PayloadTooLarge(ProxyError):
    status = 413
    type = "invalid_request_error"
    code = "request_too_large"


class MemoryUnavailable(ProxyError):
    status = 503
    type = "memory_unavailable"


class BackendError(ProxyError):
    """``detail`` (``str(error)``, redacted) is for the log; the client gets ``summary`` or the
    ``public`` message memproxy itself wrote (never upstream text), and the request id."""

    status = 502
    type = "upstream_error"
    summary = "The model backend failed"
    retryable = True

    def __init__(self, detail: str, *, public: str | None = None, param: object = None, code: object = None) -> None:
        super().__init__(redact(detail), param=identifier(param), code=identifier(code))
        self.public = public
        self.request_id: str | None = None

    @property
    def client_message(self) -> str:
        message = self.public or f"{self.summary} (HTTP {self.status})."
        if self.request_id:
            message += f" Request id {self.request_id}: the proxy's log has the details."
        return message


class BackendRejected(BackendError):
    """The upstream refused the request itself; retrying or falling back will not help."""

    type = "invalid_request_error"
    summary = "The model backend refused the request"
    retryable = False

    def __init__(
        self,
        detail: str,
        *,
        status: int,
        public: str | None = None,
        param: object = None,
        code: object = None,
        kind: object = None,
    ) -> None:
        super().__init__(detail, public=public, param=param, code=code)
        self.status = status
        if status == 404:
            self.type = "not_found_error"
        self.type = identifier(kind) or self.type


class BackendAuthenticationFailed(BackendError):
    """The upstream refused memproxy's own credentials (401/403), or none are configured: the
    operator's problem, not the client's key."""

    type = "upstream_authentication_error"
    code = "upstream_authentication_error"
    summary = "The model backend refused the proxy's credentials"
    retryable = False


class BackendRateLimited(BackendError):
    status = 429
    type = "rate_limit_error"
    code = "rate_limit_exceeded"
    summary = "The model backend is limiting requests"


class BackendTimeout(BackendError):
    status = 504
    type = "timeout"
    code = "upstream_timeout"
    summary = "The model backend timed out"


class BackendUnreachable(BackendError):
    status = 502
    code = "upstream_unreachable"
    summary = "The model backend could not be reached or dropped the connection"


class BackendUnavailable(BackendError):
    status = 503
    type = "service_unavailable"
    summary = "The model backend is unavailable"


def error_body(message: str, *, type: str, param: str | None = None, code: str | None = None) -> dict[str, Any]:
    return {"error": {"message": message, "type": type, "param": param, "code": code}}


ANTHROPIC_PATHS = ("/v1/messages",)
_ANTHROPIC_TYPES = {
    400: "invalid_request_error",
    401: "authentication_error",
    403: "permission_error",
    404: "not_found_error",
    413: "request_too_large",
    429: "rate_limit_error",
    529: "overloaded_error",
}


def anthropic_body(message: str, *, status: int) -> dict[str, Any]:
    kind = _ANTHROPIC_TYPES.get(status, "api_error" if status >= 500 else "invalid_request_error")
    return {"type": "error", "error": {"type": kind, "message": message}}


def error_payload(
    path: str, status: int, message: str, *, type: str, param: str | None = None, code: str | None = None
) -> dict[str, Any]:
    """The error body a client of ``path`` expects: Anthropic's on its routes, else OpenAI's."""
    if path.startswith(ANTHROPIC_PATHS):
        return anthropic_body(message, status=status)
    return error_body(message, type=type, param=param, code=code)


def error_response(
    request: Request,
    status: int,
    message: str,
    *,
    type: str,
    param: str | None = None,
    code: str | None = None,
    headers: Mapping[str, str] | None = None,
) -> JSONResponse:
    body = error_payload(request.url.path, status, message, type=type, param=param, code=code)
    return JSONResponse(body, status_code=status, headers=headers)


def anthropic_sse_error(error: ProxyError) -> bytes:
    """The ``error`` event that ends an Anthropic stream which failed after it started."""
    return sse(anthropic_body(error.client_message, status=error.status), event="error")


def sse_error(error: ProxyError) -> bytes:
    """The event that ends a stream which failed after it started (then ``data: [DONE]``)."""
    return b"data: " + json.dumps(error.body()).encode() + b"\n\n"


def from_memory_error(exc: MemoryOSError) -> ProxyError:
    if isinstance(exc, CubeNotFound):
        return NotFound(str(exc), code="memory_not_found")
    if isinstance(exc, SpaceNotFound):
        return NotFound(str(exc), code="space_not_found")
    if isinstance(exc, InvalidMemoryInput):
        return InvalidRequest(str(exc))
    if isinstance(exc, BundleError):
        return InvalidRequest(str(exc), code="invalid_bundle")
    log.warning("memory store unavailable: %s", exc)
    return MemoryUnavailable("memory store unavailable; the proxy's log has the details")


_TYPE_TAGS = frozenset({"str", "int", "float", "bool", "list", "dict", "none", "json-or-python"})


def _param(location: tuple[Any, ...]) -> str | None:
    """``messages[0].content`` from pydantic's location, without the union-member tags it adds."""
    parts = [str(p) for p in location[1:] if not (isinstance(p, str) and ("[" in p or p in _TYPE_TAGS))]
    text = ""
    for part in parts:
        text += f"[{part}]" if part.isdigit() else (f".{part}" if text else part)
    return text or None


def _unparsable_body(cause: BaseException | None) -> str | None:
    """Why FastAPI could not parse a JSON body (it answers a bare 400 "error parsing the body")."""
    if isinstance(cause, UnicodeDecodeError):
        return "We could not parse the JSON body of your request: it is not valid UTF-8"
    if isinstance(cause, RecursionError):
        return "We could not parse the JSON body of your request: it is nested too deeply"
    if isinstance(cause, ValueError):  # e.g. an integer of more digits than Python converts
        return f"We could not parse the JSON body of your request: {str(cause).split(';')[0]}"
    return None


def _unknown_path(request: Request) -> str:
    """A 404 that says what memproxy does serve, so a client pointed at the wrong path learns why
    (the endpoints of the app's OpenAPI schema, which FastAPI builds once and keeps)."""
    paths: dict[str, dict[str, Any]] = request.app.openapi().get("paths", {})
    served = ", ".join(f"{method.upper()} {path}" for path, methods in paths.items() for method in methods)
    return f"memproxy has no endpoint {request.method} {request.url.path[:200]}. It serves: {served}."


def install_error_handlers(app: FastAPI) -> None:
    """The exception-handler table: each error type once, to one OpenAI-shaped response."""

    async def proxy_error(request: Request, exc: Exception) -> JSONResponse:
        assert isinstance(exc, ProxyError)
        if isinstance(exc, BackendError):  # the request id is added by the log handler
            log.warning("upstream failed on %s: %s %s", request.url.path, exc.status, exc.message)
        return error_response(
            request, exc.status, exc.client_message, type=exc.type, param=exc.param, code=exc.code, headers=exc.headers
        )

    async def memory_error(request: Request, exc: Exception) -> JSONResponse:
        assert isinstance(exc, MemoryOSError)
        return await proxy_error(request, from_memory_error(exc))

    async def validation_error(request: Request, exc: Exception) -> JSONResponse:
        assert isinstance(exc, RequestValidationError)
        # The deepest location is the most specific complaint (a union reports every member).
        errors = cast(list[dict[str, Any]], list(exc.errors()))
        fallback: dict[str, Any] = {"loc": (), "msg": "invalid request"}
        first = max(errors, key=lambda e: len(e.get("loc", ()))) if errors else fallback
        location = tuple(first.get("loc", ()))
        if first.get("type") == "json_invalid":
            message = "We could not parse the JSON body of your request: " + str(first.get("ctx", {}).get("error", ""))
            return error_response(request, 400, message.strip(": "), type="invalid_request_error")
        param = _param(location)
        prefix = f"{param}: " if param else ""
        problem = first.get("msg", "invalid value")
        if first.get("type") == "value_error":  # a validator's own words, without pydantic's "Value error, "
            problem = str(first.get("ctx", {}).get("error", problem))
        elif location == ("body",) and first.get("type") in ("missing", "model_attributes_type", "dict_type"):
            problem = "the request body must be a JSON object"
            if isinstance(first.get("input"), bytes):  # FastAPI parses JSON only when the content type says so
                problem += " sent as Content-Type: application/json"
        message = f"{prefix}{problem}"
        if len(errors) > 1:
            message += f" (and {len(errors) - 1} more problem{'s' if len(errors) > 2 else ''})"
        return error_response(request, 400, message, type="invalid_request_error", param=param)

    async def http_error(request: Request, exc: Exception) -> JSONResponse:
        assert isinstance(exc, StarletteHTTPException)
        kind = "invalid_request_error" if exc.status_code < 500 else "server_error"
        status = 400 if exc.status_code == 422 else exc.status_code
        message = _unparsable_body(exc.__cause__) if status == 400 else None
        if status == 404 and exc.detail == "Not Found":
            message = _unknown_path(request)
        return error_response(request, status, message or str(exc.detail), type=kind, headers=exc.headers)

    async def recursion_error(request: Request, exc: Exception) -> JSONResponse:
        return error_response(request, 400, "request JSON is nested too deeply", type="invalid_request_error")

    async def unexpected(request: Request, exc: Exception) -> JSONResponse:
        log.exception("unhandled error on %s %s", request.method, request.url.path)
        return error_response(request, 500, "internal error in memproxy", type="server_error")

    app.add_exception_handler(ProxyError, proxy_error)
    app.add_exception_handler(MemoryOSError, memory_error)
    app.add_exception_handler(RequestValidationError, validation_error)
    app.add_exception_handler(StarletteHTTPException, http_error)
    app.add_exception_handler(RecursionError, recursion_error)
    app.add_exception_handler(Exception, unexpected)
