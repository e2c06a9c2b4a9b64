"""What every benchmark needs: servers in their own processes, a load generator, percentiles.

Servers run as separate processes (the scripted backend, memproxy via ``memproxy serve``), as in
production, so the load generator's event loop never shares a core's time slice with theirs in
one interpreter. Configurations are measured in interleaved rounds and compared within one run,
because this machine is shared and noisy: only ratios and differences measured side by side mean
anything.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import os
import statistics
import subprocess
import sys
import time
from collections.abc import Iterator, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import httpx

from proxy.dev.serve_thread import free_port

ROOT = Path(__file__).resolve().parent.parent


@dataclass
class Process:
    url: str
    popen: subprocess.Popen[bytes]

    def rss_mb(self) -> float:
        """Peak resident memory (VmHWM) of the process, in MiB."""
        try:
            for line in Path(f"/proc/{self.popen.pid}/status").read_text().splitlines():
                if line.startswith("VmHWM:"):
                    return int(line.split()[1]) / 1024
        except OSError:
            pass
        return float("nan")


def wait_ready(url: str, path: str, popen: subprocess.Popen[bytes], timeout: float = 120.0) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if popen.poll() is not None:
            raise RuntimeError(f"{url} exited with {popen.returncode}")
        with contextlib.suppress(httpx.HTTPError):
            if httpx.get(url + path, timeout=1.0).status_code < 500:
                return
        time.sleep(0.2)
    raise TimeoutError(f"{url} not ready")


@contextlib.contextmanager
def process(
    args: Sequence[str], *, port: int, ready_path: str, env: dict[str, str] | None = None, log: Path | None = None
) -> Iterator[Process]:
    out = open(log, "wb") if log else subprocess.DEVNULL  # noqa: SIM115 - closed below
    popen = subprocess.Popen(
        list(args), cwd=ROOT, stdout=out, stderr=subprocess.STDOUT, env={**os.environ, **(env or {})}
    )
    url = f"http://127.0.0.1:{port}"
    try:
        wait_ready(url, ready_path, popen)
        yield Process(url, popen)
    finally:
        popen.terminate()
        try:
            popen.wait(timeout=20)
        except subprocess.TimeoutExpired:
            popen.kill()
        if log:
            out.close()  # type: ignore[union-attr]


def scripted_backend(*, latency: float, chunk_interval: float = 0.0) -> contextlib.AbstractContextManager[Process]:
    port = free_port()
    return process(
        [
            sys.executable,
            "-m",
            "proxy.cli",
            "dev",
            "scripted-backend",
            "--port",
            str(port),
            "--latency",
            str(latency),
            "--chunk-interval",
            str(chunk_interval),
            "--no-record",
        ],
        port=port,
        ready_path="/v1/models",
    )


def memproxy(config: dict[str, Any], workdir: Path) -> contextlib.AbstractContextManager[Process]:
    port = free_port()
    path = workdir / f"memproxy-{port}.yaml"
    path.write_text(json.dumps({**config, "server": {"host": "127.0.0.1", "port": port, "log_level": "warning"}}))
    return process(
        [sys.executable, "-m", "proxy.cli", "serve", "--config", str(path)],
        port=port,
        ready_path="/readyz",
        log=workdir / f"memproxy-{port}.log",
    )


def model_entry(name: str, backend_url: str) -> dict[str, Any]:
    return {
        "model_name": name,
        "litellm_params": {"model": f"openai/{name}", "api_base": f"{backend_url}/v1", "api_key": "none"},
    }


@dataclass
class Sample:
    latencies: list[float] = field(default_factory=list)  # seconds, whole response
    ttfts: list[float] = field(default_factory=list)  # seconds, first content chunk (streams)
    errors: int = 0
    wall: float = 0.0

    def extend(self, other: Sample) -> None:
        self.latencies += other.latencies
        self.ttfts += other.ttfts
        self.errors += other.errors
        self.wall += other.wall

    @property
    def rps(self) -> float:
        return len(self.latencies) / self.wall if self.wall else 0.0


def percentile(values: Sequence[float], q: float) -> float:
    if not values:
        return float("nan")
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, max(0, round(q / 100 * (len(ordered) - 1))))]


def median(values: Sequence[float]) -> float:
    return statistics.median(values) if values else float("nan")


async def load(
    client: httpx.AsyncClient,
    url: str,
    bodies: Iterator[dict[str, Any]],
    *,
    requests: int,
    concurrency: int,
    headers: dict[str, str] | None = None,
    stream: bool = False,
) -> Sample:
    """``requests`` POSTs of successive ``bodies`` from ``concurrency`` workers."""
    sample = Sample()
    remaining = requests

    async def worker() -> None:
        nonlocal remaining
        while remaining > 0:
            remaining -= 1
            body = next(bodies)
            started = time.perf_counter()
            try:
                if stream:
                    async with client.stream("POST", url, json={**body, "stream": True}, headers=headers) as response:
                        first = None
                        async for line in response.aiter_lines():
                            if first is None and line.startswith("data: {") and '"content"' in line:
                                first = time.perf_counter() - started
                        ok = response.status_code == 200
                    if first is not None:
                        sample.ttfts.append(first)
                else:
                    response = await client.post(url, json=body, headers=headers)
                    ok = response.status_code == 200
            except httpx.HTTPError:
                ok = False
            if ok:
                sample.latencies.append(time.perf_counter() - started)
            else:
                sample.errors += 1

    started = time.perf_counter()
    await asyncio.gather(*(worker() for _ in range(concurrency)))
    sample.wall = time.perf_counter() - started
    return sample


def table(headers: Sequence[str], rows: Sequence[Sequence[object]]) -> str:
    cells = [[str(h) for h in headers], *[[f"{c:.2f}" if isinstance(c, float) else str(c) for c in r] for r in rows]]
    widths = [max(len(row[i]) for row in cells) for i in range(len(headers))]
    lines = [" | ".join(c.rjust(w) for c, w in zip(row, widths, strict=True)) for row in cells]
    lines.insert(1, "-+-".join("-" * w for w in widths))
    return "\n".join(lines)
