"""The PostgreSQL engine (``memory.database_url``): the system of record of replicas on several
machines sharing one server, through psycopg 3 and a ``psycopg_pool.ConnectionPool``.

What differs from SQLite, and how the same behaviour is kept:

- Transactions run concurrently (no writer queue): ``wait`` bounds the wait for a connection of
  the pool and, inside, for row locks (``lock_timeout``).
- Journal claims lock their rows ``FOR UPDATE SKIP LOCKED``. A replica's pid means nothing on
  another host, so a dead replica's claims and outbox rows are taken over when their lease
  expires (or at once, for a store this process closed).
- Other replicas' writes: ``data_version`` is the server's current snapshot (it changes whenever
  any write transaction starts or commits; no table is read), asked from a worker thread; then
  the ``changes`` log is read as on SQLite. Sequence numbers are taken in one transaction and may
  commit in another order: a transaction adding to the log first takes an advisory lock held to
  its commit (``note_changes``), so that a reader never sees number 11 before 10 commits.
- One writer per space across replicas: session advisory locks per stripe (``AdvisoryStripes``);
  a write of work holding a stripe commits only if the session that took the lock still holds it.
- A request's deadline bounds a read's wait for a connection of the pool, then stops the read
  with ``statement_timeout`` (set for that one statement).
- Deleted rows are unreachable once their transaction commits, but PostgreSQL has no
  ``secure_delete``: their bytes stay in the pages as dead tuples until VACUUM, then until the
  space is reused, and in the server's WAL and backups (the operator's to manage). ``scrub``
  (after a purge or a forgotten space) VACUUMs the tables holding user text in a background
  thread, at most once every ``_SCRUB_EVERY`` seconds whatever the number of deletions: a
  VACUUM of 7 tables per purge, which any key allowed to delete could set off in a loop, became
  one per minute.
- Lexical search is ``memcubes.lexicon``'s SQL as on SQLite; the postings' terms sort bytewise
  (``COLLATE "C"``), so that a prefix is a range of the primary key whatever the server's locale.
"""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Iterable, Iterator, Sequence
from contextlib import contextmanager
from functools import lru_cache
from typing import Any

import psycopg
import psycopg.errors
from psycopg.rows import RowMaker
from psycopg_pool import ConnectionPool, PoolTimeout

from memcubes import deadline
from memcubes.database_url import redacted, split
from memcubes.errors import DeadlineExceeded, InvalidMemoryInput, StoreUnavailable
from memcubes.store.engine import Connection, Cursor, Dialect, Row, held_stripe
from memcubes.store.records import Writers

log = logging.getLogger(__name__)

_POOL_SIZE = 16  # worker threads using the store at once (asyncio's default executor has up to 32)
_CONNECT_SECONDS = 10.0
_WAIT_SECONDS = 30.0  # for a connection of the pool, by work without a deadline (write-back, the API)
_MAX_WAITING = 4 * _POOL_SIZE  # threads waiting for a connection beyond which more fail at once
# Every connection: a server that does not answer fails the connect in 10 s instead of the OS's
# minutes, and a peer gone silent (a dead server, a dropped route) is noticed by TCP keepalives
# in about a minute instead of a read blocked for the OS's two hours.
_SESSION: dict[str, Any] = {
    "connect_timeout": int(_CONNECT_SECONDS),
    "keepalives": 1,
    "keepalives_idle": 30,
    "keepalives_interval": 10,
    "keepalives_count": 3,
}
_LOG_LOCK = (7142, 1)  # advisory lock keys: the ``changes`` log's writers
_STRIPES_KEY = 7143  # first key of the space stripes' advisory locks
_SCRUB_EVERY = 60.0  # seconds between two VACUUMs of the tables that held deleted user text
_SCRUBBED = ("cubes", "history", "journal", "vectors", "responses", "import_undo", "seen")
_TYPES = {"TEXT": "text", "INTEGER": "bigint", "REAL": "double precision"}


