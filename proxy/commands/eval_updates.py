"""``memproxy eval updates``: the knowledge-update corpus of ``proxy.eval.updates``.

    memproxy eval updates --corpus tests/fixtures/updates_corpus.txt [--mode heuristic llm]
        [--url URL --model M [--api-key KEY]] [--json OUT]

Without ``--url`` each mode runs against a proxy of its own whose model is the scripted backend
(in ``llm`` mode it plays the extraction model and a judge that names the replaced fact when it
is shown). With ``--url`` the proxy there is measured in its configured mode (``--mode`` names it).
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path
from typing import Any

_MODES = ("heuristic", "llm")


def register(benchmarks: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    """Add ``updates`` to ``memproxy eval``."""
    updates = benchmarks.add_parser("updates", help="knowledge updates: changes told in chat supersede the right fact")
    updates.add_argument("--corpus", type=Path, required=True, help="scenario file (tests/fixtures/updates_corpus.txt)")
    updates.add_argument("--mode", nargs="+", choices=_MODES, default=list(_MODES), help="extraction modes to run")
    updates.add_argument("--url", help="measure the proxy at this URL (its updates-<n> users are reset)")
    updates.add_argument("--model", default="scripted", help="--url: the model_name to chat with")
    updates.add_argument("--api-key", help="--url: the proxy's master key, if it has one")
    updates.add_argument("--json", type=Path, metavar="OUT", help="write the rates and each failure here")
    updates.set_defaults(run=cmd_updates)


def cmd_updates(args: argparse.Namespace) -> int:
    from proxy.eval.locomo import EvalError
    from proxy.eval.updates import evaluate_locally, evaluate_updates, load_corpus

    if args.url and len(args.mode) != 1:
        print("memproxy eval updates: with --url, --mode names the one mode that proxy runs", file=sys.stderr)
        return 2
    result: dict[str, Any] = {}
    try:
        scenarios = load_corpus(args.corpus)
        for mode in args.mode:
            if args.url:
                report = evaluate_updates(scenarios, url=args.url, model=args.model, mode=mode, api_key=args.api_key)
            else:
                report = evaluate_locally(scenarios, mode=mode)
            print(report.table(), flush=True)
            result[mode] = report.to_json()
    except EvalError as exc:
        print(f"memproxy eval updates: {exc}", file=sys.stderr)
        return 1
    if args.json:
        args.json.write_text(json.dumps(result, indent=2, ensure_ascii=False), encoding="utf-8")
    return 0
