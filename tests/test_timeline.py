"""The retrieval path's timeline: what it holds of a space always equals a fresh read of it."""

from __future__ import annotations

from collections.abc import Iterator
from datetime import UTC, datetime
from pathlib import Path

import pytest

from memcubes.cube import CubeState, MemCube
from memcubes.store import ChangeSet, HistoryEvent, Store
from memcubes.timeline import Spans, Timeline, overlapping, spans_of
from memcubes.timewords import Window

SPACE = "user:lea"


@pytest.fixture
def store(tmp_path: Path) -> Iterator[Store]:
    opened = Store.open(tmp_path / "memproxy.db")
    yield opened
    opened.close()


def put(store: Store, *cubes: MemCube) -> None:
    store.apply(ChangeSet(cubes=list(cubes), events=[HistoryEvent(cube, "ADD") for cube in cubes]))


def change(store: Store, cube: MemCube, **update: object) -> MemCube:
    changed = cube.model_copy(update={**update, "version": cube.version + 1})
    store.apply(ChangeSet(cubes=[changed], events=[HistoryEvent(changed, "UPDATE")]))
    return changed


WINDOWS = [
    Window(datetime(2024, 5, 1, tzinfo=UTC), datetime(2024, 6, 1, tzinfo=UTC)),  # when they were said
    Window(datetime(2024, 5, 3, tzinfo=UTC), datetime(2024, 5, 4, tzinfo=UTC)),
    Window(datetime(2023, 1, 10, tzinfo=UTC), datetime(2023, 1, 11, tzinfo=UTC)),  # a time one tells of
    Window(datetime(2000, 3, 10, tzinfo=UTC), datetime(2000, 3, 11, tzinfo=UTC), yearly=True),
]


async def agrees(timeline: Timeline, store: Store) -> set[str]:
    """What the timeline finds in each window is what a fresh read of the store says; the live ids."""
    fresh = {cube_id: spans_of(created, when) for cube_id, created, when in store.times(SPACE)}
    for window in WINDOWS:
        expected = [cube_id for cube_id, spans in fresh.items() if overlapping(window, spans)]
        assert sorted(await timeline.inside(SPACE, window)) == sorted(expected)
    assert sorted(await timeline.inside(SPACE, WINDOWS[0])) == sorted(fresh)  # everyone said something in May
    return set(fresh)


def cube(text: str, *, day: int, when: list[list[str]] | None = None) -> MemCube:
    meta = {"when": when} if when else {}
    return MemCube(space=SPACE, content=text, created_at=datetime(2024, 5, day, tzinfo=UTC), meta=meta)


async def test_held_spans_follow_adds_edits_and_deletes(store: Store) -> None:
    a = cube("Lea rowed", day=2, when=[["2024-03-01T00:00:00+00:00", "2024-04-01T00:00:00+00:00"]])
    b = cube("Lea painted", day=3)
    put(store, a, b)
    timeline = Timeline(store)
    await agrees(timeline, store)

    c = cube("Lea sang", day=4, when=[["2023-01-01T00:00:00+00:00", "2023-02-01T00:00:00+00:00"]])
    put(store, c)
    a = change(store, a, meta={})  # the window it told of is gone
    b = change(store, b, state=CubeState.DELETED)
    other = MemCube(space="user:tom", content="Tom swam")
    put(store, other)
    timeline.invalidate(SPACE, [c.id, a.id, b.id, other.id])
    assert await agrees(timeline, store) == {a.id, c.id}
    assert await timeline.inside(SPACE, WINDOWS[2]) == [c.id]

    timeline.invalidate(SPACE)  # unknown which: the space is read again whole
    assert await agrees(timeline, store) == {a.id, c.id}


async def test_spaces_beyond_the_budget_are_dropped_least_recent_first(store: Store) -> None:
    put(store, cube("Lea rowed", day=2), MemCube(space="user:tom", content="Tom swam"))
    timeline = Timeline(store, max_cubes=1)
    await timeline.inside(SPACE, WINDOWS[0])
    await timeline.inside("user:tom", WINDOWS[0])
    put(store, cube("Lea sang", day=4))
    assert len(await timeline.inside(SPACE, WINDOWS[0])) == 2  # dropped for Tom's space, read again


def test_windows_match_spans_as_datetimes_would() -> None:
    spans = spans_of("2024-05-02T10:00:00+00:00", [["2021-03-01T00:00:00+00:00", "2021-04-01T00:00:00+00:00"]])
    may = Window(datetime(2024, 5, 1, tzinfo=UTC), datetime(2024, 6, 1, tzinfo=UTC))
    june = Window(datetime(2024, 6, 1, tzinfo=UTC), datetime(2024, 7, 1, tzinfo=UTC))
    march_any_year = Window(datetime(2000, 3, 10, tzinfo=UTC), datetime(2000, 3, 11, tzinfo=UTC), yearly=True)
    assert overlapping(may, spans) and not overlapping(june, spans) and overlapping(march_any_year, spans)
    first = spans_of("0001-01-01T00:00:00+00:00", None)
    assert overlapping(Window(datetime(1, 1, 1, tzinfo=UTC), datetime(1, 1, 2, tzinfo=UTC)), first)


async def test_committed_cubes_are_taken_as_they_are(store: Store) -> None:
    a, b = cube("Lea rowed", day=2), cube("Lea painted", day=3)
    put(store, a, b)
    timeline = Timeline(store)
    await timeline.inside(SPACE, WINDOWS[0])
    c = cube("Lea sang", day=4, when=[["2023-01-01T00:00:00+00:00", "2023-02-01T00:00:00+00:00"]])
    put(store, c)
    b = change(store, b, state=CubeState.SUPERSEDED)
    timeline.written(SPACE, [c, b])
    assert await agrees(timeline, store) == {a.id, c.id}


async def test_a_whole_read_that_raced_a_write_to_its_space_is_not_kept(store: Store) -> None:
    a = cube("Lea rowed", day=2)
    put(store, a)
    reads: list[str] = []

    class Racing(Timeline):
        def _read(self, space: str) -> dict[str, Spans]:
            reads.append(space)
            found = super()._read(space)
            if len(reads) == 1:  # committed while the first read was under way (its answer is older)
                put(store, b)
                timeline.invalidate(SPACE, [b.id])
            timeline.invalidate("user:tom", None)  # another space's writes do not matter
            return found

    b = cube("Lea sang", day=4)
    timeline = Racing(store)
    assert await timeline.inside(SPACE, WINDOWS[0]) == [a.id]  # answered, not kept
    assert sorted(await timeline.inside(SPACE, WINDOWS[0])) == sorted([a.id, b.id])
    assert sorted(await timeline.inside(SPACE, WINDOWS[0])) == sorted([a.id, b.id]) and len(reads) == 2
