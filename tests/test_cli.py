"""The ``memproxy`` command as a user runs it: a real process, a real port."""

from __future__ import annotations

import subprocess
import sys
import time
from pathlib import Path

import httpx
import pytest
from openai import OpenAI

from proxy.dev.serve_thread import free_port
from tests.conftest import Backend

ROOT = Path(__file__).parent.parent


def memproxy(*args: str, env: dict[str, str] | None = None) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "proxy.cli", *args], capture_output=True, text=True, cwd=ROOT, env=env, timeout=120
    )


def write_config(path: Path, backend_url: str, data_dir: Path) -> Path:
    path.write_text(
        "model_list:\n"
        "  - model_name: fake\n"
        f"    litellm_params: {{model: openai/fake, api_base: '{backend_url}/v1', api_key: x}}\n"
        "memory:\n"
        f"  data_dir: {data_dir}\n"
        "  extraction: {mode: heuristic}\n"
    )
    return path


def test_check_config_accepts_the_shipped_configs() -> None:
    env = {"PATH": "/usr/bin:/bin", "OPENAI_API_KEY": "x", "ANTHROPIC_API_KEY": "x", "MEMPROXY_MASTER_KEY": "k"}
    for config in [ROOT / "config" / "default.yaml", *sorted((ROOT / "config" / "examples").glob("*.yaml"))]:
        result = memproxy("check-config", str(config), env=env)
        if config.name == "local-hf.yaml":  # its model is written by `memproxy dev tiny-model` first
            assert result.returncode == 2 and "local.path: models/tiny does not exist" in result.stderr
            continue
        assert result.returncode == 0, result.stderr
        assert "OK" in result.stdout


def test_check_config_reports_every_problem_readably(tmp_path: Path) -> None:
    bad = tmp_path / "bad.yaml"
    bad.write_text(
        "model_list:\n  - model_name: m\n    litellm_params: {model: openai/m, api_key: '${NOT_SET_ANYWHERE}'}\n"
        "memory:\n  extraction: {mdoe: raw}\n  retrieval: {token_budget: lots}\n"
    )
    result = memproxy("check-config", str(bad), env={"PATH": "/usr/bin:/bin"})
    assert result.returncode == 2
    assert "model_list[0].litellm_params.api_key: environment variable NOT_SET_ANYWHERE is not set" in result.stderr
    assert "memory.extraction.mdoe: unknown key (did you mean 'mode'?)" in result.stderr
    assert "memory.retrieval.token_budget:" in result.stderr and "'lots'" in result.stderr


def test_serve_refuses_an_invalid_config_with_the_same_message(tmp_path: Path) -> None:
    bad = tmp_path / "bad.yaml"
    bad.write_text("memory: {retrieval: {top_k: 0}}\n")
    check = memproxy("check-config", str(bad))
    serve = memproxy("serve", "--config", str(bad), "--port", str(free_port()))
    assert serve.returncode == check.returncode == 2
    assert serve.stderr == check.stderr and "memory.retrieval.top_k" in serve.stderr


def start_server(config: Path, port: int) -> subprocess.Popen[bytes]:
    process = subprocess.Popen(
        [sys.executable, "-m", "proxy.cli", "serve", "--config", str(config), "--port", str(port)],
        cwd=ROOT,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.PIPE,
    )
    deadline = time.monotonic() + 90
    while time.monotonic() < deadline:
        if process.poll() is not None:
            raise RuntimeError(process.stderr.read().decode() if process.stderr else "server exited")
        try:
            if httpx.get(f"http://127.0.0.1:{port}/readyz", timeout=1).status_code == 200:
                return process
        except httpx.HTTPError:
            pass
        time.sleep(0.2)
    process.kill()
    raise TimeoutError("memproxy serve did not become ready")


@pytest.mark.parametrize("stop", ["terminate", "kill"])
def test_serve_remembers_across_process_restarts(backend: Backend, tmp_path: Path, stop: str) -> None:
    config = write_config(tmp_path / "c.yaml", backend.url, tmp_path / "data")
    port = free_port()
    server = start_server(config, port)
    try:
        client = OpenAI(base_url=f"http://127.0.0.1:{port}/v1", api_key="x", max_retries=0)
        client.chat.completions.create(
            model="fake", messages=[{"role": "user", "content": "I keep bees in my garden."}], user="olga"
        )
        # The exchange is journalled before the answer's last byte; stop the server at once.
        getattr(server, stop)()
        server.wait(timeout=30)
        server = start_server(config, port)
        deadline = time.monotonic() + 30
        while time.monotonic() < deadline:
            client.chat.completions.create(
                model="fake", messages=[{"role": "user", "content": "What do I keep in my garden?"}], user="olga"
            )
            if "bees" in str(backend.last_body()["messages"]):
                break
            time.sleep(0.3)
        assert "bees" in str(backend.last_body()["messages"])
    finally:
        server.kill()
        server.wait(timeout=30)
