"""The undo log of imports under way: what makes an import written in many short transactions
still all or nothing.

An import of 20,000 memories in one transaction held the store's writer for seconds: chats
could not journal (they spill after a second) and other users' adds waited. So an import commits
in chunks, and before a chunk touches a cube, this log records the cube's id and what the store
held for it before (nothing, for a new cube). Finishing the import marks it done and drops the
log; failing (or a crash, found at the next start) replays the log backwards: new cubes and their
history go, overwritten ones get their old document back, and the vector index follows through
the outbox. A running import beats its row's ``heartbeat`` with every chunk, so another process
(several workers share a data dir) never takes a live import for a crashed one.

Blocking SQL, called from worker threads, through ``Store.transaction()`` like ``memcubes.keystore``.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from datetime import datetime, timedelta

from memcubes.cube import MemCube, utcnow
from memcubes.errors import ImportAborted
from memcubes.store import OP_DELETE, Connection, HistoryEvent, Store

LEASE = timedelta(minutes=5)  # an import whose heartbeat is older than this died with its process
_UNDO_CHUNK = 500  # cubes rolled back (or forgotten) per transaction: the writer is held ~30 ms


def begin(store: Store, import_id: str, space: str) -> None:
    """Open the log. History rows after ``first_seq`` of the cubes it holds belong to the import."""
    with store.transaction() as conn:
        existed = conn.execute("SELECT 1 FROM spaces WHERE space = ?", (space,)).fetchone() is not None
        conn.execute(
            "INSERT INTO imports (id, space, state, first_seq, new_space, heartbeat) "
            "VALUES (?, ?, 'running', (SELECT coalesce(max(seq), 0) FROM history), ?, ?)",
            (import_id, space, int(not existed), utcnow().isoformat()),
        )


def hold(store: Store, import_id: str, cube_ids: Sequence[str]) -> None:
    """Record what the store holds for ``cube_ids`` now, before the import writes them or
    their vectors (a cube already held keeps its first record)."""
    with store.transaction() as conn:
        _running(conn, import_id)
        conn.executemany(
            "INSERT INTO import_undo (import_id, cube_id, prior) "
            "VALUES (?, ?, (SELECT doc FROM cubes WHERE id = ?)) ON CONFLICT DO NOTHING",
            [(import_id, cube_id, cube_id) for cube_id in cube_ids],
        )


def write(
    store: Store,
    import_id: str,
    cubes: Sequence[MemCube],
    events: Sequence[HistoryEvent],
    vectors: Mapping[str, Sequence[tuple[int, bytes]]],
) -> None:
    """One chunk: its cubes, their encoded vectors and history, in one transaction."""
    with store.transaction() as conn:
        _running(conn, import_id)
        store.write_cubes(conn, cubes, events, vectors)


def commit(store: Store, import_id: str) -> None:
    """The import's one moment of truth: from here on it stands, whatever happens next."""
    with store.transaction() as conn:
        _running(conn, import_id)
        conn.execute("UPDATE imports SET state = 'done' WHERE id = ?", (import_id,))
    forget(store, import_id)


def roll_back(store: Store, import_id: str) -> None:
    """Undo everything the import wrote, a chunk of cubes per transaction, then drop its log.
    The vectors rows go with their cubes; the outbox takes them out of RAM and the ANN index
    (an overwritten cube's text comes back without vectors: the index sync embeds it again)."""
    rows = store.read("SELECT space, first_seq, new_space FROM imports WHERE id = ?", (import_id,))
    if not rows:
        return
    space, first_seq, new_space = rows[0]["space"], rows[0]["first_seq"], bool(rows[0]["new_space"])
    while True:
        with store.transaction() as conn:
            undo = conn.execute(
                "SELECT cube_id, prior FROM import_undo WHERE import_id = ? LIMIT ?", (import_id, _UNDO_CHUNK)
            ).fetchall()
            for row in undo:
                if row["prior"] is None:
                    store.remove_cube(conn, row["cube_id"])
                    conn.execute(
                        "INSERT INTO outbox (space, cube_id, op) VALUES (?, ?, ?)", (space, row["cube_id"], OP_DELETE)
                    )
                else:
                    prior = MemCube.model_validate_json(row["prior"])
                    store.write_cubes(conn, [prior], [], {})  # no vectors: the index sync embeds it again
                    conn.execute("DELETE FROM history WHERE cube_id = ? AND seq > ?", (row["cube_id"], first_seq))
                conn.execute("DELETE FROM import_undo WHERE import_id = ? AND cube_id = ?", (import_id, row["cube_id"]))
            if undo:
                continue
            if new_space:
                conn.execute(
                    "DELETE FROM spaces WHERE space = ? AND NOT EXISTS (SELECT 1 FROM cubes WHERE space = ?)",
                    (space, space),
                )
            conn.execute("DELETE FROM imports WHERE id = ?", (import_id,))
            return


def abandoned(store: Store, *, now: datetime | None = None) -> tuple[list[str], list[str]]:
    """Imports left by a process that died: (running ones, to roll back; done ones whose log
    was not dropped yet, to forget)."""
    stale = ((now or utcnow()) - LEASE).isoformat()
    rows = store.read("SELECT id, state FROM imports WHERE state = 'done' OR heartbeat < ?", (stale,))
    return [r["id"] for r in rows if r["state"] != "done"], [r["id"] for r in rows if r["state"] == "done"]


def forget(store: Store, import_id: str) -> None:
    """Drop a finished import's log, a chunk at a time."""
    while True:
        with store.transaction() as conn:
            cursor = conn.execute(
                "DELETE FROM import_undo WHERE import_id = ? AND cube_id IN "
                "(SELECT cube_id FROM import_undo WHERE import_id = ? LIMIT ?)",
                (import_id, import_id, _UNDO_CHUNK * 10),
            )
            if cursor.rowcount:
                continue
            conn.execute("DELETE FROM imports WHERE id = ?", (import_id,))
            return


def _running(conn: Connection, import_id: str) -> None:
    """Go on only while the import is the log's: beat its heartbeat."""
    cursor = conn.execute(
        "UPDATE imports SET heartbeat = ? WHERE id = ? AND state = 'running'", (utcnow().isoformat(), import_id)
    )
    if cursor.rowcount != 1:
        raise ImportAborted(f"import {import_id} was rolled back while it ran (it had stopped for {LEASE})")
