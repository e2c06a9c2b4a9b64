"""``memproxy serve``, ``check-config`` and ``reindex``: the commands that open a config (and a
data dir) themselves rather than talk to a running proxy.

What the schema cannot know is checked here, before anything starts, by ``check-config`` and
``serve`` alike: a local model directory that does not exist is an error (one line, exit 2; not a
traceback from deep inside the model loader), an empty model list a warning (the memory API
works, chat has nothing to forward to).
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

from proxy.config import ConfigError, Settings, default_config_path
from proxy.datadir_lock import DataDirBusy, DataDirLock, embedded_chroma_refusal


def load(path: Path) -> Settings:
    try:
        return Settings.from_yaml(path)
    except ConfigError as exc:
        print(f"memproxy: {exc}", file=sys.stderr)
        raise SystemExit(2) from None


def problems(settings: Settings) -> tuple[list[str], list[str]]:
    """``(errors, warnings)`` that only exist outside the file: paths, an empty model list."""
    errors = [
        f"model_list[{index}].local.path: {entry.local.path} does not exist "
        f"(`memproxy dev tiny-model {entry.local.path}` writes a small random model to try)"
        for index, entry in enumerate(settings.model_list)
        if entry.local is not None and not entry.local.path.exists()
    ]
    warnings = []
    if not settings.model_list:
        warnings.append("model_list is empty: chat requests have no model to go to (the memory API works)")
    return errors, warnings


def checked(path: Path) -> Settings:
    """The settings of ``path``; exits 2 with one line per problem when it cannot run."""
    settings = load(path)
    errors, warnings = problems(settings)
    for warning in warnings:
        print(f"memproxy: warning: {path}: {warning}", file=sys.stderr)
    if errors:
        print(f"memproxy: {path} cannot run:\n" + "\n".join(f"  - {e}" for e in errors), file=sys.stderr)
        raise SystemExit(2)
    return settings


def locked(settings: Settings, command: str, *, embedded_index: bool = False) -> DataDirLock:
    lock = DataDirLock(settings.memory.data_dir, command=command, embedded_index=embedded_index)
    try:
        lock.acquire()
    except DataDirBusy as exc:
        print(f"memproxy: {exc}", file=sys.stderr)
        raise SystemExit(2) from None
    return lock


def unsafe_bind(settings: Settings, host: str) -> str | None:
    """Why serving ``host`` would be unsafe, or ``None``: without a master key every caller is
    admin over every user's memories, so only this machine may reach the server."""
    from proxy.auth import is_loopback

    general = settings.general_settings
    if general.master_key or general.allow_unauthenticated or is_loopback(host.strip("[]").lower()):
        return None
    return (
        f"refusing to listen on {host} without a master key: anyone who can reach it could read and change "
        "every user's memories. Set general_settings.master_key (e.g. master_key: ${MEMPROXY_MASTER_KEY}) and "
        "create per-user keys with `memproxy keys create`, or serve on 127.0.0.1; to accept the risk, set "
        "general_settings.allow_unauthenticated: true"
    )


def cmd_serve(args: argparse.Namespace) -> int:
    from proxy.workers import run_workers, serve_socket

    settings = checked(args.config)
    host = args.host or settings.server.host
    refusal = unsafe_bind(settings, host)
    if refusal:
        print(f"memproxy: {refusal}", file=sys.stderr)
        return 2
    server = settings.server.model_copy(
        update={
            "host": host,
            "port": args.port if args.port is not None else settings.server.port,
            "workers": args.workers or settings.server.workers,
        }
    )
    settings = settings.model_copy(update={"server": server})
    embedded_index = settings.memory.vector_index.host is None
    if server.workers > 1 and embedded_index:
        why = embedded_chroma_refusal(settings.memory.data_dir)
        print(f"memproxy: cannot serve with {server.workers} workers: {why}", file=sys.stderr)
        return 2
    lock = locked(settings, "serve", embedded_index=embedded_index)
    try:
        if server.workers > 1:
            return run_workers(settings)
        serve_socket(settings)
    finally:
        lock.release()
    return 0


def cmd_check_config(args: argparse.Namespace) -> int:
    settings = checked(args.config)
    names = ", ".join(entry.model_name for entry in settings.model_list) or "none"
    print(
        f"{args.config}: OK (models: {names}; data_dir: {settings.memory.data_dir}; "
        f"extraction: {settings.memory.extraction.mode})"
    )
    return 0


def cmd_reindex(args: argparse.Namespace) -> int:
    """Rebuild the vector index from SQLite (the system of record), with the proxy stopped."""
    import asyncio

    from tqdm import tqdm

    from memcubes.memory_os import MemoryOS

    settings = load(args.config)
    lock = locked(settings, "reindex")

    async def run() -> int:
        memory = await MemoryOS.open(settings.memory)
        try:
            with tqdm(desc="reindexing", unit=" memories", disable=None) as bar:
                return await memory.reindex(args.space, progress=bar.update)
        finally:
            await memory.close()

    try:
        count = asyncio.run(run())
    finally:
        lock.release()
    print(f"reindexed {count} memories" + (f" of {args.space}" if args.space else ""))
    return 0


def register(subparsers: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    config_help = "the YAML config (default: $MEMPROXY_CONFIG or config/default.yaml)"
    serve = subparsers.add_parser("serve", help="run the proxy")
    serve.add_argument("--config", type=Path, default=default_config_path(), help=config_help)
    serve.add_argument("--host", help="listen on this address (default: server.host, 127.0.0.1)")
    serve.add_argument("--port", type=int, help="listen on this port (default: server.port, 8080)")
    serve.add_argument(
        "--workers",
        type=int,
        choices=range(1, 65),
        metavar="N",
        help="processes serving the port, 1-64 (default: server.workers, 1); more than one needs a Chroma server "
        "(memory.vector_index.host)",
    )
    serve.set_defaults(run=cmd_serve)

    check = subparsers.add_parser("check-config", help="validate a config file and print what is wrong")
    check.add_argument("config", type=Path, help="the YAML config to check")
    check.set_defaults(run=cmd_check_config)

    reindex = subparsers.add_parser(
        "reindex", help="rebuild the vector index from the SQLite store (with the proxy stopped)"
    )
    reindex.add_argument("--config", type=Path, default=default_config_path(), help=config_help)
    reindex.add_argument("--space", help="only this space, e.g. user:alice (default: all)")
    reindex.set_defaults(run=cmd_reindex)
