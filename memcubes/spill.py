"""Where exchanges wait when the journal cannot take them (the store is locked, down or full).

Chat must be answered even then, and what the user said must not be lost: the exchange is kept
in memory and appended to a spill file next to the database (one JSON line each), and moved into
the journal as soon as the store accepts writes again, at the latest at the next start. Journal
inserts are idempotent by exchange id, so replaying a line twice is harmless.
"""

from __future__ import annotations

import json
import logging
import os
import threading
from collections import deque
from collections.abc import Collection
from pathlib import Path
from typing import Any

from memcubes.errors import MemoryOSError
from memcubes.store import Store

log = logging.getLogger(__name__)


class JournalSpill:
    def __init__(self, path: Path, *, limit: int) -> None:
        self._path = path
        self._waiting: deque[dict[str, Any]] = deque(maxlen=limit)
        self._lock = threading.Lock()
        if path.exists():
            for line in path.read_text(encoding="utf-8").splitlines():
                try:
                    self._waiting.append(json.loads(line))
                except ValueError:
                    log.error("skipping an unreadable line in %s", path)

    def __len__(self) -> int:
        return len(self._waiting)

    def add(self, payload: dict[str, Any]) -> None:
        """Keep an exchange (in memory, and on disk if the disk takes it)."""
        with self._lock:
            if len(self._waiting) == self._waiting.maxlen:
                log.error("journal spill full: the oldest waiting exchange is dropped")
            self._waiting.append(payload)
            try:
                with self._path.open("a", encoding="utf-8") as spill:
                    spill.write(json.dumps(payload) + "\n")
                    spill.flush()
                    os.fsync(spill.fileno())
            except OSError as exc:
                log.error("cannot spill exchange %s to %s (kept in memory): %s", payload.get("id"), self._path, exc)

    def flush(self, store: Store) -> list[str]:
        """Move waiting exchanges into the journal; the ids that made it (blocking; call in a thread)."""
        moved: list[str] = []
        with self._lock:
            while self._waiting:
                payload = self._waiting[0]
                try:
                    store.journal_put(payload["id"], payload["space"], payload)
                except MemoryOSError:
                    break
                self._waiting.popleft()
                moved.append(payload["id"])
            if moved:
                self._rewrite()
        return moved

    def forget(self, space: str, *, containing: Collection[str] | None = None) -> None:
        """Drop the waiting exchanges of ``space`` (only those whose JSON holds one of the texts
        in ``containing``, when given): a purge or a forgotten space leaves no copy here either."""
        needles = None if containing is None else [json.dumps(text)[1:-1] for text in containing]
        with self._lock:
            kept = [
                payload
                for payload in self._waiting
                if payload.get("space") != space
                or (needles is not None and not any(needle in json.dumps(payload) for needle in needles))
            ]
            if len(kept) != len(self._waiting):
                self._waiting.clear()
                self._waiting.extend(kept)
                self._rewrite()

    def _rewrite(self) -> None:
        try:
            if not self._waiting:
                self._path.unlink(missing_ok=True)
                return
            partial = self._path.with_suffix(".tmp")
            partial.write_text("".join(json.dumps(p) + "\n" for p in self._waiting), encoding="utf-8")
            partial.replace(self._path)
        except OSError as exc:  # the lines already journalled will be replayed: harmless
            log.warning("cannot rewrite %s: %s", self._path, exc)
