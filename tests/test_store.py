"""The store on both engines (heat, space statistics, journal claims, the change log) and SQLite's WAL
(checkpointed by its owner, off the write path, when asked to)."""

from __future__ import annotations

import time
from collections.abc import Callable
from datetime import UTC, datetime, timedelta
from pathlib import Path

from memcubes.cube import CubeState, MemCube
from memcubes.store import SIZE_SAMPLE, ChangeSet, CubeFilter, HistoryEvent, SpaceScope, Store

MIB = 1024 * 1024


def write_mib(store: Store, start: int, mib: int) -> None:
    for number in range(start, start + mib * 16):  # 16 rows of 64 KiB each
        store.journal_put(f"x{number}", "user:wal", {"blob": "x" * 65536})


def wal_mib(store: Store) -> float:
    return Path(f"{store.path}-wal").stat().st_size / MIB


def test_commits_leave_the_wal_to_background_checkpoints(tmp_path: Path) -> None:
    automatic = Store.open(tmp_path / "auto.db")
    write_mib(automatic, 0, 12)
    assert wal_mib(automatic) < 8  # SQLite checkpointed on a commit past 1,000 pages (4 MiB) and reused the WAL

    background = Store.open(tmp_path / "background.db")
    background.checkpoint_in_background()
    write_mib(background, 0, 12)
    grown = wal_mib(background)
    assert grown > 12  # no commit checkpointed
    background.checkpoint()
    write_mib(background, 1000, 6)  # the WAL starts over once everything in it is in the database
    assert wal_mib(background) == grown
    assert background.journal_counts() == {"pending": 12 * 16 + 6 * 16}
    automatic.close()
    background.close()


def test_touch_decays_heat_by_its_half_life_and_counts_hits(
    tmp_path: Path, open_store: Callable[[Path], Store]
) -> None:
    store = open_store(tmp_path / "heat.db")
    cubes = [MemCube(space="user:ada", content=f"fact {n}") for n in range(3)]
    store.apply(ChangeSet(cubes=cubes, events=[HistoryEvent(cube, "ADD") for cube in cubes]))
    start = datetime(2026, 1, 1, tzinfo=UTC)
    hits = {cubes[0].id: (2, 1.5), cubes[1].id: (1, 0.5), "no-such-cube": (1, 1.0)}
    assert store.touch(hits, half_life=3600, at=start) == {"user:ada"}
    assert store.touch({cubes[0].id: (1, 1.0)}, half_life=3600, at=start + timedelta(hours=2)) == {"user:ada"}
    found = store.get_many([cube.id for cube in cubes])
    first, second, third = (found[cube.id].access for cube in cubes)
    assert (first.hits, first.heat, first.last_hit_at) == (3, 1.5 * 0.25 + 1.0, start + timedelta(hours=2))
    assert (second.hits, second.heat, third.hits, third.heat) == (1, 0.5, 0, 0.0)
    store.close()


def test_listing_by_text_ignores_case_on_both_engines(tmp_path: Path, open_store: Callable[[Path], Store]) -> None:
    store = open_store(tmp_path / "m.db")
    cubes = [MemCube(space="user:ada", content=text) for text in ("Ada likes Tea", "tea_time 100%", "coffee")]
    store.apply(ChangeSet(cubes=cubes, events=[HistoryEvent(cube, "ADD") for cube in cubes]))

    def found(text: str) -> set[str]:
        return {cube.content for cube in store.list_cubes(CubeFilter(space="user:ada", text=text))}

    assert found("tEA") == {"Ada likes Tea", "tea_time 100%"}
    assert found("LIKES t") == {"Ada likes Tea"}
    assert found("S_T") == found("0%%") == set()  # LIKE's wildcards are matched as themselves
    assert found("A_T") == found("0%") == {"tea_time 100%"}
    store.close()


