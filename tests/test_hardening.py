"""Hardening (issue 12): each attack of the issue as a regression test, through real HTTP on a
running proxy: what an attacker saw, and what they see now. ``make test`` runs them (and
``.ci/run``), the half-sent flood with ``make test-slow``. Where each attack is tested:

1. memory poisoning: tests/test_injection.py (escaping, least privilege) and
   tests/test_quarantine.py (quarantine, no promotion, answers that restate memories)
2. deletion leaving text behind: ``test_forgetting_a_user...``, ``test_purging_one_memory...``,
   ``test_purging_by_source...``
3. zip bombs: ``test_zip_bombs_are_refused_before_they_inflate``
4. slow clients: ``test_slow_headers_and_bodies_are_cut_off``, ``test_a_flood_of_half_sent...`` (slow)
5. unbounded lexical queries, abandoned lookups, one key starving others:
   ``test_a_huge_chat_message...``, ``test_a_read_past_its_deadline...``,
   ``test_an_abandoned_lookup...``, ``test_a_keys_memory_work...``, ``test_a_key_at_its_memory_bound...``
6. imports neither atomic nor polite: ``test_index_writes_larger_than_chromas_batch_limit...``
7. upstream errors leaking: ``test_a_backend_401...``, ``test_an_unreachable_backend...``,
   ``test_upstream_free_text_codes_are_dropped``
8. ``max_messages`` not enforced: ``test_max_messages_is_enforced``
"""

from __future__ import annotations

import asyncio
import contextlib
import io
import json
import logging
import os
import socket
import threading
import time
import zipfile
from collections import deque
from collections.abc import Callable
from pathlib import Path
from typing import Any

import httpx
import numpy as np
import pytest

from memcubes import deadline
from memcubes.config import VectorIndexSettings
from memcubes.cube import MemCube
from memcubes.embedder import Embedder
from memcubes.errors import DeadlineExceeded
from memcubes.retrieval import MAX_QUERY_TERMS, query_terms
from memcubes.store import ChangeSet, Store
from memcubes.vectors import WHOLE, ChromaIndex, VectorEntry
from proxy.app import build_app
from proxy.dev.serve_thread import ServerThread, free_port
from proxy.errors import MemoryBusy
from proxy.memory_slots import MemorySlots
from proxy.server import uvicorn_options
from tests.conftest import Backend, Proxy, proxy_settings
from tests.test_security import MASTER, as_key, new_key, remember

CHAT = {"model": "fake", "messages": [{"role": "user", "content": "hi"}]}
ECHOED_KEY = "sk-proj-4f9Zq81LmN0pQrStUvWxYz0123456789abcdef"


def test_a_backend_401_echoing_its_key_reaches_neither_client_nor_log(
    proxy: Proxy, backend: Backend, caplog: pytest.LogCaptureFixture
) -> None:
    """Attack 7a: the backend's 401 body (with the key it echoed) went to the client verbatim,
    relabelled as the client's own invalid_api_key."""
    step = {"status": 401, "message": f"Incorrect API key provided: Bearer {ECHOED_KEY}.", "code": "invalid_api_key"}
    for stream in (False, True):
        backend.queue(step)
        with caplog.at_level(logging.WARNING, logger="proxy"), proxy.http() as http:
            response = http.post("/v1/chat/completions", json={**CHAT, "stream": stream})
        assert response.status_code == 502
        error = response.json()["error"]
        assert error["type"] == "upstream_authentication_error" and error["code"] == "upstream_authentication_error"
        assert ECHOED_KEY not in response.text and "Incorrect API key" not in response.text
        request_id = error["message"].split("Request id ")[1].split(":")[0]
        logged = [r.getMessage() for r in caplog.records if request_id in r.getMessage()]
        assert logged and "Incorrect API key provided" in logged[0]  # the operator sees what happened
        assert ECHOED_KEY not in caplog.text and ECHOED_KEY[:12] not in caplog.text


