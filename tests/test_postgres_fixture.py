"""The throwaway PostgreSQL of ``tests/postgres.py`` starts, serves fresh databases, and stops."""

from __future__ import annotations

import psycopg

from tests.postgres import PostgresServer


def test_fresh_databases_are_separate(postgres_server: PostgresServer) -> None:
    first, second = postgres_server.fresh_database(), postgres_server.fresh_database()
    with psycopg.connect(first, autocommit=True) as conn:
        conn.execute("CREATE TABLE t (x int)")
    with psycopg.connect(second, autocommit=True) as conn:
        found = conn.execute("SELECT count(*) FROM pg_tables WHERE tablename = 't'").fetchone()
    assert found == (0,)
