"""Relay to an upstream that speaks OpenAI's wire format (OpenAI, vLLM, llama.cpp, Ollama's /v1 ...).

The body goes out as the client sent it (model name swapped, memories injected) and the answer
comes back byte for byte: ids, usage, tool calls, finish reasons and fields memproxy has never
heard of. Going through litellm instead would re-build every response and chunk through its own
types (adding and dropping fields) and cost ~3 ms per call on this machine, against ~0.8 ms here.
The client is aiohttp's: under 64 concurrent requests httpx's connection pool cost the proxy more
CPU than everything else it does without memory (see ``make bench``, overhead section).
"""

from __future__ import annotations

import json
from collections.abc import AsyncIterator
from typing import Any

import aiohttp

from proxy.backends.base import Backend, BackendResponse, ForwardContext, StreamChunk, chunk_finished
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

OPENAI_API_BASE = "https://api.openai.com/v1"
WIRE_PROVIDERS = frozenset({"openai", "hosted_vllm"})
_CONNECT_SECONDS = 10.0


def upstream_error(status: int, body: bytes, model_name: str) -> BackendError:
    """Translate an upstream error status into memproxy's error tree; its message goes to the log
    only, its ``type``/``code``/``param`` to the client when they are plain identifiers."""
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
    if status == 503:
        return BackendUnavailable(message)
    if status >= 500:
        return BackendError(message)
    return BackendRejected(message, status=status, param=param, code=code, kind=kind)


class OpenAIWireBackend(Backend):
    def __init__(self, entry: ModelEntry, *, client: aiohttp.ClientSession, router: RouterSettings) -> None:
        super().__init__(entry.model_name)
        params = entry.litellm_params
        assert params is not None
        provider, _, upstream = params.model.partition("/")
        self._upstream_model = upstream if provider in WIRE_PROVIDERS and upstream else params.model
        # forward: passthrough can front another family's OpenAI-compatible endpoint (Anthropic
        # offers one): the layout still uses that family's caching hints.
        self.provider = provider if upstream else "openai"
        self._url = (params.api_base or OPENAI_API_BASE).rstrip("/") + "/chat/completions"
        self._needs_key = params.api_base is None and not params.api_key
        self.prompt_cache_key = params.api_base is None or params.api_base.rstrip("/") == OPENAI_API_BASE
        self._client = client
        self._headers = {"content-type": "application/json", **(params.extra_headers or {})}
        if params.api_key:
            self._headers["authorization"] = f"Bearer {params.api_key}"
        if params.organization:
            self._headers["openai-organization"] = params.organization
        # Per read, not in total: a long answer that keeps coming is not a timeout.
        read = params.timeout or router.timeout
        self._timeout = aiohttp.ClientTimeout(total=None, sock_connect=_CONNECT_SECONDS, sock_read=read)
        stream_read = params.stream_timeout or read
        self._stream_timeout = aiohttp.ClientTimeout(total=None, sock_connect=_CONNECT_SECONDS, sock_read=stream_read)

    def _payload(self, body: dict[str, Any]) -> bytes:
        if self._needs_key:
            advice = (
                f"No API key is configured for model {self.model_name!r}: set its litellm_params.api_key "
                "(the default config reads OPENAI_API_KEY)."
            )
            raise BackendAuthenticationFailed(advice, public=advice, code="missing_backend_api_key")
        return json.dumps({**body, "model": self._upstream_model}).encode()

    async def _post(self, payload: bytes, timeout: aiohttp.ClientTimeout) -> aiohttp.ClientResponse:
        """Send the request, once more if the connection closes before any answer.

        An upstream may close an idle keep-alive connection just as the pool hands it out; the
        request then fails before a byte of answer (httpx checks a pooled socket before reuse,
        aiohttp does not). Seen as a few 502s among 200 concurrent streams."""
        try:
            return await self._client.post(self._url, data=payload, headers=self._headers, timeout=timeout)
        except aiohttp.ServerDisconnectedError:
            return await self._client.post(self._url, data=payload, headers=self._headers, timeout=timeout)

    async def complete(self, body: dict[str, Any], ctx: ForwardContext) -> BackendResponse:
        payload = self._payload(body)
        try:
            async with await self._post(payload, self._timeout) as response:
                status, content = response.status, await response.read()
        except TimeoutError as exc:
            raise BackendTimeout(f"backend for {self.model_name!r} timed out") from exc
        except aiohttp.ClientError as exc:
            raise BackendUnreachable(f"backend for {self.model_name!r} is unreachable: {exc!r}") from exc
        if status >= 400:
            raise upstream_error(status, content, self.model_name)
        try:
            data = json.loads(content)
        except ValueError as exc:
            raise BackendError(f"backend for {self.model_name!r} answered invalid JSON") from exc
        if not isinstance(data, dict):
            raise BackendError(f"backend for {self.model_name!r} answered JSON that is not an object")
        return BackendResponse(data, raw=content)

    async def stream(self, body: dict[str, Any], ctx: ForwardContext) -> AsyncIterator[StreamChunk]:
        payload = self._payload(body)
        finished = False
        try:
            async with await self._post(payload, self._stream_timeout) as response:
                if response.status >= 400:
                    raise upstream_error(response.status, await response.read(), self.model_name)
                async for raw, data in sse_events(response.content.iter_any()):
                    if data.strip() == b"[DONE]":
                        return
                    try:
                        chunk = json.loads(data)
                    except ValueError as exc:
                        raise BackendError(f"backend for {self.model_name!r} sent an invalid stream event") from exc
                    if not isinstance(chunk, dict):
                        raise BackendError(f"backend for {self.model_name!r} sent an invalid stream event")
                    finished = finished or chunk_finished(chunk)
                    yield StreamChunk(chunk, raw=raw)
        except TimeoutError as exc:
            raise BackendTimeout(f"backend for {self.model_name!r} timed out") from exc
        except aiohttp.ClientError as exc:
            raise BackendUnreachable(f"backend for {self.model_name!r} dropped the stream: {exc!r}") from exc
        if not finished:
            raise BackendUnreachable(f"backend for {self.model_name!r} ended the stream before it finished")
