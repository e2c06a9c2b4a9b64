"""``memproxy migrate``: bring a data dir's SQLite file (or the PostgreSQL database of
``memory.database_url``) to the current schema, and say which migrations that took. Serving
applies them too at start; this runs them ahead, e.g. once before rolling out new replicas."""

from __future__ import annotations

import argparse
from pathlib import Path

from proxy.commands.copy_store import add_copy_arguments, cmd_copy
from proxy.commands.server import load
from proxy.config import default_config_path


def cmd_migrate(args: argparse.Namespace) -> int:
    from memcubes.errors import StoreUnavailable
    from memcubes.store import Store
    from memcubes.store.migrations import latest

    if args.source or args.target:
        return cmd_copy(args)
    if args.data_dir is not None:
        data_dir, url = args.data_dir, args.database_url or ""
    else:
        memory = load(args.config).memory
        data_dir, url = memory.data_dir, args.database_url if args.database_url is not None else memory.database_url
    try:
        store = Store.open(data_dir / "memproxy.db", database_url=url)
    except StoreUnavailable as exc:
        print(f"memproxy migrate: {exc}")
        return 1
    try:
        where = store.engine.location
        for migration in store.migrated:
            print(f"applied {migration.version}: {migration.name}")
        done = f"applied {len(store.migrated)}" if store.migrated else "nothing to apply"
        print(f"{where}: schema at version {latest()} ({done})")
    finally:
        store.close()
    return 0


def register(subparsers: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    migrate = subparsers.add_parser("migrate", help="bring the store's schema up to date and report what changed")
    migrate.add_argument("--config", type=Path, default=default_config_path(), help="the YAML config naming the store")
    migrate.add_argument("--data-dir", type=Path, help="this data dir's SQLite file instead of the config's store")
    migrate.add_argument("--database-url", help="this PostgreSQL database (postgresql://...) instead")
    add_copy_arguments(migrate)
    migrate.set_defaults(run=cmd_migrate)
