"""OpenAI's Responses API ↔ chat completions: every model is reached through its chat endpoint.

input        a string → one user message; items: ``message`` (input_text, input_image,
             input_file parts) → messages, ``function_call`` → an assistant turn's
             ``tool_calls``, ``function_call_output`` → a ``tool`` message, reasoning → dropped
instructions → the leading system message (not carried along a ``previous_response_id`` chain)
tools        function tools → chat tools; built-in tools (web search, files ...) are refused
answer       content → an ``output_text`` message item, tool calls → ``function_call`` items
stream       chunks → response.created, in_progress, output_item.added, content_part.added,
             output_text.delta ..., function_call_arguments.delta ..., the ``done`` events,
             response.completed (carrying the whole response)
"""

from __future__ import annotations

import time
from collections.abc import AsyncIterator
from dataclasses import dataclass, field
from typing import Any

from memcubes.ids import new_id
from proxy.backends.base import StreamChunk
from proxy.errors import InvalidRequest

_COPIED = ("temperature", "top_p", "parallel_tool_calls")
_TEXT_PARTS = frozenset({"input_text", "output_text", "text"})


def chat_messages(items: str | list[dict[str, Any]]) -> list[dict[str, Any]]:
    """The chat messages for a Responses ``input``."""
    if isinstance(items, str):
        return [{"role": "user", "content": items}]
    messages: list[dict[str, Any]] = []
    for item in items:
        kind = item.get("type", "message")
        if kind == "message":
            messages.append({"role": item.get("role", "user"), "content": _content(item.get("content"))})
        elif kind == "function_call":
            call = {
                "id": item.get("call_id", ""),
                "type": "function",
                "function": {"name": item.get("name", ""), "arguments": item.get("arguments", "")},
            }
            last = messages[-1] if messages else None
            if last is not None and last["role"] == "assistant" and "tool_calls" in last:
                last["tool_calls"].append(call)
            else:
                messages.append({"role": "assistant", "content": None, "tool_calls": [call]})
        elif kind == "function_call_output":
            output = item.get("output")
            text = output if isinstance(output, str) else str(output)
            messages.append({"role": "tool", "tool_call_id": item.get("call_id", ""), "content": text})
        elif kind != "reasoning":
            raise InvalidRequest(f"input items of type {kind!r} are not supported by memproxy", param="input")
    return messages


def _content(content: Any) -> str | list[dict[str, Any]]:
    if isinstance(content, str):
        return content
    parts: list[dict[str, Any]] = []
    for part in content or []:
        kind = part.get("type")
        if kind in _TEXT_PARTS:
            parts.append({"type": "text", "text": part.get("text", "")})
        elif kind == "input_image":
            parts.append({"type": "image_url", "image_url": {"url": part.get("image_url", "")}})
        elif kind == "input_file" and part.get("file_data"):
            parts.append({"type": "file", "file": {"file_data": part["file_data"], "filename": part.get("filename")}})
        else:
            raise InvalidRequest(f"content parts of type {kind!r} are not supported by memproxy", param="input")
    return parts


def chat_request(body: dict[str, Any], messages: list[dict[str, Any]]) -> dict[str, Any]:
    chat: dict[str, Any] = {"messages": messages}
    chat.update({key: body[key] for key in _COPIED if key in body})
    if "max_output_tokens" in body:
        chat["max_tokens"] = body["max_output_tokens"]
    if body.get("tools"):
        chat["tools"] = [_tool(tool) for tool in body["tools"]]
    choice = body.get("tool_choice")
    if isinstance(choice, str):
        chat["tool_choice"] = choice
    elif isinstance(choice, dict) and choice.get("type") == "function":
        chat["tool_choice"] = {"type": "function", "function": {"name": choice.get("name", "")}}
    if body.get("stream"):
        chat["stream"] = True
        chat["stream_options"] = {"include_usage": True}
    return chat


def _tool(tool: dict[str, Any]) -> dict[str, Any]:
    if tool.get("type") != "function":
        raise InvalidRequest(f"tool type {tool.get('type')!r} is not supported by memproxy", param="tools")
    function = {key: tool[key] for key in ("name", "description", "parameters", "strict") if key in tool}
    return {"type": "function", "function": function}


@dataclass
class Answer:
    """What the model answered, gathered from a completion or a stream."""

    text: str = ""
    calls: dict[int, dict[str, str]] = field(default_factory=dict)  # chat tool-call index → id, name, arguments
    usage: dict[str, Any] | None = None
    finish: str | None = None

    def output(self, message_id: str) -> list[dict[str, Any]]:
        items: list[dict[str, Any]] = []
        if self.text or not self.calls:
            items.append(message_item(message_id, self.text))
        items += [function_item(call) for _, call in sorted(self.calls.items())]
        return items


def message_item(message_id: str, text: str, *, status: str = "completed") -> dict[str, Any]:
    content = [{"type": "output_text", "text": text, "annotations": []}] if status == "completed" else []
    return {"type": "message", "id": message_id, "status": status, "role": "assistant", "content": content}


def function_item(call: dict[str, str], *, status: str = "completed") -> dict[str, Any]:
    return {"type": "function_call", "id": f"fc_{call['call_id']}", "status": status, **call}


def answer_of(data: dict[str, Any]) -> Answer:
    choices = data.get("choices") or [{}]
    choice = choices[0] if isinstance(choices[0], dict) else {}
    message = choice.get("message") or {}
    answer = Answer(text=message.get("content") or "", usage=data.get("usage"), finish=choice.get("finish_reason"))
    for index, call in enumerate(message.get("tool_calls") or []):
        function = call.get("function") or {}
        answer.calls[index] = {
            "call_id": call.get("id", ""),
            "name": function.get("name", ""),
            "arguments": function.get("arguments", ""),
        }
    return answer


