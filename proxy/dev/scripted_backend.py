"""A scripted OpenAI-compatible chat backend: the one stand-in memproxy's tests allow.

No model weights can be fetched here, so tests, the demo and the benchmarks talk to this real
HTTP server instead of an LLM. It records every request it receives (so a test can assert on the
prompt the proxy forwarded) and answers either from a queue of scripted steps or, by default, with
a deterministic reply that quotes the memories it was shown, which is enough to demonstrate recall.

Scripted steps (``POST /_script`` with a JSON list, consumed one per chat request):

``{"text": "..."}``                           a normal answer
``{"tool_calls": [{"name": .., "arguments": ..}]}``  an answer that calls tools
``{"status": 429, "message": "..."}``         an OpenAI-shaped error with that status
``{"drop_after": 2}``                          stream two chunks, then cut the connection
``{"invalid_json": true}``                    a 200 whose body is not JSON
``{"delay": 0.5}``                             sleep first (combine with any of the above)
``{"text": "... {pick} ...", "pick": "X"}``     ``{pick}`` becomes the number ``n`` of the line
                                              ``[n] X`` in the last message (``null`` if none):
                                              a judge that names a listed item as a model would
``{"usage": {...}}``                           merged into the answer's usage (provider cache numbers)

``POST /v1/messages`` answers in Anthropic's Messages format (for litellm's Anthropic path), with
a step's ``usage`` merged into Anthropic's usage (``cache_read_input_tokens``); the full
Anthropic-wire stand-in, streams and count_tokens included, is ``scripted_anthropic``.
``POST /v1/embeddings`` answers three numbers per input (a relay check, not a model).
``POST /v1/responses`` speaks OpenAI's Responses API with the same steps (``scripted_responses``).
"""

from __future__ import annotations

import asyncio
import json
import re
import time
from collections.abc import AsyncIterator
from dataclasses import dataclass, field
from typing import Any

from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import JSONResponse, Response, StreamingResponse
from starlette.routing import Route

_MEMORY_BLOCK = re.compile(r"<memories>(.*?)</memories>", re.DOTALL)


@dataclass
class BackendScript:
    """Mutable state of one scripted backend: what it was sent and what it will answer."""

    latency: float = 0.0
    chunk_interval: float = 0.0
    steps: list[dict[str, Any]] = field(default_factory=list)
    received: list[dict[str, Any]] = field(default_factory=list)
    record: bool = True

    async def take(self, request: Request, body: dict[str, Any]) -> dict[str, Any]:
        """Record a request and give it the next step, after the step's delay (or the latency)."""
        if self.record:
            self.received.append({"body": body, "headers": dict(request.headers), "path": request.url.path})
        step = self.steps.pop(0) if self.steps else {}
        delay = step.get("delay", self.latency)
        if delay:
            await asyncio.sleep(delay)
        return step


def _message_text(message: dict[str, Any]) -> str:
    content = message.get("content")
    if isinstance(content, str):
        return content
    if isinstance(content, list):
        return "\n".join(p["text"] for p in content if isinstance(p, dict) and isinstance(p.get("text"), str))
    return ""


def default_reply(body: dict[str, Any]) -> str:
    """Answer like a model that read its prompt: quote the memories shown, else acknowledge."""
    prompt = "\n".join(_message_text(m) for m in body.get("messages", []))
    memories = [
        line.strip("- ").strip()
        for block in _MEMORY_BLOCK.findall(prompt)
        for line in block.splitlines()
        if line.strip().startswith("-")
    ]
    if memories:
        return "From memory: " + "; ".join(memories)
    users = [m for m in body.get("messages", []) if m.get("role") == "user"]
    last = _MEMORY_BLOCK.sub("", _message_text(users[-1])).strip() if users else ""
    return f"Noted: {last[:200]}" if last else "Hello."


def step_text(body: dict[str, Any], step: dict[str, Any]) -> str:
    """The answer a step gives to a request: its text (with ``{pick}`` filled in), or the default."""
    text = step.get("text", default_reply(body))
    if "pick" in step:
        messages = body.get("messages") or [{}]
        listed = re.search(rf"^\[(\d+)\] {re.escape(str(step['pick']))}$", _message_text(messages[-1]), re.M)
        text = text.replace("{pick}", listed.group(1) if listed else "null")
    return str(text)


def _tool_calls(step: dict[str, Any]) -> list[dict[str, Any]]:
    return [
        {
            "id": f"call_{i}",
            "type": "function",
            "function": {"name": call["name"], "arguments": json.dumps(call.get("arguments", {}))},
        }
        for i, call in enumerate(step["tool_calls"])
    ]


def _usage(body: dict[str, Any], text: str) -> dict[str, int]:
    prompt_tokens = sum(len(_message_text(m).split()) for m in body.get("messages", []))
    completion_tokens = len(text.split())
    return {
        "prompt_tokens": prompt_tokens,
        "completion_tokens": completion_tokens,
        "total_tokens": prompt_tokens + completion_tokens,
    }


def _completion(body: dict[str, Any], step: dict[str, Any], completion_id: str) -> dict[str, Any]:
    text = step_text(body, step)
    choices = []
    for index in range(int(body.get("n") or 1)):
        message: dict[str, Any] = {"role": "assistant", "content": text}
        finish = "stop"
        if "tool_calls" in step:
            message = {"role": "assistant", "content": None, "tool_calls": _tool_calls(step)}
            finish = "tool_calls"
        choices.append({"index": index, "message": message, "finish_reason": finish, "logprobs": None})
    return {
        "id": completion_id,
        "object": "chat.completion",
        "created": int(time.time()),
        "model": body.get("model", "scripted"),
        "system_fingerprint": "fp_scripted",
        "choices": choices,
        "usage": {**_usage(body, text), **step.get("usage", {})},
    }


