"""The PostgreSQL engine's own behaviour (``memcubes/store/postgres.py``): which of the server's
errors are the data's fault, how long a read or a write waits for a connection, and what the
space stripes' locks do when their session is lost."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest

from memcubes.cube import MemCube
from memcubes.errors import InvalidMemoryInput
from memcubes.store import ChangeSet, HistoryEvent, Store
from proxy.errors import from_memory_error
from tests.postgres import PostgresServer


@pytest.fixture
def store(tmp_path: Path, postgres_server: PostgresServer, postgres_template: str) -> Iterator[Store]:
    opened = Store.open(tmp_path / "m.db", database_url=postgres_server.fresh_database(template=postgres_template))
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
