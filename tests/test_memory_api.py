"""The memory API through real HTTP: add, search, list, get, edit, delete, history, forget."""

from __future__ import annotations

import httpx

from tests.conftest import Proxy

TURNS = [
    {
        "role": "user",
        "content": "I adopted a puppy named Biscuit.",
        "id": "m1",
        "name": "Alice",
        "created_at": "2023-05-08T13:56:00Z",
    },
    {"role": "assistant", "content": "Congratulations!", "id": "m2", "created_at": "2023-05-08T13:57:00Z"},
    {
        "role": "user",
        "content": "Next month I am running the Lisbon half marathon.",
        "id": "m3",
        "name": "Alice",
        "created_at": "2023-06-01T09:00:00+01:00",
    },
]


def add(http: httpx.Client, **body: object) -> httpx.Response:
    return http.post("/v1/memories", json={"user": "alice", **body})


def test_sync_add_keeps_sources_and_times_and_is_searchable_at_once(proxy: Proxy) -> None:
    with proxy.http() as http:
        response = add(http, messages=TURNS, mode="raw", sync=True)
        assert response.status_code == 200
        body = response.json()
        assert body["status"] == "done"
        assert [r["event"] for r in body["results"]] == ["ADD", "ADD", "ADD"]
        assert [r["sources"] for r in body["results"]] == [["m1"], ["m2"], ["m3"]]
        assert body["results"][0]["text"] == "Alice: I adopted a puppy named Biscuit."
        found = http.post("/v1/memories/search", json={"user": "alice", "query": "What is the puppy called?"}).json()
        top = found["results"][0]
        assert top["sources"] == ["m1"]
        assert top["created_at"].startswith("2023-05-08T13:56")
        assert top["text"] == "[8 May 2023] Alice: I adopted a puppy named Biscuit."
        assert found["tokens"] == sum(r["tokens"] for r in found["results"])
        cube = http.get(f"/v1/memories/{top['id']}").json()
        assert cube["valid_from"].startswith("2023-05-08") and cube["source"]["names"] == ["Alice"]


def test_async_add_answers_202_then_lands(proxy: Proxy) -> None:
    with proxy.http() as http:
        response = add(http, messages=[{"role": "user", "content": "I grow tomatoes on my balcony."}])
        assert response.status_code == 202
        assert response.json()["status"] == "queued"
        proxy.wait_writeback()
        data = http.get("/v1/memories", params={"user": "alice"}).json()["data"]
        assert [m["content"] for m in data] == ["I grow tomatoes on my balcony."]
        assert data[0]["sources"] and data[0]["source"]["reader"] == "heuristic"


def test_heuristic_mode_drops_chit_chat_and_duplicates(proxy: Proxy) -> None:
    with proxy.http() as http:
        messages = [
            {"role": "user", "content": "hi there!"},
            {"role": "user", "content": "thanks, that helps"},
            {"role": "user", "content": "I'm vegetarian, what should I cook tonight?"},
        ]
        results = add(http, messages=messages, sync=True).json()["results"]
        # The fact, and the message it came from as an episode (it says more than the fact);
        # the greeting and the thanks are neither.
        assert [(r["layer"], r["text"]) for r in results] == [
            ("fact", "I'm vegetarian."),
            ("episode", "user: I'm vegetarian, what should I cook tonight?"),
        ]
        again = add(http, messages=[{"role": "user", "content": "I'm vegetarian!"}], sync=True).json()["results"]
        assert again[0]["event"] == "NOOP" and again[0]["id"] == results[0]["id"]
        assert len(again) == 1  # the fact says all of the message: no episode
        assert len(http.get("/v1/memories", params={"user": "alice"}).json()["data"]) == 2


def test_search_is_cut_to_the_token_budget(proxy: Proxy) -> None:
    with proxy.http() as http:
        facts = [f"Fact number {i}: the user likes colour {i} and fruit {i}." for i in range(30)]
        add(http, facts=facts, sync=True)
        wide = http.post("/v1/memories/search", json={"user": "alice", "query": "colour", "top_k": 30}).json()
        narrow = http.post(
            "/v1/memories/search", json={"user": "alice", "query": "colour", "top_k": 30, "token_budget": 60}
        ).json()
        assert narrow["tokens"] <= 60 < wide["tokens"]
        assert len(narrow["results"]) < len(wide["results"])
        assert (
            http.post("/v1/memories/search", json={"user": "alice", "query": "colour", "top_k": 3})
            .json()["results"]
            .__len__()
            == 3
        )


def test_list_pages_with_a_cursor_and_delete(proxy: Proxy) -> None:
    with proxy.http() as http:
        add(http, facts=[f"Fact {i}" for i in range(7)], sync=True)
        seen: list[str] = []
        cursor = None
        while True:
            params = {"user": "alice", "limit": 3, **({"cursor": cursor} if cursor else {})}
            page = http.get("/v1/memories", params=params).json()
            seen += [m["content"] for m in page["data"]]
            cursor = page["next_cursor"]
            if not page["has_more"]:
                break
        assert sorted(seen) == sorted(f"Fact {i}" for i in range(7)) and len(seen) == 7
        victim = http.get("/v1/memories", params={"user": "alice", "limit": 1}).json()["data"][0]
        assert http.delete(f"/v1/memories/{victim['id']}").json() == {
            "id": victim["id"],
            "deleted": True,
            "purged": False,
        }
        assert http.get(f"/v1/memories/{victim['id']}").json()["state"] == "deleted"
        remaining = http.get("/v1/memories", params={"user": "alice", "limit": 50}).json()["data"]
        assert victim["id"] not in [m["id"] for m in remaining] and len(remaining) == 6
        found = http.post("/v1/memories/search", json={"user": "alice", "query": victim["content"]}).json()
        assert victim["id"] not in [r["id"] for r in found["results"]]
        deleted = http.get("/v1/memories", params={"user": "alice", "state": "deleted"}).json()["data"]
        assert [m["id"] for m in deleted] == [victim["id"]]


def test_memory_api_errors(proxy: Proxy) -> None:
    with proxy.http() as http:
        missing_owner = http.post("/v1/memories/search", json={"query": "x"})
        assert missing_owner.status_code == 400 and missing_owner.json()["error"]["param"] == "user"
        assert http.post("/v1/memories", json={"user": "a"}).status_code == 400
        assert http.post("/v1/memories", json={"user": "a", "messages": [{"role": "user"}]}).status_code == 400
        bad_time = add(http, messages=[{"role": "user", "content": "x", "created_at": "yesterday"}])
        assert bad_time.status_code == 400 and "created_at" in bad_time.json()["error"]["param"]
        unknown = http.get("/v1/memories/01NOPE")
        assert unknown.status_code == 404 and unknown.json()["error"]["code"] == "memory_not_found"
        assert http.delete("/v1/memories/01NOPE").status_code == 404
        assert http.get("/v1/memories", params={"user": "a", "state": "gone"}).status_code == 400
        assert http.post("/v1/memories/search", json={"user": "a", "query": ""}).status_code == 400


def test_times_are_iso_8601_not_epoch_digits(proxy: Proxy) -> None:
    """The schema says ISO 8601; pydantic would read ``until=19067357`` as epoch seconds (found by
    the schema fuzzer)."""
    with proxy.http() as http:
        for number in ("19067357", "5.173057948710845e-57"):  # the second also found by the fuzzer
            response = http.get("/v1/memories", params={"user": "alice", "until": number})
            assert response.status_code == 400 and response.json()["error"]["param"] == "until"
        assert http.get("/v1/memories", params={"user": "alice", "until": "2024-05-08T10:00:00Z"}).status_code == 200
