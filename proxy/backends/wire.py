"""HTTP to an upstream API over aiohttp: post JSON, read JSON or server-sent events, and turn
every failure into memproxy's error tree. Shared by the OpenAI-wire and Anthropic-wire relays.

The client is aiohttp's: under 64 concurrent requests httpx's connection pool cost the proxy more
CPU than everything else it does without memory (see ``make bench``, overhead section).
"""

from __future__ import annotations

import json
from collections.abc import AsyncIterator, Mapping
from typing import Any

import aiohttp

from proxy.backends.base import BackendResponse
from proxy.config import ModelEntry, RouterSettings
from proxy.errors import (
    BackendAuthenticationFailed,
    BackendError,
    BackendRateLimited,
    BackendRejected,
    BackendTimeout,
    BackendUnavailable,
    BackendUnreachable,
)
from proxy.sse import sse_events

_CONNECT_SECONDS = 10.0


def upstream_error(status: int, body: bytes, model_name: str) -> BackendError:
    """Translate an upstream error status into memproxy's error tree (OpenAI's ``{"error": {...}}``
    and Anthropic's ``{"type": "error", "error": {...}}`` alike); its message goes to the log only,
    its ``type``/``code``/``param`` to the client when they are plain identifiers."""
    message = body.decode("utf-8", "replace")[:1000] or f"HTTP {status}"
    param = code = kind = None
    try:
        detail = json.loads(body).get("error")
        if isinstance(detail, dict):
            message = str(detail.get("message") or message)
            param, code, kind = detail.get("param"), detail.get("code"), detail.get("type")
        elif isinstance(detail, str):
            message = detail
    except (ValueError, AttributeError):
        pass
    message = f"backend for {model_name!r} answered {status}: {message}"
    if status in (401, 403):
        return BackendAuthenticationFailed(message)
    if status == 429:
        return BackendRateLimited(message)
    if status in (408, 504):
        return BackendTimeout(message)
    if status in (503, 529):
        return BackendUnavailable(message)
    if status >= 500:
        return BackendError(message)
    return BackendRejected(message, status=status, param=param, code=code, kind=kind)


class WireClient:
    """One deployment's upstream: its base URL, headers, upstream model name and timeouts (per
    read, not in total: a long answer that keeps coming is not a timeout)."""

    def __init__(
        self,
        entry: ModelEntry,
        *,
        client: aiohttp.ClientSession,
        router: RouterSettings,
        base: str,
        headers: Mapping[str, str],
        upstream_model: str,
        missing_key: str | None = None,
    ) -> None:
        params = entry.litellm_params
        assert params is not None
        self._client = client
        self._base = base.rstrip("/")
        self._headers = dict(headers)
        self._model_name = entry.model_name
        self._upstream_model = upstream_model
        self._missing_key = missing_key
        read = params.timeout or router.timeout
        self._timeout = aiohttp.ClientTimeout(total=None, sock_connect=_CONNECT_SECONDS, sock_read=read)
        stream_read = params.stream_timeout or read
        self._stream_timeout = aiohttp.ClientTimeout(total=None, sock_connect=_CONNECT_SECONDS, sock_read=stream_read)

    def encode(self, body: dict[str, Any]) -> bytes:
        """The body as sent upstream, under the upstream's model name. ``missing_key`` says how to
        configure a key when the deployment has none and needs one."""
        if self._missing_key is not None:
            advice = f"No API key is configured for model {self._model_name!r}: {self._missing_key}"
            raise BackendAuthenticationFailed(advice, public=advice, code="missing_backend_api_key")
        return json.dumps({**body, "model": self._upstream_model}).encode()

    async def _post(
        self, path: str, payload: bytes, headers: Mapping[str, str] | None, timeout: aiohttp.ClientTimeout
    ) -> aiohttp.ClientResponse:
        """Send the request, once more if the connection closes before any answer.

        An upstream may close an idle keep-alive connection just as the pool hands it out; the
        request then fails before a byte of answer (httpx checks a pooled socket before reuse,
        aiohttp does not). Seen as a few 502s among 200 concurrent streams."""
        url = self._base + path
        sent = {**self._headers, **headers} if headers else self._headers
        try:
            return await self._client.post(url, data=payload, headers=sent, timeout=timeout)
        except aiohttp.ServerDisconnectedError:
            return await self._client.post(url, data=payload, headers=sent, timeout=timeout)

    async def post_json(self, path: str, payload: bytes, headers: Mapping[str, str] | None = None) -> BackendResponse:
        """The upstream's JSON object answer, with its exact bytes."""
        name = self._model_name
        try:
            async with await self._post(path, payload, headers, self._timeout) as response:
                status, content = response.status, await response.read()
        except TimeoutError as exc:
            raise BackendTimeout(f"backend for {name!r} timed out") from exc
        except aiohttp.ClientError as exc:
            raise BackendUnreachable(f"backend for {name!r} is unreachable: {exc!r}") from exc  # repr: log only
        if status >= 400:
            raise upstream_error(status, content, name)
        try:
            data = json.loads(content)
        except ValueError as exc:
            raise BackendError(f"backend for {name!r} answered invalid JSON") from exc
        if not isinstance(data, dict):
            raise BackendError(f"backend for {name!r} answered JSON that is not an object")
        return BackendResponse(data, raw=content)

    async def post_events(
        self, path: str, payload: bytes, headers: Mapping[str, str] | None = None
    ) -> AsyncIterator[tuple[bytes, dict[str, Any] | None]]:
        """Each event of the upstream's stream: its exact bytes and its data as a JSON object
        (``None`` for a non-JSON payload such as ``[DONE]``)."""
        name = self._model_name
        try:
            async with await self._post(path, payload, headers, self._stream_timeout) as response:
                if response.status >= 400:
                    raise upstream_error(response.status, await response.read(), name)
                async for raw, data in sse_events(response.content.iter_any()):
                    try:
                        event = json.loads(data)
                    except ValueError:
                        yield raw, None
                        continue
                    if not isinstance(event, dict):
                        raise BackendError(f"backend for {name!r} sent an invalid stream event")
                    yield raw, event
        except TimeoutError as exc:
            raise BackendTimeout(f"backend for {name!r} timed out") from exc
        except aiohttp.ClientError as exc:
            raise BackendUnreachable(f"backend for {name!r} dropped the stream: {exc!r}") from exc
