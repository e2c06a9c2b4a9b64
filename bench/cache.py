"""``python -m bench cache``: what memory costs a provider's prompt cache over one long conversation.

A chat app resends the whole history every turn; a provider caches the prompt's longest prefix
shared with the conversation's previous request and prefills only the rest. The backend here
(``bench.prefix_cache``) computes exactly that on cl100k tokens and reports it the way OpenAI does
(``usage.prompt_tokens_details.cached_tokens``, read by the client after memproxy relayed it).

One user with a space of ``--cache-memories`` memories (three of them pinned) has a
``--cache-turns``-turn conversation; each turn asks about one of six favourite memories (so they
get hot and are promoted mid-conversation) and about another one at random. Variants:

- **off**: memory off (``X-Memory-Mode: off``), the floor;
- **memproxy**: the default: a stable block frozen for the conversation, the volatile block in the
  last user message;
- **system**: memories refreshed into the system prompt every turn, as most memory layers inject
  (retrieved through ``/v1/memories/search`` for the turn's message, sent with memory off);
- **no-freeze**: memproxy with ``scheduler.stable_refresh_minutes: 0`` (promotions reach the running
  conversation at once, as before the freeze).

Columns: cached and prefilled prompt tokens (totals over the conversation), the hit rate (cached /
prompt), the hit rate on the history (the prompt before the last user message, which is where a
cache can help: the last message is new every turn), and how many turns changed the stable prefix
(the forwarded messages up to the end of the stable block; the system message for off and system).
Targets (issue 19): memproxy changes its stable prefix in 0 turns, its history hit rate is within
5 points of off's, and its hit rate is at least 3x system's.

Heat is recorded in the background once a second, so each memory turn waits ``--cache-pause``
seconds (a person takes longer). memproxy runs in this process: only tokens are measured here.
"""

from __future__ import annotations

import argparse
import itertools
import json
import random
import tempfile
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import httpx

from bench.prefix_cache import PrefixCache, Served, build_prefix_cache_backend
from bench.stats import table
from memcubes.config import EmbedderSettings
from memcubes.embedder import Embedder, build_embedder
from proxy import Settings, build_app
from proxy.dev.serve_thread import ServerThread

USER = "mira"
SYSTEM = "You are Mira's personal assistant. Answer briefly and kindly."
SUBJECTS = [
    "cello", "bicycle", "garden", "cat", "kitchen", "car", "flat", "office", "marathon", "guitar",
    "camera", "boat", "piano", "bakery", "library", "tennis", "chess", "yoga", "climbing", "painting",
]  # fmt: skip
CITIES = ["Bergen", "Porto", "Vienna", "Lyon", "Krakow", "Turin", "Ghent", "Malmo", "Bilbao", "Tartu"]
MONTHS = ["January", "March", "May", "July", "September", "November"]
FAVOURITES = 6
PINNED = 3


@dataclass(frozen=True)
class Variant:
    name: str
    memory: bool  # memproxy injects and learns
    system_memories: bool = False
    scheduler: dict[str, Any] = field(default_factory=dict)


VARIANTS = [
    Variant("off", memory=False),
    Variant("memproxy", memory=True),
    Variant("system", memory=False, system_memories=True),
    Variant("no-freeze", memory=True, scheduler={"stable_refresh_minutes": 0}),
]


@dataclass
class Run:
    served: list[Served]
    prefix_changes: int
    volatile_tokens: list[int]

    def total(self, attribute: str) -> int:
        return sum(getattr(served, attribute) for served in self.served)

    @property
    def hit_rate(self) -> float:
        return 100 * self.total("cached_tokens") / max(1, self.total("prompt_tokens"))

    @property
    def history_hit_rate(self) -> float:
        return 100 * self.total("cached_history_tokens") / max(1, self.total("history_tokens"))


def add_arguments(parser: argparse.ArgumentParser) -> None:
    group = parser.add_argument_group("cache")
    group.add_argument("--cache-turns", type=int, default=50, help="turns of the conversation")
    group.add_argument("--cache-memories", type=int, default=200, help="memories in the user's space")
    group.add_argument("--cache-pause", type=float, default=1.1, help="seconds between memory turns")


def facts(count: int) -> list[tuple[str, str, str]]:
    """(subject, city, text): each fact is found by its subject and city together."""
    pairs = [(subject, city) for city in CITIES for subject in SUBJECTS][:count]
    return [
        (subject, city, f"Mira's {subject} plans involve {city}: she goes there in {MONTHS[i % len(MONTHS)]}.")
        for i, (subject, city) in enumerate(pairs)
    ]


def questions(space: list[tuple[str, str, str]], turns: int) -> list[str]:
    """Turn ``t`` asks about favourite ``t % 6`` and about one other memory at random."""
    chooser = random.Random(19)
    asked = []
    for turn in range(turns):
        favourite = space[PINNED + turn % FAVOURITES]
        other = space[chooser.randrange(PINNED + FAVOURITES, len(space))]
        asked.append(
            f"Remind me of my {favourite[0]} plans in {favourite[1]}, and what about my {other[0]} plans in {other[1]}?"
        )
    return asked


def stable_prefix(sent: list[dict[str, Any]], history: list[dict[str, Any]]) -> str:
    """The forwarded messages up to the end of the stable block (whatever its role): the system
    message plus what memproxy inserted (the volatile block goes into the last user message)."""
    return json.dumps(sent[: 1 + len(sent) - len(history)])


