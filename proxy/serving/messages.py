"""Anthropic's Messages API on the shared serving path (``proxy/serving/pipeline.py``).

Memory goes in with chat's layout, written in Anthropic's shape. By default
(``scheduler.memory_role: user``) the stable block is a user turn ahead of the application's
messages, followed by the fixed assistant acknowledgement, so ``system`` is the application's alone
and roles still alternate (issue 12's least privilege: memories are what users said); the last
block of those turns is marked ``cache_control``, so Anthropic caches everything up to the end of
the stable part (left unmarked when the request already uses Anthropic's limit of four
breakpoints). ``memory_role: system`` appends the block to the system blocks instead. The volatile
block opens the last user turn (after its ``tool_result`` blocks, which Anthropic requires to come
first). Deployments that speak Anthropic's wire get the body and the client's
``anthropic-version``/``anthropic-beta`` headers as they are and answer byte for byte; any other
model is reached through ``proxy.bridge.messages``.

Memory reads the text blocks of each turn, without Claude Code's ``<system-reminder>`` blocks
(context it adds to user turns, which the user never said).
"""

from __future__ import annotations

import asyncio
import copy
import re
from collections.abc import AsyncIterator, Mapping
from typing import Any

from starlette.datastructures import Headers
from starlette.responses import JSONResponse, Response

from memcubes import layout
from memcubes.scheduler import InjectionPlan
from memcubes.tokens import count_tokens
from proxy.anthropic_protocol import CountTokensRequest, MessagesRequest
from proxy.backends import Backend
from proxy.backends.anthropic_wire import forwarded_headers
from proxy.backends.base import BackendResponse, StreamChunk
from proxy.bridge import messages as bridge
from proxy.errors import anthropic_sse_error
from proxy.principal import Principal
from proxy.serving.pipeline import MemoryPipeline, Prepared, StreamShape
from proxy.sse import sse

_CACHE_BREAKPOINTS = 4  # Anthropic refuses a request with more cache_control marks
_SYSTEM_REMINDER = re.compile(r"<system-reminder>.*?</system-reminder>\s*", re.DOTALL)


def _encode(chunk: StreamChunk) -> bytes:
    return chunk.raw if chunk.raw is not None else sse(chunk.data, event=str(chunk.data.get("type", "message")))


MESSAGES_STREAM = StreamShape(text=bridge.event_text, encode=_encode, error=anthropic_sse_error)


def block_text(content: Any) -> str:
    """The text blocks of Anthropic content (a string, or a list of blocks)."""
    if isinstance(content, list):
        texts = [b.get("text") for b in content if isinstance(b, dict) and b.get("type") == "text"]
        content = "\n".join(text for text in texts if isinstance(text, str))
    return _SYSTEM_REMINDER.sub("", content) if isinstance(content, str) else ""


def memory_view(body: dict[str, Any]) -> list[dict[str, Any]]:
    """The request as OpenAI-style turns: what memory plans from and journals. A user turn of
    tool results only is a ``tool`` turn there, as in chat: the user said nothing in it, so the
    query is what they said last."""
    view = [{"role": "system", "content": block_text(body["system"])}] if body.get("system") else []
    for message in body["messages"]:
        text = block_text(message["content"])
        said = message["role"] == "assistant" or text.strip() or isinstance(message["content"], str)
        view.append({"role": message["role"] if said else "tool", "content": text})
    return view


def _cache_marks(body: dict[str, Any]) -> int:
    blocks: list[Any] = list(body.get("tools") or [])
    if isinstance(body.get("system"), list):
        blocks += body["system"]
    for message in body["messages"]:
        if isinstance(message.get("content"), list):
            blocks += message["content"]
    return sum(1 for block in blocks if isinstance(block, dict) and "cache_control" in block)


def inject(body: dict[str, Any], plan: InjectionPlan, *, role: layout.MemoryRole = "user") -> dict[str, Any]:
    """A copy of ``body`` with the plan's blocks in place (the client's body is untouched)."""
    body = dict(body)
    if plan.stable:
        hint = _cache_marks(body) < _CACHE_BREAKPOINTS
        if role == "system":
            system = body.get("system")
            blocks = [{"type": "text", "text": system}] if isinstance(system, str) else list(system or [])
            body["system"] = [*blocks, *_blocks(layout.stable_block_message(plan.stable)["content"], cache=hint)]
        else:
            body["messages"] = [*_stable_turns(plan, next_role=_first_role(body), cache=hint), *body["messages"]]
    target = layout.last_user_index(body["messages"])
    if plan.volatile and target is not None:
        block = layout.render_block([item.text for item in plan.volatile], heading=layout.VOLATILE_HEADING)
        messages = list(body["messages"])
        message = copy.copy(messages[target])
        content = message["content"]
        if isinstance(content, str):
            message["content"] = f"{block}\n\n{content}"
        else:
            results = 0
            while results < len(content) and content[results].get("type") == "tool_result":
                results += 1
            message["content"] = [*content[:results], {"type": "text", "text": block}, *content[results:]]
        messages[target] = message
        body["messages"] = messages
    return body