def test_an_unreachable_backend_does_not_reveal_its_host(start_proxy: Callable[..., Proxy], tmp_path: Path) -> None:
    """Attack 7b: ClientConnectorError(ConnectionKey(host='127.0.0.1', port=9, ...)) reached the client."""
    port = free_port()
    proxy = start_proxy(proxy_settings(f"http://127.0.0.1:{port}", tmp_path / "d"))
    with proxy.http() as http:
        for stream in (False, True):
            response = http.post("/v1/chat/completions", json={**CHAT, "stream": stream})
            assert response.status_code == 502 and response.json()["error"]["code"] == "upstream_unreachable"
            assert "127.0.0.1" not in response.text and str(port) not in response.text
            assert "Error(" not in response.text and "ConnectionKey" not in response.text


def test_upstream_free_text_codes_are_dropped(proxy: Proxy, backend: Backend) -> None:
    backend.queue({"status": 400, "message": "bad", "code": "see https://internal.example/x", "type": "a b"})
    backend.queue({"status": 400, "message": "too long", "code": "context_length_exceeded"})
    with proxy.http() as http:
        error = http.post("/v1/chat/completions", json=CHAT).json()["error"]
        assert error["code"] is None and error["type"] == "invalid_request_error"
        assert http.post("/v1/chat/completions", json=CHAT).json()["error"]["code"] == "context_length_exceeded"


def test_max_messages_is_enforced(backend: Backend, start_proxy: Callable[..., Proxy], tmp_path: Path) -> None:
    """Attack 8: 5,000 messages got a 200 although general_settings.max_messages said 4,096."""
    proxy = start_proxy(proxy_settings(backend.url, tmp_path / "d", general_settings={"max_messages": 50}))
    with proxy.http() as http:
        many = [{"role": "user", "content": f"m{i}"} for i in range(51)]
        response = http.post("/v1/chat/completions", json={**CHAT, "messages": many})
        assert response.status_code == 400
        assert response.json()["error"]["param"] == "messages" and "50" in response.json()["error"]["message"]
        assert http.post("/v1/chat/completions", json={**CHAT, "messages": many[:50]}).status_code == 200
    assert len(backend.received) == 1