def response_object(
    body: dict[str, Any], *, response_id: str, answer: Answer | None, status: str = "completed"
) -> dict[str, Any]:
    """The Response object: the request's settings echoed, the answer's output and usage."""
    usage = (answer.usage if answer else None) or {}
    input_tokens, output_tokens = int(usage.get("prompt_tokens") or 0), int(usage.get("completion_tokens") or 0)
    incomplete = answer is not None and answer.finish == "length"
    return {
        "id": response_id,
        "object": "response",
        "created_at": int(time.time()),
        "status": "incomplete" if incomplete else status,
        "model": body["model"],
        "output": answer.output(f"msg_{new_id()}") if answer else [],
        "instructions": body.get("instructions"),
        "previous_response_id": body.get("previous_response_id"),
        "tools": body.get("tools") or [],
        "tool_choice": body.get("tool_choice", "auto"),
        "parallel_tool_calls": body.get("parallel_tool_calls", True),
        "temperature": body.get("temperature"),
        "top_p": body.get("top_p"),
        "max_output_tokens": body.get("max_output_tokens"),
        "metadata": body.get("metadata") or {},
        "store": body.get("store", True),
        "text": {"format": {"type": "text"}},
        "error": None,
        "incomplete_details": {"reason": "max_output_tokens"} if incomplete else None,
        "usage": {
            "input_tokens": input_tokens,
            "output_tokens": output_tokens,
            "total_tokens": input_tokens + output_tokens,
            "input_tokens_details": {"cached_tokens": 0},
            "output_tokens_details": {"reasoning_tokens": 0},
        }
        if answer
        else None,
    }


def event_text(chunk: StreamChunk) -> str:
    data = chunk.data
    return str(data.get("delta", "")) if data.get("type") == "response.output_text.delta" else ""


class _Events:
    """Numbers the events of one stream (``sequence_number``)."""

    def __init__(self) -> None:
        self.count = 0

    def __call__(self, kind: str, **fields: Any) -> StreamChunk:
        self.count += 1
        return StreamChunk({"type": kind, "sequence_number": self.count - 1, **fields})


async def response_events(
    chunks: AsyncIterator[StreamChunk], body: dict[str, Any], *, response_id: str, answer: Answer
) -> AsyncIterator[StreamChunk]:
    """The Responses API's typed events for a chat stream; ``answer`` fills in as it goes (the
    caller stores the finished response). Nothing is sent before the backend's first chunk."""
    iterator = aiter(chunks)
    first = await anext(iterator, None)
    event = _Events()
    pending = response_object(body, response_id=response_id, answer=None, status="in_progress")
    yield event("response.created", response=pending)
    yield event("response.in_progress", response=pending)
    message_id = f"msg_{new_id()}"
    text_index: int | None = None
    outputs = 0
    call_index: dict[int, int] = {}

    async def chunks_from_first() -> AsyncIterator[StreamChunk]:
        if first is not None:
            yield first
        async for chunk in iterator:
            yield chunk

    async for chunk in chunks_from_first():
        data = chunk.data
        if data.get("usage"):
            answer.usage = data["usage"]
        for choice in data.get("choices") or []:
            if not isinstance(choice, dict) or choice.get("index", 0) != 0:
                continue
            delta = choice.get("delta") or {}
            answer.finish = choice.get("finish_reason") or answer.finish
            text = delta.get("content")
            if isinstance(text, str) and text:
                if text_index is None:
                    text_index, outputs = outputs, outputs + 1
                    item = message_item(message_id, "", status="in_progress")
                    yield event("response.output_item.added", output_index=text_index, item=item)
                    part = {"type": "output_text", "text": "", "annotations": []}
                    yield event(
                        "response.content_part.added",
                        item_id=message_id,
                        output_index=text_index,
                        content_index=0,
                        part=part,
                    )
                answer.text += text
                yield event(
                    "response.output_text.delta",
                    item_id=message_id,
                    output_index=text_index,
                    content_index=0,
                    delta=text,
                    logprobs=[],
                )
            for call in delta.get("tool_calls") or []:
                position = int(call.get("index", 0))
                function = call.get("function") or {}
                if position not in answer.calls:
                    answer.calls[position] = {
                        "call_id": call.get("id", ""),
                        "name": function.get("name", ""),
                        "arguments": "",
                    }
                    call_index[position], outputs = outputs, outputs + 1
                    item = function_item(answer.calls[position], status="in_progress")
                    yield event("response.output_item.added", output_index=call_index[position], item=item)
                if function.get("arguments"):
                    answer.calls[position]["arguments"] += function["arguments"]
                    yield event(
                        "response.function_call_arguments.delta",
                        item_id=f"fc_{answer.calls[position]['call_id']}",
                        output_index=call_index[position],
                        delta=function["arguments"],
                    )
    if text_index is not None:
        part = {"type": "output_text", "text": answer.text, "annotations": []}
        common = {"item_id": message_id, "output_index": text_index, "content_index": 0}
        yield event("response.output_text.done", text=answer.text, logprobs=[], **common)
        yield event("response.content_part.done", part=part, **common)
        yield event("response.output_item.done", output_index=text_index, item=message_item(message_id, answer.text))
    for position, call in sorted(answer.calls.items()):
        common = {"item_id": f"fc_{call['call_id']}", "output_index": call_index[position]}
        yield event("response.function_call_arguments.done", arguments=call["arguments"], **common)
        yield event("response.output_item.done", output_index=call_index[position], item=function_item(call))
    done = response_object(body, response_id=response_id, answer=answer)
    done["output"] = [
        *([message_item(message_id, answer.text)] if text_index is not None else []),
        *(function_item(call) for _, call in sorted(answer.calls.items())),
    ]
    yield event("response.completed", response=done)
