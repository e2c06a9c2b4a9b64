"""API keys and the audit trail, in the store's SQLite file (the store owns the connection and
the transactions; this module owns these two tables and their queries).

Keys are kept as a SHA-256 digest of their secret, never the secret: the secret is 32 random
bytes, so a slow password hash would buy nothing and cost every request. Audit rows say who
(key id), when and what (ids and counts), never memory text.

Other processes (a second worker, the CLI) change keys too; ``changed()`` tells a cache cheaply
whether anything was committed since it last looked (SQLite's ``PRAGMA data_version`` on a
connection of its own; on PostgreSQL the server's current snapshot), so a revoked key is refused
by every process on its very next request.
"""

from __future__ import annotations

import asyncio
import json
from dataclasses import asdict, dataclass, field
from datetime import datetime
from typing import Any, Literal

from memcubes.cube import utcnow
from memcubes.ids import new_id, storable
from memcubes.store import Row, Store

MemoryAPI = Literal["none", "read", "write"]


@dataclass(frozen=True)
class KeySettings:
    """What a key may do (see README, "Security model"); stored as one JSON document."""

    user: str | None = None
    user_prefix: str | None = None
    read_spaces: tuple[str, ...] = ()
    write_spaces: tuple[str, ...] = ()
    memory_api: MemoryAPI = "write"
    models: tuple[str, ...] | None = None
    expires_at: datetime | None = None
    rpm: int | None = None
    alias: str | None = None
    metadata: dict[str, Any] = field(default_factory=dict)

    def to_json(self) -> dict[str, Any]:
        data = asdict(self)
        data["expires_at"] = self.expires_at.isoformat() if self.expires_at else None
        return data

    @classmethod
    def from_json(cls, data: dict[str, Any]) -> KeySettings:
        expires = data.get("expires_at")
        models = data.get("models")
        return cls(
            user=data.get("user"),
            user_prefix=data.get("user_prefix"),
            read_spaces=tuple(data.get("read_spaces") or ()),
            write_spaces=tuple(data.get("write_spaces") or ()),
            memory_api=data.get("memory_api", "write"),
            models=None if models is None else tuple(models),
            expires_at=datetime.fromisoformat(expires) if expires else None,
            rpm=data.get("rpm"),
            alias=data.get("alias"),
            metadata=dict(data.get("metadata") or {}),
        )


@dataclass(frozen=True)
class StoredKey:
    id: str
    settings: KeySettings
    created_at: datetime
    revoked_at: datetime | None = None

    def usable(self, now: datetime | None = None) -> bool:
        """Not revoked and not expired."""
        if self.revoked_at is not None:
            return False
        expires = self.settings.expires_at
        return expires is None or expires > (now or utcnow())

    def to_json(self) -> dict[str, Any]:
        return {
            "id": self.id,
            "created_at": self.created_at.isoformat(),
            "revoked_at": self.revoked_at.isoformat() if self.revoked_at else None,
            **self.settings.to_json(),
        }


@dataclass(frozen=True)
class AuditEntry:
    seq: int
    at: str
    key_id: str | None
    action: str
    target: str | None
    detail: dict[str, Any]


class KeyStore:
    """Keys and audit rows of one store. Blocking, like the store."""

    def __init__(self, store: Store) -> None:
        self._store = store

    def changed(self) -> int | str:
        """A value that differs whenever anything (another process included) committed to the
        store since the previous call (``Store.data_version``: cheap enough for every request)."""
        return self._store.data_version()

    async def changed_now(self) -> int | str:
        """``changed()`` from the event loop: inline where it needs no I/O (SQLite's shared
        memory), in a worker thread where it asks a server (PostgreSQL)."""
        if self._store.version_is_local:
            return self.changed()
        return await asyncio.to_thread(self.changed)

    # -- keys ---------------------------------------------------------------------------------

    def create(self, digest: str, settings: KeySettings) -> StoredKey:
        key = StoredKey(id=f"key_{new_id()}", settings=settings, created_at=utcnow())
        with self._store.transaction() as conn:
            conn.execute(
                "INSERT INTO api_keys (id, digest, created_at, doc) VALUES (?, ?, ?, ?)",
                (key.id, digest, key.created_at.isoformat(), json.dumps(settings.to_json())),
            )
        return key

    def find(self, digest: str) -> StoredKey | None:
        rows = self._store.read("SELECT * FROM api_keys WHERE digest = ?", (digest,))
        return _key(rows[0]) if rows else None

    def all(self) -> list[StoredKey]:
        return [_key(row) for row in self._store.read("SELECT * FROM api_keys ORDER BY created_at, id")]

    def revoke(self, key_id: str) -> StoredKey | None:
        """Revoke a key (kept, marked, for the audit trail); ``None`` when there is no such key."""
        if not storable(key_id):
            return None
        with self._store.transaction() as conn:
            conn.execute(
                "UPDATE api_keys SET revoked_at = ? WHERE id = ? AND revoked_at IS NULL", (utcnow().isoformat(), key_id)
            )
            row = conn.execute("SELECT * FROM api_keys WHERE id = ?", (key_id,)).fetchone()
        return _key(row) if row is not None else None

    # -- audit --------------------------------------------------------------------------------

    def record(self, action: str, *, key_id: str | None, target: str | None, detail: dict[str, Any]) -> None:
        with self._store.transaction() as conn:
            conn.execute(
                "INSERT INTO audit (at, key_id, action, target, detail) VALUES (?, ?, ?, ?, ?)",
                (utcnow().isoformat(), key_id, action, target, json.dumps(detail)),
            )

    def audit(self, *, limit: int, before: int | None = None) -> list[AuditEntry]:
        """Newest first; ``before`` is the ``seq`` of the last row of the previous page."""
        rows = self._store.read("SELECT * FROM audit WHERE seq < ? ORDER BY seq DESC LIMIT ?", (before or 2**62, limit))
        return [
            AuditEntry(row["seq"], row["at"], row["key_id"], row["action"], row["target"], json.loads(row["detail"]))
            for row in rows
        ]


def _key(row: Row) -> StoredKey:
    return StoredKey(
        id=row["id"],
        settings=KeySettings.from_json(json.loads(row["doc"])),
        created_at=datetime.fromisoformat(row["created_at"]),
        revoked_at=datetime.fromisoformat(row["revoked_at"]) if row["revoked_at"] else None,
    )
