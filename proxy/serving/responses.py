"""OpenAI's Responses API on the shared serving path (``proxy/serving/pipeline.py``).

The conversation (a ``previous_response_id`` chain's stored turns, then this request's input)
becomes chat messages; memory goes in exactly as on chat (``serving.chat.with_memory``), the
model answers through its chat endpoint (``proxy.bridge.responses`` translates both ways), and
the answer is journalled and, unless ``store: false``, kept for the next link of the chain.
"""

from __future__ import annotations

from collections.abc import AsyncIterator
from typing import Any

from starlette.datastructures import Headers
from starlette.responses import JSONResponse, Response

from proxy.backends import Backend
from proxy.backends.base import StreamChunk
from proxy.bridge import responses as bridge
from proxy.errors import sse_error
from proxy.principal import Principal
from proxy.responses_protocol import ResponsesRequest
from proxy.serving.chat import with_memory
from proxy.serving.pipeline import MemoryPipeline, StreamShape
from proxy.serving.response_store import ResponseStore
from proxy.sse import sse


def _encode(chunk: StreamChunk) -> bytes:
    return sse(chunk.data, event=str(chunk.data.get("type")))


RESPONSES_STREAM = StreamShape(text=bridge.event_text, encode=_encode, error=sse_error)


class ResponsesService:
    def __init__(self, pipeline: MemoryPipeline, store: ResponseStore) -> None:
        self._pipeline = pipeline
        self._store = store

    async def create(
        self, request: ResponsesRequest, headers: Headers, caller: Principal, *, key: str | None
    ) -> Response:
        scope = self._pipeline.scope(headers, request.owner(), caller, model=request.model)
        body = request.forward_body()
        history: list[dict[str, Any]] = []
        if request.previous_response_id:
            history = self._store.get(key, request.previous_response_id, param="previous_response_id").conversation
        turns = [*history, *bridge.chat_messages(request.input)]
        system = [{"role": "system", "content": request.instructions}] if request.instructions else []
        prepared = await self._pipeline.prepare(scope, request.model, [*system, *turns], id_prefix="resp")
        chat = with_memory(bridge.chat_request(body, [*system, *turns]), prepared)
        ctx, response_id = prepared.ctx, prepared.request_id
        keep = body.get("store", True)
        if request.stream:
            answer = bridge.Answer()

            async def events(backend: Backend) -> AsyncIterator[StreamChunk]:
                chunks = backend.stream(chat, ctx)
                async for event in bridge.response_events(chunks, body, response_id=response_id, answer=answer):
                    if keep and event.data.get("type") == "response.completed":
                        self._store.put(key, event.data["response"], [*turns, *answer.messages()])
                    yield event

            first, rest = await self._pipeline.open_stream(prepared, events)
            return self._pipeline.relay(prepared, first, rest, RESPONSES_STREAM)
        completion = await self._pipeline.forward(prepared, lambda backend: backend.complete(chat, ctx))
        answer = bridge.answer_of(completion.data)
        response = bridge.response_object(body, response_id=response_id, answer=answer)
        if keep:
            self._store.put(key, response, [*turns, *answer.messages()])
        await self._pipeline.journal(prepared, answer.text)
        return JSONResponse(response, headers=self._pipeline.response_headers(prepared))

    def retrieve(self, response_id: str, *, key: str | None) -> dict[str, Any]:
        return self._store.get(key, response_id).response

    def delete(self, response_id: str, *, key: str | None) -> dict[str, Any]:
        self._store.delete(key, response_id)
        return {"id": response_id, "object": "response.deleted", "deleted": True}
