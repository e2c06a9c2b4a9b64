"""The system of record: SQLite (WAL) holding cubes, their vectors, their history, the write-back
journal, the ANN-index outbox and the per-space lexical index (``memcubes.lexicon``: postings
and BM25 in plain SQL, words and the character bigrams of Chinese, Japanese and Korean text). A
data dir of FTS5 indexes (before the lexicon) gets the postings filled when opened.

This module owns the connections and transactions; besides it only ``memcubes.keystore`` (keys
and the audit trail), ``memcubes.import_log`` (the undo log of imports running) and
``memcubes.vector_store`` (reads of the ``vectors`` table, and vectors written afresh), through
``transaction()`` and ``read()``, write SQL. Every change is one transaction (an import is
chunked transactions made all-or-nothing by its undo log), so a crash leaves either all of a
write-back or none of it, vectors included (a live cube's entries, ``ChangeSet.vectors``; a cube
leaving search loses them, like its postings); the in-RAM vectors and the ANN index are derived
data, fed through the ``outbox`` table (one row per pending write) that is replayed at start-up.

Methods are blocking; the async layers above call them from worker threads. Each thread gets its
own connection (SQLite connections must not be shared across threads while in use).
"""

from __future__ import annotations

import hashlib
import json
import math
import os
import re
import secrets
import sqlite3
import threading
import time
from collections.abc import Iterator, Mapping, Sequence
from contextlib import AbstractContextManager, contextmanager
from dataclasses import dataclass, field
from datetime import datetime
from pathlib import Path
from typing import Any, ClassVar

from memcubes import deadline, lexicon
from memcubes.cube import Access, CubeState, MemCube, utcnow
from memcubes.errors import AlreadyApplied, DeadlineExceeded, StoreUnavailable

SCHEMA_VERSION = 1
_BUSY_SECONDS = 30.0
_PROGRESS_STEPS = 10_000

_SCHEMA = (
    """
CREATE TABLE IF NOT EXISTS meta (key TEXT PRIMARY KEY, value TEXT NOT NULL);
CREATE TABLE IF NOT EXISTS spaces (
    space TEXT PRIMARY KEY, key TEXT NOT NULL UNIQUE, created_at TEXT NOT NULL
);
CREATE TABLE IF NOT EXISTS cubes (
    rid INTEGER PRIMARY KEY,
    id TEXT NOT NULL UNIQUE,
    space TEXT NOT NULL,
    state TEXT NOT NULL,
    content_hash TEXT NOT NULL,
    created_at TEXT NOT NULL,
    expires_at TEXT,
    pinned INTEGER NOT NULL DEFAULT 0,
    slot TEXT,
    hits INTEGER NOT NULL DEFAULT 0,
    last_hit_at TEXT,
    heat REAL NOT NULL DEFAULT 0,
    stable_since TEXT,
    doc TEXT NOT NULL
);
CREATE INDEX IF NOT EXISTS cubes_by_space ON cubes (space, state, id);
CREATE INDEX IF NOT EXISTS cubes_by_hash ON cubes (space, content_hash);
CREATE INDEX IF NOT EXISTS cubes_by_slot ON cubes (space, slot) WHERE slot IS NOT NULL;
CREATE INDEX IF NOT EXISTS cubes_by_heat ON cubes (space, heat) WHERE heat > 0;
CREATE TABLE IF NOT EXISTS history (
    seq INTEGER PRIMARY KEY,
    cube_id TEXT NOT NULL,
    space TEXT NOT NULL,
    version INTEGER NOT NULL,
    event TEXT NOT NULL,
    at TEXT NOT NULL,
    reason TEXT,
    doc TEXT NOT NULL
);
CREATE INDEX IF NOT EXISTS history_by_cube ON history (cube_id, seq);
CREATE INDEX IF NOT EXISTS history_by_space ON history (space, seq);
CREATE TABLE IF NOT EXISTS journal (
    exchange_id TEXT PRIMARY KEY,
    space TEXT NOT NULL,
    state TEXT NOT NULL,
    payload TEXT NOT NULL,
    attempts INTEGER NOT NULL DEFAULT 0,
    created_at TEXT NOT NULL,
    updated_at TEXT NOT NULL,
    error TEXT,
    result TEXT,
    claimed_by TEXT,
    lease_until REAL
);
CREATE INDEX IF NOT EXISTS journal_by_state ON journal (state, created_at);
CREATE TABLE IF NOT EXISTS changes (
    seq INTEGER PRIMARY KEY, space TEXT NOT NULL, writer TEXT NOT NULL, kind TEXT NOT NULL, cubes TEXT
);
CREATE TABLE IF NOT EXISTS outbox (
    seq INTEGER PRIMARY KEY, space TEXT NOT NULL, cube_id TEXT NOT NULL, op TEXT NOT NULL, writer TEXT, at REAL
);
CREATE TABLE IF NOT EXISTS vectors (
    space_key TEXT NOT NULL, cube_id TEXT NOT NULL, sentence INTEGER NOT NULL, vec BLOB NOT NULL,
    PRIMARY KEY (space_key, cube_id, sentence)
) WITHOUT ROWID;
CREATE TABLE IF NOT EXISTS seen (
    space TEXT NOT NULL, digest TEXT NOT NULL, PRIMARY KEY (space, digest)
) WITHOUT ROWID;
"""
    + lexicon.SQLITE_SCHEMA
)

# Outbox operations: what the vector index must do for a cube (or a whole space).
OP_UPSERT = "upsert"
OP_DELETE = "delete"
OP_DROP_SPACE = "drop_space"

