"""Time to first token with and without activation (KV) memory reuse.

A random Llama (8 layers, 512 wide by default) is written to a temporary folder; the prompt is a
system message of about 2048 tokens (the cacheable memory block) plus a short user turn of about
32 tokens. Cold: the whole prompt is prefilled. Warm: the prefix cache was built ahead of time
(``prefill_prefix``) and only the turn is prefilled. Disk: as warm, but the store was just
re-opened, so the cache is read from its safetensors file first.

    HF_HUB_OFFLINE=1 .venv/bin/python bench/kv_prefill.py
"""

from __future__ import annotations

import argparse
import os
import statistics
import tempfile
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

os.environ.setdefault("HF_HUB_OFFLINE", "1")

import torch

from memcubes.activation import ActivationStore, EncodedPrompt, LocalEngine, write_tiny_model

_FILLER = (
    "The user prefers green tea in the morning and strong coffee after lunch. Alice lives in Paris "
    "with her two cats and works as a software engineer. The marathon is in October. "
)
_TURN = "Given everything you know about me, what should I drink before my run?"


def _messages(words: int) -> list[dict[str, Any]]:
    memory = " ".join((_FILLER * (words // 20 + 1)).split()[:words])
    return [{"role": "system", "content": memory}, {"role": "user", "content": _TURN}]


def _prompt_with_prefix(engine: LocalEngine, prefix_tokens: int) -> tuple[list[dict[str, Any]], EncodedPrompt]:
    """The messages whose system prefix is closest to ``prefix_tokens`` tokens (from below)."""
    low, high = 1, prefix_tokens
    while low < high:
        mid = (low + high + 1) // 2
        if engine.encode(_messages(mid), prefix_messages=1).prefix_len <= prefix_tokens:
            low = mid
        else:
            high = mid - 1
    messages = _messages(low)
    return messages, engine.encode(messages, prefix_messages=1)


def _time_to_first_token(engine: LocalEngine, prompt: EncodedPrompt, *, reuse: bool) -> tuple[float, int]:
    started = time.perf_counter()
    reused = 0
    for event in engine.generate(prompt, max_new_tokens=1, temperature=0.0, reuse_cache=reuse):
        reused = getattr(event, "reused_tokens", reused)
    return time.perf_counter() - started, reused


def _median(run: Callable[[], tuple[float, int]], repeats: int) -> tuple[float, int]:
    results = [run() for _ in range(repeats)]
    return statistics.median(r[0] for r in results), results[-1][1]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--layers", type=int, default=8)
    parser.add_argument("--hidden", type=int, default=512)
    parser.add_argument("--heads", type=int, default=8)
    parser.add_argument("--prefix-tokens", type=int, default=2048)
    parser.add_argument("--repeats", type=int, default=3)
    args = parser.parse_args()

    with tempfile.TemporaryDirectory() as tmp:
        root = Path(tmp)
        started = time.perf_counter()
        model_dir = write_tiny_model(root / "model", layers=args.layers, hidden=args.hidden, heads=args.heads)
        print(f"wrote {args.layers}x{args.hidden} model in {time.perf_counter() - started:.2f} s")
        engine = LocalEngine.load(model_dir, activation_store=ActivationStore(root / "kv"))
        messages, prompt = _prompt_with_prefix(engine, args.prefix_tokens)
        turn = len(prompt.token_ids) - prompt.prefix_len
        threads = torch.get_num_threads()
        print(f"prompt: {prompt.prefix_len} prefix tokens + {turn} turn tokens; torch threads {threads}")

        _time_to_first_token(engine, prompt, reuse=False)  # warm-up
        cold, _ = _median(lambda: _time_to_first_token(engine, prompt, reuse=False), args.repeats)

        started = time.perf_counter()
        engine.prefill_prefix(messages[:1])
        build = time.perf_counter() - started
        warm, reused = _median(lambda: _time_to_first_token(engine, prompt, reuse=True), args.repeats)

        disk_runs = []
        for _ in range(args.repeats):
            engine.activation_store = ActivationStore(root / "kv")  # RAM empty: read from disk
            disk_runs.append(_time_to_first_token(engine, prompt, reuse=True)[0])
        disk = statistics.median(disk_runs)

        cold_logits = engine.next_token_logits(prompt, reuse_cache=False)
        warm_logits = engine.next_token_logits(prompt, reuse_cache=True)
        delta = float((cold_logits - warm_logits).abs().max())

    print(f"prefix cache build (prefill_prefix): {build:.3f} s")
    print(f"time to first token, no reuse:   {cold:.3f} s")
    print(f"time to first token, RAM hit:    {warm:.3f} s  (reused {reused} tokens)")
    print(f"time to first token, disk hit:   {disk:.3f} s")
    print(f"speed-up (RAM hit): {cold / warm:.1f}x   (disk hit): {cold / disk:.1f}x")
    print(f"max |logits difference|: {delta:.2e}")


if __name__ == "__main__":
    main()
