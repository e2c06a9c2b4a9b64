"""The ``memproxy`` command line: ``server`` commands (serve, check-config, reindex), the client
commands of a running proxy (memories, export, import), eval, and developer tools."""

from __future__ import annotations

import argparse
import importlib.metadata
from collections.abc import Sequence
from pathlib import Path

from proxy.commands import bundles, keys, mcp, memories, migrate, server
from proxy.commands import eval as eval_command


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


def cmd_tiny_model(args: argparse.Namespace) -> int:
    from memcubes.activation import write_tiny_model

    path = write_tiny_model(args.path, layers=args.layers, hidden=args.hidden, heads=args.heads, seed=args.seed)
    print(f"wrote a random {args.layers}-layer, {args.hidden}-wide Llama and its tokenizer to {path}")
    return 0


def _version() -> str:
    try:
        return importlib.metadata.version("memproxy")
    except importlib.metadata.PackageNotFoundError:  # run from a checkout that is not installed
        return "unknown"


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="memproxy", description="OpenAI-compatible LLM proxy with memory")
    parser.add_argument("--version", action="version", version=f"memproxy {_version()}")
    commands = parser.add_subparsers(dest="command", required=True)
    server.register(commands)

    dev = commands.add_parser("dev", help="developer tools").add_subparsers(dest="tool", required=True)
    backend = dev.add_parser("scripted-backend", help="run the scripted OpenAI-compatible test backend")
    backend.add_argument("--host", default="127.0.0.1", help="listen on this address (default 127.0.0.1)")
    backend.add_argument("--port", type=int, default=18080, help="listen on this port (default 18080)")
    backend.add_argument("--latency", type=float, default=0.0, help="seconds before each answer")
    backend.add_argument("--chunk-interval", type=float, default=0.0, help="seconds between stream chunks")
    backend.add_argument("--no-record", action="store_true", help="do not keep received requests (benchmarks)")
    backend.set_defaults(run=cmd_scripted_backend)

    tiny = dev.add_parser("tiny-model", help="write a small random Llama + tokenizer (no download)")
    tiny.add_argument("path", type=Path, help="the directory to write (a model_list entry's local.path)")
    tiny.add_argument("--layers", type=int, default=8, help="transformer layers (default 8)")
    tiny.add_argument("--hidden", type=int, default=512, help="hidden size (default 512)")
    tiny.add_argument("--heads", type=int, default=8, help="attention heads (default 8)")
    tiny.add_argument("--seed", type=int, default=0, help="random seed of the weights (default 0)")
    tiny.set_defaults(run=cmd_tiny_model)
    eval_command.register(commands)
    memories.register(commands)
    bundles.register(commands)
    keys.register(commands)
    mcp.register(commands)
    migrate.register(commands)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    code: int = args.run(args)
    return code


if __name__ == "__main__":
    raise SystemExit(main())
