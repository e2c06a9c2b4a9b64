"""The inspector's API: spaces listed with their figures (paged, filtered), one space's figures,
its stable block as the next request gets it, search with ``explain``, and memory listing by text
and in either order."""

from __future__ import annotations

import httpx
from openai import OpenAI

from memcubes.layout import STABLE_HEADING, VOLATILE_HEADING, render_block
from tests.conftest import Proxy


def add(http: httpx.Client, user: str, *facts: str) -> list[str]:
    response = http.post("/v1/memories", json={"user": user, "facts": list(facts), "sync": True})
    assert response.status_code == 200, response.text
    return [change["id"] for change in response.json()["results"]]


def test_spaces_are_listed_with_counts_paged_and_filtered(proxy: Proxy) -> None:
    with proxy.http() as http:
        for user in ("carol", "alice", "bob"):
            add(http, user, f"{user} likes green tea.", f"{user} keeps a cat.")
        [first] = add(http, "alice", "alice plays the cello.")
        http.delete(f"/v1/memories/{first}")
        page = http.get("/v1/spaces", params={"limit": 2}).json()
        assert [s["space"] for s in page["data"]] == ["user:alice", "user:bob"]
        assert page["has_more"] and page["next_cursor"] == "user:bob"
        alice = page["data"][0]
        assert alice["memories"] == {"active": 2, "deleted": 1} and alice["total"] == 3
        assert alice["bytes"] > 0 and alice["last_activity"] >= alice["created_at"]
        rest = http.get("/v1/spaces", params={"limit": 2, "cursor": page["next_cursor"]}).json()
        assert [s["space"] for s in rest["data"]] == ["user:carol"] and not rest["has_more"]
        assert [s["space"] for s in http.get("/v1/spaces", params={"q": "ALI"}).json()["data"]] == ["user:alice"]
        assert http.get("/v1/spaces/user:bob").json()["memories"] == {"active": 2}
        missing = http.get("/v1/spaces/user:nobody")
        assert missing.status_code == 404 and missing.json()["error"]["code"] == "space_not_found"
        assert http.get("/v1/spaces", params={"limit": 0}).status_code == 400


def test_the_stable_block_is_what_the_next_request_gets(proxy: Proxy, backend: object) -> None:
    with proxy.http() as http:
        [pinned, _] = add(http, "dora", "Dora is allergic to peanuts.", "Dora works night shifts.")
        empty = http.get("/v1/spaces/user:dora/stable").json()
        assert empty["items"] == [] and empty["messages"] == [] and empty["tokens"] == 0
        http.patch(f"/v1/memories/{pinned}", json={"pinned": True})
        block = http.get("/v1/spaces/user:dora/stable").json()
        assert [item["id"] for item in block["items"]] == [pinned] and block["items"][0]["pinned"]
        assert block["messages"][0]["content"].startswith("<memories>\n" + STABLE_HEADING)
        assert block["tokens"] == block["items"][0]["tokens"] < block["message_tokens"]
        client = OpenAI(base_url=f"{proxy.url}/v1", api_key="x", max_retries=0)
        client.chat.completions.create(model="fake", user="dora", messages=[{"role": "user", "content": "hi"}])
        sent = backend.last_body()["messages"]  # type: ignore[attr-defined]
        assert sent[: len(block["messages"])] == block["messages"]
        assert http.get("/v1/spaces/user:nobody/stable").status_code == 404


