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
