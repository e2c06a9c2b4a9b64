"""Pydantic models of OpenAI's Responses API, as memproxy reads it (unknown fields kept and relayed)."""

from __future__ import annotations

from typing import Any

from pydantic import Field

from proxy.protocol import OwnedRequest, Text


class ResponsesRequest(OwnedRequest):
    model: str = Field(min_length=1)
    input: Text | list[dict[str, Any]]
    instructions: Text | None = None
    stream: bool | None = Field(None, strict=True)
    store: bool | None = Field(None, strict=True)
    previous_response_id: str | None = Field(None, min_length=1, max_length=256)
    tools: list[dict[str, Any]] | None = None
    max_output_tokens: int | None = Field(None, ge=1, strict=True)


_TEXT_PARTS = frozenset({"input_text", "output_text", "text"})


def input_items(value: str | list[dict[str, Any]]) -> list[dict[str, Any]]:
    """A request's ``input`` as items (a string is one user message)."""
    return [{"role": "user", "content": value}] if isinstance(value, str) else list(value)


def item_text(item: dict[str, Any]) -> str:
    """The text of a message item (its text parts), else ``""``."""
    content = item.get("content")
    if isinstance(content, list):
        texts = [p.get("text") for p in content if isinstance(p, dict) and p.get("type") in _TEXT_PARTS]
        content = "\n".join(text for text in texts if isinstance(text, str))
    return content if isinstance(content, str) else ""


def memory_view(items: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """Items as OpenAI-style turns, one per item that chat would have a message for: what memory
    plans from and journals. Items memproxy does not read (reasoning, built-in tool calls, which a
    native upstream handles) are left out; a function call is an assistant turn and its output a
    ``tool`` turn, as in chat, so the layout sees the same roles whichever way the model is reached."""
    view: list[dict[str, Any]] = []
    for item in items:
        kind = item.get("type", "message")
        if kind == "message" and isinstance(item.get("role"), str):
            view.append({"role": item["role"], "content": item_text(item)})
        elif kind == "function_call":
            view.append({"role": "assistant", "content": ""})
        elif kind == "function_call_output":
            view.append({"role": "tool", "content": ""})
    return view


def response_text(response: dict[str, Any]) -> str:
    """The assistant text of a Response object (its message items' output text)."""
    return "".join(
        item_text(item)
        for item in response.get("output") or []
        if isinstance(item, dict) and item.get("type") == "message"
    )


def replayable(items: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """A stored conversation as input for an upstream that keeps nothing (``store: false``):
    a reasoning item goes back only with its ``encrypted_content`` (by id alone the upstream
    would look for a reasoning item it never stored)."""
    return [item for item in items if item.get("type") != "reasoning" or item.get("encrypted_content")]