def _anthropic_message(body: dict[str, Any], step: dict[str, Any], message_id: str) -> dict[str, Any]:
    text = step.get("text", default_reply(body))
    usage = _usage(body, text)
    return {
        "id": message_id,
        "type": "message",
        "role": "assistant",
        "model": body.get("model", "scripted"),
        "content": [{"type": "text", "text": text}],
        "stop_reason": "end_turn",
        "stop_sequence": None,
        "usage": {
            "input_tokens": usage["prompt_tokens"],
            "output_tokens": usage["completion_tokens"],
            **step.get("usage", {}),
        },
    }


def _chunk(body: dict[str, Any], completion_id: str, delta: dict[str, Any], finish: str | None) -> bytes:
    chunk = {
        "id": completion_id,
        "object": "chat.completion.chunk",
        "created": int(time.time()),
        "model": body.get("model", "scripted"),
        "system_fingerprint": "fp_scripted",
        "choices": [{"index": 0, "delta": delta, "finish_reason": finish, "logprobs": None}],
    }
    return b"data: " + json.dumps(chunk).encode() + b"\n\n"


async def _stream(
    body: dict[str, Any], step: dict[str, Any], completion_id: str, interval: float
) -> AsyncIterator[bytes]:
    text = step_text(body, step)
    pieces = [w + " " for w in text.split(" ")]
    pieces[-1] = pieces[-1].rstrip(" ")
    yield _chunk(body, completion_id, {"role": "assistant", "content": ""}, None)
    drop_after = step.get("drop_after")
    if "tool_calls" in step:
        for i, call in enumerate(_tool_calls(step)):
            yield _chunk(body, completion_id, {"tool_calls": [dict(call, index=i)]}, None)
        yield _chunk(body, completion_id, {}, "tool_calls")
    else:
        for sent, piece in enumerate(pieces):
            if drop_after is not None and sent >= drop_after:
                raise ConnectionResetError("scripted drop mid-stream")
            if interval:
                await asyncio.sleep(interval)
            yield _chunk(body, completion_id, {"content": piece}, None)
        yield _chunk(body, completion_id, {}, "stop")
    options = body.get("stream_options")
    if isinstance(options, dict) and options.get("include_usage"):
        usage_chunk = {
            "id": completion_id,
            "object": "chat.completion.chunk",
            "created": int(time.time()),
            "model": body.get("model", "scripted"),
            "choices": [],
            "usage": {**_usage(body, text), **step.get("usage", {})},
        }
        yield b"data: " + json.dumps(usage_chunk).encode() + b"\n\n"
    yield b"data: [DONE]\n\n"


def build_scripted_backend(script: BackendScript | None = None) -> Starlette:
    """Build the ASGI app; pass a ``BackendScript`` to share its state with an in-process test."""
    state = script or BackendScript()
    counter = iter(range(1, 1 << 62))

    async def chat(request: Request) -> Response:
        body = await request.json()
        step = await state.take(request, body)
        completion_id = f"chatcmpl-scripted-{next(counter)}"
        if "status" in step:
            error = {
                "message": step.get("message", "scripted error"),
                "type": step.get("type", "scripted_error"),
                "param": step.get("param"),
                "code": step.get("code", str(step["status"])),
            }
            return JSONResponse({"error": error}, status_code=int(step["status"]))
        if step.get("invalid_json"):
            return Response(b"{not json", media_type="application/json")
        if body.get("stream"):
            return StreamingResponse(
                _stream(body, step, completion_id, state.chunk_interval), media_type="text/event-stream"
            )
        return JSONResponse(_completion(body, step, completion_id))

    async def messages(request: Request) -> Response:
        body = await request.json()
        if state.record:
            state.received.append({"body": body, "headers": dict(request.headers)})
        step = state.steps.pop(0) if state.steps else {}
        return JSONResponse(_anthropic_message(body, step, f"msg_scripted_{next(counter)}"))

    async def responses(request: Request) -> Response:
        from proxy.dev.scripted_responses import responses  # it builds on this module's replies

        return await responses(request, state, next(counter))

    async def embeddings(request: Request) -> Response:
        """Three numbers per input, from its length: enough to check a relay."""
        body = await request.json()
        if state.record:
            state.received.append({"body": body, "headers": dict(request.headers)})
        inputs = body["input"] if isinstance(body["input"], list) else [body["input"]]
        data = [
            {"object": "embedding", "index": i, "embedding": [float(len(str(text))), 0.5, -0.5]}
            for i, text in enumerate(inputs)
        ]
        usage = {"prompt_tokens": len(inputs), "total_tokens": len(inputs)}
        return JSONResponse({"object": "list", "data": data, "model": body.get("model"), "usage": usage})

    async def models(request: Request) -> Response:
        return JSONResponse(
            {"object": "list", "data": [{"id": "scripted", "object": "model", "created": 0, "owned_by": "memproxy"}]}
        )

    async def push_script(request: Request) -> Response:
        state.steps.extend(await request.json())
        return JSONResponse({"queued": len(state.steps)})

    async def received(request: Request) -> Response:
        if request.method == "DELETE":
            state.received.clear()
            return JSONResponse({"cleared": True})
        return JSONResponse(state.received)

    return Starlette(
        routes=[
            Route("/v1/chat/completions", chat, methods=["POST"]),
            Route("/chat/completions", chat, methods=["POST"]),
            Route("/v1/messages", messages, methods=["POST"]),
            Route("/v1/responses", responses, methods=["POST"]),
            Route("/v1/models", models, methods=["GET"]),
            Route("/v1/embeddings", embeddings, methods=["POST"]),
            Route("/_script", push_script, methods=["POST"]),
            Route("/_requests", received, methods=["GET", "DELETE"]),
        ]
    )
