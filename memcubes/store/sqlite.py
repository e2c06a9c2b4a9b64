"""The SQLite engine: one file (WAL) under the data dir, shared by the workers of one host.

Each thread gets its own connection (SQLite connections must not be shared across threads while
in use). Writers of this process queue on a lock; other processes wait on SQLite's busy timeout.
Deleted rows leave no copy: ``secure_delete`` zeroes freed pages and the WAL is truncated
(``scrub``).
"""

from __future__ import annotations

import json
import os
import sqlite3
import threading
import time
from collections.abc import Iterable, Iterator, Sequence
from contextlib import contextmanager
from pathlib import Path
from typing import Any

from memcubes import deadline, lexicon
from memcubes.errors import DeadlineExceeded, StoreUnavailable
from memcubes.space_locks import FileStripes
from memcubes.store.engine import Connection, Dialect, Row
from memcubes.store.records import Writers

_BUSY_SECONDS = 30.0
_PROGRESS_STEPS = 10_000


class SQLiteDialect:
    skip_locked = ""

    def members(self, column: str) -> str:
        return f"{column} IN (SELECT value FROM json_each(?))"

    def listed(self, values: Iterable[Any]) -> Any:
        return json.dumps(list(values))

    def group_array(self, expression: str) -> str:
        return f"json_group_array({expression})"

    def json_array(self, *expressions: str) -> str:
        return f"json_array({', '.join(expressions)})"

    def json_text(self, column: str, path: str) -> str:
        return f"json_extract({column}, '$.{path}')"

    def json_value(self, column: str, path: str) -> str:
        return f"json_extract({column}, '$.{path}')"

    def json_each(self, column: str, path: str, alias: str) -> str:
        return f"json_each({column}, '$.{path}') AS {alias}"

    def json_rows(self, alias: str) -> str:
        return f"json_each(?) AS {alias}"

    def json_item(self, expression: str, index: int, kind: str) -> str:
        return f"json_extract({expression}, '$[{index}]')"

    def byte_length(self, expression: str) -> str:
        return f"length(CAST({expression} AS BLOB))"

    def contains(self, expression: str) -> str:
        return f"{expression} LIKE ? ESCAPE '\\'"


