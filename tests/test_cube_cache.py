"""The retrieval path's cube cache: reads each cube once, never serves what changed since."""

from __future__ import annotations

import asyncio
import threading
from collections.abc import Iterator, Sequence
from pathlib import Path

import pytest

from memcubes.cube import MemCube
from memcubes.cube_cache import CubeCache
from memcubes.store import ChangeSet, Engine, HistoryEvent, Store


class CountingStore(Store):
    def __init__(self, engine: Engine) -> None:
        super().__init__(engine)
        self.reads: list[list[str]] = []
        self.gate: threading.Event | None = None

    def get_many(self, cube_ids: Sequence[str]) -> dict[str, MemCube]:
        self.reads.append(list(cube_ids))
        found = super().get_many(cube_ids)
        if self.gate is not None:
            self.gate.wait(10)
        return found


@pytest.fixture
def store(tmp_path: Path, database_url: str) -> Iterator[CountingStore]:
    path = tmp_path / "memproxy.db"
    counting = CountingStore.open(path, database_url=database_url)
    yield counting
    counting.close()


def put(store: Store, *texts: str) -> list[MemCube]:
    cubes = [MemCube(space="user:lea", content=text) for text in texts]
    store.apply(ChangeSet(cubes=cubes, events=[HistoryEvent(cube, "ADD") for cube in cubes]))
    return cubes


def edit(store: Store, cube: MemCube, content: str) -> None:
    changed = cube.model_copy(update={"content": content, "version": cube.version + 1})
    store.apply(ChangeSet(cubes=[changed], events=[HistoryEvent(changed, "UPDATE")]))


async def test_each_cube_is_read_once_and_answers_keep_the_order_asked(store: CountingStore) -> None:
    a, b, c = put(store, "Lea rows", "Lea paints", "Lea sings")
    cache = CubeCache(store)
    first = await cache.get_many([c.id, a.id, "missing"])
    assert list(first) == [c.id, a.id]
    second = await cache.get_many([b.id, a.id, c.id])
    assert list(second) == [b.id, a.id, c.id]
    assert store.reads == [[c.id, a.id, "missing"], [b.id]]
    assert second[a.id] is first[a.id]


async def test_a_forgotten_cube_is_read_again(store: CountingStore) -> None:
    a, b = put(store, "Lea rows", "Lea paints")
    cache = CubeCache(store)
    await cache.get_many([a.id, b.id])
    edit(store, a, "Lea rows on Sundays")
    cache.forget([a.id])
    found = await cache.get_many([a.id, b.id])
    assert found[a.id].content == "Lea rows on Sundays" and store.reads[-1] == [a.id]
    cache.forget()  # unknown which changed: everything goes
    await cache.get_many([a.id, b.id])
    assert store.reads[-1] == [a.id, b.id]


async def test_a_load_that_raced_with_a_change_is_not_kept(store: CountingStore) -> None:
    (a,) = put(store, "Lea rows")
    cache = CubeCache(store)
    store.gate = threading.Event()
    loading = asyncio.ensure_future(cache.get_many([a.id]))
    while not store.reads:  # the read has happened; its answer is not back yet
        await asyncio.sleep(0.001)
    edit(store, a, "Lea rows on Sundays")
    cache.forget([a.id])
    store.gate.set()
    assert (await loading)[a.id].content == "Lea rows"  # what this caller read...
    assert (await cache.get_many([a.id]))[a.id].content == "Lea rows on Sundays"  # ...was not kept


async def test_entries_expire_for_writers_in_other_processes(store: CountingStore) -> None:
    (a,) = put(store, "Lea rows")
    cache = CubeCache(store, ttl=0.0)
    await cache.get_many([a.id])
    await cache.get_many([a.id])
    assert len(store.reads) == 2


async def test_size_is_bounded_least_recently_used_first(store: CountingStore) -> None:
    a, b, c = put(store, "Lea rows", "Lea paints", "Lea sings")
    cache = CubeCache(store, size=2)
    await cache.get_many([a.id, b.id])
    await cache.get_many([a.id])  # a is now the most recently used
    await cache.get_many([c.id])  # b goes
    store.reads.clear()
    await cache.get_many([a.id, b.id, c.id])
    assert store.reads == [[b.id]]
