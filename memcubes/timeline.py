"""When each live memory of a space happened and which times it tells of, held per space for the
time ranking of retrieval (``Retriever._in_window``).

A query naming a window ("this May", "last week") is matched against every live memory's time and
the windows its text mentions. Reading those from SQLite for each such query (one JSON row built
from every cube of the space) and parsing their ISO times was 12% of a memory-on request's CPU
with 1,000 memories (``python -m bench overhead``, py-spy). Held here instead, as seconds since
the epoch, and kept current by the writes the retriever hears of (this process's commits and, via
``memcubes.peers``, other processes'): only the cubes written since are read again. A write whose
cubes are unknown drops the space, read whole on its next use, as is a space held for
``reload_seconds`` (a write no one announced, e.g. by a tool on the database, is seen that late at
worst; retrieval drops memories no longer live anyway). At most ``max_cubes`` are held, the least
recently used spaces dropped first.
"""

from __future__ import annotations

import asyncio
import time
from collections import OrderedDict
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta

import numpy as np
import numpy.typing as npt

from memcubes import deadline
from memcubes.cube import CubeState, MemCube
from memcubes.store import Store
from memcubes.timewords import Window

_EPOCH = datetime(1970, 1, 1, tzinfo=UTC)
_INSTANT = 1.0  # seconds: a memory's own time, as a span
_CHECK_EVERY = 4096  # memories dated between deadline checks

Spans = tuple[tuple[float, float], ...]


def _seconds(moment: str) -> float:
    parsed = datetime.fromisoformat(moment)
    return (parsed if parsed.tzinfo else parsed.replace(tzinfo=UTC)).timestamp()


def spans_of(created: str, mentions: Iterable[Iterable[str]] | None) -> Spans:
    """A memory's own time (an instant) and the windows its text mentions, in epoch seconds."""
    moment = _seconds(created)
    mentioned = tuple((_seconds(start), _seconds(end)) for start, end in mentions or ())
    return ((moment, moment + _INSTANT), *mentioned)


def _moment(seconds: float) -> datetime:
    return _EPOCH + timedelta(seconds=seconds)


def overlapping(window: Window, spans: Spans) -> bool:
    if not window.yearly:  # the common case, without building datetimes
        start, end = window.start.timestamp(), window.end.timestamp()
        return any(s < end and e > start for s, e in spans)
    return any(window.overlaps(_moment(s), _moment(e)) for s, e in spans)


@dataclass
class _Space:
    spans: dict[str, Spans]
    loaded_at: float
    changed: set[str] = field(default_factory=set)  # cubes written since: read again before use
    lock: asyncio.Lock = field(default_factory=asyncio.Lock)
    _flat: tuple[list[str], npt.NDArray[np.float64], npt.NDArray[np.int64]] | None = None

    def take(self, cube_id: str, spans: Spans | None) -> None:
        """The cube's spans now (``None``: it is not a live memory of the space any more)."""
        if spans is None:
            self.spans.pop(cube_id, None)
        else:
            self.spans[cube_id] = spans
        self._flat = None

    def within(self, window: Window) -> list[str]:
        """The cubes with a span in ``window``, in the order they came. Every span in one array,
        compared in numpy: a loop over a thousand cubes per query took ~0.6 ms, this ~0.2 with
        the rebuild after a write."""
        if window.yearly:  # rare ("on 3 March"): the same days of every year, a loop
            found = []
            for position, (cube_id, spans) in enumerate(list(self.spans.items())):
                if position % _CHECK_EVERY == 0:  # a large space: this loop holds the event loop
                    deadline.check("dating memories")
                if overlapping(window, spans):
                    found.append(cube_id)
            return found
        if self._flat is None:
            cubes, every = list(self.spans), list(self.spans.values())
            counts = np.fromiter((len(s) for s in every), dtype=np.int64, count=len(every))
            bounds = np.fromiter((x for s in every for pair in s for x in pair), dtype=np.float64)
            self._flat = cubes, bounds.reshape(-1, 2), np.repeat(np.arange(len(cubes)), counts)
        ids, bounds, owner = self._flat
        hit = (bounds[:, 0] < window.end.timestamp()) & (bounds[:, 1] > window.start.timestamp())
        return [ids[i] for i in np.unique(owner[hit])]


