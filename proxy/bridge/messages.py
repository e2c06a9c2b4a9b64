"""Anthropic's Messages API ↔ OpenAI chat completions, for models that do not speak Anthropic's wire.

Written here rather than taken from litellm's ``anthropic_messages`` bridge because the translated
request must go through memproxy's router (retries, fallbacks, byte-for-byte OpenAI-wire relay,
local models), which litellm's bridge bypasses by calling providers itself (and importing litellm
takes seconds). Translating a three-turn request with a tool call and its answer costs ~50 µs here
(timeit, on 2 shared cores).

    request   system → one system message; text/image/document blocks → content parts;
              tool_result blocks → ``tool`` messages (before the user's other parts);
              tool_use → ``tool_calls``; thinking blocks are dropped (chat has no signed thinking);
              tools/tool_choice/stop_sequences/max_tokens → their chat names
    answer    content → text block; tool_calls → tool_use blocks; finish_reason → stop_reason
    stream    chunks → message_start, ping, content_block_start/delta/stop per block,
              message_delta (stop_reason, usage), message_stop
"""

from __future__ import annotations

import json
from collections.abc import AsyncIterator
from typing import Any

from proxy.backends.base import StreamChunk
from proxy.errors import InvalidRequest

STOP_REASONS = {
    "stop": "end_turn",
    "length": "max_tokens",
    "tool_calls": "tool_use",
    "function_call": "tool_use",
    "content_filter": "refusal",
}
_DROPPED_BLOCKS = frozenset({"thinking", "redacted_thinking"})
_COPIED = ("temperature", "top_p", "max_tokens")


def chat_request(body: dict[str, Any], *, cache_hints: bool) -> dict[str, Any]:
    """The chat completions request for an Anthropic one. ``cache_hints`` keeps ``cache_control``
    marks (litellm passes them to Anthropic-family providers; OpenAI-wire upstreams may reject them)."""
    messages: list[dict[str, Any]] = []
    system = body.get("system")
    if system:
        messages.append({"role": "system", "content": _parts(system, cache_hints=cache_hints)})
    for message in body["messages"]:
        if message["role"] == "assistant":
            messages.append(_assistant(message["content"]))
        else:
            messages.extend(_user(message["content"], cache_hints=cache_hints))
    chat: dict[str, Any] = {"messages": messages}
    chat.update({key: body[key] for key in _COPIED if key in body})
    if body.get("stop_sequences"):
        chat["stop"] = body["stop_sequences"]
    if body.get("tools"):
        chat["tools"] = [_tool(tool) for tool in body["tools"]]
    choice = body.get("tool_choice")
    if isinstance(choice, dict):
        chat.update(_tool_choice(choice))
    if body.get("stream"):
        chat["stream"] = True
        chat["stream_options"] = {"include_usage": True}
    return chat


def _parts(content: str | list[dict[str, Any]], *, cache_hints: bool) -> str | list[dict[str, Any]]:
    if isinstance(content, str):
        return content
    parts = [_part(block, cache_hints=cache_hints) for block in content if block.get("type") not in _DROPPED_BLOCKS]
    return parts


def _part(block: dict[str, Any], *, cache_hints: bool) -> dict[str, Any]:
    kind = block.get("type")
    part: dict[str, Any]
    source: dict[str, Any] = block["source"] if isinstance(block.get("source"), dict) else {}
    if kind == "text":
        part = {"type": "text", "text": block.get("text", "")}
    elif kind == "image" and source.get("type") == "base64":
        data_url = f"data:{source.get('media_type')};base64,{source.get('data')}"
        part = {"type": "image_url", "image_url": {"url": data_url}}
    elif kind == "image" and source.get("type") == "url":
        part = {"type": "image_url", "image_url": {"url": source.get("url")}}
    elif kind == "document" and source.get("type") == "base64":
        data_url = f"data:{source.get('media_type')};base64,{source.get('data')}"
        part = {"type": "file", "file": {"file_data": data_url, "filename": block.get("title") or "document.pdf"}}
    elif kind == "document" and source.get("type") == "text":
        part = {"type": "text", "text": str(source.get("data", ""))}
    else:
        described = f"{kind} ({source.get('type')})" if source else str(kind)
        raise InvalidRequest(
            f"content block {described} can only be sent to a model served over Anthropic's Messages API",
            param="messages",
        )
    if cache_hints and "cache_control" in block:
        part["cache_control"] = block["cache_control"]
    return part