class PostgresDialect:
    skip_locked = " FOR UPDATE SKIP LOCKED"

    def members(self, column: str) -> str:
        return f"{column} = ANY(?)"

    def listed(self, values: Iterable[Any]) -> Any:
        return list(values)

    def group_array(self, expression: str) -> str:
        return f"coalesce(json_agg({expression})::text, '[]')"

    def json_array(self, *expressions: str) -> str:
        return f"json_build_array({', '.join(expressions)})"

    def json_text(self, column: str, path: str) -> str:
        return f"({column}::jsonb #>> '{_path(path)}')"

    def json_value(self, column: str, path: str) -> str:
        return f"({column}::jsonb #> '{_path(path)}')"

    def json_each(self, column: str, path: str, alias: str) -> str:
        value = f"{column}::jsonb #> '{_path(path)}'"
        return (
            f"jsonb_array_elements_text(CASE WHEN jsonb_typeof({value}) = 'array' THEN {value} "
            f"ELSE '[]'::jsonb END) AS {alias}(value)"
        )

    def json_rows(self, alias: str) -> str:
        return f"jsonb_array_elements(CAST(? AS jsonb)) AS {alias}(value)"

    def json_item(self, expression: str, index: int, kind: str) -> str:
        return f"CAST({expression} ->> {index} AS {_TYPES[kind]})"

    def byte_length(self, expression: str) -> str:
        return f"octet_length({expression})"

    def contains(self, expression: str) -> str:
        return f"{expression} ILIKE ? ESCAPE '\\'"


def _path(dotted: str) -> str:
    return "{" + ",".join(dotted.split(".")) + "}"


@lru_cache(maxsize=2048)
def _placeholders(sql: str) -> str:
    """The store's SQL (``?`` placeholders) as psycopg's (``%s``, a literal ``%`` doubled)."""
    return sql.replace("%", "%%").replace("?", "%s")


class _Row:
    """A row indexable by position and by column name, like ``sqlite3.Row``."""

    __slots__ = ("_names", "_values")

    def __init__(self, names: dict[str, int], values: Sequence[Any]) -> None:
        self._names = names
        self._values = values

    def __getitem__(self, key: int | str) -> Any:
        return self._values[key if isinstance(key, int) else self._names[key]]

    def __iter__(self) -> Iterator[Any]:
        return iter(self._values)

    def __len__(self) -> int:
        return len(self._values)

    def keys(self) -> list[str]:
        return list(self._names)


def _rows(cursor: Any) -> RowMaker[_Row]:
    names = {column.name: number for number, column in enumerate(cursor.description or ())}
    return lambda values: _Row(names, values)


class _Connection:
    """A pooled connection inside a transaction, taking the store's SQL."""

    def __init__(self, conn: psycopg.Connection[Any]) -> None:
        self._conn = conn

    def execute(self, sql: str, parameters: Sequence[Any] = (), /) -> Cursor:
        return self._conn.execute(_placeholders(sql), parameters)

    def executemany(self, sql: str, parameters: Iterable[Sequence[Any]], /) -> Cursor:
        cursor = self._conn.cursor()
        cursor.executemany(_placeholders(sql), list(parameters))
        return cursor


