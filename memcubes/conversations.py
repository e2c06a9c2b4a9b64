"""Conversations, and the stable block each one keeps frozen while it lasts.

A provider's prefix cache holds a conversation's prompt up to the first byte that differs from
the previous request. The stable block sits near the start of that prompt, so if it changed in the
middle of a conversation (a memory got hot and was promoted), every token of history after it
would be prefilled again. So each conversation takes a snapshot of the stable members on its first
request and keeps it: promotions and demotions computed meanwhile reach the *next* conversation.
Only a change a person asked for (delete, purge, edit, pin, unpin, forget) that touches a
snapshot, or a member that stopped being true (write-back superseded it), drops it, and the next
request takes a new one: correctness first.

A conversation is the client's ``X-Memory-Session`` when it sends one; otherwise it is recognised
by its opening (the leading system messages and the first user message, which a chat app resends
unchanged every turn), so clients without the header get the same stability. Two conversations
that open with the same words share a snapshot, which only means both see the same block.
A snapshot unused for ``idle_seconds`` is taken afresh (the provider's cache has expired by then).
"""

from __future__ import annotations

import hashlib
import json
import time
from collections import OrderedDict
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

from memcubes.cube import MemCube
from memcubes.layout import message_text

ConversationKey = tuple[tuple[str, ...], str]
"""The spaces a conversation reads, and its id."""


def conversation_id(messages: Sequence[dict[str, Any]], *, session: str | None = None) -> str:
    """``session`` when given, else a digest of the conversation's opening: its leading system
    (or developer) messages and its first user message, read without injected memory blocks."""
    if session:
        return f"session:{session}"
    opening: list[tuple[str, str]] = []
    for message in messages:
        role = str(message.get("role"))
        opening.append((role, message_text(message)))
        if role == "user":
            break
    digest = hashlib.sha256(json.dumps(opening, ensure_ascii=False).encode()).hexdigest()[:32]
    return f"opening:{digest}"


@dataclass
class _Snapshot:
    cubes: list[MemCube]
    used_at: float


class FrozenStableBlocks:
    """Per conversation, the stable members it was first shown (LRU, at most ``limit``)."""

    def __init__(self, *, idle_seconds: float, limit: int) -> None:
        self._idle = idle_seconds
        self._limit = limit
        self._snapshots: OrderedDict[ConversationKey, _Snapshot] = OrderedDict()
        self._epochs: dict[str, int] = {}

    @property
    def enabled(self) -> bool:
        """``idle_seconds == 0`` turns the freeze off: every request sees the current block."""
        return self._idle > 0

    def epoch(self, spaces: Sequence[str]) -> tuple[int, ...]:
        """Taken before reading members; ``keep`` refuses a snapshot read across a person's change."""
        return tuple(self._epochs.get(space, 0) for space in spaces)

    def get(self, key: ConversationKey) -> list[MemCube] | None:
        snapshot = self._snapshots.get(key)
        now = time.monotonic()
        if snapshot is None or now - snapshot.used_at > self._idle:
            return None
        snapshot.used_at = now
        self._snapshots.move_to_end(key)
        return snapshot.cubes

    def keep(self, key: ConversationKey, cubes: list[MemCube], *, epoch: tuple[int, ...]) -> None:
        if not self.enabled or epoch != self.epoch(key[0]):
            return
        self._snapshots[key] = _Snapshot(cubes, time.monotonic())
        self._snapshots.move_to_end(key)
        while len(self._snapshots) > self._limit:
            self._snapshots.popitem(last=False)

    def changed(self, space: str, cubes: Sequence[MemCube] | None, *, by_person: bool) -> None:
        """Cubes of ``space`` changed (``None``: unknown which). A person's change drops the
        snapshots it can touch (they hold a changed cube, or a changed cube is pinned now), so
        their next request shows it; other conversations keep theirs (deleting a memory that is
        not in their block must not cost them their cache). Write-back's changes reach snapshots
        only when a member stopped being true (superseded by what the user just said, or
        expired); a member reworded or merged stays as shown until the conversation ends."""
        touched: set[str] | None = None  # None: every snapshot of the space
        if not by_person or (cubes is not None and not any(cube.pinned for cube in cubes)):
            touched = {cube.id for cube in cubes or () if by_person or not cube.is_live()}
            if not touched:
                return
        self._epochs[space] = self._epochs.get(space, 0) + 1
        for key in [key for key in self._snapshots if space in key[0]]:
            if touched is None or any(cube.id in touched for cube in self._snapshots[key].cubes):
                del self._snapshots[key]
