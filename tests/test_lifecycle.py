"""Memories evolve: updates and retractions supersede, duplicates merge, edits version,
expiry hides, pins always inject, purge and forget leave nothing behind."""

from __future__ import annotations

import json
import sqlite3
from collections.abc import Callable
from pathlib import Path
from typing import Any

import httpx

from tests.conftest import Backend, Proxy, proxy_settings


def say(http: httpx.Client, user: str, *texts: str, mode: str = "heuristic", **extra: Any) -> list[dict[str, Any]]:
    """The facts these messages changed (episodes, the messages kept as said, aside)."""
    messages = [{"role": "user", "content": text, **extra} for text in texts]
    response = http.post("/v1/memories", json={"user": user, "messages": messages, "mode": mode, "sync": True})
    assert response.status_code == 200, response.text
    return [r for r in response.json()["results"] if r["layer"] == "fact"]


def memories(http: httpx.Client, user: str, *states: str) -> list[dict[str, Any]]:
    """The space's facts in these states (default active)."""
    params: list[tuple[str, str]] = [("user", user), ("limit", "500")] + [("state", s) for s in states]
    return [m for m in http.get("/v1/memories", params=params).json()["data"] if m["meta"].get("layer") != "episode"]


def search(http: httpx.Client, user: str, query: str) -> list[str]:
    found = http.post("/v1/memories/search", json={"user": user, "query": query}).json()
    return [r["text"] for r in found["results"]]


def test_moving_to_porto_supersedes_lisbon(proxy: Proxy) -> None:
    with proxy.http() as http:
        [lisbon] = say(http, "ana", "I live in Lisbon.", created_at="2021-03-01T10:00:00Z")
        [porto] = say(http, "ana", "I moved to Porto.", created_at="2024-06-15T09:30:00Z")
        assert porto["event"] == "UPDATE" and porto["previous_id"] == lisbon["id"]
        active = memories(http, "ana")
        assert [m["content"] for m in active] == ["I moved to Porto."]
        old = http.get(f"/v1/memories/{lisbon['id']}").json()
        new = http.get(f"/v1/memories/{porto['id']}").json()
        assert old["state"] == "superseded" and old["superseded_by"] == new["id"]
        assert new["supersedes"] == old["id"] and new["version"] == old["version"] + 1
        assert old["valid_to"] == new["valid_from"] == "2024-06-15T09:30:00Z"
        assert old["valid_from"] == "2021-03-01T10:00:00Z"
        events = [h["event"] for h in http.get(f"/v1/memories/{lisbon['id']}/history").json()["data"]]
        assert events == ["ADD", "SUPERSEDE"]
        texts = search(http, "ana", "Where do I live?")
        assert any("Porto" in t for t in texts) and not any("Lisbon" in t for t in texts)


def test_an_explicit_retraction_ends_the_fact_and_keeps_it_as_history(proxy: Proxy) -> None:
    with proxy.http() as http:
        [job] = say(http, "ben", "I work at Google.", created_at="2024-01-10T09:00:00Z")
        [retraction] = say(http, "ben", "I quit my job at Google.", created_at="2025-05-02T09:00:00Z")
        assert retraction["event"] == "UPDATE" and retraction["previous_id"] == job["id"]
        assert [m["content"] for m in memories(http, "ben")] == ["I quit my job at Google."]
        old = http.get(f"/v1/memories/{job['id']}").json()
        assert old["state"] == "superseded" and old["valid_to"] == "2025-05-02T09:00:00Z"
        history = http.get(f"/v1/memories/{job['id']}/history").json()["data"]
        assert [h["event"] for h in history] == ["ADD", "SUPERSEDE"]
        assert not any("I work at Google." in t for t in search(http, "ben", "Where do I work?"))


def test_duplicates_merge_sources_instead_of_piling_up(proxy: Proxy) -> None:
    with proxy.http() as http:
        [first] = say(http, "cat", "I have two kids.", id="a1")
        [again] = say(http, "cat", "I have two kids!", id="a2")
        assert again["event"] == "NOOP" and again["id"] == first["id"]
        [cube] = memories(http, "cat")
        assert cube["sources"] == ["a1", "a2"]


def test_one_exchange_stating_two_values_keeps_the_last(proxy: Proxy) -> None:
    with proxy.http() as http:
        results = say(http, "dan", "I live in Lisbon.", "Actually, I moved to Porto last week.")
        assert [r["event"] for r in results] == ["ADD", "UPDATE"]
        assert [m["content"] for m in memories(http, "dan")] == ["I moved to Porto last week."]
        assert len(memories(http, "dan", "superseded")) == 1


