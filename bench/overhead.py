"""Side by side: what a proxy adds over calling the backend directly, memproxy against LiteLLM.

One run, one backend with a fixed latency and one fixed answer (``bench.backend``, the scripted
backend; its own process), one load generator (``bench.load``), and the targets measured in
interleaved rounds (the order rotates every round) within each cell (concurrency x json/stream),
after a warm-up of every target:

- ``direct``: the backend itself;
- ``litellm``: LiteLLM proxy (``litellm[proxy]`` in ``bench/.venv-litellm``), same model_list,
  one worker, no database or callbacks: a pure passthrough;
- ``memory off``: memproxy with ``X-Memory-Mode: off`` (a passthrough too);
- ``memory off, user key`` (only with ``--with-key``): the same with a key for the bench's users
  (``user_prefix``) instead of the master key: the difference is what checking the key costs;
- ``memory read`` (only with ``--with-read``): memproxy retrieving and injecting, no write-back;
- ``memory on``: memproxy with memory. Each cell has its own space, seeded with 1,000 memories;
  every request retrieves from it and injects (hot memories are kept out of the stable block so
  that retrieval is never skipped), and every user turn states a new fact, so every request is
  also journalled, distilled, embedded, reconciled and indexed (write-back);
- ``memory on, N workers`` (only with ``--workers N``): the same with ``memproxy serve --workers N``
  on a data dir of its own, the vector index a ``chroma run`` server the workers share (its RSS
  column is the supervising process's only);
- ``memory on, N replicas`` (only with ``--replicas N --store postgresql``): the same with N
  ``memproxy serve`` processes, each with a data dir of its own, sharing one PostgreSQL database
  and a ``chroma run`` server, the load generator sending its requests to each in turn (a
  round-robin load balancer); compared with ``memory on``, one replica on the same PostgreSQL
  server (a database of its own). ``--store postgresql`` starts a throwaway PostgreSQL
  (``bench.store``) and puts ``memory on`` (and the workers) on it too; its RSS column is the
  first replica's;
- ``messages on``, ``responses on``: memory on through ``/v1/messages`` and ``/v1/responses``
  (translated to chat for the backend; ``--surfaces`` picks them), in the same space;
  ``responses-native on``: ``/v1/responses`` relayed to the backend's own ``/v1/responses``
  (``responses_api: native``; each response is also kept in SQLite for ``previous_response_id``).

How to read the table: *n* is the number of successful requests measured (a target gets at most
``--max-seconds`` per round, so a slow one has fewer); *p50*/*p99* are whole-response latencies;
*+p50*/*+p99* what the target adds to ``direct``'s p50/p99 in the same cell; *ttft* the time to
the first content token (streams); *req/s* completed requests per second of wall time, for
``memory on`` including the time write-back needed to catch up after the last response (a
sustained rate); *errors* failed requests (non-200, broken streams, error events, and for
memproxy an ``x-memory-status`` other than the mode asked for, e.g. ``degraded`` when retrieval
timed out), listed by kind below the table; *mem ms* memproxy's own ``x-memory-overhead-ms``
(p50 of the time spent on memory before forwarding); *RSS* the proxy process's peak resident
memory during the cell. All times in ms. Only differences measured in the same cell mean
anything on a shared machine; the target lines at the end compare exactly those.
"""

from __future__ import annotations

import argparse
import asyncio
import os
import tempfile
import time
from collections.abc import Sequence
from contextlib import AsyncExitStack, ExitStack
from dataclasses import dataclass
from pathlib import Path

import aiohttp

from bench import memory_api, workload
from bench.litellm_env import LITELLM_VERSION, ensure_litellm
from bench.load import Sample, Target, run_load, session
from bench.machine import cpu_description
from bench.servers import Server, chroma_server, litellm_proxy, memproxy, scripted_backend
from bench.stats import percentile, table
from bench.store import databases
from bench.wires import WIRES

