"""What write-back works on: the turns of one exchange, journalled before they are distilled."""

from __future__ import annotations

import hashlib
from datetime import datetime

from pydantic import BaseModel, ConfigDict, Field

from memcubes.config import ExtractionMode
from memcubes.ids import new_id


class Turn(BaseModel):
    """One message as memory sees it: plain text, who said it, when, and a stable id for provenance."""

    model_config = ConfigDict(extra="ignore")

    id: str = Field(default_factory=new_id)
    role: str
    content: str
    name: str | None = None
    created_at: datetime | None = None
    generated: bool = Field(False, description="produced by this exchange (the answer): never skipped as seen")

    @property
    def speaker(self) -> str:
        return self.name or self.role

    def digest(self) -> str:
        """Identity of the message's words, to skip messages a space has already distilled."""
        return hashlib.sha256(f"{self.role}\x00{self.content}".encode()).hexdigest()[:32]


class Exchange(BaseModel):
    """A unit of write-back: idempotent by ``id`` (the journal's primary key)."""

    id: str = Field(default_factory=new_id)
    space: str
    turns: list[Turn] = Field(default_factory=list)
    facts: list[str] = Field(default_factory=list, description="memories stated directly, stored as given")
    created_at: datetime | None = Field(None, description="when the facts happened (default: now)")
    mode: ExtractionMode
    model: str | None = None
    session: str | None = None
    skip_seen: bool = Field(
        False,
        description="distil only request turns this space has not seen (chat resends the whole history); "
        "generated turns are always new, even when their words repeat an earlier answer",
    )
    tags: list[str] = Field(default_factory=list)
