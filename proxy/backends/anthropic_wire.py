"""Relay to an upstream that speaks Anthropic's Messages API (Anthropic, or a gateway in front of it).

``/v1/messages`` requests for an ``anthropic/...`` deployment go out in Anthropic's own format
(memories injected, model name swapped) and the answer comes back byte for byte: content blocks,
thinking signatures, cache usage and every stream event as Anthropic sent it. The client's
``anthropic-version`` and ``anthropic-beta`` headers go with it (Claude Code's features depend on
its betas); the deployment's key replaces the client's.
"""

from __future__ import annotations

from collections.abc import AsyncIterator, Mapping
from typing import Any

import aiohttp

from proxy.backends.base import BackendResponse, StreamChunk
from proxy.backends.wire import WireClient
from proxy.config import ModelEntry, RouterSettings
from proxy.errors import BackendUnreachable

ANTHROPIC_API_BASE = "https://api.anthropic.com"
ANTHROPIC_VERSION = "2023-06-01"
FORWARDED_HEADERS = ("anthropic-version", "anthropic-beta")


class AnthropicWire:
    def __init__(self, entry: ModelEntry, *, client: aiohttp.ClientSession, router: RouterSettings) -> None:
        params = entry.litellm_params
        assert params is not None
        self.model_name = entry.model_name
        base = (params.api_base or ANTHROPIC_API_BASE).rstrip("/").removesuffix("/v1")
        headers = {"content-type": "application/json", "anthropic-version": ANTHROPIC_VERSION}
        headers.update(params.extra_headers or {})
        if params.api_key:
            headers["x-api-key"] = params.api_key
        self._wire = WireClient(
            entry,
            client=client,
            router=router,
            base=base + "/v1",
            headers=headers,
            upstream_model=params.model.partition("/")[2] or params.model,
            missing_key="set its litellm_params.api_key." if params.api_base is None and not params.api_key else None,
        )

    async def create(self, body: dict[str, Any], headers: Mapping[str, str]) -> BackendResponse:
        return await self._wire.post_json("/messages", self._wire.encode(body), headers)

    async def count_tokens(self, body: dict[str, Any], headers: Mapping[str, str]) -> BackendResponse:
        return await self._wire.post_json("/messages/count_tokens", self._wire.encode(body), headers)

    async def stream(self, body: dict[str, Any], headers: Mapping[str, str]) -> AsyncIterator[StreamChunk]:
        """Every event as the upstream sent it; an ``error`` event ends the stream like ``message_stop``."""
        payload = self._wire.encode({**body, "stream": True})
        async for raw, event in self._wire.post_events("/messages", payload, headers):
            if event is None:
                continue
            yield StreamChunk(event, raw=raw)
            if event.get("type") in ("message_stop", "error"):
                return
        raise BackendUnreachable(f"backend for {self.model_name!r} ended the stream before it finished")


def forwarded_headers(headers: Mapping[str, str]) -> dict[str, str]:
    """The client's Anthropic headers that travel upstream."""
    return {name: headers[name] for name in FORWARDED_HEADERS if name in headers}
