"""Vectors in the system of record: written with their cubes, searched exactly per space without
any ANN index, compact encodings, and the migration of a data dir of the previous layout."""

from __future__ import annotations

import asyncio
import logging
import sqlite3
import tarfile
from collections.abc import Sequence
from pathlib import Path

import numpy as np
import pytest

from memcubes.config import MemorySettings
from memcubes.embedder import Embedder, Vectors
from memcubes.errors import IndexUnavailable
from memcubes.exchange import Exchange
from memcubes.memory_os import MemoryOS
from memcubes.vector_store import WHOLE, VectorEntry, decode, encode
from memcubes.vectors import VectorIndex

FIXTURE = Path(__file__).parent / "fixtures" / "previous-layout" / "data-dir.tar.gz"


class Absent(VectorIndex):
    """An ANN index that is never there: small spaces must not need one."""

    def _fail(self) -> None:
        raise IndexUnavailable("no ANN index in this test")

    async def upsert(self, space: str, entries: Sequence[VectorEntry]) -> None:
        self._fail()

    async def delete_cubes(self, space: str, cube_ids: Sequence[str]) -> None:
        self._fail()

    async def drop_space(self, space: str) -> None:
        self._fail()

    async def query(self, space: str, vector: Vectors, *, limit: int) -> list[tuple[str, float]]:
        self._fail()
        return []

    async def entries(self, space: str) -> list[VectorEntry]:
        self._fail()
        return []

    async def holds(self, space: str) -> bool:
        self._fail()
        return False

    async def count(self, space: str) -> int:
        self._fail()
        return 0


def test_encodings_keep_the_direction() -> None:
    rng = np.random.default_rng(7)
    vectors = rng.standard_normal((20, 384)).astype(np.float32)
    vectors /= np.linalg.norm(vectors, axis=1, keepdims=True)
    for precision, size, cosine in (("int8", 388, 0.999), ("float16", 768, 0.9999), ("float32", 1536, 0.99999)):
        blobs = [encode(vector, precision) for vector in vectors]
        assert {len(blob) for blob in blobs} == {size}
        back = decode(blobs, 384)
        assert np.min(np.sum(back * vectors, axis=1)) >= cosine - 1e-6, precision
    mixed = decode([encode(vectors[0], "int8"), encode(vectors[1], "float32"), encode(vectors[2], "float16")], 384)
    assert np.allclose(mixed[1], vectors[1]) and np.allclose(mixed, vectors[:3], atol=0.01)
    with pytest.raises(ValueError, match="dimensions"):
        decode([b"\0" * 100], 384)


async def test_vectors_are_committed_with_their_cubes_and_searched_without_an_ann_index(
    embedder: Embedder, tmp_path: Path
) -> None:
    memory = await MemoryOS.open(MemorySettings(data_dir=tmp_path / "data"), embedder=embedder, index=Absent())
    space = "user:wren"
    facts = ["Wren keeps bees on the roof.", "Wren sails a boat called Petrel. She races it in Ghent every June."]
    try:
        added = await memory.add(Exchange(space=space, facts=facts, mode="raw"), sync=True)
        assert added is not None and len(added) == 2
        with sqlite3.connect(memory.store.path) as db:
            rows = db.execute("SELECT cube_id, sentence, length(vec) FROM vectors ORDER BY cube_id, sentence")
            # The boat's two sentences each have an entry besides its whole text; float16: 768 bytes.
            assert sorted((cube_id, sentence) for cube_id, sentence, _ in rows) == sorted(
                [(added[0].id, WHOLE), (added[1].id, WHOLE), (added[1].id, 0), (added[1].id, 1)]
            )
        memory.hot.drop(space)
        plan = await memory.search([space], "Where does Wren go racing?")
        found = [item for item in plan.items if "Ghent" in item.text]
        assert found and found[0].similarity is not None  # by vector, from SQLite
        assert found[0].text.endswith("She races it in Ghent every June.")  # its best sentence
        # The near-duplicate check of write-back reads the same vectors.
        same = Exchange(space=space, facts=["Wren keeps bees on the roof!"], mode="heuristic")
        again = await memory.add(same, sync=True)
        assert again is not None and [change.event for change in again] == ["NOOP"]
        await memory.purge(added[0].id)
        assert memory.vectors.count(space) == 3 and memory.vectors.whole(space, [added[0].id]) == {}
        await memory.delete(added[1].id)  # a soft delete takes its vectors out of search too
        assert memory.vectors.count(space) == 0
    finally:
        await memory.close()