def _stable_turns(plan: InjectionPlan, *, next_role: str | None, cache: bool) -> list[dict[str, Any]]:
    """Chat's stable turns (``layout.stable_messages``: the block as a user turn, then the fixed
    acknowledgement unless the conversation goes on with an assistant turn) in Anthropic's shape,
    ahead of the application's messages. ``cache`` marks the last block of the last of them, so
    Anthropic caches the system prompt, the tools and the whole stable part: they are the same
    bytes on every turn until the block changes."""
    turns = layout.stable_messages(plan.stable, role="user", next_role=next_role)
    return [
        {"role": turn["role"], "content": _blocks(turn["content"], cache=cache and index == len(turns) - 1)}
        for index, turn in enumerate(turns)
    ]


def _blocks(content: str | list[dict[str, Any]], *, cache: bool) -> list[dict[str, Any]]:
    """Text content as Anthropic blocks, the last one marked ``cache_control`` when ``cache``."""
    blocks: list[dict[str, Any]] = (
        [{"type": "text", "text": content}] if isinstance(content, str) else [dict(b) for b in content]
    )
    if cache:
        blocks[-1]["cache_control"] = {"type": "ephemeral"}
    return blocks


def _first_role(body: dict[str, Any]) -> str | None:
    messages = body["messages"]
    return str(messages[0].get("role")) if messages else None


class MessagesService:
    def __init__(self, pipeline: MemoryPipeline) -> None:
        self._pipeline = pipeline

    async def create(self, request: MessagesRequest, headers: Headers, caller: Principal) -> Response:
        scope = self._pipeline.scope(headers, request.owner(), caller, model=request.model)
        body = request.forward_body()
        prepared = await self._pipeline.prepare(scope, request.model, memory_view(body), id_prefix="msg")
        role = self._pipeline.memory_role
        if prepared.plan.items:
            body = inject(body, prepared.plan, role=role)
        # Translated, the system text (with the stable block under memory_role: system) is one
        # leading chat message; the stable turns follow it.
        stable = len(prepared.stable_layout) if role == "user" else 0
        prepared.ctx.prefix_messages = (1 if body.get("system") else 0) + stable
        upstream = forwarded_headers(headers)
        if request.stream:
            opened = await self._pipeline.open_stream(prepared, lambda b: self._stream(b, body, prepared, upstream))
            first, rest = opened
            return self._pipeline.relay(prepared, first, rest, MESSAGES_STREAM)
        response = await self._pipeline.forward(prepared, lambda b: self._create(b, body, prepared, upstream))
        await self._pipeline.journal(prepared, bridge.message_text(response.data))
        out = self._pipeline.response_headers(prepared)
        if response.raw is not None:
            return Response(response.raw, media_type="application/json", headers=out)
        return JSONResponse(response.data, headers=out)

    def _chat(self, backend: Backend, body: dict[str, Any], prepared: Prepared) -> dict[str, Any]:
        chat = bridge.chat_request(body, cache_hints=backend.provider == "anthropic")
        space = prepared.scope.space
        if backend.prompt_cache_key and space is not None:
            chat["prompt_cache_key"] = layout.prompt_cache_key(space)
        return chat

    async def _create(
        self, backend: Backend, body: dict[str, Any], prepared: Prepared, headers: Mapping[str, str]
    ) -> BackendResponse:
        if backend.anthropic is not None:
            return await backend.anthropic.create(body, headers)
        response = await backend.complete(self._chat(backend, body, prepared), prepared.ctx)
        message = bridge.anthropic_message(response.data, model=prepared.model, message_id=prepared.request_id)
        return BackendResponse(message)

    def _stream(
        self, backend: Backend, body: dict[str, Any], prepared: Prepared, headers: Mapping[str, str]
    ) -> AsyncIterator[StreamChunk]:
        if backend.anthropic is not None:
            return backend.anthropic.stream(body, headers)
        chunks = backend.stream(self._chat(backend, body, prepared), prepared.ctx)
        return bridge.anthropic_events(chunks, model=prepared.model, message_id=prepared.request_id)

    async def count_tokens(self, request: CountTokensRequest, headers: Headers, caller: Principal) -> Response:
        """Anthropic-wire models count upstream; others get an estimate (cl100k tokens of the
        translated request's text and tool schemas). Memories a request would get are not counted:
        their budget is ``memory.retrieval.token_budget``."""
        caller.check_model(request.model)
        backend = self._pipeline.router.primary(request.model)
        body = request.forward_body()
        if backend.anthropic is not None:
            response = await backend.anthropic.count_tokens(body, forwarded_headers(headers))
            if response.raw is not None:
                return Response(response.raw, media_type="application/json")
            return JSONResponse(response.data)
        view = memory_view(body)
        tools = body.get("tools") or []
        text = "\n".join(str(m["content"]) for m in view) + (str(tools) if tools else "")
        tokens = await asyncio.to_thread(count_tokens, text)  # a long prompt takes milliseconds
        return JSONResponse({"input_tokens": tokens + 3 * len(view)})