def _user(content: str | list[dict[str, Any]], *, cache_hints: bool) -> list[dict[str, Any]]:
    """Tool results first (chat wants them right after the assistant's calls), then the rest."""
    if isinstance(content, str):
        return [{"role": "user", "content": content}]
    results = [block for block in content if block.get("type") == "tool_result"]
    others = [block for block in content if block.get("type") != "tool_result"]
    messages = [
        {"role": "tool", "tool_call_id": block.get("tool_use_id", ""), "content": _result_text(block)}
        for block in results
    ]
    if others:
        messages.append({"role": "user", "content": _parts(others, cache_hints=cache_hints)})
    return messages


def _result_text(block: dict[str, Any]) -> str:
    content = block.get("content")
    if isinstance(content, list):
        content = "\n".join(str(part.get("text", "")) for part in content if part.get("type") == "text")
    text = content if isinstance(content, str) else ""
    return f"Error: {text}" if block.get("is_error") else text


def _assistant(content: str | list[dict[str, Any]]) -> dict[str, Any]:
    if isinstance(content, str):
        return {"role": "assistant", "content": content}
    text = "".join(block.get("text", "") for block in content if block.get("type") == "text")
    calls = [
        {
            "id": block.get("id", ""),
            "type": "function",
            "function": {"name": block.get("name", ""), "arguments": json.dumps(block.get("input", {}))},
        }
        for block in content
        if block.get("type") == "tool_use"
    ]
    message: dict[str, Any] = {"role": "assistant", "content": text or None}
    if calls:
        message["tool_calls"] = calls
    return message


def _tool(tool: dict[str, Any]) -> dict[str, Any]:
    if "input_schema" not in tool:
        raise InvalidRequest(
            f"tool {tool.get('name')!r} ({tool.get('type')}) is a server tool: only models served over "
            "Anthropic's Messages API run it",
            param="tools",
        )
    function = {"name": tool.get("name", ""), "parameters": tool["input_schema"]}
    if tool.get("description"):
        function["description"] = tool["description"]
    return {"type": "function", "function": function}


def _tool_choice(choice: dict[str, Any]) -> dict[str, Any]:
    kind = choice.get("type")
    chat: dict[str, Any] = {}
    if kind == "auto":
        chat["tool_choice"] = "auto"
    elif kind == "any":
        chat["tool_choice"] = "required"
    elif kind == "none":
        chat["tool_choice"] = "none"
    elif kind == "tool":
        chat["tool_choice"] = {"type": "function", "function": {"name": choice.get("name", "")}}
    if choice.get("disable_parallel_tool_use"):
        chat["parallel_tool_calls"] = False
    return chat


def _arguments(text: str) -> dict[str, Any]:
    try:
        value = json.loads(text or "{}")
    except ValueError:
        return {"_raw": text}
    return value if isinstance(value, dict) else {"_value": value}


def _usage(usage: dict[str, Any] | None) -> dict[str, int]:
    usage = usage or {}
    return {
        "input_tokens": int(usage.get("prompt_tokens") or 0),
        "output_tokens": int(usage.get("completion_tokens") or 0),
    }


def anthropic_message(data: dict[str, Any], *, model: str, message_id: str) -> dict[str, Any]:
    """The Anthropic message for a chat completion (its first choice)."""
    choices = data.get("choices") or [{}]
    choice = choices[0] if isinstance(choices[0], dict) else {}
    message = choice.get("message") or {}
    content: list[dict[str, Any]] = []
    if isinstance(message.get("content"), str) and message["content"]:
        content.append({"type": "text", "text": message["content"]})
    for call in message.get("tool_calls") or []:
        function = call.get("function") or {}
        content.append(
            {
                "type": "tool_use",
                "id": call.get("id", ""),
                "name": function.get("name", ""),
                "input": _arguments(function.get("arguments", "")),
            }
        )
    return {
        "id": message_id,
        "type": "message",
        "role": "assistant",
        "model": model,
        "content": content,
        "stop_reason": STOP_REASONS.get(choice.get("finish_reason") or "stop", "end_turn"),
        "stop_sequence": None,
        "usage": _usage(data.get("usage")),
    }