class PostgresEngine:
    name = "postgresql"
    sql: Dialect = PostgresDialect()
    version_is_local = False  # data_version asks the server: called from worker threads

    def __init__(self, url: str) -> None:
        # The password apart from the conninfo: libpq never echoes it (``memcubes.database_url``).
        self._conninfo, self._password = split(url)
        self.location = redacted(url)
        self.interrupted = 0
        self._counting = threading.Lock()
        self._stripes: AdvisoryStripes | None = None  # fences the writes of work holding a stripe
        self._scrubbing = threading.Lock()
        self._scrub: threading.Timer | None = None  # the VACUUM due after deletions
        self._scrubbed = -_SCRUB_EVERY  # when the last one started (time.monotonic())
        self.scrubs = 0  # VACUUMs run after deletions
        self._pool: ConnectionPool[psycopg.Connection[Any]] = ConnectionPool(
            self._conninfo,
            min_size=1,
            max_size=_POOL_SIZE,
            kwargs={"autocommit": True, "row_factory": _rows, "password": self._password, **_SESSION},
            open=False,
            timeout=_WAIT_SECONDS,
            max_waiting=_MAX_WAITING,
            name="memproxy",
        )
        try:
            self._pool.open(wait=True, timeout=_CONNECT_SECONDS)
        except psycopg.Error as exc:
            self._pool.close()
            raise StoreUnavailable(f"PostgreSQL store at {self.location} unreachable: {type(exc).__name__}") from exc

    def close(self) -> None:
        with self._scrubbing:
            due, self._scrub = self._scrub, None
        if due is not None:  # the deletions' VACUUM, not left to autovacuum
            due.cancel()
            self._vacuum()
        self._pool.close()

    @contextmanager
    def _translate(self) -> Iterator[None]:
        """psycopg's errors as the memory OS's. Data the server refuses (SQLSTATE classes 22 and
        23, e.g. a NUL byte in a text, or psycopg's own check of it) is the data's fault, not an
        outage: ``InvalidMemoryInput`` (a 400; write-back counts a failed attempt) rather than
        ``StoreUnavailable`` (a 503; write-back waits for the store without counting)."""
        try:
            yield
        except (psycopg.DataError, psycopg.IntegrityError) as exc:
            raise InvalidMemoryInput(f"the memory store refused the data: {_said(exc)}") from exc
        except psycopg.Error as exc:
            raise StoreUnavailable(f"PostgreSQL store at {self.location} failed: {_said(exc)}") from exc

    @contextmanager
    def write(self, *, wait: float = 30.0) -> Iterator[Connection]:
        started = time.monotonic()
        with self._translate(), self._pool.connection(timeout=wait) as conn, conn.transaction():
            left = max(0.001, wait - (time.monotonic() - started))
            conn.execute("SELECT set_config('lock_timeout', %s, true)", (f"{int(left * 1000)}ms",))
            yield _Connection(conn)
            stripe = held_stripe.get()
            if stripe is not None and self._stripes is not None:
                self._stripes.fence(conn, stripe)

    def read(self, sql: str, params: Sequence[Any] = ()) -> list[Row]:
        at = deadline.current()
        if at is None:
            with self._translate(), self._pool.connection(timeout=_WAIT_SECONDS) as conn:
                return conn.execute(_placeholders(sql), params).fetchall()
        with self._translate(), self._connection_until(at) as conn:
            return self._read_until(conn, at, sql, params)

    @contextmanager
    def _connection_until(self, at: float) -> Iterator[psycopg.Connection[Any]]:
        """A connection of the pool for a request that gives up at ``at``: waited for no longer
        (the pool's default wait is 30 s, far past any request's deadline)."""
        left = at - time.monotonic()
        if left <= 0:
            self._count_interrupted()
            raise DeadlineExceeded("memory read not started: its request's deadline passed")
        try:
            conn = self._pool.getconn(timeout=left)
        except PoolTimeout as exc:
            self._count_interrupted()
            raise DeadlineExceeded("memory read not started: no connection free before its deadline") from exc
        try:
            yield conn
        finally:
            self._pool.putconn(conn)

    def _read_until(self, conn: psycopg.Connection[Any], at: float, sql: str, params: Sequence[Any]) -> list[Row]:
        """A read for a request that gives up at ``at`` (``memcubes.deadline``): not started
        after it, and cancelled by the server (``statement_timeout``) once it passes."""
        left = at - time.monotonic()
        if left <= 0:
            self._count_interrupted()
            raise DeadlineExceeded("memory read not started: its request's deadline passed")
        try:
            with conn.transaction():
                conn.execute("SELECT set_config('statement_timeout', %s, true)", (f"{max(1, int(left * 1000))}ms",))
                return conn.execute(_placeholders(sql), params).fetchall()
        except psycopg.errors.QueryCanceled as exc:
            self._count_interrupted()
            raise DeadlineExceeded("memory read stopped: its request's deadline passed") from exc

    def _count_interrupted(self) -> None:
        with self._counting:
            self.interrupted += 1

    def data_version(self) -> str:
        """The server's current snapshot (xmin:xmax:running xids): it changes whenever a write
        transaction starts or ends, by any replica; no table is read."""
        at = deadline.current()
        with (
            self._translate(),
            self._pool.connection(timeout=_WAIT_SECONDS) if at is None else self._connection_until(at) as conn,
        ):
            row = conn.execute("SELECT pg_current_snapshot()::text").fetchone()
        return str(row[0]) if row is not None else ""

    def gone(self, writers: Iterable[str]) -> list[str]:
        """Only the stores this process closed: another replica's pid cannot be asked about."""
        return [writer for writer in writers if writer in Writers.closed]

    def note_changes(self, conn: Connection) -> None:
        conn.execute("SELECT pg_advisory_xact_lock(?, ?)", _LOG_LOCK)

    def scrub(self) -> None:
        """A VACUUM of the tables holding user text, in the background: at once if none ran in
        the last ``_SCRUB_EVERY`` seconds, else when that time is up; deletions meanwhile share it."""
        with self._scrubbing:
            if self._scrub is not None:
                return  # one is due, and will run after these rows' deletion committed
            wait = max(0.0, self._scrubbed + _SCRUB_EVERY - time.monotonic())
            self._scrub = threading.Timer(wait, self._vacuum)
            self._scrub.daemon = True
            self._scrub.start()

    def _vacuum(self) -> None:
        with self._scrubbing:
            self._scrub = None  # deletions from now on need another
            self._scrubbed = time.monotonic()
        try:
            with self._pool.connection(timeout=_WAIT_SECONDS) as conn:
                conn.execute(f"VACUUM (SKIP_LOCKED) {', '.join(_SCRUBBED)}")
                self.scrubs += 1
        except psycopg.Error as exc:  # the next deletion asks again; autovacuum also runs
            log.warning("VACUUM after a deletion failed on %s: %s", self.location, _said(exc))

    def checkpoint(self) -> None:
        """Nothing: the server checkpoints."""

    def checkpoint_in_background(self) -> None:
        """Nothing: the server checkpoints."""

    def stripe_locks(self, directory: str) -> AdvisoryStripes:
        self._stripes = AdvisoryStripes(self._conninfo, self._password)
        return self._stripes


