"""``memproxy memories|export|import`` as a user runs them: a real process against a real proxy."""

from __future__ import annotations

import json
import subprocess
import sys
from collections.abc import Callable
from pathlib import Path
from typing import Any

import httpx

from proxy.dev.serve_thread import free_port
from tests.conftest import Backend, Proxy, proxy_settings

ROOT = Path(__file__).parent.parent
MEMOS_TREE = ROOT / "tests" / "fixtures" / "memos" / "tree_text"


def memproxy(*args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "proxy.cli", *args], capture_output=True, text=True, cwd=ROOT, timeout=120
    )


def ok(*args: str) -> str:
    result = memproxy(*args)
    assert result.returncode == 0, result.stderr
    return result.stdout


def say(http: httpx.Client, user: str, text: str, at: str) -> str:
    body = {
        "user": user,
        "mode": "heuristic",
        "sync": True,
        "messages": [{"role": "user", "content": text, "created_at": at}],
    }
    response = http.post("/v1/memories", json=body)
    assert response.status_code == 200, response.text
    return str(response.json()["results"][0]["id"])


def seed(proxy: Proxy) -> dict[str, str]:
    with proxy.http() as http:
        return {
            "lisbon": say(http, "ana", "I live in Lisbon.", "2021-03-01T10:00:00Z"),
            "dog": say(http, "ana", "I have a dog named Biscuit.", "2022-05-08T13:56:00Z"),
            "porto": say(http, "ana", "I moved to Porto.", "2024-06-15T09:30:00Z"),
        }


def test_memories_list_get_edit_history_delete(proxy: Proxy) -> None:
    ids = seed(proxy)
    url = ("--url", proxy.url)

    listing = ok("memories", "list", "--user", "ana", *url)
    assert [line.split()[0] for line in listing.splitlines()] == [ids["porto"], ids["dog"]]
    assert "I moved to Porto." in listing and "Lisbon" not in listing
    superseded = ok("memories", "list", "--space", "user:ana", "--state", "superseded", *url)
    assert ids["lisbon"] in superseded and "superseded" in superseded
    page = ok("memories", "list", "--user", "ana", "--limit", "1", *url)
    assert page.splitlines()[-1] == f"more: --cursor {ids['porto']}"

    shown = ok("memories", "get", ids["porto"], *url)
    assert "content       I moved to Porto." in shown and f"supersedes    {ids['lisbon']}" in shown
    assert "valid         2024-06-15T09:30:00Z -> open" in shown

    edited = json.loads(
        ok(
            "memories",
            "edit",
            ids["dog"],
            "--content",
            "I have a beagle named Biscuit.",
            "--tag",
            "pets",
            "--pin",
            "--json",
            *url,
        )
    )
    assert (edited["content"], edited["tags"], edited["pinned"]) == ("I have a beagle named Biscuit.", ["pets"], True)
    history = ok("memories", "history", ids["dog"], *url).splitlines()
    assert [line.split()[1] for line in history] == ["ADD", "UPDATE"]
    assert "I have a beagle named Biscuit.  (edit)" in history[-1]

    nothing = memproxy("memories", "edit", ids["dog"], *url)
    assert nothing.returncode == 1 and "nothing to change" in nothing.stderr

    assert "deleted " + ids["dog"] in ok("memories", "delete", ids["dog"], *url)
    assert ids["dog"] not in ok("memories", "list", "--user", "ana", *url)
    assert ok("memories", "delete", ids["dog"], "--purge", *url).strip() == f"purged {ids['dog']}"
    gone = memproxy("memories", "get", ids["dog"], *url)
    assert gone.returncode == 1 and gone.stderr.strip() == f"memproxy: 404 no memory with id {ids['dog']}"
    alone = memproxy("memories", "delete", ids["porto"], "--by-source", *url)
    assert alone.returncode == 1 and "give --purge too" in alone.stderr
    purged = ok("memories", "delete", ids["porto"], "--purge", "--by-source", *url)
    assert purged.startswith(f"purged {ids['porto']} and the memories sharing its source messages: {ids['porto']}")


