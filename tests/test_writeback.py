"""Write-back distils the exchanges of one space side by side and commits them one at a time:
what one of them distilled meanwhile is not distilled again by another."""

from __future__ import annotations

import asyncio
import sqlite3
from collections.abc import Sequence
from pathlib import Path

from memcubes.config import MemorySettings
from memcubes.cube import utcnow
from memcubes.embedder import Embedder, Vectors
from memcubes.exchange import Exchange, Turn
from memcubes.memory_os import MemoryOS

SPACE = "user:noor"


def exchange(number: int, *said: str) -> Exchange:
    now = utcnow()
    turns = [Turn(id=f"m{i}", role="user", content=text, created_at=now) for i, text in enumerate(said)]
    return Exchange(id=f"req-{number}", space=SPACE, turns=turns, mode="heuristic", skip_seen=True)


async def test_history_two_concurrent_exchanges_share_is_distilled_once(
    embedder: Embedder, tmp_path: Path, database_url: str
) -> None:
    """Both resend the same first message (chat history); whichever commits second must not
    distil it again: exactly one exchange reports it, as an ADD."""
    memory = await MemoryOS.open(
        MemorySettings(data_dir=tmp_path / "data", database_url=database_url), embedder=embedder
    )
    await memory.start()
    try:
        await both_distilled(memory)
    finally:
        await memory.close()


async def both_distilled(memory: MemoryOS) -> None:
    bees = "I keep bees on the roof of my building."
    first, second = exchange(1, bees), exchange(2, bees, "I also grow tomatoes on the balcony.")
    assert await memory.record(first) and await memory.record(second)
    await asyncio.wait_for(memory.writeback.wait_idle(), 60)
    reports = [(await asyncio.to_thread(memory.store.journal_get, e.id)) for e in (first, second)]
    assert all(entry is not None and entry.state == "done" for entry in reports)
    about_bees = [
        change["event"]
        for entry in reports
        if entry is not None
        for change in (entry.result or {})["changes"]
        if "bees" in change["text"]
    ]
    assert about_bees == ["ADD"]
    texts = sorted(cube.content for cube in await asyncio.to_thread(memory.store.live_cubes, SPACE))
    assert texts == ["I also grow tomatoes on the balcony.", bees]


async def test_one_exchange_processed_twice_at_once_is_distilled_once(
    embedder: Embedder, tmp_path: Path, database_url: str
) -> None:
    """As when the sweeper and a worker (or two processes) pick up the same journalled exchange."""
    memory = await MemoryOS.open(
        MemorySettings(data_dir=tmp_path / "data", database_url=database_url), embedder=embedder
    )
    try:
        said = exchange(1, "I keep bees on the roof of my building.")
        await asyncio.to_thread(memory.store.journal_put, said.id, SPACE, said.model_dump(mode="json"))
        first, second = await asyncio.gather(*(memory.writeback.process(said.id) for _ in range(2)))
        assert [change.event for change in first] == [change.event for change in second] == ["ADD"]
        assert first[0].id == second[0].id
        assert [cube.content for cube in await asyncio.to_thread(memory.store.live_cubes, SPACE)] == [
            "I keep bees on the roof of my building."
        ]
    finally:
        await memory.close()


class Recording(Embedder):
    """The session's embedder, noting every text it is asked for."""

    def __init__(self, inner: Embedder) -> None:
        self.name, self.dimension, self._inner = inner.name, inner.dimension, inner
        self.texts: list[str] = []

    async def embed(self, texts: Sequence[str], *, urgent: bool = True) -> Vectors:
        self.texts += texts
        return await self._inner.embed(texts, urgent=urgent)


async def test_a_duplicate_gaining_sources_is_not_indexed_again(
    embedder: Embedder, tmp_path: Path, database_url: str
) -> None:
    """Only what is searched (content, state, space) needs the indexes: a near duplicate that merges
    its message id into the existing memory leaves no outbox row, so nothing is re-embedded; an
    edit of the text still is re-indexed."""
    recording = Recording(embedder)
    memory = await MemoryOS.open(MemorySettings(data_dir=tmp_path / "data"), embedder=recording)
    db = sqlite3.connect(tmp_path / "data" / "memproxy.db")
    pending = "SELECT count(*) FROM outbox"

    def matches(word: str) -> int:
        return int(db.execute("SELECT count(*) FROM cubes_fts WHERE cubes_fts MATCH ?", (word,)).fetchone()[0])

    try:
        [added] = await memory.writeback.run_now(exchange(1, "I keep bees on the roof of my building."))
        again = exchange(2, "I keep bees on the roof of my building!")
        again.turns[0].id = "later"
        recording.texts.clear()
        [merged] = await memory.writeback.run_now(again)
        assert recording.texts == [added.text]  # the candidate only: the merged memory is not re-embedded
        assert (merged.event, merged.id) == ("NOOP", added.id)
        assert (await memory.get(added.id)).source.message_ids == ["m0", "later"]
        assert db.execute(pending).fetchone()[0] == 0 and matches("bees") == 1
        await memory.edit(added.id, {"tags": ["garden"]})
        assert db.execute(pending).fetchone()[0] == 0
        await memory.edit(added.id, {"content": "I keep bees on the roof of my office."})
        assert matches("office") == 1 and matches("building") == 0
        [(nearest, score)] = await memory.hot.nearest(SPACE, (await embedder.embed(["bees at the office"]))[0], limit=1)
        assert nearest == added.id and score > 0.6
    finally:
        db.close()
        await memory.close()
