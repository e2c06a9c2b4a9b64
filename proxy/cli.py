"""The ``memproxy`` command line: serve, check-config, and developer tools."""

from __future__ import annotations

import argparse
import sys
from collections.abc import Sequence
from pathlib import Path

from proxy.commands import bundles, keys, memories
from proxy.commands import eval as eval_command
from proxy.config import ConfigError, Settings, default_config_path


def _load(path: Path) -> Settings:
    try:
        return Settings.from_yaml(path)
    except ConfigError as exc:
        print(f"memproxy: {exc}", file=sys.stderr)
        raise SystemExit(2) from None


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
    import uvicorn

    from proxy.app import build_app

    settings = _load(args.config)
    host = args.host or settings.server.host
    port = args.port if args.port is not None else settings.server.port
    refusal = unsafe_bind(settings, host)
    if refusal:
        print(f"memproxy: {refusal}", file=sys.stderr)
        return 2
    settings = settings.model_copy(update={"server": settings.server.model_copy(update={"host": host})})
    uvicorn.run(
        build_app(settings),
        host=host,
        port=port,
        log_level=settings.server.log_level,
        loop="uvloop",
        http="httptools",
        timeout_graceful_shutdown=15,
        timeout_keep_alive=int(settings.server.keep_alive_seconds),
        access_log=settings.server.log_level == "debug",
    )
    return 0


def cmd_check_config(args: argparse.Namespace) -> int:
    settings = _load(args.config)
    names = ", ".join(entry.model_name for entry in settings.model_list) or "none"
    print(
        f"{args.config}: OK (models: {names}; data_dir: {settings.memory.data_dir}; "
        f"extraction: {settings.memory.extraction.mode})"
    )
    return 0


def cmd_scripted_backend(args: argparse.Namespace) -> int:
    import uvicorn

    from proxy.dev.scripted_backend import BackendScript, build_scripted_backend

    script = BackendScript(latency=args.latency, chunk_interval=args.chunk_interval, record=not args.no_record)
    uvicorn.run(
        build_scripted_backend(script),
        host=args.host,
        port=args.port,
        log_level="warning",
        loop="uvloop",
        http="httptools",
        access_log=False,
    )
    return 0


def cmd_reindex(args: argparse.Namespace) -> int:
    """Rebuild the vector index from SQLite (the system of record). With the embedded Chroma,
    run it while the proxy is stopped; with a Chroma server, any time."""
    import asyncio

    from memcubes.memory_os import MemoryOS

    settings = _load(args.config)

    async def run() -> int:
        memory = await MemoryOS.open(settings.memory)
        try:
            return await memory.reindex(args.space)
        finally:
            await memory.close()

    count = asyncio.run(run())
    print(f"reindexed {count} memories" + (f" of {args.space}" if args.space else ""))
    return 0


def cmd_tiny_model(args: argparse.Namespace) -> int:
    from memcubes.activation import write_tiny_model

    path = write_tiny_model(args.path, layers=args.layers, hidden=args.hidden, heads=args.heads, seed=args.seed)
    print(f"wrote a random {args.layers}-layer, {args.hidden}-wide Llama and its tokenizer to {path}")
    return 0


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="memproxy", description="OpenAI-compatible LLM proxy with memory")
    commands = parser.add_subparsers(dest="command", required=True)

    serve = commands.add_parser("serve", help="run the proxy")
    serve.add_argument("--config", type=Path, default=default_config_path())
    serve.add_argument("--host")
    serve.add_argument("--port", type=int)
    serve.set_defaults(run=cmd_serve)

    check = commands.add_parser("check-config", help="validate a config file and print what is wrong")
    check.add_argument("config", type=Path)
    check.set_defaults(run=cmd_check_config)

    reindex = commands.add_parser("reindex", help="rebuild the vector index from the SQLite store")
    reindex.add_argument("--config", type=Path, default=default_config_path())
    reindex.add_argument("--space", help="only this space (default: all)")
    reindex.set_defaults(run=cmd_reindex)

    dev = commands.add_parser("dev", help="developer tools").add_subparsers(dest="tool", required=True)
    backend = dev.add_parser("scripted-backend", help="run the scripted OpenAI-compatible test backend")
    backend.add_argument("--host", default="127.0.0.1")
    backend.add_argument("--port", type=int, default=18080)
    backend.add_argument("--latency", type=float, default=0.0, help="seconds before each answer")
    backend.add_argument("--chunk-interval", type=float, default=0.0, help="seconds between stream chunks")
    backend.add_argument("--no-record", action="store_true", help="do not keep received requests (benchmarks)")
    backend.set_defaults(run=cmd_scripted_backend)

    tiny = dev.add_parser("tiny-model", help="write a small random Llama + tokenizer (no download)")
    tiny.add_argument("path", type=Path)
    tiny.add_argument("--layers", type=int, default=8)
    tiny.add_argument("--hidden", type=int, default=512)
    tiny.add_argument("--heads", type=int, default=8)
    tiny.add_argument("--seed", type=int, default=0)
    tiny.set_defaults(run=cmd_tiny_model)
    eval_command.register(commands)
    memories.register(commands)
    bundles.register(commands)
    keys.register(commands)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    code: int = args.run(args)
    return code


if __name__ == "__main__":
    raise SystemExit(main())