# Kinds of change noted in ``changes`` for the other processes sharing the file (see ``Change``).
CHANGE_PERSON = "person"
CHANGE_WRITEBACK = "writeback"
CHANGE_INDEX = "index"
_CHANGES_KEPT = 10_000
_TOUCH_CHUNK = 64
_OUTBOX_ORPHANED_SECONDS = 120.0
_OTHER_CLAIMERS = (
    "SELECT DISTINCT claimed_by FROM journal WHERE state = 'pending' AND claimed_by IS NOT NULL AND claimed_by != ?"
)


def space_key(space: str) -> str:
    """A short opaque token naming a space in the vectors table and Chroma (which restricts collection names)."""
    return "s" + hashlib.sha1(space.encode()).hexdigest()[:24]


def _iso(moment: datetime | None) -> str | None:
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
    keeps memories whose content contains it (any state: the lexical index holds live ones only)."""

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


class Store:
    """SQLite system of record. Create with ``Store.open(path)``."""

    # The writer names of the stores open in this process: one closed (a memory layer reopened in
    # the same process, as after a crash in tests) no longer holds its claims and outbox rows.
    open_writers: ClassVar[set[str]] = set()

    def __init__(self, path: Path) -> None:
        self.path = path
        self._local = threading.local()
        self._connections: list[sqlite3.Connection] = []
        self._connections_lock = threading.Lock()
        self._writer = threading.Lock()
        self._background_checkpoints = False
        self._checkpointing = threading.Lock()  # close() waits for a checkpoint in flight
        self._closed = False
        self.interrupted = 0  # reads stopped at their request's deadline (memcubes.deadline)
        self._use = threading.Condition()
        self._users = 0  # operations under way (see ``_translate``)
        self._watch: sqlite3.Connection | None = None
        # Names this process's writes in ``changes`` and its journal claims: other processes
        # sharing the file act on the rest.
        self.writer = f"{os.getpid()}-{secrets.token_hex(4)}"
        Store.open_writers.add(self.writer)

    @classmethod
    def open(cls, path: Path) -> Store:
        path.parent.mkdir(parents=True, exist_ok=True)
        store = cls(path)
        with store._translate():
            conn = store._conn()
            conn.executescript(_SCHEMA)
            _add_lease_columns(conn)
            conn.execute("INSERT OR IGNORE INTO meta (key, value) VALUES ('schema_version', ?)", (str(SCHEMA_VERSION),))
        if store.get_meta(lexicon.META) != lexicon.VERSION:
            store._index_lexicon()
        return store

    def _index_lexicon(self) -> None:
        """Fill the postings from the live cubes (a data dir of FTS5 indexes, or of another
        tokenizer version), drop the FTS5 tables, and leave no copy of them in the WAL."""
        with self._write() as conn:
            if conn.execute("SELECT value FROM meta WHERE key = ?", (lexicon.META,)).fetchone() != (lexicon.VERSION,):
                lexicon.rebuild(conn)
        self._truncate_wal()

    def close(self) -> None:
        Store.open_writers.discard(self.writer)
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
    def _write(self, *, wait: float = _BUSY_SECONDS) -> Iterator[sqlite3.Connection]:
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

    def transaction(self, *, wait: float = _BUSY_SECONDS) -> AbstractContextManager[sqlite3.Connection]:
        """One write transaction, for the modules that own tables of their own in this file
        (``memcubes.keystore``): they share its connections and its writer queue."""
        return self._write(wait=wait)

    def read(self, sql: str, params: Sequence[Any] = ()) -> list[sqlite3.Row]:
        """Rows of one query, errors translated, for the same modules."""
        return self._read(sql, params)

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
        """A number that differs whenever another connection (this process's writers, another
        process) committed to the file since the previous call. It reads the WAL index in shared
        memory, no page: a few microseconds, cheap enough to ask on every request."""
        with self._connections_lock, self._translate():
            if self._watch is None:
                self._watch = sqlite3.connect(self.path, check_same_thread=False, isolation_level=None)
            return int(self._watch.execute("PRAGMA data_version").fetchone()[0])

    def _read(self, sql: str, params: Sequence[Any] = ()) -> list[sqlite3.Row]:
        at = deadline.current()
        with self._translate():
            conn = self._conn()
            if at is None:
                return conn.execute(sql, params).fetchall()
            return self._read_until(conn, at, sql, params)

    def _read_until(self, conn: sqlite3.Connection, at: float, sql: str, params: Sequence[Any]) -> list[sqlite3.Row]:
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

    # -- meta ---------------------------------------------------------------------------------

    def get_meta(self, key: str) -> str | None:
        rows = self._read("SELECT value FROM meta WHERE key = ?", (key,))
        return str(rows[0]["value"]) if rows else None

    def set_meta(self, key: str, value: str) -> None:
        with self._write() as conn:
            conn.execute("INSERT OR REPLACE INTO meta (key, value) VALUES (?, ?)", (key, value))

    # -- cubes --------------------------------------------------------------------------------

    @staticmethod
    def _cube(row: sqlite3.Row) -> MemCube:
        cube = MemCube.model_validate_json(row["doc"])
        cube.access = Access(
            hits=row["hits"],
            last_hit_at=_time(row["last_hit_at"]),
            heat=row["heat"],
            stable_since=_time(row["stable_since"]),
        )
        return cube

    def get(self, cube_id: str) -> MemCube | None:
        rows = self._read("SELECT * FROM cubes WHERE id = ?", (cube_id,))
        return self._cube(rows[0]) if rows else None

    def get_many(self, cube_ids: Sequence[str]) -> dict[str, MemCube]:
        found: dict[str, MemCube] = {}
        ids = list(dict.fromkeys(cube_ids))
        for start in range(0, len(ids), 500):
            chunk = ids[start : start + 500]
            marks = ",".join("?" * len(chunk))
            for row in self._read(f"SELECT * FROM cubes WHERE id IN ({marks})", chunk):
                found[row["id"]] = self._cube(row)
        return found

    def list_cubes(self, query: CubeFilter) -> list[MemCube]:
        sql = ["SELECT * FROM cubes WHERE space = ?"]
        params: list[Any] = [query.space]
        if query.states:
            sql.append(f"AND state IN ({','.join('?' * len(query.states))})")
            params.extend(query.states)
        if query.cursor:
            sql.append("AND id > ?" if query.oldest_first else "AND id < ?")
            params.append(query.cursor)
        if query.created_since:
            sql.append("AND created_at >= ?")
            params.append(_iso(query.created_since))
        if query.created_until:
            sql.append("AND created_at < ?")
            params.append(_iso(query.created_until))
        if query.tag:
            sql.append("AND EXISTS (SELECT 1 FROM json_each(json_extract(doc, '$.tags')) WHERE value = ?)")
            params.append(query.tag)
        if query.text:
            sql.append("AND json_extract(doc, '$.content') LIKE ? ESCAPE '\\'")
            params.append("%" + re.sub(r"([\\%_])", r"\\\1", query.text) + "%")
        sql.append("ORDER BY id ASC LIMIT ?" if query.oldest_first else "ORDER BY id DESC LIMIT ?")
        params.append(query.limit)
        return [self._cube(row) for row in self._read(" ".join(sql), params)]

    def live_cubes(self, space: str) -> list[MemCube]:
        """All active cubes of a space, oldest first (for re-indexing, export and dedupe)."""
        rows = self._read("SELECT * FROM cubes WHERE space = ? AND state = 'active' ORDER BY id", (space,))
        return [self._cube(row) for row in rows]

    def find_by_hash(self, space: str, content_hash: str) -> MemCube | None:
        rows = self._read(
            "SELECT * FROM cubes WHERE space = ? AND content_hash = ? AND state = 'active' LIMIT 1",
            (space, content_hash),
        )
        return self._cube(rows[0]) if rows else None

    def speakers(self, space: str, *, after: int = 0) -> tuple[set[str], int]:
        """Names of the speakers whose messages the space's live memories come from, looking only
        at rows written after row ``after``; and the last row of the space, for the next call.
        Reading every memory's document on each write is what this saves a busy space."""
        last = self._read("SELECT MAX(rid) AS last FROM cubes WHERE space = ? AND rid > ?", (space, after))
        rows = self._read(
            "SELECT DISTINCT names.value AS name FROM cubes, json_each(cubes.doc, '$.source.names') AS names "
            "WHERE cubes.space = ? AND cubes.state = 'active' AND cubes.rid > ?",
            (space, after),
        )
        return {str(row["name"]) for row in rows}, max(after, int(last[0]["last"] or 0))

    def times(self, space: str) -> list[tuple[str, str, list[list[str]] | None]]:
        """Each live cube's id, time (``created_at``) and the windows its text mentions
        (``meta.when``), for time-aware retrieval; one row holding them all (see ``lexical``)."""
        rows = self._read(
            "SELECT json_group_array(json_array(id, created_at, json_extract(doc, '$.meta.when'))) AS cubes "
            "FROM cubes WHERE space = ? AND state = 'active'",
            (space,),
        )
        return [(cube_id, created, when) for cube_id, created, when in json.loads(rows[0]["cubes"])]

    def by_slot(self, space: str, slot: str) -> list[MemCube]:
        """Live cubes stating the same single-valued fact (``subject|attribute``), newest first."""
        rows = self._read(
            "SELECT * FROM cubes WHERE space = ? AND slot = ? AND state = 'active' ORDER BY id DESC",
            (space, slot),
        )
        return [self._cube(row) for row in rows]

    def count(self, space: str | None = None) -> int:
        if space is None:
            rows = self._read("SELECT count(*) AS n FROM cubes WHERE state = 'active'")
        else:
            rows = self._read("SELECT count(*) AS n FROM cubes WHERE space = ? AND state = 'active'", (space,))
        return int(rows[0]["n"])

    def lexical(self, space: str, terms: Sequence[str], *, limit: int) -> list[tuple[str, float]]:
        """BM25 over the active cubes of one space; ``terms`` are already analysed query words."""
        return self._bm25(lexicon.WORDS, space, lexicon.query_ranges(terms), limit=limit)

    def lexical_grams(self, space: str, grams: Sequence[str], *, limit: int) -> list[tuple[str, float]]:
        """BM25 over the character bigrams of the space's Chinese, Japanese and Korean text."""
        return self._bm25(lexicon.GRAMS, space, lexicon.query_ranges(grams, grams=True), limit=limit)

    def _bm25(
        self, field: lexicon.Field, space: str, ranges: Sequence[tuple[str, str]], *, limit: int
    ) -> list[tuple[str, float]]:
        if not ranges:
            return []
        # One row holding every hit: the sqlite3 module lets go of the GIL around each row it
        # steps to, and under load a thread waits to get it back for each of ~50 rows.
        rows = self._read(
            f"SELECT json_group_array(json_array(id, score)) AS hits FROM ({lexicon.search_sql(field, len(ranges))})",
            lexicon.search_params(ranges, space, limit),
        )
        return [(cube_id, float(score)) for cube_id, score in json.loads(rows[0]["hits"])]

    def touch(self, hits: Mapping[str, tuple[int, float]], *, half_life: float, at: datetime | None = None) -> set[str]:
        """Record relevance hits since the last call, as (count, heat weight) per cube: ``heat``
        decays with ``half_life`` seconds, then grows by the weight. Returns the spaces touched.

        One transaction per ``_TOUCH_CHUNK`` cubes: a second's hits at concurrency 1 (~500
        cubes) held the writer lock 15 ms at p50 and 156 ms at worst on the loaded bench
        machine, and a chat answer's journal row waited behind it (the largest stall of the
        concurrency-1 p99 in ``python -m bench overhead``)."""
        now = at or utcnow()
        ids = list(hits)
        spaces: set[str] = set()
        for start in range(0, len(ids), _TOUCH_CHUNK):
            spaces |= self._touch(hits, ids[start : start + _TOUCH_CHUNK], half_life=half_life, now=now)
        return spaces

    def _touch(
        self, hits: Mapping[str, tuple[int, float]], ids: Sequence[str], *, half_life: float, now: datetime
    ) -> set[str]:
        # Two statements whatever the number of cubes, each reading or writing all rows at once:
        # the sqlite3 module lets go of the GIL around every row it steps to (under load, a wait
        # to get it back for each row).
        with self._write() as conn:
            found = conn.execute(
                "SELECT json_group_array(json_array(id, space, heat, last_hit_at)) FROM cubes "
                "WHERE id IN (SELECT value FROM json_each(?))",
                (json.dumps(ids),),
            ).fetchone()[0]
            rows = json.loads(found)
            updates = []
            for cube_id, _, heat, last in rows:
                count, weight = hits[cube_id]
                kept = decayed(heat, _time(last), now, half_life=half_life)
                updates.append([cube_id, count, (kept if math.isfinite(kept) else 0.0) + weight])
            conn.execute(
                "UPDATE cubes SET hits = hits + json_extract(j.value, '$[1]'), heat = json_extract(j.value, '$[2]'), "
                "last_hit_at = ? FROM json_each(?) AS j WHERE cubes.id = json_extract(j.value, '$[0]')",
                (_iso(now), json.dumps(updates)),
            )
        return {space for _, space, _, _ in rows}

    def stable_members(self, space: str) -> list[MemCube]:
        """The space's stable block as it stands: pinned cubes and promoted ones, in the order
        they joined (appending keeps the older block a prefix of the newer one)."""
        rows = self._read(
            "SELECT * FROM cubes WHERE space = ? AND state = 'active' AND (pinned = 1 OR stable_since IS NOT NULL) "
            "ORDER BY COALESCE(stable_since, created_at), id",
            (space,),
        )
        return [self._cube(row) for row in rows]

    def hottest(self, space: str, *, limit: int) -> list[MemCube]:
        rows = self._read(
            "SELECT * FROM cubes WHERE space = ? AND state = 'active' AND heat > 0 ORDER BY heat DESC, id LIMIT ?",
            (space, limit),
        )
        return [self._cube(row) for row in rows]

    def set_stable(self, changes: Mapping[str, datetime | None]) -> None:
        """Promote (a time) or demote (``None``) cubes in their space's stable block."""
        with self._write() as conn:
            conn.executemany(
                "UPDATE cubes SET stable_since = ? WHERE id = ?",
                [(_iso(moment), cube_id) for cube_id, moment in changes.items()],
            )
            rows = conn.execute(
                "SELECT space, json_group_array(id) AS ids FROM cubes WHERE id IN (SELECT value FROM json_each(?)) "
                "GROUP BY space",
                (json.dumps(list(changes)),),
            ).fetchall()
            for row in rows:
                self._note(conn, row["space"], CHANGE_WRITEBACK, json.loads(row["ids"]))

    # -- the one write path ---------------------------------------------------------------------

    def apply(self, changes: ChangeSet) -> None:
        """Commit cubes, their history, seen digests and a journal completion atomically; queue
        the matching vector-index writes in the outbox. Raises ``AlreadyApplied`` (and writes
        nothing) when the journalled exchange is already done: exactly once, even across processes."""
        with self._write() as conn:
            for cube in changes.cubes:
                self._upsert(conn, cube, changes.vectors.get(cube.id, ()))
            kind = CHANGE_PERSON if changes.journal_done is None else CHANGE_WRITEBACK
            for space in dict.fromkeys(cube.space for cube in changes.cubes):
                self._note(conn, space, kind, [cube.id for cube in changes.cubes if cube.space == space])
            for event in changes.events:
                self._record(conn, event)
            if changes.seen:
                conn.executemany("INSERT OR IGNORE INTO seen (space, digest) VALUES (?, ?)", changes.seen)
            if changes.journal_done is not None:
                exchange_id, result = changes.journal_done
                cursor = conn.execute(
                    "UPDATE journal SET state = 'done', result = ?, updated_at = ?, error = NULL, "
                    "claimed_by = NULL, lease_until = NULL WHERE exchange_id = ? AND state != 'done'",
                    (json.dumps(result), _iso(utcnow()), exchange_id),
                )
                if cursor.rowcount != 1:
                    raise AlreadyApplied(f"exchange {exchange_id} was already applied")

    def write_cubes(
        self,
        conn: sqlite3.Connection,
        cubes: Sequence[MemCube],
        events: Sequence[HistoryEvent],
        vectors: Mapping[str, Sequence[tuple[int, bytes]]],
    ) -> None:
        """Cubes, their vectors and history inside a transaction of ``transaction()``
        (``memcubes.import_log``)."""
        for cube in cubes:
            self._upsert(conn, cube, vectors.get(cube.id, ()))
        for event in events:
            self._record(conn, event)

    def content_hashes(self, space: str) -> set[str]:
        """The exact-duplicate keys of the space's active cubes (an import skips what they hold)."""
        rows = self._read("SELECT content_hash FROM cubes WHERE space = ? AND state = 'active'", (space,))
        return {row["content_hash"] for row in rows}

    def _upsert(self, conn: sqlite3.Connection, cube: MemCube, vectors: Sequence[tuple[int, bytes]]) -> None:
        conn.execute(
            "INSERT OR IGNORE INTO spaces (space, key, created_at) VALUES (?, ?, ?)",
            (cube.space, space_key(cube.space), _iso(utcnow())),
        )
        doc = cube.model_dump_json(exclude={"access"})
        row = conn.execute(
            "SELECT rid, space, state, json_extract(doc, '$.content') AS content FROM cubes WHERE id = ?", (cube.id,)
        ).fetchone()
        live = cube.state is CubeState.ACTIVE
        values = (
            cube.space,
            cube.state.value,
            content_hash(cube.content),
            _iso(cube.created_at),
            _iso(cube.expires_at),
            int(cube.pinned),
            cube.meta.get("slot"),
            doc,
        )
        if row is None:
            access = cube.access
            cursor = conn.execute(
                "INSERT INTO cubes (id, space, state, content_hash, created_at, expires_at, pinned, slot, doc, "
                "hits, last_hit_at, heat, stable_since) VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?)",
                (cube.id, *values, access.hits, _iso(access.last_hit_at), access.heat, _iso(access.stable_since)),
            )
            rid = int(cursor.lastrowid or 0)  # set by the INSERT just run
        else:
            rid = row["rid"]
            conn.execute(
                "UPDATE cubes SET space = ?, state = ?, content_hash = ?, created_at = ?, expires_at = ?, "
                "pinned = ?, slot = ?, doc = ? WHERE rid = ?",
                (*values, rid),
            )
            was_live = row["state"] == CubeState.ACTIVE.value
            if (row["space"], was_live, row["content"]) == (cube.space, live, cube.content):
                # What is searched is unchanged (a duplicate only gained sources, an edit of tags):
                # the lexical and vector indexes need nothing, and re-embedding it would be waste.
                return
            if was_live:
                lexicon.remove(conn, row["space"], rid, row["content"])
            _delete_vectors(conn, row["space"], cube.id)
        if live:
            lexicon.add(conn, cube.space, rid, cube.content)
            # Without them (an edit, an approval) the index sync embeds it, told by the outbox row.
            conn.executemany(
                "INSERT INTO vectors (space_key, cube_id, sentence, vec) VALUES (?, ?, ?, ?)",
                [(space_key(cube.space), cube.id, sentence, blob) for sentence, blob in vectors],
            )
        self._queue_index(conn, cube.space, cube.id, OP_UPSERT if live else OP_DELETE)

    @staticmethod
    def _record(conn: sqlite3.Connection, event: HistoryEvent) -> None:
        conn.execute(
            "INSERT INTO history (cube_id, space, version, event, at, reason, doc) VALUES (?, ?, ?, ?, ?, ?, ?)",
            (
                event.cube.id,
                event.cube.space,
                event.cube.version,
                event.event,
                _iso(event.at),
                event.reason,
                event.cube.model_dump_json(exclude={"access"}),
            ),
        )

    def history(self, cube_id: str) -> list[HistoryRecord]:
        rows = self._read("SELECT * FROM history WHERE cube_id = ? ORDER BY seq", (cube_id,))
        return [
            HistoryRecord(row["seq"], row["event"], row["at"], row["reason"], MemCube.model_validate_json(row["doc"]))
            for row in rows
        ]

    def space_history(self, space: str) -> list[HistoryRecord]:
        rows = self._read("SELECT * FROM history WHERE space = ? ORDER BY seq", (space,))
        return [
            HistoryRecord(row["seq"], row["event"], row["at"], row["reason"], MemCube.model_validate_json(row["doc"]))
            for row in rows
        ]

    def purge(self, cube_id: str, *, by_source: bool = False) -> Purged:
        """Remove a cube for good (``by_source``: with every cube of its space that shares one
        of its source messages, in any version: a fact and the episode of the message it came
        from go together): the rows, their vectors, their history, (through the outbox) their ANN entries, and
        every journalled exchange holding their words or their source messages (chat resends the
        whole conversation, so later exchanges carry them too), their postings; the WAL is
        truncated so no copy is left in the files. Nothing is removed when there is no
        such cube."""
        with self._write() as conn:
            row = conn.execute("SELECT space FROM cubes WHERE id = ?", (cube_id,)).fetchone()
            if row is None:
                return Purged(space="", ids=[], words=set())
            space = row["space"]
            ids = self._sharing_sources(conn, space, cube_id) if by_source else [cube_id]
            wanted = json.dumps(ids)
            rows = conn.execute(
                "SELECT rid, id, doc FROM cubes WHERE space = ? AND id IN (SELECT value FROM json_each(?))",
                (space, wanted),
            ).fetchall()
            history = conn.execute(
                "SELECT doc FROM history WHERE cube_id IN (SELECT value FROM json_each(?))", (wanted,)
            ).fetchall()
            versions = [MemCube.model_validate_json(doc["doc"]) for doc in [*rows, *history]]
            for found, version in zip(rows, versions[: len(rows)], strict=True):
                lexicon.remove(conn, space, found["rid"], version.content)
                conn.execute("DELETE FROM cubes WHERE rid = ?", (found["rid"],))
                _delete_vectors(conn, space, found["id"])
                conn.execute("DELETE FROM history WHERE cube_id = ?", (found["id"],))
                self._queue_index(conn, space, found["id"], OP_DELETE)
            words = self._forget_words(conn, space, {found["id"] for found in rows}, versions)
            self._note(conn, space, CHANGE_PERSON, [found["id"] for found in rows])
        self._truncate_wal()
        return Purged(space=space, ids=[found["id"] for found in rows], words=words)

    @staticmethod
    def _sharing_sources(conn: sqlite3.Connection, space: str, cube_id: str) -> list[str]:
        """``cube_id`` and the cubes of ``space`` that name one of its source messages in any
        version (current or in their history), whatever their state."""
        found = conn.execute(
            "WITH mine(message) AS ("
            " SELECT m.value FROM cubes c, json_each(c.doc, '$.source.message_ids') m WHERE c.id = :cube"
            " UNION SELECT m.value FROM history h, json_each(h.doc, '$.source.message_ids') m WHERE h.cube_id = :cube)"
            " SELECT c.id FROM cubes c, json_each(c.doc, '$.source.message_ids') m"
            " WHERE c.space = :space AND m.value IN mine"
            " UNION SELECT h.cube_id FROM history h, json_each(h.doc, '$.source.message_ids') m"
            " WHERE h.space = :space AND m.value IN mine",
            {"cube": cube_id, "space": space},
        ).fetchall()
        return [cube_id, *sorted({row[0] for row in found} - {cube_id})]

    @staticmethod
    def _forget_words(
        conn: sqlite3.Connection, space: str, cube_ids: set[str], versions: Sequence[MemCube]
    ) -> set[str]:
        words = {version.content for version in versions}
        exchanges = {version.source.exchange_id for version in versions if version.source.exchange_id}
        messages = {message for version in versions for message in version.source.message_ids}
        rows = conn.execute("SELECT exchange_id, payload, result FROM journal WHERE space = ?", (space,)).fetchall()
        payloads = {row["exchange_id"]: json.loads(row["payload"]) for row in rows}
        for exchange in exchanges & payloads.keys():
            turns = payloads[exchange].get("turns") or []
            words.update(turn.get("content", "") for turn in turns if turn.get("id") in messages)
        words = {word for word in words if word.strip()}
        for row in rows:
            payload = payloads[row["exchange_id"]]
            said = [turn.get("content", "") for turn in payload.get("turns") or []] + list(payload.get("facts") or [])
            if row["exchange_id"] in exchanges or any(word in text for word in words for text in said):
                conn.execute("DELETE FROM journal WHERE exchange_id = ?", (row["exchange_id"],))
            elif row["result"] and any(cube_id in row["result"] for cube_id in cube_ids):
                result = json.loads(row["result"])
                result["changes"] = [c for c in result.get("changes", []) if c.get("id") not in cube_ids]
                conn.execute(
                    "UPDATE journal SET result = ? WHERE exchange_id = ?", (json.dumps(result), row["exchange_id"])
                )
        return words

    def delete_space(self, space: str) -> int:
        """Forget a space: cubes, history, journal, seen digests; the index drops its collection;
        its postings and statistics; the WAL is truncated so no copy is left in the files."""
        with self._write() as conn:
            count = int(conn.execute("SELECT count(*) FROM cubes WHERE space = ?", (space,)).fetchone()[0])
            lexicon.drop_space(conn, space)
            conn.execute("DELETE FROM vectors WHERE space_key = ?", (space_key(space),))
            for table in ("cubes", "history", "journal", "seen", "outbox", "spaces"):
                conn.execute(f"DELETE FROM {table} WHERE space = ?", (space,))
            self._queue_index(conn, space, "", OP_DROP_SPACE)
            self._note(conn, space, CHANGE_PERSON, None)
        self._truncate_wal()
        return count

    def truncate_wal(self) -> None:
        """For the modules owning tables here: after deleting what must leave no copy."""
        self._truncate_wal()

    def _truncate_wal(self) -> None:
        """Copy the WAL into the database (whose freed pages ``secure_delete`` zeroed) and empty
        it: deleted rows otherwise survive as old page images in the WAL. Holds the writer lock,
        so no write of this process slips in between."""
        with self._writer, self._translate():
            self._conn().execute("PRAGMA wal_checkpoint(TRUNCATE)")

    def spaces(self) -> list[str]:
        return [row["space"] for row in self._read("SELECT space FROM spaces ORDER BY space")]

    def space_page(
        self, *, contains: str | None = None, after: str | None = None, limit: int, scope: SpaceScope | None = None
    ) -> list[str]:
        """Space names in order, after ``after``, containing ``contains`` (case-insensitively),
        within ``scope`` when given."""
        sql = ["SELECT space FROM spaces WHERE space > ?"]
        params: list[Any] = [after or ""]
        if contains:
            sql.append("AND instr(lower(space), lower(?)) > 0")
            params.append(contains)
        if scope is not None:
            sql.append("AND (substr(space, 1, length(?)) = ? OR space IN (SELECT value FROM json_each(?)))")
            params.extend([scope.prefix, scope.prefix, json.dumps(list(scope.names))])
        sql.append("ORDER BY space LIMIT ?")
        params.append(limit)
        return [row["space"] for row in self._read(" ".join(sql), params)]

    def space_stats(self, space: str) -> SpaceStats | None:
        """Counts from the (space, state) index; the size sums the documents (or a sample)."""
        created = self._read("SELECT created_at FROM spaces WHERE space = ?", (space,))
        if not created:
            return None
        states = {
            row["state"]: int(row["n"])
            for row in self._read("SELECT state, count(*) AS n FROM cubes WHERE space = ? GROUP BY state", (space,))
        }
        sample = self._read(
            "SELECT count(*) AS n, sum(length(CAST(doc AS BLOB))) AS size FROM cubes "
            "WHERE rid IN (SELECT rid FROM cubes WHERE space = ? LIMIT ?)",
            (space, SIZE_SAMPLE),
        )[0]
        total, sampled = sum(states.values()), int(sample["n"])
        size = int(sample["size"] or 0)
        last = self._read("SELECT at FROM history WHERE space = ? ORDER BY seq DESC LIMIT 1", (space,))
        return SpaceStats(
            space=space,
            created_at=created[0]["created_at"],
            states=states,
            last_activity=last[0]["at"] if last else None,
            bytes=size if sampled >= total else round(size / sampled * total),
            bytes_estimated=sampled < total,
        )

    # -- seen messages ------------------------------------------------------------------------

    def unseen(self, space: str, digests: Sequence[str]) -> set[str]:
        """The digests of messages this space has not distilled yet."""
        if not digests:
            return set()
        marks = ",".join("?" * len(digests))
        rows = self._read(f"SELECT digest FROM seen WHERE space = ? AND digest IN ({marks})", (space, *digests))
        return set(digests) - {row["digest"] for row in rows}

    # -- journal ------------------------------------------------------------------------------

    def journal_put(
        self, exchange_id: str, space: str, payload: dict[str, Any], *, wait: float = 1.0, lease: float | None = None
    ) -> bool:
        """Record an exchange durably; False when that exchange id was already journalled. Gives
        up after ``wait`` seconds on a locked store: a chat answer is waiting on this. ``lease``:
        claimed by this process for that long at once (see ``journal_claim``), without a second
        transaction."""
        now = _iso(utcnow())
        claimed_by, until = (None, None) if lease is None else (self.writer, time.time() + lease)
        with self._write(wait=wait) as conn:
            cursor = conn.execute(
                "INSERT OR IGNORE INTO journal (exchange_id, space, state, payload, created_at, updated_at, "
                "claimed_by, lease_until) VALUES (?, ?, 'pending', ?, ?, ?, ?, ?)",
                (exchange_id, space, json.dumps(payload), now, now, claimed_by, until),
            )
            return cursor.rowcount == 1

    def journal_get(self, exchange_id: str) -> JournalEntry | None:
        rows = self._read("SELECT * FROM journal WHERE exchange_id = ?", (exchange_id,))
        return self._journal_entry(rows[0]) if rows else None

    def journal_pending(self, *, limit: int, max_attempts: int) -> list[JournalEntry]:
        """Exchanges waiting that no other live process holds a claim on (see ``journal_claim``)."""
        gone = _gone(self._read(_OTHER_CLAIMERS, (self.writer,)))
        rows = self._read(
            "SELECT * FROM journal WHERE state = 'pending' AND attempts < ? AND (lease_until IS NULL "
            "OR lease_until < ? OR claimed_by = ? OR claimed_by IN (SELECT value FROM json_each(?))) "
            "ORDER BY created_at LIMIT ?",
            (max_attempts, time.time(), self.writer, gone, limit),
        )
        return [self._journal_entry(row) for row in rows]

    def journal_claim(self, exchange_ids: Sequence[str], *, lease: float) -> set[str]:
        """Take exchanges for ``lease`` seconds; returns those taken (not done, and held by no
        other live process). A killed process's claims are taken over at once when its pid is gone
        (processes sharing a SQLite file share a host), else when they expire. A claim only saves
        doing work twice: ``apply`` is what makes an exchange's distillation happen exactly once."""
        now = time.time()
        with self._write() as conn:
            gone = _gone(conn.execute(_OTHER_CLAIMERS, (self.writer,)).fetchall())
            rows = conn.execute(
                "UPDATE journal SET claimed_by = ?, lease_until = ? WHERE state = 'pending' "
                "AND exchange_id IN (SELECT value FROM json_each(?)) AND (claimed_by IS NULL OR claimed_by = ? "
                "OR lease_until < ? OR claimed_by IN (SELECT value FROM json_each(?))) RETURNING exchange_id",
                (self.writer, now + lease, json.dumps(list(exchange_ids)), self.writer, now, gone),
            ).fetchall()
        return {row["exchange_id"] for row in rows}

    def journal_failed(self, exchange_id: str, error: str) -> None:
        """Count a failed attempt and let go of the claim (any process may try again)."""
        with self._write() as conn:
            conn.execute(
                "UPDATE journal SET attempts = attempts + 1, error = ?, updated_at = ?, claimed_by = NULL, "
                "lease_until = NULL WHERE exchange_id = ?",
                (error[:2000], _iso(utcnow()), exchange_id),
            )

    def journal_release(self, exchange_ids: Sequence[str]) -> None:
        """Let go of this process's claims (shutting down with work left: others take it now)."""
        with self._write() as conn:
            conn.execute(
                "UPDATE journal SET claimed_by = NULL, lease_until = NULL WHERE claimed_by = ? "
                "AND exchange_id IN (SELECT value FROM json_each(?))",
                (self.writer, json.dumps(list(exchange_ids))),
            )

    def journal_counts(self) -> dict[str, int]:
        rows = self._read("SELECT state, count(*) AS n FROM journal GROUP BY state")
        return {row["state"]: int(row["n"]) for row in rows}

    def journal_oldest_pending(self) -> datetime | None:
        """When the oldest exchange still waiting was journalled (write-back lag; indexed)."""
        rows = self._read("SELECT min(created_at) AS at FROM journal WHERE state = 'pending'")
        return datetime.fromisoformat(rows[0]["at"]) if rows and rows[0]["at"] else None

    @staticmethod
    def _journal_entry(row: sqlite3.Row) -> JournalEntry:
        return JournalEntry(
            exchange_id=row["exchange_id"],
            space=row["space"],
            state=row["state"],
            payload=json.loads(row["payload"]),
            attempts=row["attempts"],
            result=json.loads(row["result"]) if row["result"] else None,
        )

    # -- changes, for the other processes sharing the file -------------------------------------

    def _note(self, conn: sqlite3.Connection, space: str, kind: str, cube_ids: Sequence[str] | None) -> None:
        """Record a change of ``space`` in the transaction making it; the log keeps the last
        ``_CHANGES_KEPT`` (pruned every thousandth row)."""
        cursor = conn.execute(
            "INSERT INTO changes (space, writer, kind, cubes) VALUES (?, ?, ?, ?)",
            (space, self.writer, kind, None if cube_ids is None else json.dumps(list(cube_ids))),
        )
        seq = int(cursor.lastrowid or 0)
        if seq % 1000 == 0:
            conn.execute("DELETE FROM changes WHERE seq <= ?", (seq - _CHANGES_KEPT,))

    def last_change(self) -> int:
        """Where ``changes_since`` starts from for a process opening the file now."""
        return int(self._read("SELECT coalesce(max(seq), 0) AS seq FROM changes")[0]["seq"])

    def changes_since(self, seq: int) -> tuple[list[Change] | None, int]:
        """Other processes' changes after ``seq``, and the last seq for the next call; ``None``
        when some were pruned already (the caller must assume everything changed)."""
        rows = self._read(
            "SELECT seq, space, writer, kind, cubes FROM changes WHERE seq > ? OR seq = (SELECT min(seq) FROM changes) "
            "ORDER BY seq",
            (seq,),
        )
        last = max([seq, *(int(row["seq"]) for row in rows)])
        if rows and int(rows[0]["seq"]) > seq + 1:
            return None, last
        return [
            Change(row["space"], row["kind"], None if row["cubes"] is None else tuple(json.loads(row["cubes"])))
            for row in rows
            if int(row["seq"]) > seq and row["writer"] != self.writer
        ], last

    # -- vector-index outbox ------------------------------------------------------------------

    def _queue_index(self, conn: sqlite3.Connection, space: str, cube_id: str, op: str) -> None:
        conn.execute(
            "INSERT INTO outbox (space, cube_id, op, writer, at) VALUES (?, ?, ?, ?, ?)",
            (space, cube_id, op, self.writer, time.time()),
        )

    def outbox_pending(self, *, skip: Sequence[int] = (), limit: int = 1000) -> list[OutboxRow]:
        """Rows in order, but those in ``skip`` (what a caller has taken already) and those another
        running process wrote less than ``_OUTBOX_ORPHANED_SECONDS`` ago: that process indexes
        them (it holds their vectors; another would embed them again). Numbers are
        reused once the rows holding them are deleted, so only a row's presence names it."""
        gone = _gone(self._read("SELECT DISTINCT writer FROM outbox WHERE writer != ?", (self.writer,)))
        rows = self._read(
            "SELECT * FROM outbox WHERE seq NOT IN (SELECT value FROM json_each(?)) AND (writer IS NULL "
            "OR writer = ? OR at < ? OR writer IN (SELECT value FROM json_each(?))) ORDER BY seq LIMIT ?",
            (json.dumps(list(skip)), self.writer, time.time() - _OUTBOX_ORPHANED_SECONDS, gone, limit),
        )
        return [OutboxRow(row["seq"], row["space"], row["cube_id"], row["op"]) for row in rows]

    def outbox_count(self) -> int:
        return int(self._read("SELECT count(*) AS n FROM outbox")[0]["n"])

    def outbox_done(self, seqs: Sequence[int]) -> None:
        if not seqs:
            return
        with self._write() as conn:
            rows = conn.execute(
                "SELECT space, json_group_array(cube_id) AS ids, max(op = ?) AS dropped FROM outbox "
                "WHERE seq IN (SELECT value FROM json_each(?)) GROUP BY space",
                (OP_DROP_SPACE, json.dumps(list(seqs))),
            ).fetchall()
            conn.executemany("DELETE FROM outbox WHERE seq = ?", [(seq,) for seq in seqs])
            for row in rows:  # the index changed: other processes read these cubes' vectors again
                self._note(conn, row["space"], CHANGE_INDEX, None if row["dropped"] else json.loads(row["ids"]))