def test_facts_of_different_speakers_do_not_replace_each_other(proxy: Proxy) -> None:
    with proxy.http() as http:
        say(http, "chat", "I live in Oslo.", name="Alice")
        results = say(http, "chat", "I live in Rome.", name="Bob")
        assert results[0]["event"] == "ADD"
        assert sorted(m["content"] for m in memories(http, "chat")) == [
            "Alice: I live in Oslo.",
            "Bob: I live in Rome.",
        ]


def test_raw_mode_keeps_every_turn(proxy: Proxy) -> None:
    with proxy.http() as http:
        say(http, "raw", "I live in Lisbon.", mode="raw")
        say(http, "raw", "I moved to Porto.", mode="raw")
        kept = http.get("/v1/memories", params={"user": "raw"}).json()["data"]
        assert sorted(m["content"] for m in kept) == ["user: I live in Lisbon.", "user: I moved to Porto."]
        assert {m["meta"]["layer"] for m in kept} == {"episode"}  # raw mode keeps episodes only


def test_llm_mode_decides_with_integer_ids(backend: Backend, start_proxy: Callable[..., Proxy], tmp_path: Path) -> None:
    proxy = start_proxy(proxy_settings(backend.url, tmp_path / "d", memory={"extraction": {"mode": "llm"}}))
    with proxy.http() as http:
        backend.queue(
            {"text": json.dumps({"memories": [{"text": "Lives in Lisbon", "date": "2022-01-05", "sources": [1]}]})}
        )
        [lisbon] = say(http, "eve", "I'm living in Lisbon these days", mode="llm", id="u1")
        assert lisbon["event"] == "ADD" and lisbon["sources"] == ["u1"]
        assert http.get(f"/v1/memories/{lisbon['id']}").json()["valid_from"].startswith("2022-01-05")
        extraction_prompt = backend.received[-1]["body"]
        assert extraction_prompt["response_format"] == {"type": "json_object"}
        backend.queue(
            {"text": json.dumps({"memories": [{"text": "Lives in Porto", "sources": [1]}]})},
            {"text": '```json\n{"event": "UPDATE", "id": 0}\n```'},
        )
        [porto] = say(http, "eve", "we relocated to porto", mode="llm")
        assert porto["event"] == "UPDATE" and porto["previous_id"] == lisbon["id"]
        shown = backend.received[-1]["body"]["messages"][-1]["content"]
        assert "[0] Lives in Lisbon" in shown and lisbon["id"] not in shown
        # An answer naming a memory that does not exist is not trusted: the rules decide (ADD).
        backend.queue(
            {"text": json.dumps({"memories": [{"text": "Has a cat named Tom"}]})},
            {"text": json.dumps({"event": "DELETE", "id": 7})},
        )
        [cat] = say(http, "eve", "my cat is called Tom", mode="llm")
        assert cat["event"] == "ADD"
        # Unusable extraction output falls back to the heuristic reader.
        backend.queue({"text": "sorry, I cannot do JSON"})
        [fallback] = say(http, "eve", "I work at Acme Corp.", mode="llm")
        assert fallback["text"] == "I work at Acme Corp."
        assert sorted(m["content"] for m in memories(http, "eve")) == [
            "Has a cat named Tom",
            "I work at Acme Corp.",
            "Lives in Porto",
        ]


def test_expired_memories_are_never_retrieved(proxy: Proxy) -> None:
    with proxy.http() as http:
        [fact] = say(http, "fay", "I am training for the Boston marathon.")
        assert any("Boston" in t for t in search(http, "fay", "marathon"))
        patched = http.patch(f"/v1/memories/{fact['id']}", json={"expires_at": "2020-01-01T00:00:00Z"})
        assert patched.status_code == 200
        assert search(http, "fay", "marathon") == []


def test_pinned_memories_are_always_injected(proxy: Proxy, backend: Backend) -> None:
    with proxy.http() as http:
        [pin] = say(http, "gus", "I am allergic to penicillin.")
        say(http, "gus", "I like jazz.")
        http.patch(f"/v1/memories/{pin['id']}", json={"pinned": True})
        http.post(
            "/v1/chat/completions",
            json={
                "model": "fake",
                "user": "gus",
                "messages": [
                    {"role": "system", "content": "Be brief."},
                    {"role": "user", "content": "Recommend a song"},
                ],
            },
        )
        sent = backend.last_body()["messages"]
        assert sent[0] == {"role": "system", "content": "Be brief."}
        assert sent[1]["role"] == "user" and "penicillin" in sent[1]["content"]
        assert "penicillin" not in sent[-1]["content"]  # not repeated in the volatile block


