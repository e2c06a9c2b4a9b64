"""Relay to an upstream that serves OpenAI's Responses API itself (``responses_api: native``).

``/v1/responses`` requests go out in the Responses format (memories injected into ``input``,
model name swapped) over the deployment's OpenAI-wire connection, and the answer comes back byte
for byte: the Response object, or every typed event of its stream as the upstream sent it
(reasoning, built-in tool calls and fields memproxy has never heard of included).
"""

from __future__ import annotations

from collections.abc import AsyncIterator
from typing import Any

from proxy.backends.base import BackendResponse, StreamChunk
from proxy.backends.wire import WireClient
from proxy.errors import BackendError, BackendUnreachable

# The events after which a Responses stream sends nothing more.
FINAL_EVENTS = frozenset({"response.completed", "response.incomplete", "response.failed", "error"})


class ResponsesWire:
    def __init__(self, wire: WireClient, model_name: str) -> None:
        self._wire = wire
        self._model_name = model_name

    async def create(self, body: dict[str, Any]) -> BackendResponse:
        return await self._wire.post_json("/responses", self._wire.encode({**body, "stream": False}))

    async def stream(self, body: dict[str, Any]) -> AsyncIterator[StreamChunk]:
        """Every event as the upstream sent it, up to the one that ends the response."""
        payload = self._wire.encode({**body, "stream": True})
        async for raw, event in self._wire.post_events("/responses", payload):
            if event is None:
                raise BackendError(f"backend for {self._model_name!r} sent an invalid stream event")
            yield StreamChunk(event, raw=raw)
            if event.get("type") in FINAL_EVENTS:
                return
        raise BackendUnreachable(f"backend for {self._model_name!r} ended the stream before it finished")