def _gone(writers: Sequence[sqlite3.Row]) -> str:
    """The JSON list of the writers (one per row) whose process is no longer running."""
    return json.dumps([row[0] for row in writers if not _running(row[0])])


def _running(writer: str) -> bool:
    """Whether the process of a ``Store.writer`` name (``<pid>-<token>``) is running on this host
    (for this process's own pid: whether that store is still open in it)."""
    pid = writer.partition("-")[0]
    if pid == str(os.getpid()):
        return writer in Store.open_writers
    try:
        os.kill(int(pid), 0)
    except ProcessLookupError:
        return False
    except (PermissionError, ValueError):  # another user's process; a name from elsewhere
        return True
    return True


def _add_lease_columns(conn: sqlite3.Connection) -> None:
    """Journal claims (``journal_claim``) and outbox writers in a data dir written before them."""
    for table, added in (
        ("journal", (("claimed_by", "TEXT"), ("lease_until", "REAL"))),
        ("outbox", (("writer", "TEXT"), ("at", "REAL"))),
    ):
        columns = {row[1] for row in conn.execute(f"PRAGMA table_info({table})")}
        for column, kind in added:
            if column not in columns:
                conn.execute(f"ALTER TABLE {table} ADD COLUMN {column} {kind}")


def _delete_vectors(conn: sqlite3.Connection, space: str, cube_id: str) -> None:
    conn.execute("DELETE FROM vectors WHERE space_key = ? AND cube_id = ?", (space_key(space), cube_id))


def _time(value: str | None) -> datetime | None:
    return datetime.fromisoformat(value) if value else None


def decayed(heat: float, since: datetime | None, now: datetime, *, half_life: float) -> float:
    """Heat as of ``now``: halves every ``half_life`` seconds after the last hit."""
    if since is None or heat <= 0:
        return 0.0
    return float(heat * 0.5 ** (max(0.0, (now - since).total_seconds()) / half_life))


def content_hash(text: str) -> str:
    """Exact-duplicate key: case and whitespace folded."""
    return hashlib.sha256(" ".join(text.lower().split()).encode()).hexdigest()[:32]