def test_space_stats_count_every_state_and_estimate_the_size_of_a_large_space(
    tmp_path: Path, open_store: Callable[[Path], Store]
) -> None:
    store = open_store(tmp_path / "m.db")
    cubes = [MemCube(space="user:big", content=f"memory {i:05d} " + "x" * 80) for i in range(SIZE_SAMPLE + 500)]
    cubes[0].state = CubeState.DELETED
    store.apply(ChangeSet(cubes=cubes, events=[HistoryEvent(cubes[-1], "ADD")]))
    small = MemCube(space="user:small", content="one")
    store.apply(ChangeSet(cubes=[small], events=[HistoryEvent(small, "ADD")]))
    big = store.space_stats("user:big")
    assert big is not None and big.states == {"active": SIZE_SAMPLE + 499, "deleted": 1}
    exact = sum(len(cube.model_dump_json(exclude={"access"})) for cube in cubes)
    assert big.bytes_estimated and abs(big.bytes - exact) / exact < 0.02
    assert big.last_activity is not None
    one = store.space_stats("user:small")
    assert one is not None and not one.bytes_estimated
    assert one.bytes == len(small.model_dump_json(exclude={"access"}))
    assert store.space_stats("user:none") is None
    assert store.space_page(limit=1) == ["user:big"]
    assert store.space_page(limit=5, after="user:big") == ["user:small"]
    assert store.space_page(limit=5, contains="SMA") == ["user:small"]
    assert store.space_page(limit=5, scope=SpaceScope(names=("user:small", "user:other"))) == ["user:small"]
    assert store.space_page(limit=5, scope=SpaceScope(prefix="user:b")) == ["user:big"]
    assert store.space_page(limit=5, scope=SpaceScope(prefix="user:x", names=("user:small",))) == ["user:small"]
    assert store.space_page(limit=5, scope=SpaceScope()) == []
    store.close()


def test_journal_claims_hold_against_other_processes_until_their_lease_expires(
    tmp_path: Path, open_store: Callable[[Path], Store]
) -> None:
    first, second = open_store(tmp_path / "m.db"), open_store(tmp_path / "m.db")  # two processes' stores
    assert first.journal_put("ex1", "user:ada", {"turns": []}, lease=60)
    assert first.journal_put("ex2", "user:ada", {"turns": []})
    assert second.journal_claim(["ex1", "ex2"], lease=0.2) == {"ex2"}  # ex1 is the first's
    # Each sweeper sees what no other process holds (its own claims included).
    assert [e.exchange_id for e in second.journal_pending(limit=10, max_attempts=5)] == ["ex2"]
    assert [e.exchange_id for e in first.journal_pending(limit=10, max_attempts=5)] == ["ex1"]
    time.sleep(0.3)  # the second's claim on ex2 expired (as if it had been killed)
    assert first.journal_claim(["ex2"], lease=60) == {"ex2"}
    first.apply(ChangeSet(journal_done=("ex2", {"changes": []})))
    assert first.journal_claim(["ex2"], lease=60) == set()  # done: nobody claims it again
    first.journal_release(["ex1"])
    assert second.journal_claim(["ex1"], lease=60) == {"ex1"}


def test_the_change_log_names_other_processes_writes_by_space(
    tmp_path: Path, open_store: Callable[[Path], Store]
) -> None:
    mine, theirs = open_store(tmp_path / "m.db"), open_store(tmp_path / "m.db")
    start = mine.last_change()
    version = mine.data_version()
    cube = MemCube(space="user:ada", content="Ada likes tea.")
    theirs.apply(ChangeSet(cubes=[cube]))
    mine.apply(ChangeSet(cubes=[MemCube(space="user:bob", content="Bob likes coffee.")]))
    assert mine.data_version() != version
    changes, last = mine.changes_since(start)
    assert changes is not None and [(c.space, c.kind, c.cubes) for c in changes] == [("user:ada", "person", (cube.id,))]
    assert mine.changes_since(last) == ([], last)
    theirs.delete_space("user:ada")
    assert [(c.space, c.cubes) for c in mine.changes_since(last)[0] or []] == [("user:ada", None)]
