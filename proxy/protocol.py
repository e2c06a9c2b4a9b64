"""Pydantic models of the HTTP API: OpenAI's chat protocol and memproxy's memory API.

OpenAI models accept unknown fields (``extra="allow"``) and keep them, so anything a client sends
that memproxy does not know (new OpenAI parameters, provider-specific ones) reaches the backend
untouched. Only what memproxy itself reads is typed, and typed strictly: ``"n": "2"`` or
``"sync": "yes"`` is a 400, as it is at OpenAI. Text memproxy reads must be valid Unicode (JSON can
spell lone UTF-16 surrogates, ``"\\ud800"``, which no store, tokenizer or upstream accepts); times
are ISO 8601 strings, normalized to UTC (a time without a zone is read as UTC); and the memory API
bounds how much one request may add.
"""

from __future__ import annotations

import json
import math
import re
from datetime import UTC, datetime
from typing import Annotated, Any, Literal, Self

from pydantic import AfterValidator, BaseModel, BeforeValidator, ConfigDict, Field, field_validator, model_validator

from memcubes.config import ExtractionMode
from memcubes.ids import storable
from memcubes.names import space_name
from proxy.scope import clean_identifier

MessageRole = Literal["system", "developer", "user", "assistant", "tool", "function"]

MAX_ITEMS = 1000  # messages or facts one memory request may add (bulk loads go through imports)
MAX_TAGS = 64
_SURROGATES = re.compile("[\ud800-\udfff]")


def _valid_unicode(value: str) -> str:
    if not value.isascii() and _SURROGATES.search(value):
        raise ValueError("text contains a lone UTF-16 surrogate (\\ud800-\\udfff); send valid Unicode")
    return value


def _no_nul(value: str) -> str:
    """A filter or cursor no stored text can match (``memcubes.ids.storable``): refused rather
    than looked up (PostgreSQL would fail the statement: a 503 as if the store were down)."""
    if not storable(value):
        raise ValueError("must not contain a NUL character")
    return value


def _iso_time(value: Any) -> Any:
    """Times are ISO 8601 strings, as the schema says (pydantic would also take epoch seconds,
    given as a number or, in a query string, as any number Python reads: ``5.17e-57``)."""
    if not isinstance(value, str | datetime) or (isinstance(value, str) and _number(value)):
        raise ValueError("must be an ISO 8601 time, e.g. 2024-05-08T10:00:00Z")
    return value


def _number(text: str) -> bool:
    try:
        float(text)
    except ValueError:
        return False
    return True


def _utc(value: datetime) -> datetime:
    if value.tzinfo is None:
        return value.replace(tzinfo=UTC)
    try:
        return value.astimezone(UTC)
    except OverflowError:
        raise ValueError("time is out of range once converted to UTC") from None


def _has_non_finite(data: Any) -> bool:
    """NaN or Infinity anywhere in ``data`` (Python's JSON parser accepts them; JSON has neither)."""
    stack = [data]
    while stack:  # iterative: the body may be nested as deep as the parser allows
        value = stack.pop()
        if isinstance(value, float) and not math.isfinite(value):
            return True
        if isinstance(value, dict):
            stack.extend(value.values())
        elif isinstance(value, list):
            stack.extend(value)
    return False


Text = Annotated[str, AfterValidator(_valid_unicode)]
NoNulText = Annotated[str, AfterValidator(_no_nul)]  # compared with stored text
ShortText = Annotated[str, Field(min_length=1, max_length=256), AfterValidator(_valid_unicode)]
LongText = Annotated[str, Field(min_length=1, max_length=100_000), AfterValidator(_valid_unicode)]
Timestamp = Annotated[datetime, BeforeValidator(_iso_time), AfterValidator(_utc)]


class OpenAIBaseModel(BaseModel):
    model_config = ConfigDict(extra="allow")


class ContentPart(OpenAIBaseModel):
    type: str
    text: Text | None = None

    @field_validator("type")
    @classmethod
    def _not_empty(cls, value: str) -> str:
        if not value:
            raise ValueError("content part type must not be empty")
        return value

    @model_validator(mode="after")
    def _text_part_has_text(self) -> Self:
        if self.type == "text" and self.text is None:
            raise ValueError("a content part of type text needs a `text` string")
        return self


class ChatMessage(OpenAIBaseModel):
    role: MessageRole
    content: Text | list[ContentPart] | None = None
    name: Text | None = None


