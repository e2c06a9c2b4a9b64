"""The command line and the HTTP API as a new user meets them: version and help, environment
defaults, ``memories add``/``search``, clear refusals (missing model, a busy data dir, a space
without its prefix), and the memory API taking what ``curl`` sends."""

from __future__ import annotations

import argparse
import os
import subprocess
import sys
from collections.abc import Callable, Iterator
from pathlib import Path

import httpx
import pytest

from proxy.cli import build_parser
from proxy.datadir_lock import DataDirBusy, DataDirLock
from proxy.dev.serve_thread import free_port
from tests.conftest import Backend, Proxy, proxy_settings
from tests.test_cli import start_server, write_config

ROOT = Path(__file__).parent.parent


def memproxy(*args: str, env: dict[str, str] | None = None) -> subprocess.CompletedProcess[str]:
    environment = {"PATH": os.environ.get("PATH", "/usr/bin:/bin"), **(env or {})}
    command = [sys.executable, "-m", "proxy.cli", *args]
    return subprocess.run(command, capture_output=True, text=True, cwd=ROOT, env=environment, timeout=120)


def _parsers(parser: argparse.ArgumentParser) -> Iterator[tuple[str, argparse.ArgumentParser]]:
    yield parser.prog, parser
    for action in parser._actions:
        if isinstance(action, argparse._SubParsersAction):
            for child in action.choices.values():
                yield from _parsers(child)


def test_every_option_and_argument_has_help_and_version_prints() -> None:
    missing = [
        f"{prog} {action.option_strings or action.dest}"
        for prog, parser in _parsers(build_parser())
        for action in parser._actions
        if not isinstance(action, argparse._SubParsersAction) and not action.help
    ]
    assert missing == []
    result = memproxy("--version")
    assert result.returncode == 0 and result.stdout.startswith("memproxy ")


def test_check_config_warns_on_no_models_and_serve_fails_on_a_missing_model_in_one_line(tmp_path: Path) -> None:
    empty = tmp_path / "empty.yaml"
    empty.write_text("")
    result = memproxy("check-config", str(empty))
    assert result.returncode == 0 and "warning" in result.stderr and "model_list is empty" in result.stderr
    missing = tmp_path / "local.yaml"
    missing.write_text(f"model_list:\n  - model_name: m\n    local: {{path: {tmp_path / 'nowhere'}}}\n")
    check = memproxy("check-config", str(missing))
    serve = memproxy("serve", "--config", str(missing), "--port", str(free_port()))
    for result in (check, serve):
        assert result.returncode == 2
        assert f"model_list[0].local.path: {tmp_path / 'nowhere'} does not exist" in result.stderr
        assert "Traceback" not in result.stderr and "Unclosed" not in result.stderr
        assert len(result.stderr.strip().splitlines()) == 2  # the file, then the one problem


def test_a_second_serve_on_embedded_chroma_and_a_reindex_on_a_live_data_dir_are_refused(
    backend: Backend, tmp_path: Path
) -> None:
    config = write_config(tmp_path / "c.yaml", backend.url, tmp_path / "data")
    server = start_server(config, free_port())
    try:
        second = memproxy("serve", "--config", str(config), "--port", str(free_port()))
        workers = memproxy("serve", "--config", str(config), "--port", str(free_port()), "--workers", "2")
        reindex = memproxy("reindex", "--config", str(config))
        for result in (second, workers, reindex):
            assert result.returncode == 2, result.stderr
            assert "Traceback" not in result.stderr
        for result in (second, workers):  # what to run instead is named
            assert "cannot be shared between processes" in result.stderr
            assert "chroma run --path" in result.stderr and "memory.vector_index.host" in result.stderr
        assert "in use by `memproxy serve`: stop every process serving it first" in reindex.stderr
    finally:
        server.kill()
        server.wait(timeout=30)
    result = memproxy("reindex", "--config", str(config))  # killed: the kernel let go of its locks
    assert result.returncode == 0 and "reindexed 0 memories" in result.stdout, result.stderr