class Timeline:
    def __init__(self, store: Store, *, max_cubes: int = 200_000, reload_seconds: float = 60.0) -> None:
        self._store = store
        self._max_cubes = max_cubes
        self._reload_seconds = reload_seconds
        self._spaces: OrderedDict[str, _Space] = OrderedDict()
        self._held = 0  # cubes, over all spaces
        self._writes: dict[str, int] = {}  # per space: a whole read that raced a write to it is not kept

    def invalidate(self, space: str, cube_ids: Iterable[str] | None = None) -> None:
        """A write to ``space`` committed (of ``cube_ids``, when known)."""
        self._writes[space] = self._writes.get(space, 0) + 1
        held = self._spaces.get(space)
        if held is None:
            return
        if cube_ids is None:
            self._drop(space)
        else:
            held.changed.update(cube_ids)

    def written(self, space: str, cubes: Sequence[MemCube]) -> None:
        """These cubes were committed as they are here (write-back's commits): taken as they are,
        without reading them again, unless a reading of the space's writes is under way (it may
        have read an older version: they are read again after it)."""
        if not cubes:
            return
        self._writes[space] = self._writes.get(space, 0) + 1
        held = self._spaces.get(space)
        if held is None:
            return
        if held.lock.locked():
            held.changed.update(cube.id for cube in cubes)
            return
        before = len(held.spans)
        for cube in cubes:
            held.changed.discard(cube.id)
            self._take(space, held, cube.id, cube)
        self._held += len(held.spans) - before
        self._evict()

    async def inside(self, space: str, window: Window) -> list[str]:
        """The live cubes of the space dated in ``window`` or telling of a time in it."""
        held = self._spaces.get(space)
        if held is None or time.monotonic() - held.loaded_at >= self._reload_seconds:
            writes, loaded_at = self._writes.get(space, 0), time.monotonic()
            read = _Space(await asyncio.to_thread(self._read, space), loaded_at)
            if writes == self._writes.get(space, 0):
                self._drop(space)
                self._spaces[space] = read
                self._held += len(read.spans)
                self._evict()
            deadline.check("dating memories")  # a large space's first read takes a while
            return read.within(window)
        self._spaces.move_to_end(space)
        if held.changed:
            async with held.lock:  # concurrent requests wait for one reading of the same writes
                if held.changed:
                    await self._catch_up(space, held)
        return held.within(window)

    def _read(self, space: str) -> dict[str, Spans]:
        return {cube_id: spans_of(created, mentions) for cube_id, created, mentions in self._store.times(space)}

    async def _catch_up(self, space: str, held: _Space) -> None:
        # Taken before reading: a write committed during the read is named again and read next time.
        ids, held.changed = held.changed, set()
        try:
            cubes = await asyncio.to_thread(self._store.get_many, sorted(ids))
        except BaseException:
            held.changed |= ids
            raise
        before = len(held.spans)
        for cube_id in ids:
            self._take(space, held, cube_id, cubes.get(cube_id))
        if self._spaces.get(space) is held:  # not dropped meanwhile
            self._held += len(held.spans) - before
            self._evict()

    @staticmethod
    def _take(space: str, held: _Space, cube_id: str, cube: MemCube | None) -> None:
        live = cube is not None and cube.state is CubeState.ACTIVE and cube.space == space
        held.take(cube_id, spans_of(cube.created_at.isoformat(), cube.meta.get("when")) if live and cube else None)

    def _drop(self, space: str) -> None:
        dropped = self._spaces.pop(space, None)
        if dropped is not None:
            self._held -= len(dropped.spans)

    def _evict(self) -> None:
        while self._held > self._max_cubes and len(self._spaces) > 1:
            self._drop(next(iter(self._spaces)))
