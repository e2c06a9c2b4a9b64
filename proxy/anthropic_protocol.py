"""Pydantic models of Anthropic's Messages API, as memproxy reads it.

Like the OpenAI models, they keep unknown fields (``extra="allow"``): content blocks memproxy
does not read (images, documents, tool results, thinking with its signature, server tools, new
block types) and parameters it does not know reach the backend untouched. Only what memproxy
reads is typed: the roles, the text it remembers, ``stream``, the owner in ``metadata.user_id``.
"""

from __future__ import annotations

from typing import Any, Literal

from pydantic import BaseModel, Field

from proxy.protocol import OpenAIBaseModel, RelayedRequest, Text, metadata_user


class ContentBlock(OpenAIBaseModel):
    type: str = Field(min_length=1)
    text: Text | None = None


class MessageParam(OpenAIBaseModel):
    role: Literal["user", "assistant"]
    content: Text | list[ContentBlock]


class CountTokensRequest(RelayedRequest):
    """``POST /v1/messages/count_tokens``: a Messages request without ``max_tokens``."""

    model: str = Field(min_length=1)
    messages: list[MessageParam] = Field(min_length=1)
    system: Text | list[ContentBlock] | None = None
    tools: list[dict[str, Any]] | None = None
    tool_choice: dict[str, Any] | None = None


class MessagesRequest(CountTokensRequest):
    max_tokens: int = Field(ge=1, strict=True)
    stream: bool | None = Field(None, strict=True)
    metadata: dict[str, Any] | None = None

    def owner(self) -> str | None:
        return metadata_user(self.metadata)


class AnthropicErrorDetail(BaseModel):
    type: str
    message: str


class AnthropicErrorResponse(BaseModel):
    type: Literal["error"] = "error"
    error: AnthropicErrorDetail
