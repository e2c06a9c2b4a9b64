"""``POST /v1/responses`` for the scripted backend: OpenAI's Responses API, the stand-in for an
upstream that serves it natively (``responses_api: native``).

Same ``BackendScript`` and steps as chat (``text``, ``tool_calls``, ``status``, ``delay``), same
memory-quoting default reply, read from ``instructions`` and the ``input`` items. A JSON Response
object, or with ``stream: true`` the typed events OpenAI sends (``response.created`` …
``response.completed``, each ``event:`` named and numbered). It keeps nothing: a request naming a
``previous_response_id`` is refused as OpenAI refuses one it does not know (memproxy expands
chains itself), so a test notices if one is ever relayed.
"""

from __future__ import annotations

import asyncio
import json
import time
from collections.abc import AsyncIterator, Iterator
from typing import Any

from starlette.requests import Request
from starlette.responses import JSONResponse, Response, StreamingResponse

from proxy.dev.scripted_backend import BackendScript, default_reply


def _text(content: Any) -> str:
    if isinstance(content, list):
        return "\n".join(str(p.get("text", "")) for p in content if isinstance(p, dict) and "text" in p)
    return content if isinstance(content, str) else ""


def as_chat(body: dict[str, Any]) -> dict[str, Any]:
    """The request's text as chat messages (what ``default_reply`` reads)."""
    items = [{"role": "user", "content": body["input"]}] if isinstance(body.get("input"), str) else body["input"]
    messages = [{"role": "system", "content": body["instructions"]}] if body.get("instructions") else []
    messages += [{"role": i["role"], "content": _text(i.get("content"))} for i in items if "role" in i]
    return {"messages": messages}


def _output(body: dict[str, Any], step: dict[str, Any], number: int) -> list[dict[str, Any]]:
    if "tool_calls" in step:
        return [
            {
                "type": "function_call",
                "id": f"fc_scripted_{number}_{i}",
                "call_id": f"call_{number}_{i}",
                "name": call["name"],
                "arguments": json.dumps(call.get("arguments", {})),
                "status": "completed",
            }
            for i, call in enumerate(step["tool_calls"])
        ]
    text = str(step.get("text", default_reply(as_chat(body))))
    content = [{"type": "output_text", "text": text, "annotations": []}]
    return [
        {
            "type": "message",
            "id": f"msg_scripted_{number}",
            "status": "completed",
            "role": "assistant",
            "content": content,
        }
    ]


def _response(body: dict[str, Any], number: int, output: list[dict[str, Any]] | None) -> dict[str, Any]:
    words = sum(len(m["content"].split()) for m in as_chat(body)["messages"])
    answered = sum(len(_text(item.get("content")).split()) for item in output or [])
    return {
        "id": f"resp_scripted_{number}",
        "object": "response",
        "created_at": int(time.time()),
        "status": "in_progress" if output is None else "completed",
        "model": body.get("model", "scripted"),
        "output": output or [],
        "instructions": body.get("instructions"),
        "previous_response_id": None,
        "tools": body.get("tools") or [],
        "tool_choice": body.get("tool_choice", "auto"),
        "parallel_tool_calls": body.get("parallel_tool_calls", True),
        "temperature": body.get("temperature"),
        "top_p": body.get("top_p"),
        "metadata": body.get("metadata") or {},
        "store": body.get("store", True),
        "text": {"format": {"type": "text"}},
        "error": None,
        "incomplete_details": None,
        "usage": None
        if output is None
        else {
            "input_tokens": words,
            "output_tokens": answered,
            "total_tokens": words + answered,
            "input_tokens_details": {"cached_tokens": 0},
            "output_tokens_details": {"reasoning_tokens": 0},
        },
    }


def _events(body: dict[str, Any], number: int, output: list[dict[str, Any]]) -> Iterator[dict[str, Any]]:
    """The typed events of one response, unnumbered."""
    pending = _response(body, number, None)
    yield {"type": "response.created", "response": pending}
    yield {"type": "response.in_progress", "response": pending}
    for index, item in enumerate(output):
        yield {"type": "response.output_item.added", "output_index": index, "item": {**item, "status": "in_progress"}}
        where = {"item_id": item["id"], "output_index": index, "content_index": 0}
        if item["type"] == "function_call":
            called = {"item_id": item["id"], "output_index": index}
            yield {"type": "response.function_call_arguments.delta", **called, "delta": item["arguments"]}
            yield {"type": "response.function_call_arguments.done", **called, "arguments": item["arguments"]}
        else:
            text = item["content"][0]["text"]
            part = {"type": "output_text", "text": "", "annotations": []}
            yield {"type": "response.content_part.added", **where, "part": part}
            words = text.split(" ")
            for i, word in enumerate(words):
                delta = word if i == len(words) - 1 else word + " "
                yield {
                    "type": "response.output_text.delta",
                    **where,
                    "content_index": 0,
                    "delta": delta,
                    "logprobs": [],
                }
            yield {"type": "response.output_text.done", **where, "text": text, "logprobs": []}
            yield {"type": "response.content_part.done", **where, "part": {**part, "text": text}}
        yield {"type": "response.output_item.done", "output_index": index, "item": item}
    yield {"type": "response.completed", "response": _response(body, number, output)}


async def _stream(events: Iterator[dict[str, Any]], interval: float) -> AsyncIterator[bytes]:
    for sequence, event in enumerate(events):
        if interval:
            await asyncio.sleep(interval)
        data = json.dumps({**event, "sequence_number": sequence})
        yield f"event: {event['type']}\ndata: {data}\n\n".encode()


def _error(status: int, message: str, kind: str, code: str | None, param: str | None = None) -> Response:
    error = {"message": message, "type": kind, "param": param, "code": code}
    return JSONResponse({"error": error}, status_code=status)


async def responses(request: Request, state: BackendScript, number: int) -> Response:
    """One ``POST /v1/responses``; ``number`` makes its ids unique."""
    body = await request.json()
    step = await state.take(request, body)
    if "status" in step:
        code = step.get("code", str(step["status"]))
        return _error(
            int(step["status"]), step.get("message", "scripted error"), step.get("type", "scripted_error"), code
        )
    if body.get("previous_response_id"):
        message = f"Previous response with id '{body['previous_response_id']}' not found."
        return _error(400, message, "invalid_request_error", "previous_response_not_found", "previous_response_id")
    output = _output(body, step, number)
    if body.get("stream"):
        events = _events(body, number, output)
        return StreamingResponse(_stream(events, state.chunk_interval), media_type="text/event-stream")
    return JSONResponse(_response(body, number, output))