DIRECT, LITELLM, OFF, READ, ON = "direct", "litellm", "memory off", "memory read", "memory on"
KEYED = "memory off, user key"
KEY_CHECK_TARGET_MS = 1.0
ADDED_P50_TARGET_MS = 10.0
SURFACE_GAP_MS = 2.0  # /v1/messages and /v1/responses with memory against chat completions with memory
WORKERS_SPEEDUP = 1.4  # memory-on throughput of --workers 2 against one worker, same cell
REPLICAS_SPEEDUP = 1.4  # memory-on throughput of --replicas 2 against one replica, same cell


@dataclass(frozen=True)
class Cell:
    stream: bool
    concurrency: int

    @property
    def mode(self) -> str:
        return "stream" if self.stream else "json"

    @property
    def user(self) -> str:
        return f"bench-{self.mode}-c{self.concurrency}"

    @property
    def seed(self) -> int:
        """Where this cell's request texts start: no two cells (nor targets, nor rounds) share a
        text, or memproxy would answer a later one's query embedding from its cache."""
        return 1000 * self.concurrency + (500 if self.stream else 0)


@dataclass(frozen=True)
class Servers:
    backend: Server
    memproxy: Server
    litellm: Server | None
    user_key: str | None = None
    workers: Server | None = None  # memproxy serve --workers N (``--workers``)
    worker_count: int = 1
    replicas: tuple[Server, ...] = ()  # memproxy serve processes sharing PostgreSQL (``--replicas``)

    @property
    def workers_target(self) -> str:
        return f"{ON}, {self.worker_count} workers"

    @property
    def replicas_target(self) -> str:
        return f"{ON}, {len(self.replicas)} replicas"


def targets(
    servers: Servers, cell: Cell, client: aiohttp.ClientSession, *, with_read: bool, surfaces: Sequence[str] = ()
) -> list[Target]:
    chat = "/v1/chat/completions"
    found = [Target(DIRECT, servers.backend.url + chat)]
    if servers.litellm is not None:
        found.append(Target(LITELLM, servers.litellm.url + chat, server=servers.litellm))
    proxy = servers.memproxy
    found.append(Target(OFF, proxy.url + chat, {"X-Memory-Mode": "off"}, server=proxy, memory_status="off"))
    if servers.user_key is not None:
        keyed = {"X-Memory-Mode": "off", "authorization": f"Bearer {servers.user_key}"}
        found.append(Target(KEYED, proxy.url + chat, keyed, server=proxy, memory_status="off"))
    if with_read:  # retrieval and injection without write-back: what write-back costs, by difference
        headers = {"X-Memory-User": cell.user, "X-Memory-Mode": "read"}
        found.append(Target(READ, proxy.url + chat, headers, server=proxy, memory_status="ok"))
    settle = memory_api.settle(client, proxy.url)
    on = Target(ON, proxy.url + chat, {"X-Memory-User": cell.user}, proxy, settle, memory_status="ok")
    others = [
        Target(
            f"{name} on", proxy.url + WIRES[name].path, {"X-Memory-User": cell.user}, proxy, settle, "ok", WIRES[name]
        )
        for name in surfaces
        if name != "chat"
    ]
    if servers.workers is not None:
        url = servers.workers.url
        others.append(
            Target(
                servers.workers_target,
                url + chat,
                {"X-Memory-User": cell.user},
                servers.workers,
                memory_api.settle(client, url),
                memory_status="ok",
            )
        )
    if servers.replicas:
        first, *rest = servers.replicas
        others.append(
            Target(
                servers.replicas_target,
                first.url + chat,
                {"X-Memory-User": cell.user},
                first,
                memory_api.settle_all(client, [r.url for r in servers.replicas]),
                memory_status="ok",
                replicas=tuple(r.url + chat for r in rest),
            )
        )
    return [*found, on, *others]


def requests_for(args: argparse.Namespace, concurrency: int) -> int:
    count: int = args.requests if concurrency == 1 else args.requests_loaded
    return count


