"""What OpenAI's Responses API needs kept: each stored response and the conversation up to its
answer, for ``previous_response_id`` chains and ``GET``/``DELETE /v1/responses/{id}``.

One table in the store's SQLite file (the store owns the connection and the transactions; this
module owns the table and its queries), so a chain survives a restart and every worker on the
data dir sees every response: nothing is cached in the process, each read goes to the database
(a primary-key lookup, well under a millisecond). Rows belong to the API key that created them (a
SHA-256 digest of it: another key's responses are not found) and to the memory space of their
owner, so forgetting a space or purging a memory removes the response texts with the rest of
the user's words (issue 12's deletion that deletes).

Bounded (``memory.responses``): a response older than ``max_age_hours`` is gone (OpenAI keeps
stored responses 30 days); each key keeps its newest ``max_per_key``; all of them together stay
under ``max_mb``, oldest forgotten first; one response larger than that is not kept at all.
"""

from __future__ import annotations

import hashlib
import json
import time
from collections.abc import Iterable, Iterator
from dataclasses import dataclass
from typing import Any

from memcubes.config import ResponseStoreSettings
from memcubes.ids import storable
from memcubes.store import Connection, Row, Store


@dataclass(frozen=True)
class StoredResponse:
    response: dict[str, Any]  # the Response object as the client got it
    conversation: list[dict[str, Any]]  # Responses input items up to and with the answer, without memories


def key_digest(key: str | None) -> str:
    return hashlib.sha256((key or "").encode()).hexdigest()


class ResponseStore:
    """Stored responses of one store Blocking, like the store."""

    def __init__(self, store: Store, settings: ResponseStoreSettings) -> None:
        self._store = store
        self._settings = settings

    def put(
        self,
        key: str | None,
        response: dict[str, Any],
        conversation: list[dict[str, Any]],
        *,
        space: str | None,
        wait: float = 1.0,
    ) -> bool:
        """Keep ``response`` (by its ``id``) and the conversation that led to it; ``False`` when it
        is too large to keep. Expired rows and what exceeds the caps go in the same transaction.
        Gives up (``StoreUnavailable``) after ``wait`` seconds on a locked store: an answer is
        waiting on this."""
        response_json, conversation_json = _dumps(response), _dumps(conversation)
        size = len(response_json) + len(conversation_json)
        budget = int(self._settings.max_mb * 1024 * 1024)
        if size > budget:
            return False
        digest, now = key_digest(key), time.time()
        with self._store.transaction(wait=wait) as conn:
            conn.execute("DELETE FROM responses WHERE created < ?", (now - self._settings.max_age_hours * 3600,))
            # not INSERT OR REPLACE: the rows it replaces would not fire the totals' trigger
            conn.execute("DELETE FROM responses WHERE key = ? AND id = ?", (digest, str(response["id"])))
            conn.execute(
                "INSERT INTO responses (key, id, space, created, size, response, conversation)"
                " VALUES (?, ?, ?, ?, ?, ?, ?)",
                (digest, str(response["id"]), space, now, size, response_json, conversation_json),
            )
            [count] = conn.execute("SELECT count FROM responses_totals WHERE key = ?", (digest,)).fetchone()
            if count > self._settings.max_per_key:
                conn.execute(
                    "DELETE FROM responses WHERE rowid IN"
                    " (SELECT rowid FROM responses WHERE key = ? ORDER BY created, rowid LIMIT ?)",
                    (digest, count - self._settings.max_per_key),
                )
            _trim(conn, budget)
        return True

    def get(self, key: str | None, response_id: str) -> StoredResponse | None:
        if not storable(response_id):
            return None
        rows = self._store.read(
            "SELECT response, conversation FROM responses WHERE key = ? AND id = ? AND created >= ?",
            (key_digest(key), response_id, time.time() - self._settings.max_age_hours * 3600),
        )
        if not rows:
            return None
        return StoredResponse(json.loads(rows[0]["response"]), json.loads(rows[0]["conversation"]))

    def delete(self, key: str | None, response_id: str) -> bool:
        if not storable(response_id):
            return False
        with self._store.transaction() as conn:
            deleted = conn.execute("DELETE FROM responses WHERE key = ? AND id = ?", (key_digest(key), response_id))
            return deleted.rowcount > 0

    def forget_space(self, space: str, *, containing: Iterable[str] | None = None) -> int:
        """Delete the space's responses: all of them, or those whose text holds one of
        ``containing`` (a purged memory's words, as the journal is swept). Returns how many; the
        caller truncates the WAL afterwards (``secure_delete`` zeroed the freed pages)."""
        words = None if containing is None else [word for word in containing if word.strip()]
        if words == []:
            return 0
        with self._store.transaction() as conn:
            if words is None:
                return conn.execute("DELETE FROM responses WHERE space = ?", (space,)).rowcount
            rows = conn.execute("SELECT rowid, response, conversation FROM responses WHERE space = ?", (space,))
            doomed = [
                row["rowid"] for row in rows.fetchall() if any(word in text for text in _texts(row) for word in words)
            ]
            for rowid in doomed:
                conn.execute("DELETE FROM responses WHERE rowid = ?", (rowid,))
            return len(doomed)


def _dumps(value: Any) -> str:
    return json.dumps(value, ensure_ascii=False, separators=(",", ":"))


def _trim(conn: Connection, budget: int) -> None:
    """Forget the oldest responses until all of them together fit ``budget`` characters."""
    total = int(conn.execute("SELECT coalesce(sum(size), 0) FROM responses_totals").fetchone()[0])
    while total > budget:
        oldest = conn.execute("SELECT rowid, size FROM responses ORDER BY created, rowid LIMIT 64").fetchall()
        for row in oldest:
            conn.execute("DELETE FROM responses WHERE rowid = ?", (row["rowid"],))
            total -= int(row["size"])
            if total <= budget:
                return


def _texts(row: Row) -> Iterator[str]:
    """Every string a stored response holds (its JSON decoded: escapes would hide words)."""

    def strings(value: Any) -> Iterator[str]:
        if isinstance(value, str):
            yield value
        elif isinstance(value, dict):
            for item in value.values():
                yield from strings(item)
        elif isinstance(value, list):
            for item in value:
                yield from strings(item)

    yield from strings(json.loads(row["response"]))
    yield from strings(json.loads(row["conversation"]))
