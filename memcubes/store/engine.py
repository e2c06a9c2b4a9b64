"""What the store's logic (``memcubes.store.core``) needs from a database engine: connections and
transactions, the few pieces of SQL that differ between engines, and the mechanisms that differ
in kind (noticing other processes' commits, stopping a read at its request's deadline, leaving no
copy of deleted rows, locking a space across processes). Lexical search (``memcubes.lexicon``)
is plain SQL that both run: no part of an engine.

Two implementations: ``memcubes.store.sqlite`` (one file under the data dir, the default) and
``memcubes.store.postgres`` (``memory.database_url``: replicas on several machines sharing one
server). SQL is written once with ``?`` placeholders; the PostgreSQL engine turns them into
psycopg's ``%s``. Where the engines' SQL differs, the store asks the engine's ``Dialect`` for the
fragment (a JSON list parameter, a JSON path, an aggregate into one JSON text) instead of holding
two copies of a query.

    SQLite                                  PostgreSQL
    col IN (SELECT value FROM json_each(?)) col = ANY(?)               (members / listed)
    json_group_array(x)                     json_agg(x)::text          (group_array)
    json_extract(doc, '$.a.b')              doc::jsonb #>> '{a,b}'     (json_text)
    json_each(doc, '$.a') AS m              jsonb_array_elements_text(...) AS m(value)
    x LIKE ? ESCAPE '\\'                     x ILIKE ? ESCAPE '\\'       (contains)
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from contextlib import AbstractContextManager
from contextvars import ContextVar
from typing import Any, Protocol, TypeAlias

# A row as read: indexable by position and by column name (``sqlite3.Row`` or the PostgreSQL
# engine's equivalent).
Row: TypeAlias = Any


class Cursor(Protocol):
    @property
    def rowcount(self) -> int: ...

    def fetchone(self) -> Row: ...

    def fetchall(self) -> list[Row]: ...


class Connection(Protocol):
    """A connection inside one write transaction (``Store.transaction()``)."""

    def execute(self, sql: str, parameters: Sequence[Any] = (), /) -> Cursor: ...

    def executemany(self, sql: str, parameters: Iterable[Sequence[Any]], /) -> Cursor: ...


class Dialect(Protocol):
    """The fragments of SQL that differ between engines."""

    # appended to a ``SELECT`` taking rows to update (journal claims): other transactions skip
    # the rows one holds instead of waiting for them
    skip_locked: str

    def members(self, column: str) -> str:
        """``column`` is one of a list passed as one parameter (made by ``listed``)."""
        ...

    def listed(self, values: Iterable[Any]) -> Any:
        """A list as the one parameter of ``members``."""
        ...

    def group_array(self, expression: str) -> str:
        """An aggregate of ``expression`` over the rows into one JSON array text (``[]`` for none):
        one row to fetch instead of many (SQLite's module lets go of the GIL at every row)."""
        ...

    def json_array(self, *expressions: str) -> str:
        """A JSON array of the expressions, for ``group_array``."""
        ...

    def json_text(self, column: str, path: str) -> str:
        """The text at ``path`` (dotted, e.g. ``source.names``) of a JSON document column."""
        ...

    def json_value(self, column: str, path: str) -> str:
        """The JSON value at ``path``, to embed in ``json_array``."""
        ...

    def json_each(self, column: str, path: str, alias: str) -> str:
        """A FROM item: the elements of the JSON list at ``path``, as ``alias.value`` (texts)."""
        ...

    def json_rows(self, alias: str) -> str:
        """A FROM item: the elements of a JSON list passed as a parameter, as ``alias.value``."""
        ...

    def json_item(self, expression: str, index: int, kind: str) -> str:
        """Element ``index`` of a JSON array value, as ``kind`` (``TEXT``, ``INTEGER``, ``REAL``)."""
        ...

    def byte_length(self, expression: str) -> str:
        """The size of a text in bytes."""
        ...

    def contains(self, expression: str) -> str:
        """``expression`` matches the ``LIKE`` pattern parameter (``\\`` escapes) whatever the
        case: SQLite's ``LIKE`` ignores ASCII case, PostgreSQL's does not (``ILIKE`` does)."""
        ...


# The stripe of spaces the work under way holds (set by ``memcubes.space_locks``; threads started
# with ``asyncio.to_thread`` inherit it): an engine whose stripe locks can be lost without the
# holder knowing (a PostgreSQL session) refuses to commit that work's writes once it has lost it.
held_stripe: ContextVar[int | None] = ContextVar("held_stripe", default=None)


class StripeLocks(Protocol):
    """Exclusive locks on numbered stripes of spaces, across every process of the store."""

    local: bool  # try_take and release need no I/O (may run on the event loop)

    def try_take(self, stripe: int) -> bool: ...

    def take(self, stripe: int) -> None:
        """Block until the stripe is this process's (run in a worker thread)."""
        ...

    def release(self, stripe: int) -> None: ...

    def close(self) -> None: ...


class Engine(Protocol):
    """A database holding the store's tables. Blocking; called from worker threads."""

    name: str  # "sqlite" or "postgresql"
    location: str  # for messages: the file, or the server without its password
    sql: Dialect
    interrupted: int  # reads stopped at their request's deadline (memcubes.deadline)
    # data_version() is answered without I/O (may be called on the event loop); else in a thread
    version_is_local: bool

    def write(self, *, wait: float) -> AbstractContextManager[Connection]:
        """One write transaction; gives up (``StoreUnavailable``) after ``wait`` seconds of
        waiting for other writers."""
        ...

    def read(self, sql: str, params: Sequence[Any] = ()) -> list[Row]:
        """Rows of one query, stopped at the current request's deadline (``DeadlineExceeded``)."""
        ...

    def data_version(self) -> int | str:
        """A value that differs whenever anything was committed since the previous call, by any
        process; cheap enough to ask before every request."""
        ...

    def gone(self, writers: Iterable[str]) -> list[str]:
        """Those of these ``Store.writer`` names whose process is known to have stopped."""
        ...

    def note_changes(self, conn: Connection) -> None:
        """Called in a transaction about to add to the ``changes`` log, as its last statements:
        where sequence numbers can commit out of order, wait for the other writers of the log."""
        ...

    def scrub(self) -> None:
        """After deleting what must leave no copy: make the engine drop old copies of the rows
        (SQLite: at once; PostgreSQL: a VACUUM in the background, coalesced, as far as it can)."""
        ...

    def checkpoint(self) -> None: ...

    def checkpoint_in_background(self) -> None: ...

    def stripe_locks(self, directory: str) -> StripeLocks:
        """Locks for ``memcubes.space_locks`` (``directory``: where lock files may go)."""
        ...

    def close(self) -> None: ...