async def measure(servers: Servers, cell: Cell, args: argparse.Namespace) -> dict[str, Sample]:
    """Warm every target up, then ``rounds`` interleaved rounds; per-target samples of the cell."""
    per_round = max(cell.concurrency, requests_for(args, cell.concurrency) // args.rounds)
    async with AsyncExitStack() as stack:
        control = await stack.enter_async_context(aiohttp.ClientSession())
        cell_targets = targets(servers, cell, control, with_read=args.with_read, surfaces=args.surfaces)
        pools = {t.name: await stack.enter_async_context(session(cell.concurrency)) for t in cell_targets}
        results = {target.name: Sample() for target in cell_targets}
        for index, target in enumerate(cell_targets):  # connections, a space's vectors in RAM: warm
            bodies = workload.chat_bodies(user="bench-warmup", seed=100_000 + cell.seed + index)
            retrieves = target.name in (READ, ON)  # the space is new to it: let memproxy settle in
            await run_load(
                pools[target.name],
                target,
                bodies,
                requests=1 << 30,
                concurrency=cell.concurrency,
                stream=cell.stream,
                seconds=args.warmup_seconds if retrieves else args.warmup_seconds / 4,
            )
        for number in range(args.rounds):
            order = cell_targets[number % len(cell_targets) :] + cell_targets[: number % len(cell_targets)]
            for target in order:
                # Requests from the same generator, never the same text twice (see Cell.seed).
                index = cell_targets.index(target)
                bodies = workload.chat_bodies(user="bench-user", seed=cell.seed + 10 * number + index)
                sample = await run_load(
                    pools[target.name],
                    target,
                    bodies,
                    requests=per_round,
                    concurrency=cell.concurrency,
                    stream=cell.stream,
                    seconds=args.max_seconds,
                )
                results[target.name].extend(sample)
    return results


def ms(values: Sequence[float], q: float) -> float:
    return percentile(values, q) * 1e3


def rows(cell: Cell, results: dict[str, Sample]) -> list[list[object]]:
    direct = results[DIRECT]
    out: list[list[object]] = []
    for name, sample in results.items():
        p50, p99 = ms(sample.latencies, 50), ms(sample.latencies, 99)
        added = name != DIRECT
        out.append(
            [
                cell.mode,
                cell.concurrency,
                name,
                sample.completed,
                p50,
                p99,
                p50 - ms(direct.latencies, 50) if added else None,
                p99 - ms(direct.latencies, 99) if added else None,
                ms(sample.ttfts, 50) if cell.stream else None,
                ms(sample.ttfts, 99) if cell.stream else None,
                sample.rps,
                sample.error_count,
                percentile(sample.memory_ms, 50) if sample.memory_ms else None,
                sample.peak_rss_mib if added else None,
            ]
        )
    return out


def verdicts(measured: list[tuple[Cell, dict[str, Sample]]]) -> list[str]:
    """The issue's targets, each checked against numbers from the same cell."""
    lines = []
    for cell, results in measured:
        direct, on = results[DIRECT], results[ON]
        added = {
            name: (ms(s.latencies, 50) - ms(direct.latencies, 50), ms(s.latencies, 99) - ms(direct.latencies, 99))
            for name, s in results.items()
        }
        where = f"{cell.mode} c={cell.concurrency}"
        if KEYED in results:
            for q, index in (("p50", 0), ("p99", 1)):
                cost = added[KEYED][index] - added[OFF][index]
                ok = cost <= KEY_CHECK_TARGET_MS
                lines.append(
                    f"{where}: a user key instead of the master key adds {q} {cost:.2f} ms <= "
                    f"{KEY_CHECK_TARGET_MS:.0f} ms: {'met' if ok else 'MISSED'}"
                )
        if cell.concurrency == 1:
            ok = added[ON][0] <= ADDED_P50_TARGET_MS
            lines.append(
                f"{where}: memory on adds p50 {added[ON][0]:.1f} ms <= {ADDED_P50_TARGET_MS:.0f} ms: "
                f"{'met' if ok else 'MISSED'}"
            )
        for name in (n for n in results if n.endswith((" workers", " replicas"))):
            one, target = ("worker", WORKERS_SPEEDUP) if name.endswith(" workers") else ("replica", REPLICAS_SPEEDUP)
            ratio = results[name].rps / on.rps if on.rps else float("nan")
            ok = ratio >= target
            lines.append(
                f"{where}: {name} {results[name].rps:.0f} req/s = {ratio:.2f}x one {one}'s {on.rps:.0f} "
                f">= {target}x: {'met' if ok else 'MISSED'}"
            )
            if LITELLM in results:
                ok = results[name].rps >= results[LITELLM].rps
                lines.append(
                    f"{where}: {name} {results[name].rps:.0f} req/s >= litellm's {results[LITELLM].rps:.0f}: "
                    f"{'met' if ok else 'MISSED'}"
                )
        for name in (n for n in results if n.endswith(" on") and n != ON):
            gap = added[name][0] - added[ON][0]
            ok = gap <= SURFACE_GAP_MS
            lines.append(
                f"{where}: {name} adds p50 {added[name][0]:.1f} ms, within {SURFACE_GAP_MS:.0f} ms of chat's "
                f"{added[ON][0]:.1f} ms: {'met' if ok else 'MISSED'}"
            )
        if LITELLM in results:
            lite = results[LITELLM]
            for q, index in (("p50", 0), ("p99", 1)):
                ok = added[ON][index] <= added[LITELLM][index]
                lines.append(
                    f"{where}: memory on adds {q} {added[ON][index]:.1f} ms <= litellm's "
                    f"{added[LITELLM][index]:.1f} ms: {'met' if ok else 'MISSED'}"
                )
            ok = on.rps >= lite.rps
            lines.append(
                f"{where}: memory on {on.rps:.0f} req/s >= litellm's {lite.rps:.0f} req/s: {'met' if ok else 'MISSED'}"
            )
    return lines


def error_notes(measured: list[tuple[Cell, dict[str, Sample]]]) -> list[str]:
    return [
        f"errors {cell.mode} c={cell.concurrency} {name}: "
        + ", ".join(f"{count}x {kind}" for kind, count in sample.errors.most_common())
        for cell, results in measured
        for name, sample in results.items()
        if sample.errors
    ]


async def run(args: argparse.Namespace) -> str:
    cells = [Cell(mode == "stream", c) for c in args.concurrency for mode in args.modes]
    load_before = os.getloadavg()[0]
    litellm = None if args.no_litellm else (args.litellm or ensure_litellm())
    if args.replicas > 1 and args.store != "postgresql":
        raise SystemExit("bench overhead: --replicas needs --store postgresql (replicas share a database)")
    with tempfile.TemporaryDirectory(prefix="memproxy-bench-") as tmp, ExitStack() as stack:
        work = Path(tmp)
        store = stack.enter_context(databases(args.store))  # a database of its own for each target
        backend = stack.enter_context(scripted_backend(latency=args.latency, workdir=work))
        proxy = stack.enter_context(memproxy(backend_url=backend.url, workdir=work, database_url=store.url()))
        workers: Server | None = None
        replicas: tuple[Server, ...] = ()
        chroma = stack.enter_context(chroma_server(workdir=work)) if args.workers > 1 or args.replicas > 1 else None
        if args.workers > 1:
            workers = stack.enter_context(
                memproxy(
                    backend_url=backend.url, workdir=work, workers=args.workers, chroma=chroma, database_url=store.url()
                )
            )
        if args.replicas > 1:
            shared = store.url()
            replicas = tuple(
                stack.enter_context(
                    memproxy(
                        backend_url=backend.url, workdir=work, chroma=chroma, database_url=shared, name=f"replica{n}"
                    )
                )
                for n in range(args.replicas)
            )
        lite = None
        if litellm is not None:
            lite = stack.enter_context(litellm_proxy(executable=litellm, backend_url=backend.url, workdir=work))
        started = time.perf_counter()
        async with aiohttp.ClientSession(timeout=aiohttp.ClientTimeout(total=600)) as control:
            key = await memory_api.create_key(control, proxy.url, user_prefix="bench-") if args.with_key else None
            servers = Servers(backend, proxy, lite, key, workers, args.workers, replicas)
            for server in (proxy, workers, *replicas[:1]):  # the replicas' spaces are one database's
                if server is not None:
                    for cell in cells:
                        await memory_api.seed_space(control, server.url, user=cell.user, count=args.memories)
            await memory_api.settle_all(control, [s.url for s in (proxy, workers, *replicas) if s is not None])()
        print(f"  overhead: seeded {len(cells)} spaces in {time.perf_counter() - started:.0f} s", flush=True)
        measured = []
        for cell in cells:
            measured.append((cell, await measure(servers, cell, args)))
            print(f"  overhead: {cell.mode} c={cell.concurrency} done", flush=True)
        peaks = {s.name: s.peak_rss_mib() for s in (proxy, lite, workers, *replicas) if s is not None}
    header = (
        f"overhead: scripted backend with {args.latency * 1e3:.0f} ms latency and one fixed 40-word answer, "
        "each target in its own process; "
        f"litellm[proxy]=={LITELLM_VERSION} (1 worker, no DB/callbacks) vs memproxy (1 worker, embedded Chroma"
        + (f"; and {args.workers} workers sharing a `chroma run` server" if args.workers > 1 else "")
        + (
            f"; and {args.replicas} replicas sharing a PostgreSQL database and a `chroma run` server, "
            "requests sent to each in turn"
            if args.replicas > 1
            else ""
        )
        + f"; store {store.description}"
        + "); "
        f"memory on: {args.memories:,} memories per space at the start of its cell (+1 per request), "
        "every request retrieves (stable block off); "
        f"{args.rounds} interleaved rounds; times in ms; peak RSS over the run: "
        + ", ".join(f"{name} {mib:.0f} MiB" for name, mib in peaks.items())
        + f"; {cpu_description()}, load average {load_before:.1f} before, {os.getloadavg()[0]:.1f} after"
    )
    body = table(
        [
            "mode",
            "conc",
            "target",
            "n",
            "p50",
            "p99",
            "+p50",
            "+p99",
            "ttft p50",
            "ttft p99",
            "req/s",
            "errors",
            "mem ms",
            "RSS MiB",
        ],
        [row for cell, results in measured for row in rows(cell, results)],
    )
    return "\n".join([header, body, "", *verdicts(measured), *error_notes(measured)])


def add_arguments(parser: argparse.ArgumentParser) -> None:
    group = parser.add_argument_group("overhead")
    group.add_argument("--latency", type=float, default=0.02, help="backend latency in seconds (default 0.02)")
    group.add_argument("--concurrency", type=int, nargs="+", default=[1, 16, 64])
    group.add_argument("--modes", nargs="+", choices=["json", "stream"], default=["json", "stream"])
    group.add_argument("--memories", type=int, default=1000, help="memories in each memory-on space")
    group.add_argument("--requests", type=int, default=300, help="per target and cell at concurrency 1")
    group.add_argument("--requests-loaded", type=int, default=1200, help="per target and cell above concurrency 1")
    group.add_argument("--rounds", type=int, default=3, help="interleaved rounds per cell")
    group.add_argument(
        "--max-seconds", type=float, default=4.0, help="per target and round: fewer requests if they take longer"
    )
    group.add_argument(
        "--warmup-seconds",
        type=float,
        default=4.0,
        help="unmeasured load per cell for memproxy with memory (slower for a few seconds on a space it has not "
        "served); a quarter of it for the other targets",
    )
    group.add_argument(
        "--workers",
        type=int,
        default=1,
        help="also measure memory on with `memproxy serve --workers N` (and a Chroma server) beside one worker",
    )
    group.add_argument(
        "--replicas",
        type=int,
        default=1,
        help="also measure memory on with N serve processes sharing PostgreSQL (needs --store postgresql), "
        "requests alternating between them, beside one replica",
    )
    group.add_argument("--litellm", type=Path, default=None, help="a litellm executable to use instead of the venv")
    group.add_argument("--no-litellm", action="store_true", help="skip LiteLLM proxy")
    group.add_argument(
        "--with-read", action="store_true", help="also measure memproxy with X-Memory-Mode: read (no write-back)"
    )
    group.add_argument(
        "--with-key", action="store_true", help="also measure memory off with a user key instead of the master key"
    )
    group.add_argument(
        "--surfaces",
        nargs="+",
        choices=sorted(WIRES),
        default=sorted(WIRES),
        help="APIs measured with memory on (chat always; messages and responses are translated to chat, "
        "responses-native is relayed to the backend's /v1/responses)",
    )


def main(args: argparse.Namespace) -> None:
    print(asyncio.run(run(args)), flush=True)
