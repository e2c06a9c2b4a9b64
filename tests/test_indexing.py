"""The index sync, for spaces above ``ann_min_entries`` (0 here: every space): a write is in the
store with its vectors at once, and reaches the ANN index in one write per space after a delay
(the first builds the space's collection from the store); nothing is lost when the index
refuses the write."""

from __future__ import annotations

import asyncio
import contextlib
import sqlite3
from collections.abc import AsyncIterator, Sequence
from pathlib import Path

import pytest

from memcubes.config import MemorySettings
from memcubes.cube import utcnow
from memcubes.embedder import Embedder, Vectors
from memcubes.errors import IndexUnavailable
from memcubes.exchange import Exchange, Turn
from memcubes.memory_os import MemoryOS
from memcubes.vectors import VectorEntry, VectorIndex, build_index

SPACE = "user:oona"
FACTS = ["I keep bees on the roof.", "I play the cello on Sundays.", "I am learning Finnish."]


class Watched(VectorIndex):
    """Chroma, noting the size of every upsert it is sent, and refusing writes while ``down``."""

    def __init__(self, inner: VectorIndex) -> None:
        self._inner = inner
        self.upserts: list[int] = []
        self.down = False

    def _check(self) -> None:
        if self.down:
            raise IndexUnavailable("the index is down for this test")

    async def upsert(self, space: str, entries: Sequence[VectorEntry]) -> None:
        self._check()
        self.upserts.append(len(entries))
        await self._inner.upsert(space, entries)

    async def delete_cubes(self, space: str, cube_ids: Sequence[str]) -> None:
        self._check()
        await self._inner.delete_cubes(space, cube_ids)

    async def drop_space(self, space: str) -> None:
        self._check()
        await self._inner.drop_space(space)

    async def query(self, space: str, vector: Vectors, *, limit: int) -> list[tuple[str, float]]:
        return await self._inner.query(space, vector, limit=limit)

    async def entries(self, space: str, cube_ids: Sequence[str] | None = None) -> list[VectorEntry]:
        return await self._inner.entries(space, cube_ids)

    async def holds(self, space: str) -> bool:
        return await self._inner.holds(space)

    async def count(self, space: str) -> int:
        return await self._inner.count(space)

    def close(self) -> None:
        self._inner.close()


def settings_for(tmp_path: Path) -> MemorySettings:
    """A write delay no test waits out: what is written when is up to the test."""
    index = {"write_delay_ms": 600_000, "write_idle_ms": 600_000, "ann_min_entries": 0}
    return MemorySettings.model_validate({"data_dir": tmp_path / "data", "vector_index": index})


@contextlib.asynccontextmanager
async def opened(embedder: Embedder, tmp_path: Path) -> AsyncIterator[MemoryOS]:
    """A memory layer over a watched Chroma. (Not an async fixture: its loop would not be the test's.)"""
    settings = settings_for(tmp_path)
    index = Watched(build_index(settings.vector_index, settings.data_dir))
    memory = await MemoryOS.open(settings, embedder=embedder, index=index)
    await memory.start()
    try:
        yield memory
    finally:
        await memory.close()


def said(number: int, text: str) -> Exchange:
    turn = Turn(id=f"t{number}", role="user", content=text, created_at=utcnow())
    return Exchange(id=f"x{number}", space=SPACE, turns=[turn], mode="heuristic")


def outbox(memory: MemoryOS) -> int:
    with sqlite3.connect(memory.store.path) as db:
        return int(db.execute("SELECT count(*) FROM outbox").fetchone()[0])


def watched(memory: MemoryOS) -> Watched:
    assert isinstance(memory.index, Watched)
    return memory.index


async def written_back(memory: MemoryOS, *texts: str) -> list[str]:
    for number, text in enumerate(texts):
        assert await memory.record(said(number, text))
    await asyncio.wait_for(memory.writeback.wait_idle(), 60)
    return [cube.id for cube in await asyncio.to_thread(memory.store.live_cubes, SPACE)]


async def test_background_writes_are_gathered_into_one_index_write(embedder: Embedder, tmp_path: Path) -> None:
    async with opened(embedder, tmp_path) as memory:
        await gathered_into_one_write(memory)


async def gathered_into_one_write(memory: MemoryOS) -> None:
    ids = await written_back(memory, *FACTS)
    assert len(ids) == 3
    assert await memory.index.count(SPACE) == 0 and watched(memory).upserts == []
    # The store has them, vectors included, already.
    assert await asyncio.to_thread(memory.vectors.missing, SPACE) == []
    assert set((await asyncio.to_thread(memory.vectors.matrix, SPACE)).cube_ids) == set(ids)
    await memory.index_sync.flush()
    assert watched(memory).upserts == [3] and await memory.index.count(SPACE) == 3 and outbox(memory) == 0
    # The outbox is empty again, so SQLite numbers the next row as it numbered the first: it is
    # written all the same. A caller that waits (a synchronous add) gets it written at once.
    await memory.add(Exchange(space=SPACE, facts=["I was born in Tampere."], mode="heuristic"), sync=True)
    assert await memory.index.count(SPACE) == 4 and outbox(memory) == 0


async def test_a_refused_index_write_is_retried_from_the_outbox(embedder: Embedder, tmp_path: Path) -> None:
    async with opened(embedder, tmp_path) as memory:
        await retried_from_the_outbox(memory)


async def retried_from_the_outbox(memory: MemoryOS) -> None:
    watched(memory).down = True
    ids = await written_back(memory, *FACTS)
    with pytest.raises(IndexUnavailable):
        await memory.index_sync.flush()
    assert outbox(memory) == 3 and await memory.index.count(SPACE) == 0
    watched(memory).down = False
    await memory.index_sync.drain(urgent=True)
    assert await memory.index.count(SPACE) == 3 and outbox(memory) == 0
    hits = await memory.index.query(SPACE, (await memory.embedder.embed(["bees on the roof"]))[0], limit=1)
    assert hits[0][0] in ids


async def test_closing_writes_what_is_staged(embedder: Embedder, tmp_path: Path) -> None:
    settings = settings_for(tmp_path)
    memory = await MemoryOS.open(settings, embedder=embedder)
    await memory.start()
    try:
        await written_back(memory, *FACTS)
        assert await memory.index.count(SPACE) == 0
    finally:
        await memory.close()
    reopened = await MemoryOS.open(settings, embedder=embedder)
    try:
        assert await reopened.index.count(SPACE) == 3 and outbox(reopened) == 0
    finally:
        await reopened.close()


async def test_a_full_staging_area_is_written_in_chunks_without_waiting(embedder: Embedder, tmp_path: Path) -> None:
    """Past 512 staged entries the delay is not waited out; a background write goes in chunks (each
    Chroma call holds the GIL, stalling requests, for as long as it takes)."""
    async with opened(embedder, tmp_path) as memory:
        facts = [f"My locker number {number} is painted blue." for number in range(600)]
        await memory.add(Exchange(space=SPACE, facts=facts, mode="raw"), sync=False)
        for _ in range(600):
            if await memory.index.count(SPACE) == 600:
                break
            await asyncio.sleep(0.1)
        assert await memory.index.count(SPACE) == 600
        assert sum(watched(memory).upserts) == 600 and max(watched(memory).upserts) <= 64