def test_serves_share_a_data_dir_and_a_reindex_excludes_them(tmp_path: Path) -> None:
    holder = (
        "import sys, time; from proxy.datadir_lock import DataDirLock; "
        "DataDirLock(sys.argv[1], command=sys.argv[2]).acquire(); print('held', flush=True); time.sleep(60)"
    )
    child = subprocess.Popen(
        [sys.executable, "-c", holder, str(tmp_path), "reindex"], cwd=ROOT, stdout=subprocess.PIPE, text=True
    )
    try:
        assert child.stdout is not None and child.stdout.readline() == "held\n"
        with pytest.raises(DataDirBusy, match=f"in use by `memproxy reindex` \\(pid {child.pid}\\)"):
            DataDirLock(tmp_path, command="serve").acquire()
    finally:
        child.kill()
        child.wait()
    with (
        DataDirLock(tmp_path, command="serve"),
        DataDirLock(tmp_path, command="serve"),  # serves share it
        pytest.raises(DataDirBusy, match="stop every process serving it first"),
    ):
        DataDirLock(tmp_path, command="reindex").acquire()
    with (
        DataDirLock(tmp_path, command="serve", embedded_index=True),
        pytest.raises(DataDirBusy, match="cannot be shared between processes"),
    ):
        DataDirLock(tmp_path, command="serve", embedded_index=True).acquire()
    with DataDirLock(tmp_path, command="reindex") as lock:
        assert lock.path.read_text() == f"{os.getpid()} reindex\n"


def test_memories_add_and_search_with_url_and_key_from_the_environment(
    backend: Backend, start_proxy: Callable[..., Proxy], tmp_path: Path
) -> None:
    settings = proxy_settings(backend.url, tmp_path / "d", general_settings={"master_key": "sk-env"})
    proxy = start_proxy(settings)
    env = {"MEMPROXY_URL": proxy.url, "MEMPROXY_API_KEY": "sk-env"}
    added = memproxy("memories", "add", "--user", "zoe", "I live in Tromsø and I play the cello.", env=env)
    assert added.returncode == 0, added.stderr
    assert added.stdout.startswith("ADD")
    fact = memproxy("memories", "add", "--space", "user:zoe", "--fact", "Zoe's cat is called Miso.", env=env)
    assert fact.returncode == 0 and "Miso" in fact.stdout, fact.stderr
    found = memproxy("memories", "search", "--user", "zoe", "What is my cat called?", "--top-k", "2", env=env)
    assert found.returncode == 0, found.stderr
    assert "Miso" in found.stdout.splitlines()[0] and "memories," in found.stdout
    refused = memproxy("memories", "search", "--user", "zoe", "cat", env={"MEMPROXY_URL": proxy.url})
    assert refused.returncode == 1 and "401" in refused.stderr


def test_memory_api_takes_curl_bodies_multipart_uploads_and_names_the_space_form(proxy: Proxy) -> None:
    with httpx.Client(base_url=proxy.url, timeout=60) as http:
        form = {"content-type": "application/x-www-form-urlencoded"}  # what `curl -d` sends
        body = '{"user": "lena", "sync": true, "facts": ["Lena grows tomatoes."]}'
        assert http.post("/v1/memories", content=body, headers=form).status_code == 200
        search = http.post("/v1/memories/search", content='{"user": "lena", "query": "tomatoes"}', headers=form)
        assert search.status_code == 200 and "tomatoes" in search.json()["results"][0]["text"]
        bare = http.post("/v1/memories/search", content=b'{"user": "lena", "query": "tomatoes"}')
        assert bare.status_code == 200
        bundle = http.get("/v1/spaces/user:lena/export").content
        uploaded = http.post(
            "/v1/spaces/import", params={"space": "user:max"}, files={"file": ("lena.memcube", bundle)}
        )
        assert uploaded.status_code == 200, uploaded.text
        assert (uploaded.json()["imported"], uploaded.json()["space"]) == (1, "user:max")
        assert http.post("/v1/spaces/import", files={}, data={"x": "y"}).status_code == 400
        for response in (
            http.delete("/v1/spaces/hank"),
            http.get("/v1/spaces/alice/export"),
            http.post("/v1/spaces/import", params={"space": "dave"}, content=bundle),
            http.get("/v1/memories", params={"space": "hank"}),
            http.post("/v1/memories", json={"space": "user:", "facts": ["x"]}),
        ):
            assert response.status_code == 400, response.text
            error = response.json()["error"]
            assert "user:<id>, org:<name> or agent:<name>" in error["message"] and error["param"] == "space"
        assert http.delete("/v1/spaces/user:nobody").json() == {"space": "user:nobody", "deleted": 0}
    exported = memproxy("export", "--space", "alice", "--url", proxy.url)
    assert exported.returncode == 1 and "user:<id>" in exported.stderr