class SQLiteEngine:
    """The store's file. Create with ``SQLiteEngine(path)``."""

    name = "sqlite"
    sql: Dialect = SQLiteDialect()
    version_is_local = True  # data_version reads shared memory: no thread hop needed

    def __init__(self, path: Path) -> None:
        path.parent.mkdir(parents=True, exist_ok=True)
        self.path = path
        self.location = str(path)
        self._local = threading.local()
        self._connections: list[sqlite3.Connection] = []
        self._connections_lock = threading.Lock()
        self._writer = threading.Lock()
        self._background_checkpoints = False
        self._checkpointing = threading.Lock()  # close() waits for a checkpoint in flight
        self._closed = False
        self.interrupted = 0
        self._use = threading.Condition()
        self._users = 0  # operations under way (see ``_translate``)
        self._watch: sqlite3.Connection | None = None

    def close(self) -> None:
        with self._use:
            self._closed = True
            self._use.wait_for(lambda: self._users == 0, timeout=_BUSY_SECONDS)
        with self._checkpointing, self._connections_lock:
            for conn in self._connections:
                conn.close()
            self._connections.clear()
            if self._watch is not None:
                self._watch.close()
                self._watch = None
        self._local = threading.local()

    # -- connections and transactions ---------------------------------------------------------

    def _conn(self) -> sqlite3.Connection:
        conn: sqlite3.Connection | None = getattr(self._local, "conn", None)
        if conn is None:
            conn = sqlite3.connect(self.path, timeout=30, isolation_level=None, check_same_thread=False)
            conn.row_factory = sqlite3.Row
            conn.execute("PRAGMA journal_mode=WAL")
            conn.execute("PRAGMA synchronous=NORMAL")
            conn.execute("PRAGMA busy_timeout=5000")
            conn.execute("PRAGMA secure_delete=ON")  # deleted memories are overwritten, not left in free pages
            lexicon.prepare(conn)
            self._local.conn = conn
            with self._connections_lock:
                self._connections.append(conn)
        return conn

    @contextmanager
    def _translate(self) -> Iterator[None]:
        """Errors translated; and the connections in use, so that ``close()`` waits for a worker
        thread still reading (a thread left running by a cancelled task, e.g. a sweep at
        shutdown) instead of closing its connection under it, which crashes the interpreter."""
        with self._use:
            if self._closed:
                raise StoreUnavailable(f"SQLite store at {self.path} is closed")
            self._users += 1
        try:
            yield
        except sqlite3.Error as exc:
            raise StoreUnavailable(f"SQLite store at {self.path} failed: {exc}") from exc
        finally:
            with self._use:
                self._users -= 1
                self._use.notify_all()

    @contextmanager
    def write(self, *, wait: float = _BUSY_SECONDS) -> Iterator[Connection]:
        """One transaction. ``wait``: how long to wait for another writer before giving up (short
        where a request is waiting, long for background work).

        Writers of this process queue on a lock and start the moment the previous one commits;
        left to SQLite, a writer that finds the database locked sleeps and polls (1, 2, 5 ... 100
        ms), which under load put tens of milliseconds on requests that journal. SQLite's own
        timeout still covers writers in other processes (the CLI)."""
        started = time.monotonic()
        if not self._writer.acquire(timeout=wait):
            raise StoreUnavailable(f"SQLite store at {self.path} failed: gave up waiting {wait:g} s for a writer")
        try:
            with self._translate():
                conn = self._conn()
                if self._background_checkpoints and getattr(self._local, "autocheckpoint", True):
                    conn.execute("PRAGMA wal_autocheckpoint=0")
                    self._local.autocheckpoint = False
                conn.execute(f"PRAGMA busy_timeout={int(max(0.0, wait - (time.monotonic() - started)) * 1000)}")
                conn.execute("BEGIN IMMEDIATE")
                try:
                    yield conn
                except BaseException:
                    conn.execute("ROLLBACK")
                    raise
                conn.execute("COMMIT")
        finally:
            self._writer.release()

    def read(self, sql: str, params: Sequence[Any] = ()) -> list[Row]:
        at = deadline.current()
        with self._translate():
            conn = self._conn()
            if at is None:
                return conn.execute(sql, params).fetchall()
            return self._read_until(conn, at, sql, params)

    def _read_until(self, conn: sqlite3.Connection, at: float, sql: str, params: Sequence[Any]) -> list[Row]:
        """A read for a request that gives up at ``at`` (``memcubes.deadline``): not started
        after it, and stopped by SQLite's progress handler (called every ``_PROGRESS_STEPS``
        virtual-machine steps, a few microseconds) once it passes, so the thread is free again
        soon after the request stopped waiting, whatever the query."""
        if deadline.passed(at):
            self._count_interrupted()
            raise DeadlineExceeded("memory read not started: its request's deadline passed")
        conn.set_progress_handler(lambda: deadline.passed(at), _PROGRESS_STEPS)
        try:
            return conn.execute(sql, params).fetchall()
        except sqlite3.OperationalError as exc:
            if not deadline.passed(at):
                raise
            self._count_interrupted()
            raise DeadlineExceeded("memory read stopped: its request's deadline passed") from exc
        finally:
            conn.set_progress_handler(None, 0)

    def _count_interrupted(self) -> None:
        with self._connections_lock:
            self.interrupted += 1

    def checkpoint_in_background(self) -> None:
        """From now on commits leave the WAL to ``checkpoint()``, which the caller runs
        periodically. Left to SQLite, the commit that takes the WAL past 1,000 pages copies it into
        the database, fsync included: measured 8-15 ms here, spent holding the writer lock, so
        now and then a chat answer waited that long for its journal row."""
        self._background_checkpoints = True

    def checkpoint(self) -> None:
        """Copy what the WAL holds into the database, without waiting for readers or writers.
        A periodic checkpoint's worker thread outlives the cancelled task that started it: closing
        its connection under it crashed the interpreter (SIGSEGV in the test suite), so close()
        waits for it, and a checkpoint after close() does nothing."""
        with self._checkpointing:
            if self._closed:
                return
            with self._translate():
                self._conn().execute("PRAGMA wal_checkpoint(PASSIVE)")

    def data_version(self) -> int:
        """``PRAGMA data_version`` of a connection that never writes: it reads the WAL index in
        shared memory, no page (a few microseconds)."""
        with self._connections_lock, self._translate():
            if self._watch is None:
                self._watch = sqlite3.connect(self.path, check_same_thread=False, isolation_level=None)
            return int(self._watch.execute("PRAGMA data_version").fetchone()[0])

    def note_changes(self, conn: Connection) -> None:
        """Nothing: SQLite has one writer at a time, so the log's order is the commits' order."""

    def scrub(self) -> None:
        """Copy the WAL into the database (whose freed pages ``secure_delete`` zeroed) and empty
        it: deleted rows otherwise survive as old page images in the WAL. Holds the writer lock,
        so no write of this process slips in between."""
        with self._writer, self._translate():
            self._conn().execute("PRAGMA wal_checkpoint(TRUNCATE)")

    def gone(self, writers: Iterable[str]) -> list[str]:
        """Processes sharing a SQLite file share a host: a writer whose pid is not running is gone
        (for this process's own pid: whether that store is still open in it)."""
        return [writer for writer in writers if not _running(writer)]

    def stripe_locks(self, directory: str) -> FileStripes:
        return FileStripes(Path(directory))


def _running(writer: str) -> bool:
    """Whether the process of a ``Store.writer`` name (``<pid>-<token>``) is running on this host
    (for this process's own pid: whether that store is still open in it)."""
    pid = writer.partition("-")[0]
    if pid == str(os.getpid()):
        return writer in Writers.open
    try:
        os.kill(int(pid), 0)
    except ProcessLookupError:
        return False
    except (PermissionError, ValueError):  # another user's process; a name from elsewhere
        return True
    return True