class RelayedRequest(OpenAIBaseModel):
    """A request body that goes on to a backend: chat, Anthropic messages, responses, embeddings."""

    @model_validator(mode="before")
    @classmethod
    def _json_numbers_only(cls, data: Any) -> Any:
        """Unknown fields are relayed, so they must be JSON an upstream can parse."""
        if _has_non_finite(data):
            raise ValueError("NaN and Infinity are not JSON numbers")
        return data

    def forward_body(self) -> dict[str, Any]:
        """The request as the client sent it (unset optional fields stay absent)."""
        return self.model_dump(exclude_unset=True)


class OwnedRequest(RelayedRequest):
    """A request whose body may name the memory owner, as OpenAI's APIs do."""

    user: str | None = None
    safety_identifier: str | None = None

    def owner(self) -> str | None:
        """Whose memory, from the body: ``user``, else ``safety_identifier`` (the OpenAI SDK's newer
        name for it), else ``metadata.user_id`` (Anthropic's field, which some gateways copy)."""
        return self.user or self.safety_identifier or metadata_user((self.model_extra or {}).get("metadata"))


class ChatCompletionRequest(OwnedRequest):
    model: str = Field(min_length=1)
    messages: list[ChatMessage] = Field(min_length=1)
    stream: bool | None = Field(None, strict=True)
    n: int | None = Field(None, ge=1, le=128, strict=True)


def metadata_user(metadata: Any) -> str | None:
    """``metadata.user_id`` when it is a string (``metadata`` itself is relayed, whatever it is)."""
    user = metadata.get("user_id") if isinstance(metadata, dict) else None
    return user if isinstance(user, str) else None


class EmbeddingRequest(RelayedRequest):
    """``POST /v1/embeddings``: relayed as it is; memory is not involved."""

    model: str = Field(min_length=1)
    input: Any


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
    content: Text | list[ContentPart]
    name: Text | None = None
    id: ShortText | None = None
    created_at: Timestamp | None = None


class Owner(_MemoryModel):
    """Whose memories: ``user`` (mapped to that user's space) or an explicit ``space``; both follow
    the owner rules of ``proxy.scope`` (stripped, no control characters)."""

    user: str | None = Field(None, min_length=1, max_length=256)
    space: str | None = Field(None, min_length=1, max_length=512)

    @field_validator("user")
    @classmethod
    def _user_name(cls, value: str | None) -> str | None:
        return None if value is None else clean_identifier(value)

    @field_validator("space")
    @classmethod
    def _space_name(cls, value: str | None) -> str | None:
        return None if value is None else clean_identifier(value, max_length=512)


class AddMemoriesRequest(Owner):
    messages: list[MemoryMessage] = Field(default_factory=list, max_length=MAX_ITEMS)
    facts: list[LongText] = Field(
        default_factory=list, max_length=MAX_ITEMS, description="memories stated directly, stored as given"
    )
    mode: ExtractionMode | None = None
    sync: bool = Field(False, strict=True)
    tags: list[ShortText] = Field(default_factory=list, max_length=MAX_TAGS)
    created_at: Timestamp | None = Field(None, description="time of facts without a message time")


class MemoryChangeOut(_MemoryModel):
    id: str
    event: str
    text: str
    sources: list[str]
    previous_id: str | None = None
    layer: Literal["fact", "episode"] = Field("fact", description="a distilled fact, or a message kept as said")


class AddMemoriesResponse(_MemoryModel):
    exchange_id: str
    status: Literal["done", "queued"]
    results: list[MemoryChangeOut] = Field(default_factory=list)


class SearchRequest(Owner):
    query: LongText
    top_k: int | None = Field(None, ge=1, le=200, strict=True)
    token_budget: int | None = Field(None, ge=0, le=1_000_000, strict=True)
    explain: bool = Field(
        False, strict=True, description="also return the ranked candidates with their scores and the injected blocks"
    )


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


class SearchCandidate(_MemoryModel):
    """A memory the retriever ranked (``explain``): its dense similarity and BM25 score (null when
    that ranking did not find it), the fused score it was ranked by, and whether it was injected."""

    id: str
    content: str
    dense: float | None
    lexical: float | None
    fused: float
    injected: bool


class InjectedBlocks(_MemoryModel):
    """The text the chat path would inject, verbatim: the stable block's system message and the
    block prepended to the last user message (null when empty)."""

    stable: str | None
    volatile: str | None