def run_variant(
    variant: Variant, *, embedder: Embedder, backend_url: str, cache: PrefixCache, args: argparse.Namespace, work: Path
) -> Run:
    settings = Settings.from_mapping(
        {
            "model_list": [
                {
                    "model_name": "cache",
                    "litellm_params": {"model": "openai/cache", "api_base": f"{backend_url}/v1", "api_key": "x"},
                }
            ],
            "memory": {"data_dir": str(work / variant.name), "scheduler": variant.scheduler},
        },
        env={},
    )
    space = facts(args.cache_memories)
    cache.reset()
    with (
        ServerThread(build_app(settings, embedder=embedder)) as proxy,
        httpx.Client(base_url=proxy.url, timeout=120) as http,
    ):
        added = http.post("/v1/memories", json={"user": USER, "sync": True, "facts": [f[2] for f in space]})
        added.raise_for_status()
        for result in added.json()["results"][:PINNED]:
            http.patch(f"/v1/memories/{result['id']}", json={"pinned": True}).raise_for_status()
        history: list[dict[str, Any]] = [{"role": "system", "content": SYSTEM}]
        prefixes: list[str] = []
        volatile: list[int] = []
        for question in questions(space, args.cache_turns):
            history.append({"role": "user", "content": question})
            messages = history
            if variant.system_memories:
                found = http.post("/v1/memories/search", json={"user": USER, "query": question}).json()["results"]
                known = "\n".join(f"- {item['text']}" for item in found)
                messages = [
                    {"role": "system", "content": f"{SYSTEM}\n\nWhat you know about Mira:\n{known}"},
                    *history[1:],
                ]
            headers = {} if variant.memory else {"x-memory-mode": "off"}
            response = http.post(
                "/v1/chat/completions", headers=headers, json={"model": "cache", "user": USER, "messages": messages}
            )
            response.raise_for_status()
            reported = response.json()["usage"]["prompt_tokens_details"]["cached_tokens"]
            if reported != cache.served[-1].cached_tokens:
                raise RuntimeError(
                    f"cached_tokens did not pass through: sent {cache.served[-1].cached_tokens}, got {reported}"
                )
            volatile.append(int(response.headers.get("x-memory-volatile-tokens", "0")))
            prefixes.append(stable_prefix(cache.served[-1].messages, messages))
            history.append(response.json()["choices"][0]["message"])
            if variant.memory:
                time.sleep(args.cache_pause)
    changes = sum(1 for before, after in itertools.pairwise(prefixes) if before != after)
    return Run(served=list(cache.served), prefix_changes=changes, volatile_tokens=volatile)


def main(args: argparse.Namespace) -> None:
    print(
        f"one {args.cache_turns}-turn conversation, {args.cache_memories} memories ({PINNED} pinned), "
        f"exact cl100k prefix cache per conversation; memory turns {args.cache_pause:.1f} s apart",
        flush=True,
    )
    embedder = build_embedder(EmbedderSettings())
    cache = PrefixCache()
    runs: dict[str, Run] = {}
    try:
        with ServerThread(build_prefix_cache_backend(cache)) as backend, tempfile.TemporaryDirectory() as work:
            for variant in VARIANTS:
                started = time.perf_counter()
                runs[variant.name] = run_variant(
                    variant, embedder=embedder, backend_url=backend.url, cache=cache, args=args, work=Path(work)
                )
                print(f"  {variant.name}: {time.perf_counter() - started:.0f} s", flush=True)
    finally:
        embedder.close()
    names = list(runs)
    per_turn = [
        [turn + 1, *(value for name in names for value in _turn_cells(runs[name].served[turn]))]
        for turn in range(args.cache_turns)
    ]
    print("\nper turn: cached / prefilled prompt tokens")
    print(table(["turn", *(f"{name} {what}" for name in names for what in ("cached", "prefill"))], per_turn))
    rows = [
        [
            name,
            run.total("prompt_tokens"),
            run.total("cached_tokens"),
            run.total("prefill_tokens"),
            run.hit_rate,
            run.history_hit_rate,
            f"{run.prefix_changes} / {args.cache_turns - 1}",
            sum(run.volatile_tokens) / max(1, len(run.volatile_tokens)),
        ]
        for name, run in runs.items()
    ]
    print("\ntotals")
    headers = [
        "variant",
        "prompt",
        "cached",
        "prefill",
        "hit %",
        "history hit %",
        "prefix changes",
        "volatile tok/turn",
    ]
    print(table(headers, rows))
    _print_targets(runs)


def _turn_cells(served: Served) -> tuple[int, int]:
    return served.cached_tokens, served.prefill_tokens


def _print_targets(runs: dict[str, Run]) -> None:
    memproxy, off, system = runs["memproxy"], runs["off"], runs["system"]
    checks = [
        ("memproxy's stable prefix never changed", memproxy.prefix_changes == 0),
        (
            f"history hit rate within 5 points of off ({memproxy.history_hit_rate:.1f} vs {off.history_hit_rate:.1f})",
            off.history_hit_rate - memproxy.history_hit_rate <= 5,
        ),
        (
            f"hit rate >= 3x system's ({memproxy.hit_rate:.1f} vs {system.hit_rate:.1f})",
            memproxy.hit_rate >= 3 * system.hit_rate,
        ),
    ]
    print()
    for text, ok in checks:
        print(f"{'PASS' if ok else 'FAIL'}  {text}")
