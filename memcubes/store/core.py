"""The system of record: cubes, their vectors, their history, the write-back journal, the
ANN-index outbox, the change log other processes read, and lexical search, on one of two engines
(``memcubes.store.engine``): SQLite under the data dir (the default) or PostgreSQL
(``memory.database_url``, replicas sharing one server). The logic is written once, here; an
engine owns connections, transactions, the SQL fragments that differ, and the lexical index.
What processes hand each other (the journal, the change log, the outbox) is
``memcubes.store.handoff``, which ``Store`` inherits.

Besides this module only ``memcubes.keystore`` (keys and the audit trail),
``memcubes.response_store``, ``memcubes.import_log`` (the undo log of imports running) and
``memcubes.vector_store`` (reads of the ``vectors`` table, and vectors written afresh), through
``transaction()`` and ``read()``, write SQL; the schema of every table is in
``memcubes.store.migrations``. Every change is one transaction (an import is chunked transactions
made all-or-nothing by its undo log), so a crash leaves either all of a write-back or none of it,
vectors included (a live cube's entries, ``ChangeSet.vectors``; a cube leaving search loses them,
like its lexical row); the in-RAM vectors and the ANN index are derived data, fed through the
``outbox`` table (one row per pending write) that is replayed at start-up. Lexical search is
``memcubes.lexicon`` (per-space postings and BM25 in SQL both engines run), written in the cubes'
transactions.

Methods are blocking; the async layers above call them from worker threads.
"""

from __future__ import annotations

import json
import math
import os
import re
import secrets
from collections.abc import Mapping, Sequence
from contextlib import AbstractContextManager
from datetime import datetime
from pathlib import Path
from typing import Any

from memcubes import lexicon
from memcubes.cube import Access, CubeState, MemCube, utcnow
from memcubes.errors import AlreadyApplied
from memcubes.store import migrations
from memcubes.store.engine import Connection, Engine, Row, StripeLocks
from memcubes.store.handoff import BUSY_SECONDS, Handoff
from memcubes.store.records import (
    CHANGE_PERSON,
    CHANGE_WRITEBACK,
    OP_DELETE,
    OP_DROP_SPACE,
    OP_UPSERT,
    SIZE_SAMPLE,
    ChangeSet,
    CubeFilter,
    HistoryEvent,
    HistoryRecord,
    Purged,
    SpaceScope,
    SpaceStats,
    Writers,
    content_hash,
    decayed,
    iso,
    parse_time,
    space_key,
)
from memcubes.store.sqlite import SQLiteEngine

_TOUCH_CHUNK = 64