def test_an_edit_is_a_new_version(proxy: Proxy) -> None:
    with proxy.http() as http:
        [fact] = say(http, "hal", "My favorite color is blue.")
        edited = http.patch(
            f"/v1/memories/{fact['id']}", json={"content": "My favorite color is green.", "tags": ["color"]}
        ).json()
        assert edited["version"] == 2 and edited["id"] == fact["id"] and edited["tags"] == ["color"]
        history = http.get(f"/v1/memories/{fact['id']}/history").json()["data"]
        assert [(h["event"], h["memory"]["version"], h["memory"]["content"]) for h in history] == [
            ("ADD", 1, "My favorite color is blue."),
            ("UPDATE", 2, "My favorite color is green."),
        ]
        assert any("green" in t for t in search(http, "hal", "favorite color"))
        assert not any("blue" in t for t in search(http, "hal", "favorite color"))
        assert http.patch(f"/v1/memories/{fact['id']}", json={}).status_code == 400
        assert http.patch(f"/v1/memories/{fact['id']}", json={"state": "active"}).status_code == 400
        tagged = http.get("/v1/memories", params={"user": "hal", "tag": "color"}).json()["data"]
        assert [m["id"] for m in tagged] == [fact["id"]]


def vector_ids(proxy: Proxy, space: str, ids: list[str]) -> set[str]:
    memory = proxy.server.app.state.memory
    return set(memory.vectors.whole(space, ids))


def test_purge_leaves_nothing_of_the_cube_anywhere(proxy: Proxy) -> None:
    with proxy.http() as http:
        [keep] = say(http, "ivy", "I play the violin.")
        [gone] = say(http, "ivy", "I speak Finnish.")
        http.patch(f"/v1/memories/{gone['id']}", json={"content": "I speak Finnish and Swedish."})
        assert vector_ids(proxy, "user:ivy", [gone["id"], keep["id"]]) == {gone["id"], keep["id"]}
        assert http.delete(f"/v1/memories/{gone['id']}", params={"purge": "true"}).json()["purged"] is True
        assert http.get(f"/v1/memories/{gone['id']}").status_code == 404
        assert http.get(f"/v1/memories/{gone['id']}/history").status_code == 404
    db = sqlite3.connect(proxy.settings.memory.data_dir / "memproxy.db")
    for table, column in (("cubes", "id"), ("history", "cube_id"), ("outbox", "cube_id"), ("vectors", "cube_id")):
        assert db.execute(f"SELECT count(*) FROM {table} WHERE {column} = ?", (gone["id"],)).fetchone()[0] == 0
    assert db.execute("SELECT count(*) FROM postings WHERE term = 'finnish'").fetchone()[0] == 0
    assert db.execute("SELECT count(*) FROM postings WHERE term = 'violin'").fetchone()[0] == 1
    assert db.execute("SELECT count(*) FROM cubes WHERE doc LIKE '%Finnish%'").fetchone()[0] == 0
    assert vector_ids(proxy, "user:ivy", [gone["id"], keep["id"]]) == {keep["id"]}


def test_forgetting_one_user_touches_no_other(proxy: Proxy) -> None:
    with proxy.http() as http:
        say(http, "jon", "I live in Madrid.")
        say(http, "kay", "I live in Dublin.")
        kay_before = memories(http, "kay")
        assert http.delete("/v1/spaces/user:jon").json() == {"space": "user:jon", "deleted": 1}
        assert memories(http, "jon") == [] and memories(http, "jon", "deleted", "superseded") == []
        assert search(http, "jon", "Madrid") == []
        assert memories(http, "kay") == kay_before
        assert any("Dublin" in t for t in search(http, "kay", "Where do I live?"))
    db = sqlite3.connect(proxy.settings.memory.data_dir / "memproxy.db")
    assert db.execute("SELECT count(*) FROM lexicon_spaces WHERE space = 'user:jon'").fetchone()[0] == 0
    assert db.execute("SELECT count(*) FROM postings WHERE term = 'madrid'").fetchone()[0] == 0
    assert db.execute("SELECT count(*) FROM postings WHERE term = 'dublin'").fetchone()[0] == 1
    memory = proxy.server.app.state.memory
    assert memory.vectors.count("user:jon") == 0
    assert memory.vectors.count("user:kay") == 1
