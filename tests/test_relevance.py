"""Relevance: a turn that needs no personal context gets no volatile block, and one that needs a
memory (explicitly or by implication) still gets it. The rates are printed (``pytest -s``)."""

from __future__ import annotations

from typing import Any

import httpx

from memcubes.relevance import NO_PERSONAL_CONTEXT, skip_reason
from tests.conftest import Proxy
from tests.fixtures.relevance import (
    NEEDS_MEMORY_OTHER_LANGUAGES,
    NEEDS_MEMORY_TURNS,
    NO_MEMORY_TURNS,
    PERSONAL_FACTS,
    TRAVEL_NOTES,
)

USER = "relevance"


def search(http: httpx.Client, query: str) -> list[dict[str, Any]]:
    response = http.post("/v1/memories/search", json={"user": USER, "query": query})
    assert response.status_code == 200, response.text
    return list(response.json()["results"])


def test_memory_is_injected_when_it_helps_and_not_otherwise(proxy: Proxy) -> None:
    """Both rates through the search API (exactly what chat injects)."""
    with proxy.http() as http:
        facts = [*PERSONAL_FACTS.values(), *TRAVEL_NOTES]
        added = http.post("/v1/memories", json={"user": USER, "facts": facts, "sync": True})
        assert added.status_code == 200, added.text
        injected_for_nothing = [turn for turn in NO_MEMORY_TURNS if search(http, turn)]

        def missed(turns: list[tuple[str, tuple[str, ...]]]) -> list[str]:
            lost = []
            for turn, keys in turns:
                texts = " ".join(result["text"] for result in search(http, turn))
                if not any(PERSONAL_FACTS[key].rstrip(".") in texts for key in keys):
                    lost.append(turn)
            return lost

        quiet = 1 - len(injected_for_nothing) / len(NO_MEMORY_TURNS)
        lost = missed(NEEDS_MEMORY_TURNS)
        kept = 1 - len(lost) / len(NEEDS_MEMORY_TURNS)
        lost_abroad = missed(NEEDS_MEMORY_OTHER_LANGUAGES)
        print(f"\nno-memory turns left without memory: {quiet:.3f} ({len(NO_MEMORY_TURNS)} turns)")
        print(f"needs-memory turns that got the memory: {kept:.3f} ({len(NEEDS_MEMORY_TURNS)} turns)")
        print(
            f"  asked in other languages: {len(NEEDS_MEMORY_OTHER_LANGUAGES) - len(lost_abroad)} of "
            f"{len(NEEDS_MEMORY_OTHER_LANGUAGES)}"
        )
        assert len(NO_MEMORY_TURNS) >= 150 and len(NEEDS_MEMORY_TURNS) >= 150
        assert quiet >= 0.90, injected_for_nothing
        assert kept >= 0.95, "; ".join(lost)


def test_chat_says_why_nothing_was_injected(proxy: Proxy) -> None:
    client = proxy.openai()
    with proxy.http() as http:
        http.post("/v1/memories", json={"user": "why", "facts": ["My wife is called Helena."], "sync": True})
    raw = client.chat.completions.with_raw_response.create(
        model="fake", messages=[{"role": "user", "content": "thanks, that's all!"}], user="why"
    )
    assert raw.headers["x-memory-injected"] == "0" and raw.headers["x-memory-reason"] == NO_PERSONAL_CONTEXT
    raw = client.chat.completions.with_raw_response.create(
        model="fake", messages=[{"role": "user", "content": "What is my wife's name?"}], user="why"
    )
    assert raw.headers["x-memory-injected"] == "1" and "x-memory-reason" not in raw.headers
    assert raw.headers["x-memory-considered"] == "1"


def test_relevance_off_always_fills(proxy: Proxy) -> None:
    assert skip_reason("hi") == NO_PERSONAL_CONTEXT and skip_reason("What is my wife's name?") is None
    assert skip_reason("Write a poem for my wife.") is None  # a task about the user is personal