async def test_a_data_dir_of_the_previous_layout_is_migrated_on_start(
    embedder: Embedder, tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    data_dir = tmp_path / "data"
    with tarfile.open(FIXTURE) as archive:
        archive.extractall(data_dir, filter="data")
    settings = MemorySettings(data_dir=data_dir)
    with caplog.at_level(logging.INFO, logger="memcubes.vector_migration"):
        memory = await MemoryOS.open(settings, embedder=embedder)
    progress = [record.getMessage() for record in caplog.records if record.name == "memcubes.vector_migration"]
    assert progress[0].startswith("moving the vectors of 5 memories in 2 spaces")
    assert "2/2 spaces, 5/5 memories (1 embedded again)" in progress[-1]
    try:
        await memory.start()
        olga = await asyncio.to_thread(memory.store.live_cubes, "user:olga")
        piet = await asyncio.to_thread(memory.store.live_cubes, "user:piet")
        assert memory.vectors.count("user:olga") == 3 + 2 and memory.vectors.count("user:piet") == 2
        # Read back from Chroma (or embedded again): each is its text's vector.
        for space, cubes in (("user:olga", olga), ("user:piet", piet)):
            stored = memory.vectors.whole(space, [cube.id for cube in cubes])
            fresh = await embedder.embed([cube.content for cube in cubes])
            assert all(float(stored[cube.id] @ fresh[i]) > 0.99 for i, cube in enumerate(cubes))
        # Small spaces are searched exactly: their Chroma collections are gone.
        assert not await memory.index.holds("user:olga") and not await memory.index.holds("user:piet")
        plan = await memory.search(["user:piet"], "What is the name of Piet's cat?")
        assert "Miso" in plan.items[0].text
        plan = await memory.search(["user:olga"], "Where does Olga go racing?")
        assert "Ghent" in plan.items[0].text
    finally:
        await memory.close()
    caplog.clear()
    with caplog.at_level(logging.INFO, logger="memcubes.vector_migration"):
        reopened = await MemoryOS.open(settings, embedder=embedder)
    await reopened.close()
    assert not [record for record in caplog.records if record.name == "memcubes.vector_migration"]


async def test_a_space_above_the_threshold_is_searched_through_its_ann_index(
    embedder: Embedder, tmp_path: Path
) -> None:
    settings = MemorySettings.model_validate({"data_dir": tmp_path / "data", "vector_index": {"ann_min_entries": 2}})
    memory = await MemoryOS.open(settings, embedder=embedder)
    space = "user:yves"
    try:
        await memory.add(Exchange(space=space, facts=["Yves grows tomatoes."], mode="raw"), sync=True)
        assert not await memory.index.holds(space)  # small: exact search only
        facts = ["Yves collects stamps.", "Yves cycles to work."]
        await memory.add(Exchange(space=space, facts=facts, mode="raw"), sync=True)
        assert await memory.index.count(space) == 3  # crossed: the whole space, built from the store
        memory.hot.drop(space)
        hits = await memory.hot.nearest(space, (await embedder.embed(["stamp collection"]))[0], limit=1)
        assert memory.hot.get(space) is None and "stamps" in (await memory.get(hits[0][0])).content
        for cube in await asyncio.to_thread(memory.store.live_cubes, space):
            if "stamps" in cube.content or "cycles" in cube.content:
                await memory.delete(cube.id)
        assert not await memory.index.holds(space)  # back below: its collection is dropped
    finally:
        await memory.close()
