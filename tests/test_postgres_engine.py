"""The PostgreSQL engine's own behaviour (``memcubes/store/postgres.py``): which of the server's
errors are the data's fault, how long a read or a write waits for a connection, and what the
space stripes' locks do when their session is lost."""

from __future__ import annotations

import asyncio
import time
from collections.abc import Iterator
from pathlib import Path

import psycopg
import pytest

from memcubes import deadline
from memcubes.cube import MemCube
from memcubes.database_url import split
from memcubes.errors import DeadlineExceeded, InvalidMemoryInput, StoreUnavailable
from memcubes.space_locks import SpaceLocks
from memcubes.store import ChangeSet, HistoryEvent, Store
from memcubes.store.postgres import AdvisoryStripes, PostgresEngine
from proxy.errors import from_memory_error
from tests.postgres import PostgresServer


@pytest.fixture
def url(postgres_server: PostgresServer, postgres_template: str) -> str:
    return postgres_server.fresh_database(template=postgres_template)


@pytest.fixture
def store(tmp_path: Path, url: str) -> Iterator[Store]:
    opened = Store.open(tmp_path / "m.db", database_url=url)
    yield opened
    opened.close()


def test_data_the_server_refuses_is_invalid_input_not_an_outage(store: Store) -> None:
    """A NUL byte (PostgreSQL's text cannot hold one), written through the store past the model:
    a 400 for the memory API and a counted attempt for write-back, not 'the store is down'."""
    with pytest.raises(InvalidMemoryInput) as refused:
        store.journal_put("x1", "user:a\x00b", {"turns": []}, lease=60)
    assert from_memory_error(refused.value).status == 400
    cube = MemCube(space="user:ada", content="fine").model_copy(update={"space": "user:\x00"})
    with pytest.raises(InvalidMemoryInput):  # psycopg's own check
        store.apply(ChangeSet(cubes=[cube], events=[HistoryEvent(cube, "ADD")]))
    with pytest.raises(InvalidMemoryInput), store.transaction() as conn:  # the server's (SQLSTATE 22P05)
        conn.execute("SELECT CAST(? AS jsonb)", ('"\\u0000"',))
    ok = MemCube(space="user:ada", content="still works")
    store.apply(ChangeSet(cubes=[ok], events=[HistoryEvent(ok, "ADD")]))
    assert store.get_many([ok.id])[ok.id].content == "still works"


def test_a_read_waits_for_a_connection_no_longer_than_its_deadline(store: Store) -> None:
    """Every connection of the pool busy: a request's read gives up at its deadline
    (``DeadlineExceeded``, counted as interrupted) instead of the pool's 30 s wait."""
    engine = store.engine
    assert isinstance(engine, PostgresEngine)
    engine._pool.resize(min_size=1, max_size=1)
    held = engine._pool.getconn()
    try:
        with deadline.within(0.2), pytest.raises(DeadlineExceeded, match="no connection free"):
            store.read("SELECT 1")
        assert store.interrupted == 1
    finally:
        engine._pool.putconn(held)
    with deadline.within(5.0):
        assert [tuple(row) for row in store.read("SELECT 1")] == [(1,)]


def _added(content: str) -> ChangeSet:
    cube = MemCube(space="user:ada", content=content)
    return ChangeSet(cubes=[cube], events=[HistoryEvent(cube, "ADD")])


async def test_a_space_lock_lost_with_its_session_fences_its_holders_writes(
    store: Store, url: str, tmp_path: Path
) -> None:
    """The lock session's backend terminated while a write-back holds a space: the stripe is free
    on the server (another replica takes it), and the holder's next write is refused instead of
    committing beside that replica's; taking a stripe held elsewhere gives up after its wait;
    the next holder here gets a new session."""
    engine = store.engine
    assert isinstance(engine, PostgresEngine)
    locks = SpaceLocks(store.stripe_locks(tmp_path / "locks"))
    other, late = AdvisoryStripes(*split(url)), AdvisoryStripes(*split(url), wait=0.05)  # other replicas'
    async with locks.hold("user:ada"):
        await asyncio.to_thread(store.apply, _added("written while held"))
        with psycopg.connect(url, autocommit=True) as admin:
            row = admin.execute(
                "SELECT pid, objid FROM pg_locks WHERE locktype = 'advisory' AND classid = 7143 AND granted"
            ).fetchone()
            assert row is not None
            session, stripe = row
            admin.execute("SELECT pg_terminate_backend(%s)", (session,))
        await asyncio.to_thread(other.take, stripe)  # free on the server now
        with pytest.raises(StoreUnavailable, match="lost with its PostgreSQL session"):
            await asyncio.to_thread(store.apply, _added("written after the lock was lost"))
    assert [cube.content for cube in store.live_cubes("user:ada")] == ["written while held"]
    with pytest.raises(StoreUnavailable, match="locked by another replica"):
        late.take(stripe)
    other.release(stripe)
    async with locks.hold("user:ada"):
        await asyncio.to_thread(store.apply, _added("again"))
    assert sorted(cube.content for cube in store.live_cubes("user:ada")) == ["again", "written while held"]
    for stripes in (other, late, locks):
        stripes.close()


def test_purges_share_one_background_vacuum(store: Store) -> None:
    """A purge's rows are unreachable at its commit; the VACUUM after it runs in the background,
    and purges meanwhile wait for the next one (at most one a minute) instead of each running its
    own; one still due when the store closes runs then."""
    engine = store.engine
    assert isinstance(engine, PostgresEngine)
    cubes = [MemCube(space="user:ada", content=f"secret {n}") for n in range(3)]
    store.apply(ChangeSet(cubes=cubes, events=[HistoryEvent(cube, "ADD") for cube in cubes]))
    store.purge(cubes[0].id)
    for _ in range(3000):
        if engine.scrubs:
            break
        time.sleep(0.01)
    assert engine.scrubs == 1
    store.purge(cubes[1].id)
    store.purge(cubes[2].id)
    assert store.get_many([cube.id for cube in cubes]) == {}
    assert [tuple(row) for row in store.read("SELECT count(*) FROM history")] == [(0,)]
    assert engine.scrubs == 1
    store.close()
    assert engine.scrubs == 2
