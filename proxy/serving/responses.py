"""OpenAI's Responses API on the shared serving path (``proxy/serving/pipeline.py``).

The conversation is Responses input items: a ``previous_response_id`` chain's stored items, then
this request's input. Memory plans from them (``responses_protocol.memory_view``) and goes in with
chat's layout. Then, per deployment:

- **native** (``responses_api: native``, or OpenAI's own API): a real ``POST /v1/responses``
  upstream, the stable block as input items after the leading system/developer items (a user item
  and the acknowledgement by default, a system item under ``memory_role: system``), the volatile
  block at the start of the last user item; the answer, JSON or typed events, is relayed byte for
  byte (the client sees the upstream's response id).
- **bridge** (every other model): the items become chat messages and the answer is translated
  back by ``proxy.bridge.responses``.

Chains are expanded here, never relayed: the upstream gets the whole conversation with
``store: false`` and no ``previous_response_id``. So the memory layout holds on every turn (the
stable block at the front, byte-identical, once; an upstream-kept chain would carry every earlier
turn's injected memories along and put the stable block mid-conversation), a chain can move
between deployments (retries, fallbacks, native and bridged alike), and no copy of the user's
words or memories stays with the upstream, out of reach of memproxy's deletion. The price: each
request carries its whole conversation, and a reasoning model's reasoning is only carried over
when the client asks for it (``include: ["reasoning.encrypted_content"]``).

Unless ``store: false``, the answer and its conversation are kept in the data dir's SQLite
(``memcubes.response_store``) under the client's key and the owner's space, before the last
event reaches the client; the exchange is journalled like chat's.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import AsyncIterator
from typing import Any

from starlette.datastructures import Headers
from starlette.responses import JSONResponse, Response

from memcubes import layout
from memcubes.response_store import ResponseStore, StoredResponse
from proxy.backends import Backend
from proxy.backends.base import BackendResponse, StreamChunk
from proxy.bridge import responses as bridge
from proxy.errors import MemoryUnavailable, NotFound, sse_error
from proxy.principal import Principal
from proxy.responses_protocol import ResponsesRequest, input_items, memory_view, replayable, response_text
from proxy.serving.chat import with_memory
from proxy.serving.pipeline import MemoryPipeline, Prepared, StreamShape
from proxy.sse import sse

log = logging.getLogger(__name__)


def _encode(chunk: StreamChunk) -> bytes:
    return chunk.raw if chunk.raw is not None else sse(chunk.data, event=str(chunk.data.get("type")))


RESPONSES_STREAM = StreamShape(text=bridge.event_text, encode=_encode, error=sse_error)
_ANSWERED = frozenset({"response.completed", "response.incomplete"})  # events carrying a response worth keeping


def native_request(body: dict[str, Any], items: list[dict[str, Any]], prepared: Prepared) -> dict[str, Any]:
    """The upstream's ``/v1/responses`` body: the client's settings, the whole conversation with
    the memories in place, nothing kept upstream."""
    plan = prepared.plan
    stable = [
        {"role": m["role"], "content": layout.message_text(m, keep_memories=True)} for m in prepared.stable_layout
    ]
    upstream = {name: value for name, value in body.items() if name != "previous_response_id"}
    upstream["input"] = layout.inject(
        replayable(items), stable=plan.stable, volatile=plan.volatile, stable_layout=stable, text_part="input_text"
    )
    upstream["store"] = False
    return upstream


class ResponsesService:
    def __init__(self, pipeline: MemoryPipeline, store: ResponseStore | None) -> None:
        self._pipeline = pipeline
        self._store = store

    async def create(
        self, request: ResponsesRequest, headers: Headers, caller: Principal, *, key: str | None
    ) -> Response:
        scope = self._pipeline.scope(headers, request.owner(), caller, model=request.model)
        body = request.forward_body()
        history: list[dict[str, Any]] = []
        if request.previous_response_id:
            history = (await self._get(key, request.previous_response_id, param="previous_response_id")).conversation
        items = [*history, *input_items(request.input)]
        system = [{"role": "system", "content": request.instructions}] if request.instructions else []
        prepared = await self._pipeline.prepare(scope, request.model, [*system, *memory_view(items)], id_prefix="resp")
        keep = body.get("store", True)

        async def kept(response: dict[str, Any]) -> None:
            """Keep the answer for the chain's next link; a store in trouble costs the chain, never the answer."""
            if not keep or self._store is None:
                return
            conversation = [*items, *(response.get("output") or [])]
            try:
                await asyncio.to_thread(self._store.put, key, response, conversation, space=scope.space)
            except Exception as exc:
                log.warning("could not keep response %s: %r", response.get("id"), exc)

        if request.stream:

            async def events(backend: Backend) -> AsyncIterator[StreamChunk]:
                async for event in self._events(backend, body, items, prepared):
                    if event.data.get("type") in _ANSWERED:
                        await kept(event.data["response"])
                    yield event

            first, rest = await self._pipeline.open_stream(prepared, events)
            return self._pipeline.relay(prepared, first, rest, RESPONSES_STREAM)
        answer = await self._pipeline.forward(prepared, lambda backend: self._create(backend, body, items, prepared))
        await kept(answer.data)
        await self._pipeline.journal(prepared, response_text(answer.data))
        out = self._pipeline.response_headers(prepared)
        if answer.raw is not None:
            return Response(answer.raw, media_type="application/json", headers=out)
        return JSONResponse(answer.data, headers=out)

    @staticmethod
    def _chat(body: dict[str, Any], items: list[dict[str, Any]], prepared: Prepared) -> dict[str, Any]:
        system = [{"role": "system", "content": body["instructions"]}] if body.get("instructions") else []
        return with_memory(bridge.chat_request(body, [*system, *bridge.chat_messages(items)]), prepared)

    async def _create(
        self, backend: Backend, body: dict[str, Any], items: list[dict[str, Any]], prepared: Prepared
    ) -> BackendResponse:
        if backend.responses is not None:
            return await backend.responses.create(native_request(body, items, prepared))
        completion = await backend.complete(self._chat(body, items, prepared), prepared.ctx)
        answer = bridge.answer_of(completion.data)
        return BackendResponse(bridge.response_object(body, response_id=prepared.request_id, answer=answer))

    def _events(
        self, backend: Backend, body: dict[str, Any], items: list[dict[str, Any]], prepared: Prepared
    ) -> AsyncIterator[StreamChunk]:
        if backend.responses is not None:
            return backend.responses.stream(native_request(body, items, prepared))
        chunks = backend.stream(self._chat(body, items, prepared), prepared.ctx)
        return bridge.response_events(chunks, body, response_id=prepared.request_id, answer=bridge.Answer())

    async def _get(self, key: str | None, response_id: str, *, param: str | None = None) -> StoredResponse:
        found = await asyncio.to_thread(self._available().get, key, response_id)
        if found is None:
            raise _missing(response_id, param)
        return found

    def _available(self) -> ResponseStore:
        if self._store is None:
            raise MemoryUnavailable("stored responses live in the memory layer's database, which is not available")
        return self._store

    async def retrieve(self, response_id: str, *, key: str | None) -> dict[str, Any]:
        return (await self._get(key, response_id)).response

    async def delete(self, response_id: str, *, key: str | None) -> dict[str, Any]:
        if not await asyncio.to_thread(self._available().delete, key, response_id):
            raise _missing(response_id)
        return {"id": response_id, "object": "response.deleted", "deleted": True}


def _missing(response_id: str, param: str | None = None) -> NotFound:
    return NotFound(f"No response with id {response_id[:256]!r} is stored.", param=param, code="response_not_found")
