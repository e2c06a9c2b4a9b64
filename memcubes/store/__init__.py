"""The system of record (see ``memcubes.store.core``): one ``Store`` whose logic is shared, over
an engine (``memcubes.store.engine``): ``sqlite`` (the default) or ``postgres``
(``memory.database_url``); the schema's versions in ``memcubes.store.migrations``."""

from memcubes.store.core import Store
from memcubes.store.engine import Connection, Engine, Row
from memcubes.store.records import (
    CHANGE_INDEX,
    CHANGE_PERSON,
    CHANGE_WRITEBACK,
    OP_DELETE,
    OP_DROP_SPACE,
    OP_UPSERT,
    SIZE_SAMPLE,
    Change,
    ChangeSet,
    CubeFilter,
    HistoryEvent,
    HistoryRecord,
    JournalEntry,
    OutboxRow,
    Purged,
    SpaceScope,
    SpaceStats,
    content_hash,
    decayed,
    space_key,
)

__all__ = [
    "CHANGE_INDEX",
    "CHANGE_PERSON",
    "CHANGE_WRITEBACK",
    "OP_DELETE",
    "OP_DROP_SPACE",
    "OP_UPSERT",
    "SIZE_SAMPLE",
    "Change",
    "ChangeSet",
    "Connection",
    "CubeFilter",
    "Engine",
    "HistoryEvent",
    "HistoryRecord",
    "JournalEntry",
    "OutboxRow",
    "Purged",
    "Row",
    "SpaceScope",
    "SpaceStats",
    "Store",
    "content_hash",
    "decayed",
    "space_key",
]
