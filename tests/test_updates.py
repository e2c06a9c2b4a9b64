"""Knowledge updates through chat: a change told in other words supersedes the fact it replaces,
a plan, a visit, a past fact or someone else's news supersedes nothing, and the past is shown as
past when a question asks for it."""

from __future__ import annotations

import json
from collections.abc import Callable, Iterator
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import pytest

from memcubes.dates import became_true
from memcubes.embedder import Embedder
from memcubes.past import asks_about_past
from proxy.eval.updates import evaluate_locally, evaluate_updates, load_corpus
from tests.conftest import Backend, Proxy, own_proxy, proxy_settings

CORPUS = Path(__file__).parent / "fixtures" / "updates_corpus.txt"


@pytest.fixture(scope="module")
def shared(embedder: Embedder, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Proxy]:
    with own_proxy(embedder, tmp_path_factory.mktemp("updates")) as proxy:
        yield proxy


def test_the_corpus_through_chat_in_the_default_mode(shared: Proxy) -> None:
    scenarios = load_corpus(CORPUS)
    assert sum(s.target is not None for s in scenarios) >= 120
    assert sum(s.target is None for s in scenarios) >= 60
    report = evaluate_updates(scenarios, url=shared.url, model="fake")
    print(report.table(), *report.failures(), sep="\n")
    assert report.update_rate >= 0.90
    assert report.false_rate <= 0.03


def memory_block(body: dict[str, Any]) -> str:
    return str(body["messages"][-1]["content"]).split("</memories>")[0]


def test_the_issue_conversation_shows_what_is_current_and_the_past_on_request(
    backend: Backend, start_proxy: Callable[..., Proxy], tmp_path: Path
) -> None:
    proxy = start_proxy(proxy_settings(backend.url, tmp_path / "data"))
    client = proxy.openai()
    sent = datetime.now(UTC)
    for text in (
        "I live in Lisbon with my two cats.",
        "My favourite food is grilled sardines.",
        "I work as a nurse at Santa Maria hospital.",
        "Big news: I just moved to Porto last week!",
        "I quit my nursing job; I am now a software tester.",
    ):
        client.chat.completions.create(model="fake", user="rita", messages=[{"role": "user", "content": text}])
        proxy.wait_writeback()
    client.chat.completions.create(
        model="fake", user="rita", messages=[{"role": "user", "content": "Where do I live now and what is my job?"}]
    )
    now = memory_block(backend.last_body())
    assert "moved to Porto" in now and "software tester" in now and "grilled sardines" in now
    assert "I live in Lisbon" not in now and "I work as a nurse" not in now
    # "last week" dates the move, and ends the old home there.
    moved = (sent - timedelta(days=7)).replace(hour=0, minute=0, second=0, microsecond=0)
    with proxy.http() as http:
        old = {
            m["content"]: m
            for m in http.get("/v1/memories", params={"user": "rita", "state": "superseded"}).json()["data"]
        }
        current = {m["content"]: m for m in http.get("/v1/memories", params={"user": "rita"}).json()["data"]}
    assert sorted(old) == ["I live in Lisbon with my two cats.", "I work as a nurse at Santa Maria hospital."]
    porto = current["Big news: I just moved to Porto last week."]
    assert datetime.fromisoformat(porto["valid_from"]) == moved
    assert old["I live in Lisbon with my two cats."]["valid_to"] == porto["valid_from"]
    client.chat.completions.create(
        model="fake", user="rita", messages=[{"role": "user", "content": "Where did I live before Porto?"}]
    )
    before = memory_block(backend.last_body())
    assert f"[{moved.day} {moved:%b} {moved.year}] Big news: I just moved to Porto last week." in before
    assert f"[past: until {moved.day} {moved:%b} {moved.year}] I live in Lisbon with my two cats." in before