def message_text(data: dict[str, Any]) -> str:
    """The text an Anthropic message answers with (what memory journals)."""
    content = data.get("content")
    if not isinstance(content, list):
        return ""
    return "".join(b.get("text", "") for b in content if isinstance(b, dict) and b.get("type") == "text")


def event_text(chunk: StreamChunk) -> str:
    """The text one Anthropic stream event adds."""
    data = chunk.data
    if data.get("type") != "content_block_delta":
        return ""
    delta = data.get("delta") or {}
    text = delta.get("text") if delta.get("type") == "text_delta" else None
    return text if isinstance(text, str) else ""


def _event(data: dict[str, Any]) -> StreamChunk:
    return StreamChunk(data)


class _StreamState:
    """Which Anthropic content block is open while chat chunks arrive."""

    def __init__(self) -> None:
        self.blocks = 0
        self.open: tuple[str, int] | None = None  # ("text", 0) or ("tool", chat tool-call index)
        self.tools: dict[int, int] = {}  # chat tool-call index → block index
        self.finish: str | None = None
        self.usage: dict[str, Any] | None = None

    def close(self) -> list[StreamChunk]:
        if self.open is None:
            return []
        self.open = None
        return [_event({"type": "content_block_stop", "index": self.blocks - 1})]

    def start(self, key: tuple[str, int], block: dict[str, Any]) -> list[StreamChunk]:
        events = self.close()
        events.append(_event({"type": "content_block_start", "index": self.blocks, "content_block": block}))
        self.open = key
        self.blocks += 1
        return events

    def chunk(self, data: dict[str, Any]) -> list[StreamChunk]:
        events: list[StreamChunk] = []
        if data.get("usage"):
            self.usage = data["usage"]
        for choice in data.get("choices") or []:
            if not isinstance(choice, dict) or choice.get("index", 0) != 0:
                continue
            delta = choice.get("delta") or {}
            text = delta.get("content")
            if isinstance(text, str) and text:
                if self.open != ("text", 0):
                    events += self.start(("text", 0), {"type": "text", "text": ""})
                delta_event = {"type": "text_delta", "text": text}
                events.append(_event({"type": "content_block_delta", "index": self.blocks - 1, "delta": delta_event}))
            for call in delta.get("tool_calls") or []:
                events += self._tool_call(call)
            self.finish = choice.get("finish_reason") or self.finish
        return events

    def _tool_call(self, call: dict[str, Any]) -> list[StreamChunk]:
        events: list[StreamChunk] = []
        position = int(call.get("index", 0))
        function = call.get("function") or {}
        if position not in self.tools:
            block = {"type": "tool_use", "id": call.get("id", ""), "name": function.get("name", ""), "input": {}}
            events += self.start(("tool", position), block)
            self.tools[position] = self.blocks - 1
        if function.get("arguments"):
            delta = {"type": "input_json_delta", "partial_json": function["arguments"]}
            events.append(_event({"type": "content_block_delta", "index": self.tools[position], "delta": delta}))
        return events


async def anthropic_events(
    chunks: AsyncIterator[StreamChunk], *, model: str, message_id: str
) -> AsyncIterator[StreamChunk]:
    """Anthropic's event sequence for a chat stream. Nothing is sent before the backend's first
    chunk, so a backend that fails at once is still retried and answered with a status."""
    iterator = aiter(chunks)
    first = await anext(iterator, None)
    start: dict[str, Any] = {
        "id": message_id,
        "type": "message",
        "role": "assistant",
        "model": model,
        "content": [],
        "stop_reason": None,
        "stop_sequence": None,
        "usage": {"input_tokens": 0, "output_tokens": 0},
    }
    yield _event({"type": "message_start", "message": start})
    yield _event({"type": "ping"})
    state = _StreamState()
    if first is not None:
        for event in state.chunk(first.data):
            yield event
    async for chunk in iterator:
        for event in state.chunk(chunk.data):
            yield event
    for event in state.close():
        yield event
    usage = _usage(state.usage)
    stop = {"stop_reason": STOP_REASONS.get(state.finish or "stop", "end_turn"), "stop_sequence": None}
    yield _event({"type": "message_delta", "delta": stop, "usage": usage})
    yield _event({"type": "message_stop"})
