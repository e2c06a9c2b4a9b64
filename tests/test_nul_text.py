"""NUL characters in what users send: SQLite would keep them, PostgreSQL's text refuses them (the
store would answer 503 and write-back retry forever as if the server were down). The memory model
drops them, so a memory reads the same on both engines, and no request fails because of one; an
id holding one is not found, a filter or cursor holding one is a 400, on both engines."""

from __future__ import annotations

from pathlib import Path

from memcubes.embedder import Embedder
from tests.conftest import own_proxy


def test_nul_characters_are_dropped_on_both_engines(embedder: Embedder, tmp_path: Path, database_url: str) -> None:
    memory = {"database_url": database_url, "extraction": {"mode": "raw"}}
    with own_proxy(embedder, tmp_path, memory=memory) as proxy, proxy.http() as http:
        added = http.post(
            "/v1/memories",
            json={"user": "nul", "facts": ["I keep bees\x00 on the roof."], "tags": ["ro\x00of"], "sync": True},
        )
        assert added.status_code == 200, added.text
        chat = {"model": "fake", "user": "nul", "messages": [{"role": "user", "content": "My cat is Mo\x00chi."}]}
        assert http.post("/v1/chat/completions", json=chat).status_code == 200
        proxy.wait_writeback()
        listed = http.get("/v1/memories", params={"user": "nul"})
        assert listed.status_code == 200, listed.text
        assert sorted(m["content"] for m in listed.json()["data"]) == [
            "I keep bees on the roof.",
            "user: My cat is Mochi.",
        ]
        for params in ({"q": "Mochi"}, {"q": "bees"}, {"tag": "roof"}):
            found = http.get("/v1/memories", params={"user": "nul", **params})
            assert found.status_code == 200 and len(found.json()["data"]) == 1, (params, found.text)
        searched = http.post("/v1/memories/search", json={"user": "nul", "query": "the cat Mo\x00chi"})
        assert searched.status_code == 200, searched.text
        assert "Mochi" in searched.json()["results"][0]["text"]
        # an id holding one names nothing: not found, as on SQLite (PostgreSQL failed the lookup: 503)
        for missing in (
            http.get("/v1/memories/a%00b"),
            http.delete("/v1/memories/a%00b"),
            http.get("/v1/memories/a%00b/history"),
            http.get("/v1/responses/resp_%00x"),
            http.delete("/v1/keys/key_%00x"),
            http.post(
                "/v1/responses",
                json={"model": "fake", "input": "hi", "user": "nul", "previous_response_id": "resp_\x00x"},
            ),
        ):
            assert missing.status_code == 404, missing.text
        for param in ("cursor", "q", "tag"):  # a filter holding one: refused, naming it
            refused = http.get("/v1/memories", params={"user": "nul", param: "a\x00b"})
            assert refused.status_code == 400 and refused.json()["error"]["param"] == param, refused.text
        journal = http.get("/readyz").json()["checks"]["journal"]
        assert not journal.get("failed"), journal
