"""The MemCube: memproxy's standardized, versioned, portable unit of memory.

A cube is a header plus a payload. The header is identical for every kind so that stores,
bundles and the scheduler can handle cubes without knowing what they hold; ``kind`` says how to
read the payload (plaintext content today; activation tensors live in their own store and refer
back to the plaintext cubes they encode through ``covers``).
"""

from __future__ import annotations

from datetime import UTC, datetime
from enum import StrEnum
from typing import Annotated, Any

from pydantic import AfterValidator, BaseModel, ConfigDict, Field, ValidationInfo, model_validator

from memcubes.ids import new_id


def utcnow() -> datetime:
    return datetime.now(UTC)


def _utc(moment: datetime, info: ValidationInfo) -> datetime:
    """Every time a cube holds is aware UTC: the store compares times as ISO strings, and a naive
    time cannot be compared with an aware one at all. A naive time is taken as UTC, unless the
    validation context says ``require_offset`` (the bundle format does)."""
    if moment.tzinfo is None and (info.context or {}).get("require_offset"):
        raise ValueError(f"{moment.isoformat()} has no UTC offset")
    try:
        return moment.astimezone(UTC) if moment.tzinfo else moment.replace(tzinfo=UTC)
    except OverflowError as exc:  # e.g. year 1 at +05:00
        raise ValueError(f"{moment.isoformat()} is out of range in UTC") from exc


def _text(value: str) -> str:
    """Stores keep text as UTF-8: a lone surrogate can be held by Python but never stored. NUL
    characters are dropped: PostgreSQL's text and jsonb refuse them (SQLite keeps them), and a
    memory must read the same on both engines; no one means a NUL in what they said."""
    try:
        value.encode("utf-8")
    except UnicodeEncodeError as exc:
        raise ValueError("text holds a lone surrogate (not valid Unicode)") from exc
    return value.replace("\x00", "")


def without_nul(value: Any) -> Any:
    """``value`` with NUL characters dropped from every string in it (keys, items, recursively):
    for the free-form parts of a cube (``meta``, a source's extra fields), as ``_text`` does for
    its text fields."""
    if isinstance(value, str):
        return value.replace("\x00", "")
    if isinstance(value, dict):
        return {without_nul(key): without_nul(item) for key, item in value.items()}
    if isinstance(value, list | tuple):
        return [without_nul(item) for item in value]
    return value


UTCDatetime = Annotated[datetime, AfterValidator(_utc)]
Text = Annotated[str, AfterValidator(_text)]


class CubeKind(StrEnum):
    PLAINTEXT = "plaintext"
    ACTIVATION = "activation"
    PARAMETRIC = "parametric"


class CubeState(StrEnum):
    ACTIVE = "active"
    ARCHIVED = "archived"
    SUPERSEDED = "superseded"
    DELETED = "deleted"
    QUARANTINED = "quarantined"  # reads as an instruction to an assistant: held back until approved


class Source(BaseModel):
    """Where a cube came from: enough to trace it back to the exact messages of an exchange."""

    model_config = ConfigDict(extra="allow", allow_inf_nan=False)

    @model_validator(mode="before")
    @classmethod
    def _no_nul(cls, data: Any) -> Any:
        return without_nul(data) if isinstance(data, dict) else data

    exchange_id: Text | None = None
    message_ids: list[Text] = Field(default_factory=list)
    roles: list[Text] = Field(default_factory=list)
    names: list[Text] = Field(default_factory=list)
    model: Text | None = None
    reader: Text | None = None


class Access(BaseModel):
    """The scheduler's view of a cube: how often and how recently it was retrieved as relevant
    (``heat`` is that count decayed with a half-life, as of ``last_hit_at``), and since when it
    belongs to its space's stable block (``None``: it does not)."""

    model_config = ConfigDict(allow_inf_nan=False)

    hits: int = Field(0, ge=0, le=2**62)
    last_hit_at: UTCDatetime | None = None
    heat: float = Field(0.0, ge=0.0)
    stable_since: UTCDatetime | None = None


class MemCube(BaseModel):
    """One memory. ``valid_from``/``valid_to`` are world time (when the fact holds, bi-temporal like
    Zep); ``created_at``/``updated_at`` are system time (when memproxy learnt and last changed it)."""

    model_config = ConfigDict(extra="forbid", allow_inf_nan=False)

    id: Text = Field(default_factory=new_id, min_length=1, max_length=128)
    kind: CubeKind = CubeKind.PLAINTEXT
    space: Text = Field(min_length=1)
    content: Text
    created_at: UTCDatetime = Field(default_factory=utcnow)
    updated_at: UTCDatetime = Field(default_factory=utcnow)
    valid_from: UTCDatetime | None = None
    valid_to: UTCDatetime | None = None
    source: Source = Field(default_factory=Source)
    tags: list[Text] = Field(default_factory=list)
    confidence: float = Field(1.0, ge=0.0, le=1.0)
    version: int = Field(1, ge=1, le=2**62)
    supersedes: Text | None = None
    superseded_by: Text | None = None
    state: CubeState = CubeState.ACTIVE
    access: Access = Field(default_factory=Access)
    expires_at: UTCDatetime | None = None
    pinned: bool = False
    meta: Annotated[dict[str, Any], AfterValidator(without_nul)] = Field(default_factory=dict)

    def is_live(self, now: datetime | None = None) -> bool:
        """True when the cube may be retrieved: active and not expired. A fact whose world validity
        ended (``valid_to`` in the past) is still a true statement about the past, so it stays."""
        if self.state is not CubeState.ACTIVE:
            return False
        return self.expires_at is None or self.expires_at > (now or utcnow())

    @property
    def sources(self) -> list[str]:
        return self.source.message_ids

    @property
    def is_episode(self) -> bool:
        """A message kept as said (``meta.layer: episode``): the evidence facts are distilled from.
        Lifecycle rules (update, delete, validity) act on facts; episodes are only deduplicated."""
        return self.meta.get("layer") == "episode"

    @property
    def occurred_at(self) -> datetime:
        """When the memory happened in the world: the time used to date it in a prompt."""
        return self.valid_from or self.created_at
