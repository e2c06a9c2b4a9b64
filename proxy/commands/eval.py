"""``memproxy eval locomo``: the LOCOMO benchmark of ``proxy.eval`` from the command line.

    memproxy eval locomo --data locomo10.json [--budget 1000] [--top-k 50] [--url URL] [--api-key KEY]
        [--config FILE] [--samples ID ...] [--max-sessions N] [--max-questions N] [--no-captions]
        [--json OUT] [--qa --model M --judge J [--concurrency 4]]

Without ``--url`` it serves a proxy of its own on a temporary data dir (models and retrieval
settings from ``--config`` when given); with it, it measures the proxy that runs there.
"""

from __future__ import annotations

import argparse
import contextlib
import json
import sys
import tempfile
from pathlib import Path
from typing import Any

from proxy.commands import eval_updates
from proxy.eval.locomo import HOLDOUT


def register(subparsers: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    """Add ``eval`` (and its ``locomo`` benchmark) to memproxy's command line."""
    benchmarks = subparsers.add_parser("eval", help="measure memory quality on a benchmark")
    kinds = benchmarks.add_subparsers(dest="benchmark", required=True)
    eval_updates.register(kinds)
    locomo = kinds.add_parser(
        "locomo", help="LOCOMO: evidence recall within a token budget vs baselines, optional LLM-judged QA"
    )
    locomo.add_argument("--data", type=Path, required=True, help="LOCOMO JSON (locomo10.json format)")
    locomo.add_argument("--budget", type=int, default=1000, help="cl100k tokens of memories per question")
    locomo.add_argument("--top-k", type=int, default=50, help="most memories per search")
    locomo.add_argument("--url", help="measure the proxy at this URL (its locomo-<sample> users are reset)")
    locomo.add_argument("--api-key", help="the proxy's master key, if it has one")
    locomo.add_argument("--config", type=Path, help="settings of the proxy started here (models for --qa)")
    locomo.add_argument("--samples", nargs="+", metavar="ID", help="only these sample ids")
    locomo.add_argument(
        "--holdout", default=HOLDOUT, metavar="ID", help=f"also report this sample alone (default {HOLDOUT})"
    )
    locomo.add_argument("--max-sessions", type=int, help="only the first N sessions of each conversation")
    locomo.add_argument("--max-questions", type=int, help="only the first N questions of each sample")
    locomo.add_argument("--no-captions", action="store_true", help="leave out the captions of shared photos")
    locomo.add_argument("--json", type=Path, metavar="OUT", help="write every number (and each question) here")
    locomo.add_argument("--qa", action="store_true", help="also run the LLM-judged QA protocol (needs models)")
    locomo.add_argument("--model", help="--qa: the answering model (a model_name of the proxy)")
    locomo.add_argument("--judge", help="--qa: the judging model")
    locomo.add_argument("--concurrency", type=int, default=4, help="--qa: questions in flight")
    locomo.set_defaults(run=cmd_locomo)


def cmd_locomo(args: argparse.Namespace) -> int:
    from memcubes.config import EmbedderSettings
    from memcubes.embedder import build_embedder
    from proxy.config import ConfigError, Settings
    from proxy.eval.locomo import EvalError, evaluate_retrieval, load_samples, local_proxy
    from proxy.eval.qa import qa_items, run_qa

    if args.qa and not (args.model and args.judge):
        print("memproxy eval: --qa needs --model and --judge", file=sys.stderr)
        return 2
    if args.budget < 0 or args.top_k < 1 or args.top_k > 200:
        print("memproxy eval: --budget must be >= 0 and --top-k between 1 and 200", file=sys.stderr)
        return 2
    try:
        samples = load_samples(
            args.data,
            sample_ids=args.samples,
            max_sessions=args.max_sessions,
            max_questions=args.max_questions,
            captions=not args.no_captions,
        )
        settings = Settings.from_yaml(args.config) if args.config else Settings()
    except (EvalError, ConfigError) as exc:
        print(f"memproxy eval: {exc}", file=sys.stderr)
        return 2
    api_key = args.api_key or (None if args.url else settings.general_settings.master_key)
    result: dict[str, Any] = {}
    with tempfile.TemporaryDirectory(prefix="memproxy-eval-models-") as models:
        # The baselines' dense model; the proxy started here shares it when it uses the same one.
        embedder = build_embedder(EmbedderSettings(), cache_dir=Path(models))
        shared = embedder if settings.memory.embedder == EmbedderSettings() else None
        try:
            with contextlib.ExitStack() as stack:
                url = args.url or stack.enter_context(
                    local_proxy(settings, budget=args.budget, top_k=args.top_k, embedder=shared)
                )
                report = evaluate_retrieval(
                    samples,
                    url=url,
                    embedder=embedder,
                    budget=args.budget,
                    top_k=args.top_k,
                    api_key=api_key,
                    holdout=args.holdout,
                )
                print(report.table(), flush=True)
                result["retrieval"] = report.to_json()
                if args.qa:
                    qa = run_qa(
                        qa_items(samples),
                        url=url,
                        model=args.model,
                        judge=args.judge,
                        api_key=api_key,
                        concurrency=args.concurrency,
                    )
                    print(f"\n{qa.table()}", flush=True)
                    result["qa"] = qa.to_json()
        except EvalError as exc:
            print(f"memproxy eval: {exc}", file=sys.stderr)
            return 1
        finally:
            embedder.close()
    if args.json:
        args.json.write_text(json.dumps(result, indent=2, ensure_ascii=False), encoding="utf-8")
    return 0
