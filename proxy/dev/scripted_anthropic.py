"""A scripted backend speaking Anthropic's Messages API: the Anthropic-wire twin of
``scripted_backend`` (same ``BackendScript``, same steps, same memory-quoting default reply).

``POST /v1/messages`` answers a message or, with ``stream: true``, Anthropic's event sequence
(message_start, ping, content blocks, message_delta, message_stop); ``POST
/v1/messages/count_tokens`` counts words. Steps: ``{"text": ..}``, ``{"tool_calls": [{"name": ..,
"arguments": ..}]}``, ``{"status": 429, "message": ..}`` (an Anthropic-shaped error),
``{"delay": s}``. Every request is recorded with its headers.
"""

from __future__ import annotations

import json
from collections.abc import AsyncIterator
from typing import Any

from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import JSONResponse, Response, StreamingResponse
from starlette.routing import Route

from proxy.dev.scripted_backend import BackendScript, default_reply


def _text(content: Any) -> str:
    if isinstance(content, list):
        return "\n".join(b.get("text", "") for b in content if isinstance(b, dict) and b.get("type") == "text")
    return content if isinstance(content, str) else ""


def as_chat(body: dict[str, Any]) -> dict[str, Any]:
    """The request's text as chat messages (what ``default_reply`` reads)."""
    messages = [{"role": "system", "content": _text(body.get("system"))}]
    messages += [{"role": m.get("role"), "content": _text(m.get("content"))} for m in body.get("messages", [])]
    return {"messages": messages}


def _content(body: dict[str, Any], step: dict[str, Any]) -> list[dict[str, Any]]:
    if "tool_calls" in step:
        return [
            {"type": "tool_use", "id": f"toolu_{i}", "name": call["name"], "input": call.get("arguments", {})}
            for i, call in enumerate(step["tool_calls"])
        ]
    return [{"type": "text", "text": step.get("text", default_reply(as_chat(body)))}]


def _usage(body: dict[str, Any], content: list[dict[str, Any]]) -> dict[str, int]:
    words = sum(len(m["content"].split()) for m in as_chat(body)["messages"])
    return {"input_tokens": words, "output_tokens": sum(len(b.get("text", "").split()) for b in content)}


def _message(body: dict[str, Any], step: dict[str, Any], message_id: str) -> dict[str, Any]:
    content = _content(body, step)
    return {
        "id": message_id,
        "type": "message",
        "role": "assistant",
        "model": body.get("model", "scripted"),
        "content": content,
        "stop_reason": "tool_use" if "tool_calls" in step else "end_turn",
        "stop_sequence": None,
        "usage": _usage(body, content),
    }


def _event(data: dict[str, Any]) -> bytes:
    return f"event: {data['type']}\ndata: {json.dumps(data)}\n\n".encode()


async def _stream(body: dict[str, Any], step: dict[str, Any], message_id: str) -> AsyncIterator[bytes]:
    message = _message(body, step, message_id)
    yield _event({"type": "message_start", "message": {**message, "content": [], "stop_reason": None}})
    yield _event({"type": "ping"})
    for index, block in enumerate(message["content"]):
        if block["type"] == "text":
            yield _event({"type": "content_block_start", "index": index, "content_block": {"type": "text", "text": ""}})
            for word in block["text"].split(" "):
                delta = {"type": "text_delta", "text": word + " "}
                yield _event({"type": "content_block_delta", "index": index, "delta": delta})
        else:
            yield _event({"type": "content_block_start", "index": index, "content_block": {**block, "input": {}}})
            delta = {"type": "input_json_delta", "partial_json": json.dumps(block["input"])}
            yield _event({"type": "content_block_delta", "index": index, "delta": delta})
        yield _event({"type": "content_block_stop", "index": index})
    stop = {"stop_reason": message["stop_reason"], "stop_sequence": None}
    yield _event(
        {"type": "message_delta", "delta": stop, "usage": {"output_tokens": message["usage"]["output_tokens"]}}
    )
    yield _event({"type": "message_stop"})


def build_scripted_anthropic(script: BackendScript | None = None) -> Starlette:
    state = script or BackendScript()
    counter = iter(range(1, 1 << 62))

    async def messages(request: Request) -> Response:
        body = await request.json()
        step = await state.take(request, body)
        if "status" in step:
            error = {"type": "error", "error": {"type": "scripted_error", "message": step.get("message", "scripted")}}
            return JSONResponse(error, status_code=int(step["status"]))
        message_id = f"msg_scripted_{next(counter)}"
        if body.get("stream"):
            return StreamingResponse(_stream(body, step, message_id), media_type="text/event-stream")
        return JSONResponse(_message(body, step, message_id))

    async def count_tokens(request: Request) -> Response:
        body = await request.json()
        if state.record:
            state.received.append({"body": body, "headers": dict(request.headers), "path": request.url.path})
        return JSONResponse({"input_tokens": _usage(body, [])["input_tokens"]})

    return Starlette(
        routes=[
            Route("/v1/messages", messages, methods=["POST"]),
            Route("/v1/messages/count_tokens", count_tokens, methods=["POST"]),
        ]
    )
