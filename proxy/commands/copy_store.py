"""``memproxy migrate --from sqlite:///DATA_DIR --to postgresql://...`` (the options of
``proxy.commands.migrate``): a data dir's database copied into PostgreSQL and verified
(``memcubes.transfer``), for replicas to serve from."""

from __future__ import annotations

import argparse
import sqlite3
import sys
import tempfile
from pathlib import Path
from urllib.parse import urlsplit

from memcubes.database_url import DatabaseUrlError, hidden_in_logs, parameters, redacted


def _prepare(url: str) -> None:
    """The target's schema, made as a replica starting on it would make it."""
    from memcubes.store import Store

    with tempfile.TemporaryDirectory(prefix="memproxy-migrate-") as scratch:
        Store.open(Path(scratch), database_url=url).close()


def _batch(value: str) -> int:
    rows = int(value)
    if not 1 <= rows <= 100_000:
        raise argparse.ArgumentTypeError("between 1 and 100000 rows")
    return rows


def add_copy_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument(
        "--from",
        dest="source",
        metavar="sqlite:///DATA_DIR",
        help="copy this data dir's database (its memproxy.db) into --to; a proxy may keep serving it (one "
        "snapshot is read) but what it writes afterwards is not copied",
    )
    parser.add_argument(
        "--to", dest="target", metavar="postgresql://USER:PASS@HOST:PORT/DB", help="a new, empty PostgreSQL database"
    )
    parser.add_argument("--batch", type=_batch, default=2000, metavar="ROWS", help="rows per batch (default 2000)")


def cmd_copy(args: argparse.Namespace) -> int:
    """Copy, verify, print one line per table; exit 1 when a table does not verify, 2 when the copy
    could not be made."""
    import psycopg  # here: every other command starts without it

    from memcubes.errors import StoreUnavailable
    from memcubes.transfer import TransferError, report, sqlite_database, transfer

    if not (args.source and args.target):
        print("memproxy: migrate: --from and --to go together", file=sys.stderr)
        return 2
    if urlsplit(args.target).scheme not in ("postgresql", "postgres"):
        print("memproxy: migrate: --to must be a postgresql:// URL", file=sys.stderr)
        return 2
    target = redacted(args.target)
    try:
        password = parameters(args.target).get("password")
    except DatabaseUrlError as exc:
        print(f"memproxy: migrate: --to {exc}", file=sys.stderr)
        return 2
    try:
        with hidden_in_logs(password):
            source = sqlite_database(args.source)
            print(f"migrate: {source} -> {target}", file=sys.stderr, flush=True)
            checks = transfer(source, args.target, prepare=_prepare, batch=args.batch, progress=sys.stderr)
    except TransferError as exc:
        print(f"memproxy: migrate: {exc}", file=sys.stderr)
        return 2
    except sqlite3.Error as exc:
        print(f"memproxy: migrate: reading {args.source}: {exc}", file=sys.stderr)
        return 2
    except (psycopg.Error, StoreUnavailable) as exc:  # the store's message names the server redacted
        said = str(exc).strip().replace(password, "***") if password else str(exc).strip()
        print(f"memproxy: migrate: {target}: {said} (no rows were copied)", file=sys.stderr)
        return 2
    for line in report(checks):
        print(line)
    failed = [check.table for check in checks if not check.ok]
    if failed:
        print(
            f"memproxy: migrate: the copy of {', '.join(failed)} does not match the source: nothing was kept",
            file=sys.stderr,
        )
        return 1
    rows = sum(check.rows for check in checks)
    print(f"copied and verified {len(checks)} tables, {rows:,} rows")
    return 0