def test_llm_mode_asks_the_judge_for_updates_and_applies_its_answer(
    backend: Backend, start_proxy: Callable[..., Proxy], tmp_path: Path
) -> None:
    proxy = start_proxy(proxy_settings(backend.url, tmp_path / "d", memory={"extraction": {"mode": "llm"}}))
    with proxy.http() as http:
        seeded = {
            "user": "li",
            "mode": "heuristic",
            "sync": True,
            "messages": [
                {"role": "user", "content": "I am a nurse.", "created_at": "2025-01-01T00:00:00Z"},
                {"role": "user", "content": "I live in Lisbon.", "created_at": "2025-01-01T00:00:00Z"},
            ],
        }
        assert http.post("/v1/memories", json=seeded).status_code == 200
        backend.queue(
            {"text": "Congratulations!"},
            {"text": json.dumps({"memories": [{"text": "Moved to Porto", "date": "2026-11-25", "sources": [1]}]})},
            {"text": '{"event": "UPDATE", "id": {pick}}', "pick": "I live in Lisbon."},
        )
        proxy.openai().chat.completions.create(
            model="fake", user="li", messages=[{"role": "user", "content": "Big news: we packed up for Porto!"}]
        )
        proxy.wait_writeback()
        judge = backend.received[-1]["body"]["messages"]
        assert "UPDATE: the new fact replaces or ends" in judge[0]["content"]
        assert "NEW fact: Moved to Porto" in judge[-1]["content"]
        [old] = http.get("/v1/memories", params={"user": "li", "state": "superseded"}).json()["data"]
        assert old["content"] == "I live in Lisbon." and old["valid_to"] == "2026-11-25T00:00:00Z"
        current = [m for m in http.get("/v1/memories", params={"user": "li"}).json()["data"]]
        assert sorted(m["content"] for m in current if m["meta"]["layer"] == "fact") == [
            "I am a nurse.",
            "Moved to Porto",
        ]


SAID = datetime(2026, 12, 2, 15, 30, tzinfo=UTC)  # a Wednesday


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("I just moved to Porto last week!", datetime(2026, 11, 25, tzinfo=UTC)),
        ("I got laid off two weeks ago.", datetime(2026, 11, 18, tzinfo=UTC)),
        ("I retired last year.", datetime(2025, 12, 2, tzinfo=UTC)),
        ("Moved back to Melbourne yesterday!", datetime(2026, 12, 1, tzinfo=UTC)),
        ("I resigned last Friday.", datetime(2026, 11, 27, tzinfo=UTC)),
        ("I moved to Munich in March.", datetime(2026, 3, 1, tzinfo=UTC)),
        ("Sam and I separated in December 2025.", datetime(2025, 12, 1, tzinfo=UTC)),
        ("I've gone plant-based since 2024.", datetime(2024, 1, 1, tzinfo=UTC)),
        ("I may move to Porto.", None),  # "may" the verb is no month
        ("I live in Porto.", None),
    ],
)
def test_when_a_change_became_true(text: str, expected: datetime | None) -> None:
    assert became_true(text, SAID) == expected


@pytest.mark.parametrize(
    ("query", "past"),
    [
        ("Where did I live before Porto?", True),
        ("What was my old job?", True),
        ("Which car did I use to drive?", True),
        ("Who was my previous partner?", True),
        ("Where do I live now?", False),
        ("How old is my dog?", False),
        ("What is my job?", False),
    ],
)
def test_which_questions_ask_about_the_past(query: str, past: bool) -> None:
    assert asks_about_past(query) is past


@pytest.mark.slow
def test_the_corpus_in_llm_mode_with_the_scripted_judge(embedder: Embedder) -> None:
    """The judge names the replaced fact when it is shown: this measures that the rules show it
    and that its answer is applied, one scenario at a time (about a minute)."""
    report = evaluate_locally(load_corpus(CORPUS), mode="llm", embedder=embedder)
    print(report.table(), *report.failures(), sep="\n")
    assert report.update_rate >= 0.95
    assert report.false_rate == 0.0


def test_a_change_told_in_the_same_exchange_supersedes_the_fact_before_it(proxy: Proxy) -> None:
    with proxy.http() as http:
        messages = [
            {"role": "user", "content": "I work as a nurse at Santa Maria hospital."},
            {"role": "user", "content": "I quit my nursing job; I am now a software tester."},
        ]
        body = {"user": "ida", "messages": messages, "sync": True}
        nurse, tester = http.post("/v1/memories", json=body).json()["results"]
        assert (nurse["event"], tester["event"], tester["previous_id"]) == ("ADD", "UPDATE", nurse["id"])
        assert http.get(f"/v1/memories/{nurse['id']}").json()["state"] == "superseded"
