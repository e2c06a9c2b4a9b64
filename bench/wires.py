"""The API shapes the load generator speaks: chat completions, Anthropic messages, OpenAI responses
(bridged to chat, and relayed to the backend's own /v1/responses).

Each turns a workload chat body into its own request and says, from the answer, whether it is a
complete answer, where a stream's first content is, what is an error event and what ends it.
"""

from __future__ import annotations

import dataclasses
import json
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any


def _event(payload: bytes) -> dict[str, Any]:
    try:
        event = json.loads(payload)
    except ValueError:
        return {}
    return event if isinstance(event, dict) else {}


def _chat_content(payload: bytes) -> bool:
    try:
        return bool(_event(payload)["choices"][0]["delta"].get("content"))
    except (KeyError, IndexError, TypeError, AttributeError):
        return False


@dataclass(frozen=True)
class Wire:
    path: str
    request: Callable[[dict[str, Any]], dict[str, Any]]
    answered: bytes  # what every complete JSON answer contains
    first_content: Callable[[bytes], bool]
    is_error: Callable[[bytes], bool]
    is_end: Callable[[bytes], bool]
    end_name: str  # the event that ends a stream, for error labels

    @property
    def missing_answer(self) -> str:
        return f"no {self.answered.decode().strip(chr(34))} in answer"


def _messages(body: dict[str, Any]) -> dict[str, Any]:
    system = [m["content"] for m in body["messages"] if m["role"] == "system"]
    turns = [m for m in body["messages"] if m["role"] != "system"]
    request = {"model": body["model"], "max_tokens": 256, "messages": turns, "metadata": {"user_id": body["user"]}}
    return {**request, "system": system[0]} if system else request


def _responses(body: dict[str, Any]) -> dict[str, Any]:
    system = [m["content"] for m in body["messages"] if m["role"] == "system"]
    turns = [m for m in body["messages"] if m["role"] != "system"]
    request = {"model": body["model"], "input": turns, "user": body["user"]}
    return {**request, "instructions": system[0]} if system else request


CHAT = Wire(
    path="/v1/chat/completions",
    request=lambda body: body,
    answered=b'"choices"',
    first_content=_chat_content,
    is_error=lambda payload: payload.startswith(b'{"error"'),
    is_end=lambda payload: payload == b"[DONE]",
    end_name="[DONE]",
)
MESSAGES = Wire(
    path="/v1/messages",
    request=_messages,
    answered=b'"content"',
    first_content=lambda payload: _event(payload).get("type") == "content_block_delta",
    is_error=lambda payload: _event(payload).get("type") == "error",
    is_end=lambda payload: _event(payload).get("type") == "message_stop",
    end_name="message_stop",
)
RESPONSES = Wire(
    path="/v1/responses",
    request=_responses,
    answered=b'"output"',
    first_content=lambda payload: _event(payload).get("type") == "response.output_text.delta",
    is_error=lambda payload: payload.startswith(b'{"error"') or _event(payload).get("type") == "error",
    is_end=lambda payload: _event(payload).get("type") == "response.completed",
    end_name="response.completed",
)
NATIVE_SUFFIX = "-native"  # the model_list entry with responses_api: native (bench.servers)
RESPONSES_NATIVE = dataclasses.replace(
    RESPONSES, request=lambda body: {**_responses(body), "model": body["model"] + NATIVE_SUFFIX}
)
WIRES = {"chat": CHAT, "messages": MESSAGES, "responses": RESPONSES, "responses-native": RESPONSES_NATIVE}
