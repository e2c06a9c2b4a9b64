"""Write-back distils the exchanges of one space side by side and commits them one at a time:
what one of them distilled meanwhile is not distilled again by another."""

from __future__ import annotations

import asyncio
from pathlib import Path

from memcubes.config import MemorySettings
from memcubes.cube import utcnow
from memcubes.embedder import Embedder
from memcubes.exchange import Exchange, Turn
from memcubes.memory_os import MemoryOS

SPACE = "user:noor"


def exchange(number: int, *said: str) -> Exchange:
    now = utcnow()
    turns = [Turn(id=f"m{i}", role="user", content=text, created_at=now) for i, text in enumerate(said)]
    return Exchange(id=f"req-{number}", space=SPACE, turns=turns, mode="heuristic", skip_seen=True)


async def test_history_two_concurrent_exchanges_share_is_distilled_once(embedder: Embedder, tmp_path: Path) -> None:
    """Both resend the same first message (chat history); whichever commits second must not
    distil it again: exactly one exchange reports it, as an ADD."""
    memory = await MemoryOS.open(MemorySettings(data_dir=tmp_path / "data"), embedder=embedder)
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


async def test_one_exchange_processed_twice_at_once_is_distilled_once(embedder: Embedder, tmp_path: Path) -> None:
    """As when the sweeper and a worker (or two processes) pick up the same journalled exchange."""
    memory = await MemoryOS.open(MemorySettings(data_dir=tmp_path / "data"), embedder=embedder)
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