def _bomb(members: dict[str, bytes], *, zeros: str, size: int) -> bytes:
    """A zip holding ``members`` and one member of ``size`` zero bytes (deflates ~1000-fold)."""
    buffer = io.BytesIO()
    with zipfile.ZipFile(buffer, "w", compression=zipfile.ZIP_DEFLATED) as archive:
        for name, content in members.items():
            archive.writestr(name, content)
        with archive.open(zeros, "w", force_zip64=True) as stream:
            chunk = bytes(8 * 1024 * 1024)  # compresslevel 6: ~1000-fold
            for _ in range(size // len(chunk)):
                stream.write(chunk)
    return buffer.getvalue()


def _rss() -> int:
    return int(Path("/proc/self/statm").read_text().split()[1]) * os.sysconf("SC_PAGE_SIZE")


def test_zip_bombs_are_refused_before_they_inflate(
    backend: Backend, start_proxy: Callable[..., Proxy], tmp_path: Path
) -> None:
    """Attack 3: a 2 MB .memcube inflating to 2 GiB took the proxy's RSS from 0.45 to 4.6 GB; the
    MemOS importer read members with no cap at all."""
    proxy = start_proxy(proxy_settings(backend.url, tmp_path / "d", general_settings={"max_import_size_mb": 1}))
    manifest = json.dumps({"format": "memcube-bundle", "format_version": 1}).encode()
    config = json.dumps({"text_mem": {"backend": "general_text", "config": {}}}).encode()
    size = 160 * 1024 * 1024  # read whole, any of these would grow the RSS past the bound
    bare = _bomb({}, zeros="memories.json", size=size)
    bombs = {
        "memproxy": _bomb({"manifest.json": manifest}, zeros="cubes.jsonl", size=size),
        "memos": _bomb({"config.json": config}, zeros="textual_memory.json", size=size),
        "mem0": bare,
        "auto": bare,
    }
    # within the ratio but over the inflated total (twice max_import_size_mb)
    bombs["memos-total"] = _bomb({"config.json": config, "pad": os.urandom(900_000)}, zeros="x", size=8 << 20)
    peak, stop = [_rss()], threading.Event()

    def sample() -> None:
        while not stop.is_set():
            peak.append(_rss())
            time.sleep(0.005)

    sampler = threading.Thread(target=sample)
    baseline = _rss()
    sampler.start()
    try:
        with proxy.http() as http:
            for name, data in bombs.items():
                assert len(data) < 1024 * 1024, name
                fmt = name.split("-")[0]
                response = http.post("/v1/spaces/import", params={"space": "user:x", "format": fmt}, content=data)
                assert response.status_code == 400, (name, response.text)
                assert response.json()["error"]["code"] == "invalid_bundle"
            assert http.get("/v1/memories", params={"user": "x"}).json()["data"] == []
    finally:
        stop.set()
        sampler.join()
    growth = max(peak) - baseline
    print(f"\nRSS growth while refusing {len(bombs)} zip bombs: {growth / 2**20:.1f} MiB")
    assert growth < 100 * 2**20


def test_a_huge_chat_message_becomes_a_bounded_lexical_query(proxy: Proxy) -> None:
    """Attack 5: a 4.8 MB message became a 600k-term FTS query; the request was answered degraded
    after 2.5 s and the abandoned lookup kept a core busy for two minutes."""
    words = [f"w{i:06d}" for i in range(600_000)]
    terms = query_terms(" ".join(["ox", *words[:1000], "hippopotamus", *words[1000:]]))
    assert len(terms) == MAX_QUERY_TERMS and {"ox", "hippopotamus"} <= set(terms)  # the head, and the longest
    assert query_terms("Where does my sister Anna live?") == ["sister", "anna", "live"]
    with proxy.http() as http:
        http.post("/v1/memories", json={"user": "huge", "facts": ["Anna lives in Oslo"], "sync": True})
        message = "Where does Anna live? " + " ".join(words[:400_000])
        assert len(message) > 2_800_000
        response = http.post(
            "/v1/chat/completions",
            json={**CHAT, "user": "huge", "messages": [{"role": "user", "content": message}]},
            headers={"x-memory-mode": "read"},
        )
        assert response.status_code == 200 and response.headers["x-memory-status"] == "ok"
        assert int(response.headers["x-memory-considered"]) >= 1, response.headers  # Anna's memory was still found


def test_a_read_past_its_deadline_stops_in_its_thread(tmp_path: Path, open_store: Callable[[Path], Store]) -> None:
    """Attack 5 (the thread): wait_for cancelled the coroutine, not the SQLite query its thread
    ran; a read now stops once the deadline of the request waiting for it passes (on both engines)."""
    store = open_store(tmp_path / "m.db")
    endless = "WITH RECURSIVE n(i) AS (SELECT 1 UNION ALL SELECT i + 1 FROM n WHERE i < 1e12) SELECT count(*) FROM n"
    outcome: list[BaseException] = []

    def run() -> None:
        try:
            with deadline.within(0.2):
                store.read(endless)  # ~4 days of work unless stopped
        except DeadlineExceeded as exc:
            outcome.append(exc)

    worker = threading.Thread(target=run)
    worker.start()
    worker.join(60)
    try:
        assert not worker.is_alive() and len(outcome) == 1 and store.interrupted == 1
        with deadline.within(0.0), pytest.raises(DeadlineExceeded):  # not even started past its deadline
            store.read("SELECT 1")
        assert store.read("SELECT 1")[0][0] == 1 and store.interrupted == 2  # no deadline: unaffected
    finally:
        store.close()


def test_an_abandoned_lookup_stops_its_store_reads(
    backend: Backend, start_proxy: Callable[..., Proxy], tmp_path: Path
) -> None:
    """Attack 5: the abandoned lookup of a request answered without memory kept a core busy for
    minutes. Here each lookup in a space of 10,000 memories reads for tens of ms, the request
    gives up after 1 ms, and /metrics counts the reads stopped in their threads."""
    data_dir = tmp_path / "d"
    store = Store.open(data_dir / "memproxy.db")
    words = [f"I drank coffee number {i} with friend{i % 97} at cafe{i % 31} in town." for i in range(10_000)]
    store.apply(ChangeSet(cubes=[MemCube(space="user:big", content=text) for text in words]))
    store.outbox_done([row.seq for row in store.outbox_pending(limit=20_000)])  # lexical search only
    store.close()
    memory = {"data_dir": str(data_dir), "retrieval": {"timeout_ms": 1}}
    proxy = start_proxy(proxy_settings(backend.url, data_dir, memory=memory))
    with proxy.http() as http:
        for turn in range(3):
            question = {"role": "user", "content": f"Where did I drink coffee with friend{turn} last month?"}
            body = {**CHAT, "user": "big", "messages": [question]}
            answer = http.post("/v1/chat/completions", json=body, headers={"x-memory-mode": "read"})
            assert answer.status_code == 200 and answer.headers["x-memory-status"] == "degraded"
        stopped = 0.0
        for _ in range(100):  # the threads finish their reads (stopped) shortly after the request
            scraped = http.get("/metrics").text
            stopped = _sample(scraped, "memproxy_memory_reads_interrupted_total")
            if stopped >= 1:
                break
            time.sleep(0.1)
        print(f"\n{stopped:.0f} store reads stopped after 3 lookups abandoned at 1 ms")
        assert stopped >= 1, scraped
        assert _sample(scraped, 'memproxy_retrieval_total{outcome="timeout"}') == 3


def _sample(scraped: str, name: str) -> float:
    values = [float(line.rsplit(" ", 1)[1]) for line in scraped.splitlines() if line.startswith(name + " ")]
    return values[0] if values else 0.0


def test_a_keys_memory_work_waits_on_its_own_slots_only() -> None:
    """Attack 5 (starvation), the bound itself: a key holding all its slots makes its own next
    operation wait, then refuse; another key (and the master key) goes straight through."""

    async def scenario() -> None:
        slots = MemorySlots(per_key=2, queue_seconds=0.2)
        release = asyncio.Event()

        async def hold(key: str) -> None:
            async with slots.hold(key):
                await release.wait()

        flood = [asyncio.create_task(hold("flood")) for _ in range(2)]
        await asyncio.sleep(0)  # both slots taken
        async with slots.hold("calm"), slots.hold(None):
            pass  # not queued behind the flood (a shared bound would refuse after 0.2 s)
        with pytest.raises(MemoryBusy) as busy:
            async with slots.hold("flood"):
                pass
        assert busy.value.status == 429 and busy.value.headers == {"retry-after": "1"}
        waiting = asyncio.create_task(hold("flood"))  # queues for a slot ...
        await asyncio.sleep(0.01)
        release.set()  # ... which frees within its queue time
        await asyncio.gather(*flood, waiting)

    asyncio.run(scenario())


def test_a_key_at_its_memory_bound_degrades_its_own_chat_and_not_another_keys(
    backend: Backend, start_proxy: Callable[..., Proxy], tmp_path: Path
) -> None:
    """Attack 5: eight heavy searches of one user raised another user's search from 0.12 s to
    7.5 s. With one slot per key, key A's memory work in flight (an add whose LLM extraction takes
    3 s) makes A's chat go on without memory and A's search a 429, while key B is served as usual."""
    limits = {"master_key": MASTER, "memory_concurrency_per_key": 1, "memory_queue_ms": 0}
    proxy = start_proxy(proxy_settings(backend.url, tmp_path / "d", general_settings=limits))
    proxy.api_key = MASTER
    _, flood = new_key(proxy, user="flood")
    _, calm = new_key(proxy, user="calm")
    remember(proxy, "flood", "I live in Oslo.")
    remember(proxy, "calm", "I live in Porto.")
    backend.queue({"delay": 3, "text": '{"memories": []}'})  # the extraction model, slow
    add = {"mode": "llm", "messages": [{"role": "user", "content": "I adopted a cat."}], "sync": True}
    added: list[httpx.Response] = []

    def add_slowly() -> None:
        with as_key(proxy, flood) as a:
            added.append(a.post("/v1/memories", json=add))

    adding = threading.Thread(target=add_slowly)
    adding.start()
    try:
        for _ in range(300):  # until the add waits on the extraction model, holding A's one slot
            if backend.received:
                break
            time.sleep(0.01)
        ask = {**CHAT, "messages": [{"role": "user", "content": "Where do I live?"}]}
        with as_key(proxy, flood) as a, as_key(proxy, calm) as b:
            refused = a.post("/v1/memories/search", json={"query": "Where do I live?"})
            assert refused.status_code == 429 and refused.headers["retry-after"] == "1"
            error = refused.json()["error"]
            assert (error["type"], error["code"]) == ("rate_limit_error", "memory_concurrency_exceeded")
            chat = a.post("/v1/chat/completions", json=ask)
            assert chat.status_code == 200 and chat.headers["x-memory-status"] == "degraded"
            assert "Oslo" not in str(backend.last_body()["messages"])
            found = b.post("/v1/memories/search", json={"query": "Where do I live?"})
            assert found.status_code == 200 and "Porto" in found.text
            chat = b.post("/v1/chat/completions", json=ask)
            assert chat.headers["x-memory-status"] == "ok" and "Porto" in str(backend.last_body()["messages"])
            assert adding.is_alive()  # all of this while A's add was still in flight
    finally:
        adding.join(30)
    assert added[0].status_code == 200, added[0].text
    with as_key(proxy, flood) as a:
        assert a.post("/v1/memories/search", json={"query": "Where do I live?"}).status_code == 200  # slot freed
    with proxy.http() as http:
        assert _sample(http.get("/metrics").text, 'memproxy_retrieval_total{outcome="busy"}') == 1


def _guarded_proxy(backend: Backend, embedder: Embedder, tmp_path: Path, **server: Any) -> ServerThread:
    settings = proxy_settings(backend.url, tmp_path / "d", server=server)
    return ServerThread(build_app(settings, embedder=embedder), **uvicorn_options(settings.server))


def _half_sent(
    port: int, data: bytes = b"POST /v1/chat/completions HTTP/1.1\r\nHost: a\r\nContent-Ty"
) -> socket.socket:
    sock = socket.create_connection(("127.0.0.1", port), timeout=5)
    sock.sendall(data)
    return sock


def test_slow_headers_and_bodies_are_cut_off(backend: Backend, embedder: Embedder, tmp_path: Path) -> None:
    with _guarded_proxy(backend, embedder, tmp_path, header_timeout_seconds=0.5, body_timeout_seconds=0.5) as server:
        silent = socket.create_connection(("127.0.0.1", server.port), timeout=5)
        half = _half_sent(server.port)
        body = _half_sent(server.port, b"POST /v1/memories HTTP/1.1\r\nHost: a\r\nContent-Length: 100\r\n\r\n{")
        for sock in (silent, half):
            assert sock.recv(1024) == b""  # closed by the server, not by the 5 s client timeout
        assert body.recv(1024) == b""
        for sock in (silent, half, body):
            sock.close()
        assert httpx.get(f"{server.url}/healthz", timeout=2).status_code == 200


@pytest.mark.slow
def test_a_flood_of_half_sent_requests_leaves_the_proxy_answering(
    backend: Backend, embedder: Embedder, tmp_path: Path
) -> None:
    """Attack 4: one connection that sent half its headers stayed open 50 s; 20,000 of them made
    every request fail, /healthz included. Here 2,000 at a time (loopback, stopping by themselves
    after 6 s) against a cap of 500 connections, while a normal client keeps chatting."""
    with _guarded_proxy(backend, embedder, tmp_path, header_timeout_seconds=3, max_connections=500) as server:
        stop, opened = threading.Event(), [0]

        def flood() -> None:
            held: deque[socket.socket] = deque()
            deadline = time.monotonic() + 6
            while time.monotonic() < deadline and not stop.is_set():
                for _ in range(200):
                    with contextlib.suppress(OSError):
                        held.append(_half_sent(server.port))
                        opened[0] += 1
                while len(held) > 2000:
                    held.popleft().close()
                time.sleep(0.05)
            for sock in held:
                sock.close()

        attacker = threading.Thread(target=flood)
        attacker.start()
        try:
            time.sleep(1)
            for _ in range(8):  # a fresh connection each time, as a client whose pool was evicted
                assert httpx.get(f"{server.url}/healthz", timeout=2).status_code == 200
                answer = httpx.post(f"{server.url}/v1/chat/completions", json=CHAT, timeout=2)
                assert answer.status_code == 200
                time.sleep(0.3)
        finally:
            stop.set()
            attacker.join()
        print(f"\n{opened[0]} half-sent connections opened during the test")
        assert opened[0] >= 2000


def _copies(root: Path, marker: str) -> dict[str, int]:
    """Occurrences of ``marker`` (in any case) in every file under ``root``, read as bytes."""
    needle = marker.lower().encode()
    found = {}
    for path in root.rglob("*"):
        if path.is_file():
            count = path.read_bytes().lower().count(needle)
            if count:
                found[str(path.relative_to(root))] = count
    return found


def _chat(http: httpx.Client, user: str, history: list[dict[str, Any]], text: str, *, stream: bool = False) -> None:
    history.append({"role": "user", "content": text})
    response = http.post("/v1/chat/completions", json={**CHAT, "user": user, "messages": history, "stream": stream})
    assert response.status_code == 200
    answer = "" if stream else response.json()["choices"][0]["message"]["content"]
    history.append({"role": "assistant", "content": answer or "ok"})


def _respond(http: httpx.Client, user: str, text: str, *, stream: bool = False, previous: str | None = None) -> str:
    """A Responses exchange, kept for ``previous_response_id`` (stored texts must go with the user)."""
    body = {"model": "fake", "user": user, "input": text, "stream": stream, "previous_response_id": previous}
    response = http.post("/v1/responses", json={k: v for k, v in body.items() if v is not None})
    assert response.status_code == 200
    if stream:
        completed = [line for line in response.text.splitlines() if '"response.completed"' in line]
        return str(json.loads(completed[-1].removeprefix("data: "))["response"]["id"])
    return str(response.json()["id"])


def test_forgetting_a_user_leaves_no_copy_of_their_words_in_any_file(proxy: Proxy) -> None:
    """Attack 2: after purging every memory and DELETE /v1/spaces/user:carol, the marker was still
    in the journal (both exchanges verbatim), the FTS5 segments and the WAL. Stored Responses
    (a ``previous_response_id`` chain, streamed and not) go with the rest."""
    marker, data_dir = "Zq7CarolMarker", proxy.settings.memory.data_dir
    with proxy.http() as http:
        history: list[dict[str, Any]] = []
        _chat(http, "carol", history, f"My locker code is {marker}1.")
        _chat(http, "carol", history, f"My bike is called {marker}2.", stream=True)
        raw = [{"role": "user", "content": f"The spare key hides under {marker}3."}]
        body = {"user": "carol", "mode": "raw", "messages": raw, "facts": [f"Carol's alias is {marker}4"]}
        assert http.post("/v1/memories", json={**body, "sync": True}).status_code == 200
        mem0 = [{"id": "c1", "memory": f"Carol's pin is {marker}5", "hash": "h"}]
        params = {"space": "user:carol", "format": "mem0"}
        assert http.post("/v1/spaces/import", params=params, content=json.dumps(mem0)).status_code == 200
        first = _respond(http, "carol", f"My passport number is {marker}6.")
        chained = _respond(http, "carol", f"My boat is the {marker}7.", stream=True, previous=first)
        _chat(http, "dave", [], "My locker code is 4321.")  # another user: untouched
        kept = _respond(http, "dave", "My car is green.")
        proxy.wait_writeback()
        assert _copies(data_dir, marker)  # the check can see it
        assert http.get(f"/v1/responses/{chained}").status_code == 200
        assert http.delete("/v1/spaces/user:carol").json()["deleted"] >= 5
        assert _copies(data_dir, marker) == {}
        assert http.get(f"/v1/responses/{chained}").status_code == 404
        assert http.get("/v1/memories", params={"user": "dave"}).json()["data"]
        assert http.get(f"/v1/responses/{kept}").status_code == 200


def test_purging_one_memory_leaves_no_copy_and_the_others_stay(proxy: Proxy) -> None:
    marker, data_dir = "Zq7DanMarker", proxy.settings.memory.data_dir
    with proxy.http() as http:
        history: list[dict[str, Any]] = []
        _chat(http, "dan", history, f"My wifi password is {marker}.")
        _chat(http, "dan", history, "I live in Porto.")  # resends the marker's turn in its history
        quoted = _respond(http, "dan", f"Remember: My wifi password is {marker}.")  # its stored text holds it
        unrelated = _respond(http, "erin", "I like tea.")  # (dan's own would quote the memories it was shown)
        http.post("/v1/memories", json={"user": "dan", "facts": ["Dan's gym is Iron Temple"], "sync": True})
        proxy.wait_writeback()
        listed = http.get("/v1/memories", params={"user": "dan"}).json()["data"]
        [secret] = [m for m in listed if marker in m["content"]]
        assert len(_copies(data_dir, marker)) >= 1
        assert http.delete(f"/v1/memories/{secret['id']}", params={"purge": "true"}).status_code == 200
        assert _copies(data_dir, marker) == {}
        assert http.get(f"/v1/responses/{quoted}").status_code == 404
        assert http.get(f"/v1/responses/{unrelated}").status_code == 200
        left = {m["content"] for m in http.get("/v1/memories", params={"user": "dan"}).json()["data"]}
        assert left == {m["content"] for m in listed} - {secret["content"]} and len(left) == 2
        found = http.post("/v1/memories/search", json={"user": "dan", "query": "Where does Dan live?"}).json()
        assert any("Porto" in result["text"] for result in found["results"])


def test_purging_by_source_takes_every_memory_of_those_messages_and_nothing_else(proxy: Proxy) -> None:
    """Issue 12: memories derived from a purged memory's source messages go with it. One message
    gives a fact and an episode; purging the fact by source removes both, every copy of their
    words, and leaves the memories of other messages (and another user's, even under the same
    client-given message id) alone."""
    marker, data_dir = "Zq7ErinMarker", proxy.settings.memory.data_dir
    with proxy.http() as http:
        history: list[dict[str, Any]] = []
        said = f"Ugh, what a week. My locker code is {marker}. Whatever."
        _chat(http, "erin", history, said)
        _chat(http, "erin", history, "I live in Porto.", stream=True)  # resends the marker's turn
        http.post("/v1/memories", json={"user": "erin", "facts": ["Erin's gym is Iron Temple"], "sync": True})
        proxy.wait_writeback()
        states = {"state": ["active", "quarantined", "superseded", "deleted", "archived"]}
        listed = http.get("/v1/memories", params={"user": "erin", **states}).json()["data"]
        derived = [m for m in listed if marker.lower() in m["content"].lower()]
        assert {m["meta"]["layer"] for m in derived} == {"fact", "episode"}, listed
        [fact] = [m for m in derived if m["meta"]["layer"] == "fact"]
        message_id = fact["sources"][0]
        other = {"id": message_id, "role": "user", "content": "I keep bees on the roof."}
        body = {"user": "frank", "mode": "raw", "messages": [other], "sync": True}
        assert http.post("/v1/memories", json=body).status_code == 200  # same id, another user's space
        assert _copies(data_dir, marker)

        soft = http.delete(f"/v1/memories/{fact['id']}", params={"by_source": "true"})
        assert soft.status_code == 400 and soft.json()["error"]["param"] == "by_source"
        answer = http.delete(f"/v1/memories/{fact['id']}", params={"purge": "true", "by_source": "true"})
        assert answer.status_code == 200, answer.text
        assert answer.json()["purged"] is True and set(answer.json()["ids"]) == {m["id"] for m in derived}

        assert _copies(data_dir, marker) == {}
        left = http.get("/v1/memories", params={"user": "erin", **states}).json()["data"]
        assert {m["id"] for m in left} == {m["id"] for m in listed} - {m["id"] for m in derived}
        assert any("Porto" in m["content"] for m in left) and any("Iron Temple" in m["content"] for m in left)
        assert "bees" in str(http.get("/v1/memories", params={"user": "frank"}).json()["data"])
        for gone in derived:
            assert http.get(f"/v1/memories/{gone['id']}").status_code == 404
        found = http.post("/v1/memories/search", json={"user": "erin", "query": "What is my locker code?"}).json()
        assert marker.lower() not in str(found).lower()


def test_index_writes_larger_than_chromas_batch_limit_are_chunked(tmp_path: Path) -> None:
    """Attack 6: a 20,000-item import answered 503 ("Batch size of 20000 is greater than max batch
    size of 5461") after committing all of it."""
    index = ChromaIndex(VectorIndexSettings(), tmp_path)
    try:
        count = 6_000  # over Chroma's limit (5,461 with SQLite's default variable cap)
        vectors = np.random.default_rng(0).standard_normal((count, 8)).astype(np.float32)
        entries = [VectorEntry(f"c{i}", WHOLE, vectors[i]) for i in range(count)]
        asyncio.run(index.upsert("user:bulk", entries))
        assert asyncio.run(index.count("user:bulk")) == count
    finally:
        index.close()