def test_search_explains_its_ranking_and_shows_the_injected_text(proxy: Proxy) -> None:
    with proxy.http() as http:
        add(http, "erin", "Erin's sister lives in Berlin.", "Erin drives a blue van.", "Erin loves sushi.")
        plain = http.post("/v1/memories/search", json={"user": "erin", "query": "Where does my sister live?"}).json()
        assert set(plain) == {"results", "tokens"}  # explain is opt-in: the plain answer is unchanged
        explained = http.post(
            "/v1/memories/search", json={"user": "erin", "query": "Where does my sister live?", "explain": True}
        ).json()
        assert explained["results"] == plain["results"] and explained["tokens"] == plain["tokens"]
        top = explained["candidates"][0]
        assert top["content"] == "Erin's sister lives in Berlin." and top["injected"]
        assert top["dense"] > 0 and top["lexical"] > 0 and top["fused"] > 0
        fused = [c["fused"] for c in explained["candidates"]]
        assert fused == sorted(fused, reverse=True)
        injected = {c["id"] for c in explained["candidates"] if c["injected"]}
        assert injected == {r["id"] for r in plain["results"]}
        texts = [r["text"] for r in plain["results"]]
        assert explained["injected"] == {"stable": None, "volatile": render_block(texts, heading=VOLATILE_HEADING)}
        tight = http.post(
            "/v1/memories/search", json={"user": "erin", "query": "sister", "explain": True, "token_budget": 12}
        ).json()
        assert len(tight["candidates"]) > len(tight["results"])  # ranked, but not all fit the budget
        bad = http.post("/v1/memories/search", json={"user": "erin", "query": "x", "explain": "yes"})
        assert bad.status_code == 400 and bad.json()["error"]["param"] == "explain"


def test_memories_filtered_by_text_in_any_state_and_either_order(proxy: Proxy) -> None:
    with proxy.http() as http:
        ids = add(http, "finn", "Finn bought a 50% share of a boat.", "Finn sails on Sundays.", "Finn hates rain.")
        http.delete(f"/v1/memories/{ids[1]}")
        params: dict[str, str | list[str]] = {"user": "finn", "state": ["active", "deleted"]}
        found = http.get("/v1/memories", params={**params, "q": "SAIL"}).json()["data"]
        assert [m["id"] for m in found] == [ids[1]]
        assert [m["id"] for m in http.get("/v1/memories", params={**params, "q": "50%"}).json()["data"]] == [ids[0]]
        assert http.get("/v1/memories", params={**params, "q": "_"}).json()["data"] == []  # LIKE wildcards are literal
        oldest = http.get("/v1/memories", params={**params, "order": "oldest", "limit": 2}).json()
        assert [m["id"] for m in oldest["data"]] == ids[:2] and oldest["has_more"]
        rest = http.get("/v1/memories", params={**params, "order": "oldest", "cursor": oldest["next_cursor"]}).json()
        assert [m["id"] for m in rest["data"]] == ids[2:]
        assert http.get("/v1/memories", params={**params, "order": "random"}).status_code == 400


def test_the_inspector_page_is_served_with_a_strict_policy(proxy: Proxy) -> None:
    with httpx.Client(base_url=proxy.url) as http:  # the page holds nothing secret: no key needed
        page = http.get("/ui", follow_redirects=True)
        assert page.status_code == 200 and page.url.path == "/ui/" and "app.js" in page.text
        assert "script-src 'self'" in page.headers["content-security-policy"]
        assert http.get("/ui/app.js").headers["content-type"].startswith("text/javascript")
        assert http.get("/ui/../proxy/app.py").status_code == 404
        assert http.get("/ui/secrets.txt").status_code == 404
        assert http.get("/v1/spaces").status_code in (200, 401)


def test_a_memorys_source_messages_come_from_its_journalled_exchange(proxy: Proxy) -> None:
    with proxy.http() as http:
        messages = [
            {"role": "user", "content": "My brother Tom is a dentist.", "id": "m-1", "name": "gus"},
            {"role": "assistant", "content": "Nice!", "id": "m-2"},
        ]
        added = http.post("/v1/memories", json={"user": "gus", "messages": messages, "mode": "raw", "sync": True})
        first = added.json()["results"][0]["id"]
        sources = http.get(f"/v1/memories/{first}/sources").json()["data"]
        assert [(m["id"], m["role"], m["name"], m["content"]) for m in sources] == [
            ("m-1", "user", "gus", "My brother Tom is a dentist.")
        ]
        [fact] = add(http, "gus", "Gus collects stamps.")
        assert http.get(f"/v1/memories/{fact}/sources").json()["data"] == []
        assert http.get("/v1/memories/nope/sources").status_code == 404