class AdvisoryStripes:
    """Stripes of spaces as session advisory locks of one connection of this process (not
    pooled: a session lock belongs to its connection). The server lets go of a dead replica's
    locks with its connection. Every call asks the server, so none runs on the event loop:
    ``try_take`` answers False at once and ``take`` (in a worker thread) polls, for up to
    ``wait`` seconds.

    A lost session (its server restarted, its backend terminated, the route dropped) frees every
    stripe it held, and another replica may take them while this one's holders still run. So each
    stripe taken remembers the session (its backend pid) that took it, and ``fence`` (run by the
    engine in every write transaction of work holding a stripe, just before its commit) makes sure
    that session still holds it on the server; a new session is opened for the next ``take``."""

    local = False

    def __init__(self, conninfo: str, password: str | None, *, wait: float = _WAIT_SECONDS) -> None:
        self._conninfo, self._password = conninfo, password
        self._wait = wait
        self._conn: psycopg.Connection[Any] | None = None
        self._lock = threading.Lock()
        self._held: dict[int, int] = {}  # stripe -> backend pid of the session holding it

    def _ask(self, sql: str, stripe: int) -> tuple[bool, int]:
        """The answer of ``sql`` on the lock session (opened anew when lost) and its backend pid."""
        with self._lock:
            if self._conn is None or self._conn.closed or self._conn.broken:
                self._conn = psycopg.connect(self._conninfo, password=self._password, autocommit=True, **_SESSION)
            row = self._conn.execute(sql, (_STRIPES_KEY, stripe)).fetchone()
            return bool(row and row[0]), self._conn.info.backend_pid

    def try_take(self, stripe: int) -> bool:
        return False

    def take(self, stripe: int) -> None:
        give_up = time.monotonic() + self._wait
        pause = 0.005
        try:
            while True:
                taken, session = self._ask("SELECT pg_try_advisory_lock(%s, %s)", stripe)
                if taken:
                    self._held[stripe] = session
                    return
                if time.monotonic() >= give_up:
                    raise StoreUnavailable(
                        f"space stripe {stripe} still locked by another replica after {self._wait:g} s"
                    )
                time.sleep(pause)
                pause = min(pause * 2, 0.1)
        except psycopg.Error as exc:
            raise StoreUnavailable(f"PostgreSQL space lock failed: {_said(exc)}") from exc

    def fence(self, conn: psycopg.Connection[Any], stripe: int) -> None:
        """Raise ``StoreUnavailable`` (in ``conn``'s transaction: it rolls back, and write-back
        retries the work) unless the session that took ``stripe`` still holds it."""
        session = self._held.get(stripe)
        held = conn.execute(
            "SELECT 1 FROM pg_locks WHERE locktype = 'advisory' AND classid = %s AND objid = %s "
            "AND objsubid = 2 AND pid = %s AND granted",
            (_STRIPES_KEY, stripe, session),
        ).fetchone()
        if held is None:
            raise StoreUnavailable(f"space stripe {stripe} lost with its PostgreSQL session: not committed")

    def release(self, stripe: int) -> None:
        session = self._held.pop(stripe, None)
        try:
            with self._lock:
                if self._conn is None or self._conn.closed or self._conn.info.backend_pid != session:
                    return  # taken on a session since lost: the server let go of it then
                self._conn.execute("SELECT pg_advisory_unlock(%s, %s)", (_STRIPES_KEY, stripe))
        except psycopg.Error:
            self.close()  # the session's locks went with it

    def close(self) -> None:
        with self._lock:
            if self._conn is not None:
                self._conn.close()
                self._conn = None


def _said(exc: psycopg.Error) -> str:
    """The server's message without the query or its parameters (they may hold memory text)."""
    diag = getattr(exc, "diag", None)
    primary = getattr(diag, "message_primary", None) if diag is not None else None
    return f"{type(exc).__name__}: {primary}" if primary else type(exc).__name__
