"""The MemCube: memproxy's standardized, versioned, portable unit of memory.

A cube is a header plus a payload. The header is identical for every kind so that stores,
bundles and the scheduler can handle cubes without knowing what they hold; ``kind`` says how to
read the payload (plaintext content today; activation tensors live in their own store and refer
back to the plaintext cubes they encode through ``covers``).
"""

from __future__ import annotations

from datetime import UTC, datetime
from enum import StrEnum
from typing import Any

from pydantic import BaseModel, ConfigDict, Field

from memcubes.ids import new_id


def utcnow() -> datetime:
    return datetime.now(UTC)


class CubeKind(StrEnum):
    PLAINTEXT = "plaintext"
    ACTIVATION = "activation"
    PARAMETRIC = "parametric"


class CubeState(StrEnum):
    ACTIVE = "active"
    ARCHIVED = "archived"
    SUPERSEDED = "superseded"
    DELETED = "deleted"


class Source(BaseModel):
    """Where a cube came from: enough to trace it back to the exact messages of an exchange."""

    model_config = ConfigDict(extra="allow")

    exchange_id: str | None = None
    message_ids: list[str] = Field(default_factory=list)
    roles: list[str] = Field(default_factory=list)
    names: list[str] = Field(default_factory=list)
    model: str | None = None
    reader: str | None = None


class Access(BaseModel):
    """The scheduler's view of a cube: how often and how recently it was retrieved as relevant
    (``heat`` is that count decayed with a half-life, as of ``last_hit_at``), and since when it
    belongs to its space's stable block (``None``: it does not)."""

    hits: int = 0
    last_hit_at: datetime | None = None
    heat: float = 0.0
    stable_since: datetime | None = None


class MemCube(BaseModel):
    """One memory. ``valid_from``/``valid_to`` are world time (when the fact holds, bi-temporal like
    Zep); ``created_at``/``updated_at`` are system time (when memproxy learnt and last changed it)."""

    model_config = ConfigDict(extra="forbid")

    id: str = Field(default_factory=new_id)
    kind: CubeKind = CubeKind.PLAINTEXT
    space: str
    content: str
    created_at: datetime = Field(default_factory=utcnow)
    updated_at: datetime = Field(default_factory=utcnow)
    valid_from: datetime | None = None
    valid_to: datetime | None = None
    source: Source = Field(default_factory=Source)
    tags: list[str] = Field(default_factory=list)
    confidence: float = 1.0
    version: int = 1
    supersedes: str | None = None
    superseded_by: str | None = None
    state: CubeState = CubeState.ACTIVE
    access: Access = Field(default_factory=Access)
    expires_at: datetime | None = None
    pinned: bool = False
    meta: dict[str, Any] = Field(default_factory=dict)

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
    def occurred_at(self) -> datetime:
        """When the memory happened in the world: the time used to date it in a prompt."""
        return self.valid_from or self.created_at
