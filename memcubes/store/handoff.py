"""What the processes sharing a store hand each other, as part of ``Store``: the write-back
journal (exchanges claimed with a lease, so that a killed process's are taken over), the log of
changes other processes read to refresh their caches, and the vector-index outbox (a row per
pending index write, replayed at start-up)."""

from __future__ import annotations

import json
import time
from collections.abc import Sequence
from contextlib import AbstractContextManager
from datetime import datetime
from typing import Any

from memcubes.cube import utcnow
from memcubes.store.engine import Connection, Dialect, Engine, Row
from memcubes.store.records import CHANGE_INDEX, OP_DROP_SPACE, Change, JournalEntry, OutboxRow, iso

BUSY_SECONDS = 30.0
_CHANGES_KEPT = 10_000
_OUTBOX_ORPHANED_SECONDS = 120.0
_OTHER_CLAIMERS = (
    "SELECT DISTINCT claimed_by FROM journal WHERE state = 'pending' AND claimed_by IS NOT NULL AND claimed_by != ?"
)


class Handoff:
    """The store's journal, change log and outbox (``Store`` inherits them)."""

    engine: Engine
    _sql: Dialect
    writer: str

    def _read(self, sql: str, params: Sequence[Any] = ()) -> list[Row]:
        return self.engine.read(sql, params)

    def _write(self, *, wait: float = BUSY_SECONDS) -> AbstractContextManager[Connection]:
        return self.engine.write(wait=wait)

    # -- journal ------------------------------------------------------------------------------

    def journal_put(
        self, exchange_id: str, space: str, payload: dict[str, Any], *, wait: float = 1.0, lease: float | None = None
    ) -> bool:
        """Record an exchange durably; False when that exchange id was already journalled. Gives
        up after ``wait`` seconds on a locked store: a chat answer is waiting on this. ``lease``:
        claimed by this process for that long at once (see ``journal_claim``), without a second
        transaction."""
        now = iso(utcnow())
        claimed_by, until = (None, None) if lease is None else (self.writer, time.time() + lease)
        with self._write(wait=wait) as conn:
            cursor = conn.execute(
                "INSERT INTO journal (exchange_id, space, state, payload, created_at, updated_at, "
                "claimed_by, lease_until) VALUES (?, ?, 'pending', ?, ?, ?, ?, ?) ON CONFLICT DO NOTHING",
                (exchange_id, space, json.dumps(payload), now, now, claimed_by, until),
            )
            return cursor.rowcount == 1

    def journal_get(self, exchange_id: str) -> JournalEntry | None:
        rows = self._read("SELECT * FROM journal WHERE exchange_id = ?", (exchange_id,))
        return self._journal_entry(rows[0]) if rows else None

    def journal_pending(self, *, limit: int, max_attempts: int) -> list[JournalEntry]:
        """Exchanges waiting that no other live process holds a claim on (see ``journal_claim``)."""
        gone = self.engine.gone(row[0] for row in self._read(_OTHER_CLAIMERS, (self.writer,)))
        rows = self._read(
            "SELECT * FROM journal WHERE state = 'pending' AND attempts < ? AND (lease_until IS NULL "
            f"OR lease_until < ? OR claimed_by = ? OR {self._sql.members('claimed_by')}) "
            "ORDER BY created_at LIMIT ?",
            (max_attempts, time.time(), self.writer, self._sql.listed(gone), limit),
        )
        return [self._journal_entry(row) for row in rows]

    def journal_claim(self, exchange_ids: Sequence[str], *, lease: float) -> set[str]:
        """Take exchanges for ``lease`` seconds; returns those taken (not done, and held by no
        other live process). A killed process's claims are taken over when its process is known
        to be gone (on SQLite, whose processes share a host: its pid is not running), else when
        they expire. On PostgreSQL the rows are locked ``FOR UPDATE SKIP LOCKED``: two replicas
        claiming at once each take different exchanges instead of one waiting for the other. A
        claim only saves doing work twice: ``apply`` is what makes an exchange's distillation
        happen exactly once."""
        now, sql = time.time(), self._sql
        with self._write() as conn:
            gone = self.engine.gone(row[0] for row in conn.execute(_OTHER_CLAIMERS, (self.writer,)).fetchall())
            rows = conn.execute(
                "UPDATE journal SET claimed_by = ?, lease_until = ? WHERE exchange_id IN (SELECT exchange_id "
                f"FROM journal WHERE state = 'pending' AND {sql.members('exchange_id')} AND (claimed_by IS NULL "
                f"OR claimed_by = ? OR lease_until < ? OR {sql.members('claimed_by')}){sql.skip_locked}) "
                "RETURNING exchange_id",
                (self.writer, now + lease, sql.listed(exchange_ids), self.writer, now, sql.listed(gone)),
            ).fetchall()
        return {row["exchange_id"] for row in rows}

    def journal_failed(self, exchange_id: str, error: str) -> None:
        """Count a failed attempt and let go of the claim (any process may try again)."""
        with self._write() as conn:
            conn.execute(
                "UPDATE journal SET attempts = attempts + 1, error = ?, updated_at = ?, claimed_by = NULL, "
                "lease_until = NULL WHERE exchange_id = ?",
                (error[:2000], iso(utcnow()), exchange_id),
            )

    def journal_release(self, exchange_ids: Sequence[str]) -> None:
        """Let go of this process's claims (shutting down with work left: others take it now)."""
        with self._write() as conn:
            conn.execute(
                "UPDATE journal SET claimed_by = NULL, lease_until = NULL WHERE claimed_by = ? "
                f"AND {self._sql.members('exchange_id')}",
                (self.writer, self._sql.listed(exchange_ids)),
            )

    def journal_counts(self) -> dict[str, int]:
        rows = self._read("SELECT state, count(*) AS n FROM journal GROUP BY state")
        return {row["state"]: int(row["n"]) for row in rows}

    def journal_oldest_pending(self) -> datetime | None:
        """When the oldest exchange still waiting was journalled (write-back lag; indexed)."""
        rows = self._read("SELECT min(created_at) AS at FROM journal WHERE state = 'pending'")
        return datetime.fromisoformat(rows[0]["at"]) if rows and rows[0]["at"] else None

    @staticmethod
    def _journal_entry(row: Row) -> JournalEntry:
        return JournalEntry(
            exchange_id=row["exchange_id"],
            space=row["space"],
            state=row["state"],
            payload=json.loads(row["payload"]),
            attempts=row["attempts"],
            result=json.loads(row["result"]) if row["result"] else None,
        )

    # -- changes, for the other processes sharing the store -------------------------------------

    def _note(self, conn: Connection, space: str, kind: str, cube_ids: Sequence[str] | None) -> None:
        """Record a change of ``space`` in the transaction making it, as its last statement (see
        ``Engine.note_changes``: on PostgreSQL the log's order must be the commits' order); the
        log keeps the last ``_CHANGES_KEPT`` (pruned every thousandth row)."""
        self.engine.note_changes(conn)
        seq = int(
            conn.execute(
                "INSERT INTO changes (space, writer, kind, cubes) VALUES (?, ?, ?, ?) RETURNING seq",
                (space, self.writer, kind, None if cube_ids is None else json.dumps(list(cube_ids))),
            ).fetchone()[0]
        )
        if seq % 1000 == 0:
            conn.execute("DELETE FROM changes WHERE seq <= ?", (seq - _CHANGES_KEPT,))

    def last_change(self) -> int:
        """Where ``changes_since`` starts from for a process opening the store now."""
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

    def _queue_index(self, conn: Connection, space: str, cube_id: str, op: str) -> None:
        conn.execute(
            "INSERT INTO outbox (space, cube_id, op, writer, at) VALUES (?, ?, ?, ?, ?)",
            (space, cube_id, op, self.writer, time.time()),
        )

    def outbox_pending(self, *, skip: Sequence[int] = (), limit: int = 1000) -> list[OutboxRow]:
        """Rows in order, but those in ``skip`` (what a caller has taken already) and those another
        running process wrote less than ``_OUTBOX_ORPHANED_SECONDS`` ago: that process indexes
        them (it holds their vectors; another would embed them again). Numbers are
        reused once the rows holding them are deleted, so only a row's presence names it."""
        sql = self._sql
        gone = self.engine.gone(
            row[0] for row in self._read("SELECT DISTINCT writer FROM outbox WHERE writer != ?", (self.writer,))
        )
        rows = self._read(
            f"SELECT * FROM outbox WHERE NOT ({sql.members('seq')}) AND (writer IS NULL "
            f"OR writer = ? OR at < ? OR {sql.members('writer')}) ORDER BY seq LIMIT ?",
            (sql.listed(skip), self.writer, time.time() - _OUTBOX_ORPHANED_SECONDS, sql.listed(gone), limit),
        )
        return [OutboxRow(row["seq"], row["space"], row["cube_id"], row["op"]) for row in rows]

    def outbox_count(self) -> int:
        return int(self._read("SELECT count(*) AS n FROM outbox")[0]["n"])

    def outbox_done(self, seqs: Sequence[int]) -> None:
        if not seqs:
            return
        sql = self._sql
        with self._write() as conn:
            rows = conn.execute(
                f"SELECT space, {sql.group_array('cube_id')} AS ids, max(CASE WHEN op = ? THEN 1 ELSE 0 END) "
                f"AS dropped FROM outbox WHERE {sql.members('seq')} GROUP BY space",
                (OP_DROP_SPACE, sql.listed(seqs)),
            ).fetchall()
            conn.executemany("DELETE FROM outbox WHERE seq = ?", [(seq,) for seq in seqs])
            for row in rows:  # the index changed: other processes read these cubes' vectors again
                self._note(conn, row["space"], CHANGE_INDEX, None if row["dropped"] else json.loads(row["ids"]))
