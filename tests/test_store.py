"""The store's WAL: checkpointed by the store's owner, off the write path, when asked to."""

from __future__ import annotations

from pathlib import Path

from memcubes.store import Store

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