class Store(Handoff):
    """The system of record. Create with ``Store.open(path)`` (SQLite) or
    ``Store.open(path, database_url=...)`` (PostgreSQL when the URL is not empty)."""

    def __init__(self, engine: Engine) -> None:
        self.engine = engine
        self._sql = engine.sql
        # Names this process's writes in ``changes`` and its journal claims: other processes
        # sharing the store act on the rest.
        self.writer = f"{os.getpid()}-{secrets.token_hex(4)}"
        Writers.open.add(self.writer)
        self.migrated: list[migrations.Migration] = []  # applied when this store opened

    @classmethod
    def open(cls, path: Path, *, database_url: str = "") -> Store:
        """The store of a data dir (``path``: its SQLite file), or of a PostgreSQL server;
        missing schema migrations are applied first."""
        engine: Engine
        if database_url:
            from memcubes.store.postgres import PostgresEngine  # psycopg only where it is used

            engine = PostgresEngine(database_url)
        else:
            engine = SQLiteEngine(path)
        store = cls(engine)
        try:
            with engine.write(wait=BUSY_SECONDS) as conn:
                store.migrated = migrations.apply(engine, conn)
            if store.get_meta(lexicon.META) != lexicon.VERSION:
                store._index_lexicon()
        except BaseException:
            store.close()
            raise
        return store

    def _index_lexicon(self) -> None:
        """Fill the postings from the live cubes afresh (a data dir indexed by another tokenizer
        version), and leave no copy of the old ones."""
        with self._write() as conn:
            if conn.execute("SELECT value FROM meta WHERE key = ?", (lexicon.META,)).fetchone() != (lexicon.VERSION,):
                lexicon.rebuild(conn, content=self._sql.json_text("doc", "content"))
        self.engine.scrub()

    @property
    def path(self) -> Path | None:
        """The SQLite file (None on PostgreSQL)."""
        return self.engine.path if isinstance(self.engine, SQLiteEngine) else None

    @property
    def interrupted(self) -> int:
        """Reads stopped at their request's deadline (``memcubes.deadline``)."""
        return self.engine.interrupted

    def close(self) -> None:
        Writers.open.discard(self.writer)
        Writers.closed.add(self.writer)
        self.engine.close()

    # -- transactions, for the modules owning tables of their own -------------------------------

    def transaction(self, *, wait: float = BUSY_SECONDS) -> AbstractContextManager[Connection]:
        """One write transaction, for the modules that own tables of their own in the store
        (``memcubes.keystore``): they share its connections and its writer queue."""
        return self._write(wait=wait)

    def read(self, sql: str, params: Sequence[Any] = ()) -> list[Row]:
        """Rows of one query, errors translated, for the same modules."""
        return self._read(sql, params)

    def checkpoint_in_background(self) -> None:
        self.engine.checkpoint_in_background()

    def checkpoint(self) -> None:
        self.engine.checkpoint()

    def data_version(self) -> int | str:
        """A value that differs whenever anything (this process's writers, another process)
        committed since the previous call; cheap enough to ask on every request (on the event
        loop itself where ``version_is_local``, else in a worker thread)."""
        return self.engine.data_version()

    @property
    def version_is_local(self) -> bool:
        return self.engine.version_is_local

    def truncate_wal(self) -> None:
        """For the modules owning tables here: after deleting what must leave no copy."""
        self.engine.scrub()

    def stripe_locks(self, directory: Path) -> StripeLocks:
        """Locks of stripes of spaces across processes, for ``memcubes.space_locks``."""
        return self.engine.stripe_locks(str(directory))

    # -- meta ---------------------------------------------------------------------------------

    def get_meta(self, key: str) -> str | None:
        rows = self._read("SELECT value FROM meta WHERE key = ?", (key,))
        return str(rows[0]["value"]) if rows else None

    def set_meta(self, key: str, value: str) -> None:
        with self._write() as conn:
            conn.execute(
                "INSERT INTO meta (key, value) VALUES (?, ?) ON CONFLICT (key) DO UPDATE SET value = excluded.value",
                (key, value),
            )

    # -- cubes --------------------------------------------------------------------------------

    @staticmethod
    def _cube(row: Row) -> MemCube:
        cube = MemCube.model_validate_json(row["doc"])
        cube.access = Access(
            hits=row["hits"],
            last_hit_at=parse_time(row["last_hit_at"]),
            heat=row["heat"],
            stable_since=parse_time(row["stable_since"]),
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
            params.append(iso(query.created_since))
        if query.created_until:
            sql.append("AND created_at < ?")
            params.append(iso(query.created_until))
        if query.tag:
            sql.append(f"AND EXISTS (SELECT 1 FROM {self._sql.json_each('doc', 'tags', 't')} WHERE t.value = ?)")
            params.append(query.tag)
        if query.text:
            sql.append(f"AND {self._sql.contains(self._sql.json_text('doc', 'content'))}")
            params.append(_like(query.text))
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
        names = self._sql.json_each("cubes.doc", "source.names", "names")
        rows = self._read(
            f"SELECT DISTINCT names.value AS name FROM cubes, {names} "
            "WHERE cubes.space = ? AND cubes.state = 'active' AND cubes.rid > ?",
            (space, after),
        )
        return {str(row["name"]) for row in rows}, max(after, int(last[0]["last"] or 0))

    def times(self, space: str) -> list[tuple[str, str, list[list[str]] | None]]:
        """Each live cube's id, time (``created_at``) and the windows its text mentions
        (``meta.when``), for time-aware retrieval; one row holding them all (see ``Dialect.group_array``)."""
        sql = self._sql
        each = sql.json_array("id", "created_at", sql.json_value("doc", "meta.when"))
        rows = self._read(
            f"SELECT {sql.group_array(each)} AS cubes FROM cubes WHERE space = ? AND state = 'active'", (space,)
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
        # steps to, and under load a thread waits to get it back for each of ~50 rows. Sorted
        # again here: an aggregate need not keep its subquery's order.
        hits = self._sql.group_array(self._sql.json_array("id", "score"))
        rows = self._read(
            f"SELECT {hits} AS hits FROM ({lexicon.search_sql(field, len(ranges))}) AS ranked",
            lexicon.search_params(ranges, space, limit),
        )
        found = [(cube_id, float(score)) for cube_id, score in json.loads(rows[0]["hits"])]
        return sorted(found, key=lambda hit: -hit[1])

    def touch(self, hits: Mapping[str, tuple[int, float]], *, half_life: float, at: datetime | None = None) -> set[str]:
        """Record relevance hits since the last call, as (count, heat weight) per cube: ``heat``
        decays with ``half_life`` seconds, then grows by the weight. Returns the spaces touched.

        One transaction per ``_TOUCH_CHUNK`` cubes: a second's hits at concurrency 1 (~500
        cubes) held the writer lock 15 ms at p50 and 156 ms at worst on the loaded bench
        machine, and a chat answer's journal row waited behind it (the largest stall of the
        concurrency-1 p99 in ``python -m bench overhead``). Ids in order: two processes
        touching the same cubes lock their rows in the same order (no deadlock on PostgreSQL)."""
        now = at or utcnow()
        ids = sorted(hits)
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
        sql = self._sql
        found = sql.group_array(sql.json_array("id", "space", "heat", "last_hit_at"))
        with self._write() as conn:
            rows = json.loads(
                conn.execute(f"SELECT {found} FROM cubes WHERE {sql.members('id')}", (sql.listed(ids),)).fetchone()[0]
            )
            updates = []
            for cube_id, _, heat, last in rows:
                count, weight = hits[cube_id]
                kept = decayed(heat, parse_time(last), now, half_life=half_life)
                updates.append([cube_id, count, (kept if math.isfinite(kept) else 0.0) + weight])
            conn.execute(
                f"UPDATE cubes SET hits = hits + {sql.json_item('j.value', 1, 'INTEGER')}, "
                f"heat = {sql.json_item('j.value', 2, 'REAL')}, last_hit_at = ? FROM {sql.json_rows('j')} "
                f"WHERE cubes.id = {sql.json_item('j.value', 0, 'TEXT')}",
                (iso(now), json.dumps(updates)),
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
        sql = self._sql
        with self._write() as conn:
            conn.executemany(
                "UPDATE cubes SET stable_since = ? WHERE id = ?",
                [(iso(moment), cube_id) for cube_id, moment in changes.items()],
            )
            rows = conn.execute(
                f"SELECT space, {sql.group_array('id')} AS ids FROM cubes WHERE {sql.members('id')} GROUP BY space",
                (sql.listed(changes),),
            ).fetchall()
            for row in rows:
                self._note(conn, row["space"], CHANGE_WRITEBACK, json.loads(row["ids"]))

    # -- the one write path ---------------------------------------------------------------------

    def apply(self, changes: ChangeSet) -> None:
        """Commit cubes, their history, seen digests and a journal completion atomically; queue
        the matching vector-index writes in the outbox. Raises ``AlreadyApplied`` (and writes
        nothing) when the journalled exchange is already done: exactly once, even across processes."""
        with self._write() as conn:
            if changes.journal_done is not None:
                exchange_id, result = changes.journal_done
                cursor = conn.execute(
                    "UPDATE journal SET state = 'done', result = ?, updated_at = ?, error = NULL, "
                    "claimed_by = NULL, lease_until = NULL WHERE exchange_id = ? AND state != 'done'",
                    (json.dumps(result), iso(utcnow()), exchange_id),
                )
                if cursor.rowcount != 1:
                    raise AlreadyApplied(f"exchange {exchange_id} was already applied")
            # in id order, as ``touch`` locks rows: two transactions never wait for each other
            for cube in sorted(changes.cubes, key=lambda cube: cube.id):
                self._upsert(conn, cube, changes.vectors.get(cube.id, ()))
            for event in changes.events:
                self._record(conn, event)
            if changes.seen:
                conn.executemany("INSERT INTO seen (space, digest) VALUES (?, ?) ON CONFLICT DO NOTHING", changes.seen)
            kind = CHANGE_PERSON if changes.journal_done is None else CHANGE_WRITEBACK
            for space in dict.fromkeys(cube.space for cube in changes.cubes):
                self._note(conn, space, kind, [cube.id for cube in changes.cubes if cube.space == space])

    def write_cubes(
        self,
        conn: Connection,
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

    def remove_cube(self, conn: Connection, cube_id: str) -> None:
        """A cube, its postings, its vectors and its history, inside a transaction of
        ``transaction()`` (``memcubes.import_log`` undoing an import)."""
        row = conn.execute(
            f"SELECT rid, space, {self._sql.json_text('doc', 'content')} AS content FROM cubes WHERE id = ?",
            (cube_id,),
        ).fetchone()
        if row is not None:
            lexicon.remove(conn, row["space"], row["rid"], row["content"])
            _delete_vectors(conn, row["space"], cube_id)
            conn.execute("DELETE FROM cubes WHERE rid = ?", (row["rid"],))
        conn.execute("DELETE FROM history WHERE cube_id = ?", (cube_id,))

    def content_hashes(self, space: str) -> set[str]:
        """The exact-duplicate keys of the space's active cubes (an import skips what they hold)."""
        rows = self._read("SELECT content_hash FROM cubes WHERE space = ? AND state = 'active'", (space,))
        return {row["content_hash"] for row in rows}

    def _upsert(self, conn: Connection, cube: MemCube, vectors: Sequence[tuple[int, bytes]]) -> None:
        conn.execute(
            "INSERT INTO spaces (space, key, created_at) VALUES (?, ?, ?) ON CONFLICT DO NOTHING",
            (cube.space, space_key(cube.space), iso(utcnow())),
        )
        doc = cube.model_dump_json(exclude={"access"})
        row = conn.execute(
            f"SELECT rid, space, state, {self._sql.json_text('doc', 'content')} AS content FROM cubes WHERE id = ?",
            (cube.id,),
        ).fetchone()
        live = cube.state is CubeState.ACTIVE
        values = (
            cube.space,
            cube.state.value,
            content_hash(cube.content),
            iso(cube.created_at),
            iso(cube.expires_at),
            int(cube.pinned),
            cube.meta.get("slot"),
            doc,
        )
        if row is None:
            access = cube.access
            rid = int(
                conn.execute(
                    "INSERT INTO cubes (id, space, state, content_hash, created_at, expires_at, pinned, slot, doc, "
                    "hits, last_hit_at, heat, stable_since) VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?) "
                    "RETURNING rid",
                    (cube.id, *values, access.hits, iso(access.last_hit_at), access.heat, iso(access.stable_since)),
                ).fetchone()[0]
            )
        else:
            rid = int(row["rid"])
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
    def _record(conn: Connection, event: HistoryEvent) -> None:
        conn.execute(
            "INSERT INTO history (cube_id, space, version, event, at, reason, doc) VALUES (?, ?, ?, ?, ?, ?, ?)",
            (
                event.cube.id,
                event.cube.space,
                event.cube.version,
                event.event,
                iso(event.at),
                event.reason,
                event.cube.model_dump_json(exclude={"access"}),
            ),
        )

    def history(self, cube_id: str) -> list[HistoryRecord]:
        return _history(self._read("SELECT * FROM history WHERE cube_id = ? ORDER BY seq", (cube_id,)))

    def space_history(self, space: str) -> list[HistoryRecord]:
        return _history(self._read("SELECT * FROM history WHERE space = ? ORDER BY seq", (space,)))

    def purge(self, cube_id: str, *, by_source: bool = False) -> Purged:
        """Remove a cube for good (``by_source``: with every cube of its space that shares one
        of its source messages, in any version: a fact and the episode of the message it came
        from go together): the rows, their vectors, their history, (through the outbox) their ANN
        entries, and every journalled exchange holding their words or their source messages (chat
        resends the whole conversation, so later exchanges carry them too), their postings. Then no
        copy is left on SQLite (``secure_delete`` zeroes the pages, the WAL is truncated); on
        PostgreSQL the rows are unreachable when the transaction commits, but their bytes stay
        in the pages until a VACUUM (in the background, at most once a minute) and the space's
        reuse, and in the server's WAL and backups. Nothing is removed when there is
        no such cube."""
        sql = self._sql
        with self._write() as conn:
            row = conn.execute("SELECT space FROM cubes WHERE id = ?", (cube_id,)).fetchone()
            if row is None:
                return Purged(space="", ids=[], words=set())
            space = row["space"]
            ids = self._sharing_sources(conn, space, cube_id) if by_source else [cube_id]
            rows = conn.execute(
                f"SELECT rid, id, doc FROM cubes WHERE space = ? AND {sql.members('id')}", (space, sql.listed(ids))
            ).fetchall()
            history = conn.execute(
                f"SELECT doc FROM history WHERE {sql.members('cube_id')}", (sql.listed(ids),)
            ).fetchall()
            versions = [MemCube.model_validate_json(doc["doc"]) for doc in [*rows, *history]]
            for found in rows:
                self.remove_cube(conn, found["id"])
                self._queue_index(conn, space, found["id"], OP_DELETE)
            words = self._forget_words(conn, space, {found["id"] for found in rows}, versions)
            self._note(conn, space, CHANGE_PERSON, [found["id"] for found in rows])
        self.engine.scrub()
        return Purged(space=space, ids=[found["id"] for found in rows], words=words)

    def _sharing_sources(self, conn: Connection, space: str, cube_id: str) -> list[str]:
        """``cube_id`` and the cubes of ``space`` that name one of its source messages in any
        version (current or in their history), whatever their state."""
        each = self._sql.json_each
        cubes, history = each("c.doc", "source.message_ids", "m"), each("h.doc", "source.message_ids", "m")
        found = conn.execute(
            f"WITH mine(message) AS (SELECT m.value FROM cubes c, {cubes} WHERE c.id = ?"
            f" UNION SELECT m.value FROM history h, {history} WHERE h.cube_id = ?)"
            f" SELECT c.id FROM cubes c, {cubes} WHERE c.space = ? AND m.value IN (SELECT message FROM mine)"
            f" UNION SELECT h.cube_id FROM history h, {history}"
            " WHERE h.space = ? AND m.value IN (SELECT message FROM mine)",
            (cube_id, cube_id, space, space),
        ).fetchall()
        return [cube_id, *sorted({row[0] for row in found} - {cube_id})]

    @staticmethod
    def _forget_words(conn: Connection, space: str, cube_ids: set[str], versions: Sequence[MemCube]) -> set[str]:
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
        no copy is left (see ``purge``)."""
        with self._write() as conn:
            count = int(conn.execute("SELECT count(*) FROM cubes WHERE space = ?", (space,)).fetchone()[0])
            lexicon.drop_space(conn, space)
            conn.execute("DELETE FROM vectors WHERE space_key = ?", (space_key(space),))
            for table in ("cubes", "history", "journal", "seen", "outbox", "spaces"):
                conn.execute(f"DELETE FROM {table} WHERE space = ?", (space,))
            self._queue_index(conn, space, "", OP_DROP_SPACE)
            self._note(conn, space, CHANGE_PERSON, None)
        self.engine.scrub()
        return count

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
            sql.append("AND lower(space) LIKE lower(?) ESCAPE '\\'")
            params.append(_like(contains))
        if scope is not None:
            sql.append(f"AND (substr(space, 1, length(CAST(? AS TEXT))) = ? OR {self._sql.members('space')})")
            params.extend([scope.prefix, scope.prefix, self._sql.listed(scope.names)])
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
            f"SELECT count(*) AS n, sum({self._sql.byte_length('doc')}) AS size FROM cubes "
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


def _history(rows: Sequence[Row]) -> list[HistoryRecord]:
    return [
        HistoryRecord(row["seq"], row["event"], row["at"], row["reason"], MemCube.model_validate_json(row["doc"]))
        for row in rows
    ]


def _delete_vectors(conn: Connection, space: str, cube_id: str) -> None:
    conn.execute("DELETE FROM vectors WHERE space_key = ? AND cube_id = ?", (space_key(space), cube_id))


def _like(text: str) -> str:
    """A LIKE pattern matching texts that contain ``text`` (``\\`` escapes)."""
    return "%" + re.sub(r"([\\%_])", r"\\\1", text) + "%"
