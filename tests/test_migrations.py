"""Versioned schema migrations: an old data dir upgrades (``memproxy migrate`` says what it
applied), a current one needs nothing, and a PostgreSQL database gets the same versions."""

from __future__ import annotations

import sqlite3
from pathlib import Path

import pytest

from memcubes.cube import MemCube
from memcubes.languages.words import cjk_grams
from memcubes.store import ChangeSet, Store
from memcubes.store.migrations import MIGRATIONS, latest
from proxy.cli import main


def _migrate(capsys: pytest.CaptureFixture[str], *args: str) -> str:
    assert main(["migrate", *args]) == 0
    return capsys.readouterr().out


def test_a_data_dir_from_before_migrations_upgrades(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    store = Store.open(tmp_path / "memproxy.db")
    bank = MemCube(space="u", content="我在上海的一家银行工作。")
    store.apply(ChangeSet(cubes=[bank, MemCube(space="u", content="I live in Lisbon.")]))
    store.close()
    with sqlite3.connect(tmp_path / "memproxy.db") as conn:  # the schema before journal leases and bigrams
        conn.execute("DROP TABLE schema_migrations")
        conn.execute("DROP TABLE cubes_grams")
        conn.execute("DELETE FROM meta WHERE key = 'grams_index'")
        for table, column in (
            ("journal", "claimed_by"),
            ("journal", "lease_until"),
            ("outbox", "writer"),
            ("outbox", "at"),
        ):
            conn.execute(f"ALTER TABLE {table} DROP COLUMN {column}")

    out = _migrate(capsys, "--data-dir", str(tmp_path))
    assert [line.split(":")[0] for line in out.splitlines()[:-1]] == [f"applied {m.version}" for m in MIGRATIONS]
    assert f"schema at version {latest()} (applied {len(MIGRATIONS)})" in out

    store = Store.open(tmp_path / "memproxy.db")
    try:
        assert store.migrated == []
        assert store.journal_put("x1", "u", {"turns": []}, lease=30.0)  # the lease columns are there
        assert store.journal_claim(["x1"], lease=30.0) == {"x1"}
        assert [hit for hit, _ in store.lexical_grams("u", cjk_grams("我在哪里工作？"), limit=5)] == [bank.id]
    finally:
        store.close()
    assert "(nothing to apply)" in _migrate(capsys, "--data-dir", str(tmp_path))


def test_a_postgres_database_gets_every_version(postgres_url: str, capsys: pytest.CaptureFixture[str]) -> None:
    out = _migrate(capsys, "--data-dir", "/nonexistent", "--database-url", postgres_url)
    assert f"schema at version {latest()} (applied {len(MIGRATIONS)})" in out
    assert "postgres@" in out and "(nothing to apply)" in _migrate(
        capsys, "--data-dir", "/x", "--database-url", postgres_url
    )
