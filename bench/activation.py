"""Time to first token through memproxy's HTTP endpoint, with and without activation memory.

A random Llama (8 layers, 512 wide; ``memproxy dev tiny-model``) is served in-process by
``memproxy serve``. Each stable block (512, 2048 and 4096 model tokens of pinned memories) sits
after a short system prompt; the user turn is about 32 tokens. "off" sends ``X-Memory-KV: off``
(the whole prompt is prefilled), "on" reuses the KV cache of system prompt + stable block, built
by the first request ("build": that request's time to first token, which includes storing the
cache; "cache MB": its size on disk). Rows are measured in interleaved rounds in one run.
"""

from __future__ import annotations

import argparse
import json
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import httpx

from bench.servers import free_port, server
from bench.stats import percentile, table
from memcubes.layout import STABLE_HEADING, render_block

SYSTEM = "You are a helpful assistant. Answer briefly."
TURN = "Given everything you remember about me, which of my hobbies should I pick up again this winter?"
FACT = "The user {n} spent a weekend in a small mountain village and liked the bakery there, note {n}."


def _tokens(tokenizer: Any, text: str) -> int:
    return len(tokenizer.encode(text, add_special_tokens=False))


def _block_tokens(tokenizer: Any, texts: list[str]) -> int:
    return _tokens(tokenizer, render_block(texts, heading=STABLE_HEADING))


def _seed_stable_block(http: httpx.Client, user: str, target: int, tokenizer: Any) -> int:
    """Pinned memories until the rendered stable block holds about ``target`` model tokens."""
    texts: list[str] = []
    number = 0
    while True:
        batch = [FACT.format(n=number + i) for i in range(16)]
        number += len(batch)
        added = http.post("/v1/memories", json={"user": user, "facts": batch, "mode": "raw", "sync": True}).json()
        for change in added["results"]:
            http.patch(f"/v1/memories/{change['id']}", json={"pinned": True})
        found = http.post("/v1/memories/search", json={"user": user, "query": "bakery"}).json()["results"]
        texts = [r["text"] for r in found if r["block"] == "stable"]
        if _block_tokens(tokenizer, texts) >= target:
            break
    while texts and _block_tokens(tokenizer, texts) > target:  # the excess goes: unpinned, it would
        result = http.post("/v1/memories/search", json={"user": user, "query": "bakery"}).json()["results"]
        last = [r for r in result if r["block"] == "stable"][-1]  # be injected next to the turn
        http.delete(f"/v1/memories/{last['id']}", params={"purge": "true"})
        texts = texts[:-1]
    found = http.post("/v1/memories/search", json={"user": user, "query": TURN}).json()["results"]
    assert all(r["block"] == "stable" for r in found), "only the stable block may be injected"
    return _block_tokens(tokenizer, texts)


def _ttft(http: httpx.Client, user: str, *, kv: str) -> tuple[float, int]:
    body = {
        "model": "tiny",
        "user": user,
        "stream": True,
        "max_tokens": 2,
        "temperature": 0,
        "messages": [{"role": "system", "content": SYSTEM}, {"role": "user", "content": TURN}],
    }
    started = time.perf_counter()
    with http.stream(
        "POST", "/v1/chat/completions", json=body, headers={"X-Memory-KV": kv, "X-Memory-Mode": "read"}
    ) as response:
        lines = response.iter_lines()
        for line in lines:
            if line.startswith("data: {") and '"content"' in line and '"content":""' not in line:
                first = time.perf_counter() - started
                break
        else:
            raise RuntimeError(f"no token streamed: {response.status_code}")
        reused = int(response.headers.get("x-memory-kv-reused-tokens", "0"))
        for _ in lines:
            pass
    return first, reused


def run(args: argparse.Namespace) -> str:
    from transformers import AutoTokenizer

    from memcubes.activation import write_tiny_model

    with tempfile.TemporaryDirectory() as tmp:
        work = Path(tmp)
        model = write_tiny_model(work / "tiny", layers=args.kv_layers, hidden=args.kv_hidden, max_positions=8192)
        tokenizer = AutoTokenizer.from_pretrained(str(model))
        port = free_port()
        config = {
            "model_list": [
                {"model_name": "tiny", "local": {"path": str(model), "max_new_tokens": 4, "kv_cache_mb": 4096}}
            ],
            "memory": {
                "data_dir": str(work / "data"),
                "extraction": {"mode": "raw"},
                "retrieval": {"token_budget": 100_000, "top_k": 200},
                "scheduler": {"stable_share": 1.0},
            },
            "server": {"host": "127.0.0.1", "port": port, "log_level": "warning"},
        }
        (work / "memproxy.yaml").write_text(json.dumps(config))
        command = [sys.executable, "-m", "proxy.cli", "serve", "--config", str(work / "memproxy.yaml")]
        rows: list[list[object]] = []
        with (
            server("memproxy", command, port=port, ready_path="/readyz", log=work / "memproxy.log"),
            httpx.Client(base_url=f"http://127.0.0.1:{port}", timeout=600) as http,
        ):
            sizes = {size: _seed_stable_block(http, f"kv-{size}", size, tokenizer) for size in args.kv_sizes}
            build = {}
            for size in sizes:  # the first request with reuse on builds and stores the cache
                build[size], _ = _ttft(http, f"kv-{size}", kv="on")
            times: dict[tuple[int, str], list[float]] = {}
            reused: dict[int, int] = {}
            for _ in range(args.kv_rounds):
                for size in sizes:
                    for kv in ("off", "on"):
                        seconds, count = _ttft(http, f"kv-{size}", kv=kv)
                        times.setdefault((size, kv), []).append(seconds)
                        if kv == "on":
                            reused[size] = count
            cache_mb = {
                size: sum(p.stat().st_size for p in (work / "data" / "activation" / "tiny").glob("*.safetensors"))
                for size in sizes
            }
            for size, block in sizes.items():
                off = percentile(times[(size, "off")], 50) * 1e3
                on = percentile(times[(size, "on")], 50) * 1e3
                rows.append(
                    [
                        size,
                        block,
                        reused[size],
                        f"{off:.1f}",
                        f"{on:.1f}",
                        f"{off / on:.1f}x",
                        f"{build[size] * 1e3:.0f}",
                    ]
                )
    header = (
        f"activation memory: random Llama {args.kv_layers} layers x {args.kv_hidden} wide on CPU, "
        f"{args.kv_rounds} rounds, TTFT p50 through HTTP (stream, first token); cache files in total "
        f"{max(cache_mb.values()) / 2**20:.0f} MB"
    )
    return (
        header
        + "\n"
        + table(["stable", "block tok", "reused tok", "TTFT off ms", "TTFT on ms", "speed-up", "build ms"], rows)
    )


def add_arguments(parser: argparse.ArgumentParser) -> None:
    group = parser.add_argument_group("activation")
    group.add_argument("--kv-sizes", type=int, nargs="+", default=[512, 2048, 4096], help="stable block tokens")
    group.add_argument("--kv-rounds", type=int, default=5, help="interleaved off/on rounds per size")
    group.add_argument("--kv-layers", type=int, default=8, help="layers of the random model")
    group.add_argument("--kv-hidden", type=int, default=512, help="width of the random model")


def main(args: argparse.Namespace) -> None:
    print(run(args), flush=True)
