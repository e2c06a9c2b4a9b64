"""What the store holds and hands out, whatever the engine: the records (history events,
journal entries, changes of other processes, filters), the names of outbox operations and change
kinds, and the small pure helpers the store's logic and its callers share."""

from __future__ import annotations

import hashlib
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any, ClassVar

from memcubes.cube import CubeState, MemCube, utcnow

# Outbox operations: what the vector index must do for a cube (or a whole space).
OP_UPSERT = "upsert"
OP_DELETE = "delete"
OP_DROP_SPACE = "drop_space"

# Kinds of change noted in ``changes`` for the other processes sharing the file (see ``Change``).
CHANGE_PERSON = "person"
CHANGE_WRITEBACK = "writeback"
CHANGE_INDEX = "index"


def space_key(space: str) -> str:
    """A short opaque token naming a space in FTS and Chroma (which restricts collection names)."""
    return "s" + hashlib.sha1(space.encode()).hexdigest()[:24]


def iso(moment: datetime | None) -> str | None:
    return moment.isoformat() if moment is not None else None


@dataclass(frozen=True)
class HistoryEvent:
    """One entry of a cube's history: a snapshot of the cube as it was after ``event``."""

    cube: MemCube
    event: str
    reason: str | None = None
    at: datetime = field(default_factory=utcnow)


@dataclass(frozen=True)
class HistoryRecord:
    seq: int
    event: str
    at: str
    reason: str | None
    cube: MemCube


@dataclass(frozen=True)
class JournalEntry:
    exchange_id: str
    space: str
    state: str
    payload: dict[str, Any]
    attempts: int
    result: dict[str, Any] | None


@dataclass(frozen=True)
class Change:
    """A committed write of another process: what it did to ``space`` (``kind``: a person's
    change through the API, a write-back, or vector-index writes applied), and to which cubes
    (``None``: unknown, any)."""

    space: str
    kind: str
    cubes: tuple[str, ...] | None


@dataclass(frozen=True)
class OutboxRow:
    seq: int
    space: str
    cube_id: str
    op: str


@dataclass
class ChangeSet:
    """Everything one write-back (or one API call) changes, committed in a single transaction."""

    cubes: list[MemCube] = field(default_factory=list)
    events: list[HistoryEvent] = field(default_factory=list)
    seen: list[tuple[str, str]] = field(default_factory=list)
    journal_done: tuple[str, dict[str, Any]] | None = None
    # Encoded vector entries (sentence, bytes) of cubes with new text (``memcubes.vector_store``)
    vectors: dict[str, list[tuple[int, bytes]]] = field(default_factory=dict)


@dataclass(frozen=True)
class Purged:
    """What a purge removed: the ids of the cubes (none when there was no such cube), their
    space, and the words it forgot (the texts of their versions and source messages: the
    caller drops them elsewhere too, e.g. from the spill file)."""

    space: str
    ids: list[str]
    words: set[str]


@dataclass(frozen=True)
class CubeFilter:
    """Filters of ``GET /v1/memories``; ``cursor`` is the last id of the previous page. ``text``
    keeps memories whose content contains it (any state: the FTS index holds live ones only)."""

    space: str
    states: tuple[str, ...] = (CubeState.ACTIVE.value,)
    tag: str | None = None
    created_since: datetime | None = None
    created_until: datetime | None = None
    text: str | None = None
    oldest_first: bool = False
    cursor: str | None = None
    limit: int = 50


@dataclass(frozen=True)
class SpaceStats:
    """A space at a glance: memories per state, when it last changed, and the bytes its memory
    documents take (SQLite's own pages and the vector index add to that). Past ``SIZE_SAMPLE``
    memories the size is estimated from that many of them, the first the (space, state) index
    holds (``bytes_estimated``): summing every document of a 100,000-memory space reads all of it
    (0.15-1 s on 2 busy cores), the sample ~30 ms."""

    space: str
    created_at: str
    states: dict[str, int]
    last_activity: str | None
    bytes: int
    bytes_estimated: bool = False


SIZE_SAMPLE = 2000


@dataclass(frozen=True)
class SpaceScope:
    """The spaces a listing may show (a caller's, when it may not see every space): those whose
    name starts with ``prefix`` (``user:ali`` for a key acting for users ``ali*``) and ``names``."""

    prefix: str | None = None
    names: tuple[str, ...] = ()


def parse_time(value: str | None) -> datetime | None:
    return datetime.fromisoformat(value) if value else None


def decayed(heat: float, since: datetime | None, now: datetime, *, half_life: float) -> float:
    """Heat as of ``now``: halves every ``half_life`` seconds after the last hit."""
    if since is None or heat <= 0:
        return 0.0
    return float(heat * 0.5 ** (max(0.0, (now - since).total_seconds()) / half_life))


def content_hash(text: str) -> str:
    """Exact-duplicate key: case and whitespace folded."""
    return hashlib.sha256(" ".join(text.lower().split()).encode()).hexdigest()[:32]


class Writers:
    """The writer names (``Store.writer``) of the stores this process opened and closed: a store
    closed (a memory layer reopened in the same process, as after a crash in tests) no longer
    holds its journal claims and outbox rows, whatever the engine."""

    open: ClassVar[set[str]] = set()
    closed: ClassVar[set[str]] = set()