class SearchResponse(_MemoryModel):
    results: list[SearchResult]
    tokens: int
    candidates: list[SearchCandidate] | None = None
    injected: InjectedBlocks | None = None


class SpaceOut(_MemoryModel):
    space: str
    memories: dict[str, int] = Field(description="memories per state")
    total: int
    created_at: str
    last_activity: str | None
    bytes: int = Field(description="size of the space's memory documents")
    bytes_estimated: bool = Field(description="`bytes` is estimated from 2,000 of its memories")


class SpacePage(_MemoryModel):
    object: Literal["list"] = "list"
    data: list[SpaceOut]
    next_cursor: str | None = None
    has_more: bool = False


class StableItem(_MemoryModel):
    id: str
    ids: list[str]
    text: str
    tokens: int
    pinned: bool


class StableBlockOut(_MemoryModel):
    """A space's stable block as the next request gets it: the messages inserted after the
    application's system messages (none when the block is empty), its members, their tokens
    (what ``x-memory-tokens`` counts) and the inserted messages' tokens."""

    space: str
    items: list[StableItem]
    tokens: int
    messages: list[dict[str, Any]]
    message_tokens: int


class MemoryPage(_MemoryModel):
    object: Literal["list"] = "list"
    data: list[dict[str, Any]]
    next_cursor: str | None = None
    has_more: bool = False


class DeletedResponse(_MemoryModel):
    id: str
    deleted: bool = True
    purged: bool = False
    ids: list[str] | None = Field(None, description="purges: every memory removed (by_source: more than one)")


class PatchMemoryRequest(_MemoryModel):
    """Fields an edit may change; every edit is a new version of the memory. ``content``, ``tags``
    and ``pinned`` may be left out but not null (their ``None`` default is never validated, hence
    the ignores); a null time clears it."""

    content: LongText = None  # type: ignore[assignment]
    tags: list[ShortText] = Field(None, max_length=MAX_TAGS)  # type: ignore[arg-type]
    pinned: bool = Field(None, strict=True)  # type: ignore[assignment]
    expires_at: Timestamp | None = None
    valid_from: Timestamp | None = None
    valid_to: Timestamp | None = None

    @model_validator(mode="after")
    def _validity_in_order(self) -> Self:
        if self.valid_from is not None and self.valid_to is not None and self.valid_from > self.valid_to:
            raise ValueError("valid_from must not be later than valid_to")
        return self


# -- keys and audit ---------------------------------------------------------------------------

MAX_SHARED_SPACES = 64
MAX_METADATA_BYTES = 16 * 1024


def _user_name(value: str) -> str:
    name = clean_identifier(value)
    if name is None:
        raise ValueError("must not be empty")
    return name


def _space(value: str) -> str:
    return space_name(value)


UserName = Annotated[str, AfterValidator(_user_name)]
SpaceName = Annotated[str, AfterValidator(_space)]


class CreateKeyRequest(_MemoryModel):
    """``POST /v1/keys``: what the new key may do (README, "Security model")."""

    user: UserName | None = Field(None, description="the key acts for exactly this user")
    user_prefix: str | None = Field(
        None, max_length=256, description='the key acts for any user whose id starts with this ("": any user)'
    )
    read_spaces: list[SpaceName] = Field(default_factory=list, max_length=MAX_SHARED_SPACES)
    write_spaces: list[SpaceName] = Field(default_factory=list, max_length=MAX_SHARED_SPACES)
    memory_api: Literal["none", "read", "write"] = "write"
    models: list[ShortText] | None = Field(None, max_length=1000, description="allowed model names (default: all)")
    expires_at: Timestamp | None = None
    rpm: int | None = Field(None, ge=1, le=1_000_000, strict=True, description="requests per minute")
    alias: ShortText | None = None
    metadata: dict[str, Any] = Field(default_factory=dict)

    @field_validator("user_prefix")
    @classmethod
    def _prefix(cls, value: str | None) -> str | None:
        if value is None or value == "":
            return value
        return _user_name(value)

    @model_validator(mode="after")
    def _one_kind(self) -> Self:
        if self.user is not None and self.user_prefix is not None:
            raise ValueError("give `user` or `user_prefix`, not both")
        if len(json.dumps(self.metadata)) > MAX_METADATA_BYTES:
            raise ValueError(f"metadata must be at most {MAX_METADATA_BYTES} bytes of JSON")
        return self