def test_export_then_import_into_another_proxy(
    proxy: Proxy, backend: Backend, start_proxy: Callable[..., Proxy], tmp_path: Path
) -> None:
    seed(proxy)
    target = tmp_path / "ana.memcube"
    summary = ok("export", "--space", "user:ana", "-o", str(target), "--url", proxy.url)
    assert summary.strip() == (
        f"wrote {target}: space user:ana, 3 memories (2 active, 1 superseded), 4 history events, 2 embeddings"
    )
    other = start_proxy(proxy_settings(backend.url, tmp_path / "other"))
    imported = ok("import", str(target), "--url", other.url)
    assert imported.startswith("imported 3 memories into user:ana from a memproxy file (0 overwritten, 0 skipped")
    assert "embeddings: 2 reused, 0 computed" in imported
    again = ok("import", str(target), "--url", other.url)
    assert "0 memories" in again and "3 skipped" in again
    assert "skipped 3 (exists): the target space holds a memory with that id: on_conflict=overwrite" in again
    copy = json.loads(
        ok("import", str(target), "--space", "user:bob", "--on-conflict", "new-ids", "--json", "--url", other.url)
    )
    assert (copy["space"], copy["imported"]) == ("user:bob", 3)

    def contents(proxy: Proxy, user: str) -> list[Any]:
        with proxy.http() as http:
            params = [("user", user), ("state", "active"), ("state", "superseded")]
            return [(m["content"], m["state"]) for m in http.get("/v1/memories", params=params).json()["data"]]

    assert contents(other, "ana") == contents(other, "bob") == contents(proxy, "ana")


def test_a_corrupt_bundle_fails_the_command_and_changes_nothing(
    proxy: Proxy, backend: Backend, start_proxy: Callable[..., Proxy], tmp_path: Path
) -> None:
    seed(proxy)
    target = tmp_path / "ana.memcube"
    ok("export", "--space", "user:ana", "-o", str(target), "--url", proxy.url)
    data = bytearray(target.read_bytes())
    data[len(data) // 3] ^= 0xFF  # inside a member's compressed bytes
    broken = tmp_path / "broken.memcube"
    broken.write_bytes(bytes(data))
    other = start_proxy(proxy_settings(backend.url, tmp_path / "other"))
    result = memproxy("import", str(broken), "--url", other.url)
    assert result.returncode == 1 and result.stderr.startswith("memproxy: 400 ")
    with other.http() as http:
        assert http.get("/v1/memories", params={"user": "ana"}).json()["data"] == []
    missing = memproxy("import", str(tmp_path / "nope.memcube"), "--url", other.url)
    assert missing.returncode == 1 and "No such file" in missing.stderr


def test_import_of_a_memos_dump_directory(proxy: Proxy) -> None:
    out = ok("import", str(MEMOS_TREE), "--space", "user:alice", "--url", proxy.url)
    assert out.startswith("imported 4 memories into user:alice from a memos file")
    listing = ok("memories", "list", "--user", "alice", "--state", "active", "--state", "archived", "--url", proxy.url)
    assert len(listing.splitlines()) == 4 and "Alice lives in Lisbon." in listing
    needs_space = memproxy("import", str(MEMOS_TREE), "--url", proxy.url)
    assert needs_space.returncode == 1 and "say which space" in needs_space.stderr


def test_the_master_key_and_an_unreachable_proxy(
    backend: Backend, start_proxy: Callable[..., Proxy], tmp_path: Path
) -> None:
    locked = start_proxy(proxy_settings(backend.url, tmp_path / "data", general_settings={"master_key": "sk-test"}))
    refused = memproxy("memories", "list", "--user", "ana", "--url", locked.url)
    assert refused.returncode == 1 and refused.stderr.startswith("memproxy: 401 ")
    assert ok("memories", "list", "--user", "ana", "--url", locked.url, "--api-key", "sk-test").strip() == "no memories"
    down = memproxy("memories", "list", "--user", "ana", "--url", f"http://127.0.0.1:{free_port()}")
    assert down.returncode == 1 and "cannot reach the proxy" in down.stderr
