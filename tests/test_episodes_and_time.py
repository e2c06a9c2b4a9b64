"""The default memory: episodes beside facts, and retrieval that knows when things happened."""

from __future__ import annotations

from typing import Any

import httpx

from tests.conftest import Proxy


def add(http: httpx.Client, user: str, messages: list[dict[str, Any]]) -> list[dict[str, Any]]:
    response = http.post("/v1/memories", json={"user": user, "messages": messages, "sync": True})
    assert response.status_code == 200, response.text
    return list(response.json()["results"])


def search(http: httpx.Client, user: str, query: str, **extra: Any) -> list[dict[str, Any]]:
    response = http.post("/v1/memories/search", json={"user": user, "query": query, **extra})
    assert response.status_code == 200, response.text
    return list(response.json()["results"])


def test_a_message_is_kept_as_an_episode_beside_its_facts(proxy: Proxy) -> None:
    said = "The weather has been crazy this week, rain every single day! I live in Lisbon with two cats."
    with proxy.http() as http:
        results = add(http, "ines", [{"role": "user", "content": said, "id": "m1"}])
        layers = {r["layer"] for r in results}
        assert layers == {"fact", "episode"}
        [episode] = [r for r in results if r["layer"] == "episode"]
        assert episode["text"] == f"user: {said}" and episode["sources"] == ["m1"]
        facts = [r for r in results if r["layer"] == "fact"]
        for fact in facts:  # each fact points at the episode it was distilled from
            cube = http.get(f"/v1/memories/{fact['id']}").json()
            assert cube["meta"]["episodes"] == [episode["id"]] and cube["sources"] == ["m1"]
        # A greeting says nothing: no episode, no fact.
        assert add(http, "ines", [{"role": "user", "content": "hi there, thanks!"}]) == []
        # Packing spends the budget on one piece of evidence once: a fact and its own episode
        # are not both injected.
        found = search(http, "ines", "Where do I live?")
        assert sum(1 for r in found if r["sources"] == ["m1"]) == 1


def test_a_superseded_fact_s_episode_ranks_below_the_current_fact(proxy: Proxy) -> None:
    with proxy.http() as http:
        add(
            http,
            "joao",
            [{"role": "user", "content": "The rent here is crazy, prices doubled. I live in Lisbon.", "id": "a"}],
        )
        add(http, "joao", [{"role": "user", "content": "I moved to Porto.", "id": "b"}])
        found = search(http, "joao", "Where do I live?")
        assert "Porto" in found[0]["text"]
        stale = [m for m in http.get("/v1/memories", params={"user": "joao"}).json()["data"] if m["meta"].get("stale")]
        assert [m["sources"] for m in stale] == [["a"]]  # the episode stays, as history


def test_a_question_naming_a_time_finds_what_happened_then(proxy: Proxy) -> None:
    said = [
        ("I went hiking in the Alps with my brother.", "2021-03-14T10:00:00Z"),
        ("I went hiking in the Pyrenees with my sister.", "2022-07-02T10:00:00Z"),
        ("I went hiking in the Andes with my cousin.", "2023-01-20T10:00:00Z"),
        # Said in May about the day before: found for a question about 7 May.
        ("Yesterday I went hiking on Mount Fuji with a friend.", "2023-05-08T10:00:00Z"),
    ]
    with proxy.http() as http:
        for number, (text, when) in enumerate(said):
            add(http, "kai", [{"role": "user", "content": text, "id": f"h{number}", "created_at": when}])
        assert search(http, "kai", "Where did I go hiking in March 2021?")[0]["sources"] == ["h0"]
        assert search(http, "kai", "Who did I go hiking with in July 2022?")[0]["sources"] == ["h1"]
        assert search(http, "kai", "Where did I hike in January?")[0]["sources"] == ["h2"]
        assert search(http, "kai", "Where did I go hiking on 7 May 2023?")[0]["sources"] == ["h3"]
