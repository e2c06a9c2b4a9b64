"""A throwaway PostgreSQL server for tests: Debian's ``postgresql`` binaries, ``initdb`` into a
temporary directory and ``pg_ctl start`` on a unix socket there (no TCP port to collide with other
test runs), trust authentication, stopped (``-m immediate``) and deleted at the end.

The test machines run as root, and PostgreSQL refuses to; the server runs as the ``postgres``
user (created by the Debian package) through ``runuser``. Tests get fresh databases cheaply by
``CREATE DATABASE ... TEMPLATE`` of an empty one (``fresh_database``).

    with PostgresServer.start(tmp) as server:
        url = server.fresh_database()     # postgresql://postgres@/db_1?host=/tmp/.../socket
"""

from __future__ import annotations

import contextlib
import itertools
import os
import pwd
import shutil
import signal
import subprocess
import tempfile
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from urllib.parse import quote


def _version(bin_dir: Path) -> tuple[int, ...]:
    """``/usr/lib/postgresql/17/bin`` -> (17,): sorted as numbers (9.6 < 10)."""
    return tuple(int(part) for part in bin_dir.parent.name.split(".") if part.isdigit())


BIN_DIRS = sorted(Path("/usr/lib/postgresql").glob("*/bin"), key=_version, reverse=True)
_USER = "postgres"


def binaries() -> Path | None:
    """The newest installed PostgreSQL's bin directory, or None when none is."""
    for directory in BIN_DIRS:
        if (directory / "initdb").exists() and (directory / "pg_ctl").exists():
            return directory
    found = shutil.which("pg_ctl")
    return Path(found).parent if found and Path(found).with_name("initdb").exists() else None


def missing_reason() -> str | None:
    """Why no server can be started here (skip tests with it), or None."""
    if binaries() is None:
        return "PostgreSQL binaries (initdb, pg_ctl) not installed: apt-get install postgresql"
    if os.geteuid() == 0 and shutil.which("runuser") is None:
        return "running as root without runuser: cannot start PostgreSQL as a non-root user"
    if os.geteuid() == 0:
        try:
            pwd.getpwnam(_USER)
        except KeyError:
            return f"running as root and no {_USER} user to run PostgreSQL as (the Debian package creates it)"
    return None


def _as_server_user(argv: list[str]) -> list[str]:
    return ["runuser", "-u", _USER, "--", *argv] if os.geteuid() == 0 else argv


@dataclass
class PostgresServer:
    root: Path
    bin: Path
    _numbers: Iterator[int] = field(default_factory=lambda: itertools.count(1))

    @property
    def socket_dir(self) -> Path:
        return self.root / "socket"

    def url(self, database: str = "postgres") -> str:
        return f"postgresql://{_USER}@/{database}?host={quote(str(self.socket_dir), safe='')}"

    @classmethod
    @contextmanager
    def start(cls, parent: Path | None = None, *, durable: bool = False) -> Iterator[PostgresServer]:
        """``durable``: commits flushed to disk as a production server would (benchmarks); by
        default they are not (fsync, synchronous_commit and full_page_writes off: tests)."""
        bin_dir = binaries()
        if bin_dir is None:
            raise RuntimeError(missing_reason() or "no PostgreSQL")
        root = Path(tempfile.mkdtemp(prefix="memproxy-pg-", dir=parent))
        server = cls(root=root, bin=bin_dir)
        (root / "socket").mkdir()
        if os.geteuid() == 0:
            shutil.chown(root, _USER)
            shutil.chown(root / "socket", _USER)
        os.chmod(root, 0o755)
        try:
            server._run(
                [
                    str(bin_dir / "initdb"),
                    "-D",
                    str(root / "data"),
                    "-U",
                    _USER,
                    "-A",
                    "trust",
                    "-E",
                    "UTF8",
                    "--no-sync",
                    "--locale=C",
                ]
            )
            options = (
                f"-c listen_addresses='' -c unix_socket_directories={root / 'socket'} "
                "-c unix_socket_permissions=0700 "
                + ("" if durable else "-c fsync=off -c synchronous_commit=off -c full_page_writes=off ")
                + "-c max_connections=200 -c shared_buffers=64MB -c max_parallel_workers_per_gather=0"
            )
            server._run(
                [
                    str(bin_dir / "pg_ctl"),
                    "-D",
                    str(root / "data"),
                    "-l",
                    str(root / "log"),
                    "-o",
                    options,
                    "-w",
                    "-t",
                    "60",
                    "start",
                ]
            )
            yield server
        finally:
            try:
                server._stop()
            finally:
                shutil.rmtree(root, ignore_errors=True)

    def _stop(self) -> None:
        """``pg_ctl stop -m immediate``; the postmaster killed when that does not finish in time."""
        pid_file = self.root / "data" / "postmaster.pid"
        if not pid_file.exists():
            return
        try:
            self._run([str(self.bin / "pg_ctl"), "-D", str(self.root / "data"), "-m", "immediate", "stop"], check=False)
        except subprocess.TimeoutExpired:
            with contextlib.suppress(OSError, ValueError, IndexError):  # gone meanwhile
                os.kill(int(pid_file.read_text().split()[0]), signal.SIGKILL)  # the postmaster started here

    def _run(self, argv: list[str], *, check: bool = True) -> None:
        result = subprocess.run(_as_server_user(argv), capture_output=True, text=True, timeout=120, cwd=self.root)
        if check and result.returncode != 0:
            log = (self.root / "log").read_text() if (self.root / "log").exists() else ""
            raise RuntimeError(f"{argv[0]} failed: {result.stdout}{result.stderr}{log}")

    def sql(self, statement: str, database: str = "postgres") -> None:
        import psycopg

        with psycopg.connect(self.url(database), autocommit=True) as conn:
            conn.execute(statement)

    def create_database(self, name: str, *, template: str = "template0") -> str:
        """A new empty database (a copy of ``template``); its URL."""
        self.sql(f'CREATE DATABASE "{name}" TEMPLATE "{template}"')
        return self.url(name)

    def fresh_database(self, template: str = "template0") -> str:
        """A database no other test uses."""
        return self.create_database(f"test_{next(self._numbers)}", template=template)
