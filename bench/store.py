"""The system of record a benchmark runs memproxy on (``--store``, shared by the sections):
``sqlite``, a data dir's file as by default, or ``postgresql``, a throwaway PostgreSQL server
started for the run (``tests/postgres.py``, as the tests start it: Debian's binaries, ``initdb``
in a temporary directory, a unix socket, stopped and deleted at the end), but durable: commits
are flushed to disk, as on a production server."""

from __future__ import annotations

import argparse
import contextlib
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

from tests.postgres import PostgresServer

STORES = ("sqlite", "postgresql")


@dataclass(frozen=True)
class Databases:
    """Where each memproxy of a run keeps its memories: ``url()`` is a new database of the run's
    server (a ``memory.database_url``), or empty for SQLite under the data dir."""

    server: PostgresServer | None

    def url(self) -> str:
        return self.server.fresh_database() if self.server is not None else ""

    @property
    def files(self) -> Path | None:
        """The PostgreSQL server's data directory (for its size on disk), if there is one."""
        return self.server.root / "data" if self.server is not None else None

    @property
    def description(self) -> str:
        return "PostgreSQL (a throwaway server, commits flushed to disk)" if self.server is not None else "SQLite"


@contextlib.contextmanager
def databases(store: str) -> Iterator[Databases]:
    if store == "sqlite":
        yield Databases(None)
        return
    with PostgresServer.start(durable=True) as server:
        yield Databases(server)


def add_argument(parser: argparse.ArgumentParser) -> None:
    parser.add_argument(
        "--store",
        choices=STORES,
        default="sqlite",
        help="memproxy's system of record in scale and overhead: a data dir's SQLite file (default) or a "
        "throwaway PostgreSQL server started for the run",
    )
