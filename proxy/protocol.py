"""Pydantic models of the HTTP API: OpenAI's chat protocol and memproxy's memory API.

OpenAI models accept unknown fields (``extra="allow"``) and keep them, so anything a client sends
that memproxy does not know (new OpenAI parameters, provider-specific ones) reaches the backend
untouched. Only what memproxy itself reads is typed.
"""

from __future__ import annotations

from datetime import datetime
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field, field_validator

from memcubes.config import ExtractionMode

MessageRole = Literal["system", "developer", "user", "assistant", "tool", "function"]


class OpenAIBaseModel(BaseModel):
    model_config = ConfigDict(extra="allow")


class ContentPart(OpenAIBaseModel):
    type: str

    @field_validator("type")
    @classmethod
    def _not_empty(cls, value: str) -> str:
        if not value:
            raise ValueError("content part type must not be empty")
        return value


class ChatMessage(OpenAIBaseModel):
    role: MessageRole
    content: str | list[ContentPart] | None = None
    name: str | None = None


class ChatCompletionRequest(OpenAIBaseModel):
    model: str = Field(min_length=1)
    messages: list[ChatMessage] = Field(min_length=1)
    stream: bool | None = None
    user: str | None = None
    n: int | None = Field(None, ge=1, le=128)

    def forward_body(self) -> dict[str, Any]:
        """The request as the client sent it (unset optional fields stay absent)."""
        return self.model_dump(exclude_unset=True)


class ModelCard(BaseModel):
    id: str
    object: Literal["model"] = "model"
    created: int = 0
    owned_by: str = "memproxy"


class ModelList(BaseModel):
    object: Literal["list"] = "list"
    data: list[ModelCard]


class ErrorDetail(BaseModel):
    message: str
    type: str
    param: str | None = None
    code: str | None = None


class ErrorResponse(BaseModel):
    error: ErrorDetail


# -- memory API -------------------------------------------------------------------------------


class _MemoryModel(BaseModel):
    model_config = ConfigDict(extra="forbid")


class MemoryMessage(_MemoryModel):
    role: MessageRole
    content: str | list[ContentPart]
    name: str | None = None
    id: str | None = Field(None, min_length=1, max_length=256)
    created_at: datetime | None = None


class Owner(_MemoryModel):
    """Whose memories: ``user`` (mapped to that user's space) or an explicit ``space``."""

    user: str | None = Field(None, min_length=1, max_length=256)
    space: str | None = Field(None, min_length=1, max_length=512)


class AddMemoriesRequest(Owner):
    messages: list[MemoryMessage] = Field(default_factory=list)
    facts: list[str] = Field(default_factory=list, description="memories stated directly, stored as given")
    mode: ExtractionMode | None = None
    sync: bool = False
    tags: list[str] = Field(default_factory=list)
    created_at: datetime | None = Field(None, description="time of facts without a message time")


class MemoryChangeOut(_MemoryModel):
    id: str
    event: str
    text: str
    sources: list[str]
    previous_id: str | None = None


class AddMemoriesResponse(_MemoryModel):
    exchange_id: str
    status: Literal["done", "queued"]
    results: list[MemoryChangeOut] = Field(default_factory=list)


class SearchRequest(Owner):
    query: str = Field(min_length=1, max_length=100_000)
    top_k: int | None = Field(None, ge=1, le=200)
    token_budget: int | None = Field(None, ge=0, le=1_000_000)


class SearchResult(_MemoryModel):
    id: str
    text: str
    score: float
    sources: list[str]
    created_at: datetime
    tokens: int
    ids: list[str]
    pinned: bool = False
    block: Literal["stable", "volatile"]


class SearchResponse(_MemoryModel):
    results: list[SearchResult]
    tokens: int


class MemoryPage(_MemoryModel):
    object: Literal["list"] = "list"
    data: list[dict[str, Any]]
    next_cursor: str | None = None
    has_more: bool = False


class DeletedResponse(_MemoryModel):
    id: str
    deleted: bool = True
    purged: bool = False


class PatchMemoryRequest(_MemoryModel):
    """Fields an edit may change; every edit is a new version of the memory."""

    content: str | None = Field(None, min_length=1, max_length=100_000)
    tags: list[str] | None = None
    pinned: bool | None = None
    expires_at: datetime | None = None
    valid_from: datetime | None = None
    valid_to: datetime | None = None
