"""Sortable identifiers (ULID): time-ordered, so ids double as a stable paging cursor."""

from __future__ import annotations

import os
import threading
import time

_ALPHABET = "0123456789ABCDEFGHJKMNPQRSTVWXYZ"


def storable(value: str) -> bool:
    """False for an id no stored row can have: one holding a NUL (PostgreSQL's text cannot hold
    it, and memory drops it from what it keeps). Looked up as given, PostgreSQL would fail the
    statement and the lookup read as the store being down; such an id is simply not found."""
    return "\x00" not in value


class _UlidClock:
    """Keeps ids monotonic inside one millisecond (random part incremented), as the ULID spec says."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._last_ms = 0
        self._last_rand = 0

    def next(self) -> int:
        with self._lock:
            now = int(time.time() * 1000)
            if now <= self._last_ms:
                self._last_rand += 1
            else:
                self._last_ms = now
                self._last_rand = int.from_bytes(os.urandom(10), "big")
            return (self._last_ms << 80) | (self._last_rand & ((1 << 80) - 1))


_clock = _UlidClock()


def new_id() -> str:
    """A 26-character ULID."""
    value = _clock.next()
    return "".join(_ALPHABET[(value >> shift) & 31] for shift in range(125, -1, -5))
