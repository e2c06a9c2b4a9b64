"""The servers a benchmark talks to, each in its own process, as in production.

The scripted backend (a fixed-latency OpenAI stand-in), memproxy (``memproxy serve``) and LiteLLM
proxy (from its own virtual environment) are started as child processes, so the load generator's
event loop never shares an interpreter with theirs, and each can be measured (RSS) on its own.
"""

from __future__ import annotations

import contextlib
import json
import os
import socket
import subprocess
import sys
import time
from collections.abc import Iterator, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import httpx

from bench.wires import NATIVE_SUFFIX

ROOT = Path(__file__).resolve().parent.parent
# Both proxies are configured with this key and every request (direct ones too) presents it:
# LiteLLM refuses to start without a master key, and memproxy then checks one as well.
MASTER_KEY = "sk-bench-0123456789abcdef0123456789abcdef"
MODEL = "bench"


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port: int = sock.getsockname()[1]
        return port


def proc_status_mib(pid: int, field: str) -> float:
    """A memory field of ``/proc/PID/status`` (``VmRSS`` now, ``VmHWM`` peak) in MiB."""
    try:
        for line in Path(f"/proc/{pid}/status").read_text().splitlines():
            if line.startswith(field + ":"):
                return int(line.split()[1]) / 1024
    except OSError:
        pass
    return float("nan")


@dataclass(frozen=True)
class Server:
    name: str
    url: str
    popen: subprocess.Popen[bytes]
    log: Path

    @property
    def pid(self) -> int:
        return self.popen.pid

    def rss_mib(self) -> float:
        return proc_status_mib(self.pid, "VmRSS")

    def peak_rss_mib(self) -> float:
        return proc_status_mib(self.pid, "VmHWM")


def _wait_ready(name: str, url: str, popen: subprocess.Popen[bytes], log: Path, timeout: float) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if popen.poll() is not None:
            tail = log.read_text(errors="replace")[-3000:]
            raise RuntimeError(f"{name} exited with {popen.returncode} before it was ready:\n{tail}")
        with contextlib.suppress(httpx.HTTPError):
            if httpx.get(url, timeout=2.0).status_code < 500:
                return
        time.sleep(0.25)
    tail = log.read_text(errors="replace")[-3000:]
    raise TimeoutError(f"{name} not ready after {timeout:.0f} s:\n{tail}")


@contextlib.contextmanager
def server(
    name: str,
    args: Sequence[str],
    *,
    port: int,
    ready_path: str,
    log: Path,
    env: Mapping[str, str] | None = None,
    cwd: Path = ROOT,
    timeout: float = 180.0,
) -> Iterator[Server]:
    """Start ``args`` as a child process, wait until ``ready_path`` answers, stop it on exit."""
    url = f"http://127.0.0.1:{port}"
    with open(log, "wb") as out:
        popen = subprocess.Popen(list(args), cwd=cwd, stdout=out, stderr=subprocess.STDOUT, env=dict(env or os.environ))
        try:
            _wait_ready(name, url + ready_path, popen, log, timeout)
            yield Server(name, url, popen, log)
        finally:
            popen.terminate()
            try:
                popen.wait(timeout=20)
            except subprocess.TimeoutExpired:
                popen.kill()
                popen.wait()


def model_entry(backend_url: str) -> dict[str, Any]:
    """The same ``model_list`` entry for both proxies: an OpenAI-compatible upstream."""
    return {
        "model_name": MODEL,
        "litellm_params": {"model": f"openai/{MODEL}", "api_base": f"{backend_url}/v1", "api_key": "none"},
    }


def scripted_backend(*, latency: float, workdir: Path) -> contextlib.AbstractContextManager[Server]:
    """The scripted backend with one fixed answer for every target (see ``bench.backend``)."""
    port = free_port()
    args = [sys.executable, "-m", "bench.backend", "--port", str(port), "--latency", str(latency)]
    return server("backend", args, port=port, ready_path="/v1/models", log=workdir / "backend.log")


def memproxy(
    *,
    backend_url: str,
    workdir: Path,
    workers: int = 1,
    chroma: Server | None = None,
    database_url: str = "",
    name: str = "",
) -> contextlib.AbstractContextManager[Server]:
    """``memproxy serve`` with heuristic extraction and its data under ``workdir``. Hot memories
    are never promoted into the stable block (``stable_max: 0``): once that block is full the
    scheduler skips retrieval, and every memory-on request must pay for a real lookup.
    ``workers`` processes (``serve --workers``) need ``chroma``, a Chroma server, for the index;
    so do replicas, each started with a ``name`` of its own and the same ``database_url``."""
    port = free_port()
    name = name or ("memproxy" if workers == 1 else f"memproxy-{workers}w")
    memory: dict[str, Any] = {
        "data_dir": str(workdir / f"{name}-data"),
        "extraction": {"mode": "heuristic"},
        "scheduler": {"stable_max": 0},
    }
    if database_url:
        memory["database_url"] = database_url
    if chroma is not None:
        memory["vector_index"] = {"host": "127.0.0.1", "port": int(chroma.url.rsplit(":", 1)[1])}
    config = {
        "model_list": [
            model_entry(backend_url),
            {**model_entry(backend_url), "model_name": MODEL + NATIVE_SUFFIX, "responses_api": "native"},
        ],
        "general_settings": {"master_key": MASTER_KEY},
        "memory": memory,
        "server": {"host": "127.0.0.1", "port": port, "log_level": "warning", "workers": workers},
    }
    path = workdir / f"{name}.yaml"
    path.write_text(json.dumps(config, indent=2))  # JSON is YAML
    args = [sys.executable, "-m", "proxy.cli", "serve", "--config", str(path)]
    return server(name, args, port=port, ready_path="/readyz", log=workdir / f"{name}.log")


def chroma_server(*, workdir: Path) -> contextlib.AbstractContextManager[Server]:
    """``chroma run`` (from memproxy's environment) on a directory of ``workdir``: the vector index
    several memproxy processes share."""
    port = free_port()
    args = [str(Path(sys.executable).parent / "chroma"), "run", "--path", str(workdir / "chroma"), "--port", str(port)]
    return server("chroma", args, port=port, ready_path="/api/v2/heartbeat", log=workdir / "chroma.log")


def litellm_proxy(*, executable: Path, backend_url: str, workdir: Path) -> contextlib.AbstractContextManager[Server]:
    """LiteLLM proxy as its production docs advise (one worker; scale out by processes), as a pure
    passthrough: no database, no callbacks, no spend or error logs, logging at ERROR, and the
    bundled model-cost map so it never reaches for the internet."""
    port = free_port()
    config = {
        "model_list": [model_entry(backend_url)],
        "litellm_settings": {"set_verbose": False, "json_logs": False, "callbacks": [], "success_callback": []},
        "general_settings": {"master_key": MASTER_KEY, "disable_spend_logs": True, "disable_error_logs": True},
    }
    path = workdir / "litellm.yaml"
    path.write_text(json.dumps(config, indent=2))
    env = {k: v for k, v in os.environ.items() if k not in ("PYTHONPATH", "VIRTUAL_ENV", "DATABASE_URL")}
    env.update(LITELLM_LOCAL_MODEL_COST_MAP="True", LITELLM_LOG="ERROR", LITELLM_MODE="PRODUCTION")
    args = [str(executable), "--config", str(path), "--host", "127.0.0.1", "--port", str(port)]
    args += ["--num_workers", "1", "--telemetry", "False"]
    return server(
        "litellm", args, port=port, ready_path="/health/liveliness", log=workdir / "litellm.log", env=env, cwd=workdir
    )
