"""Chat completions on the shared serving path (``proxy/serving/pipeline.py``).

The request's messages are the memory view as they are; memories go in with ``layout.inject``
(the stable block after the application's system messages, the volatile block at the start of the
last user turn) and the answer is relayed byte for byte where the backend speaks OpenAI's wire.
"""

from __future__ import annotations

from typing import Any

from starlette.datastructures import Headers
from starlette.responses import JSONResponse, Response

from memcubes import layout
from proxy.backends.base import BackendResponse, StreamChunk, answer_text, chunk_text
from proxy.errors import sse_error
from proxy.principal import Principal
from proxy.protocol import ChatCompletionRequest
from proxy.serving.pipeline import MemoryPipeline, Prepared, StreamShape
from proxy.sse import DONE, sse


def _event(chunk: StreamChunk) -> bytes:
    return chunk.raw if chunk.raw is not None else sse(chunk.data)


CHAT_STREAM = StreamShape(
    text=lambda chunk: chunk_text(chunk.data),
    encode=_event,
    error=sse_error,
    end=DONE,
    usage=lambda chunk: chunk.data.get("usage"),
)


class ChatService:
    def __init__(self, pipeline: MemoryPipeline) -> None:
        self._pipeline = pipeline

    async def create(self, request: ChatCompletionRequest, headers: Headers, caller: Principal) -> Response:
        scope = self._pipeline.scope(headers, request.owner(), caller, model=request.model)
        body = request.forward_body()
        prepared = await self._pipeline.prepare(scope, request.model, body["messages"])
        body = with_memory(body, prepared)
        ctx = prepared.ctx
        if request.stream:
            first, rest = await self._pipeline.open_stream(prepared, lambda b: b.stream(body, ctx))
            return self._pipeline.relay(prepared, first, rest, CHAT_STREAM)
        response: BackendResponse = await self._pipeline.forward(prepared, lambda b: b.complete(body, ctx))
        self._pipeline.metrics.usage(model=request.model, usage=response.data.get("usage"))
        await self._pipeline.journal(prepared, answer_text(response.data))
        headers_out = self._pipeline.response_headers(prepared)
        if response.raw is not None:
            return Response(response.raw, media_type="application/json", headers=headers_out)
        return JSONResponse(response.data, headers=headers_out)


def with_memory(body: dict[str, Any], prepared: Prepared) -> dict[str, Any]:
    """The chat body with the plan's memories in place (``layout.inject``) and, for upstreams that
    take it, a ``prompt_cache_key`` of the space. Shared with the Responses API's bridge."""
    plan, backend, space = prepared.plan, prepared.backend, prepared.scope.space
    body = dict(body)
    if plan.items:
        body["messages"] = layout.inject(
            body["messages"], stable=plan.stable, volatile=plan.volatile, stable_layout=prepared.stable_layout
        )
    if backend.prompt_cache_key and space is not None and "prompt_cache_key" not in body:
        body["prompt_cache_key"] = layout.prompt_cache_key(space)
    return body
