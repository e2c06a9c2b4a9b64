"""Retrieval quality features, end to end through the memory API and the chat path."""

from __future__ import annotations

import asyncio
from collections.abc import Callable
from pathlib import Path
from typing import Any

import httpx
import numpy as np

from memcubes.hot_vectors import SpaceVectors
from memcubes.retrieval import fuse, mentioned, render_date
from memcubes.sentences import sentence_texts, split_speaker
from memcubes.vectors import WHOLE, VectorEntry
from tests.conftest import Backend, Proxy, proxy_settings

CONVERSATION = [
    ("Alice", "Hey Bob! Long week. I finally adopted a greyhound called Pixel, she is so calm. How are you?"),
    ("Bob", "Great news! I started rowing on the river every Saturday morning with my brother."),
    ("Alice", "Nice. Work is busy, we shipped the new checkout page. Pixel loves the park though."),
    ("Bob", "My brother and I entered a regatta in Ghent for September. Wish us luck!"),
    ("Alice", "Good luck! By the way I moved to a flat near the old harbour last month."),
]


def seed(http: httpx.Client, user: str = "duo") -> None:
    messages = [
        {"role": "user", "name": name, "content": text, "id": f"t{i}", "created_at": f"2023-05-0{i + 1}T10:00:00Z"}
        for i, (name, text) in enumerate(CONVERSATION)
    ]
    assert (
        http.post("/v1/memories", json={"user": user, "messages": messages, "mode": "raw", "sync": True}).status_code
        == 200
    )


def warm(http: httpx.Client, proxy: Proxy) -> None:
    """Search once: the space's vectors are in RAM from then on."""
    search(http, "warm up")
    assert proxy.server.app.state.memory.hot.get("user:duo") is not None


def search(http: httpx.Client, query: str, **extra: Any) -> dict[str, Any]:
    response = http.post("/v1/memories/search", json={"user": "duo", "query": query, **extra})
    assert response.status_code == 200, response.text
    return dict(response.json())


def test_chat_injects_exactly_what_search_returns(proxy: Proxy, backend: Backend) -> None:
    with proxy.http() as http:
        seed(http)
        warm(http, proxy)  # the space's vectors load into RAM on first use
        question = "What is the name of Alice's dog?"
        found = search(http, question)
        http.post(
            "/v1/chat/completions",
            json={"model": "fake", "user": "duo", "messages": [{"role": "user", "content": question}]},
        )
    block = backend.last_body()["messages"][-1]["content"]
    injected = [line[2:] for line in block.split("\n") if line.startswith("- ")]
    assert injected == [result["text"] for result in found["results"]]
    assert found["results"] and found["tokens"] <= proxy.settings.memory.retrieval.token_budget


def test_long_memories_are_rendered_as_their_most_relevant_sentence(proxy: Proxy) -> None:
    with proxy.http() as http:
        seed(http)
        warm(http, proxy)
        top = search(http, "Where did Alice move to?")["results"][0]
        assert top["text"] == "[5 May 2023] Alice: By the way I moved to a flat near the old harbour last month."
        assert top["sources"] == ["t4"]
        dog = search(http, "What breed is Pixel?")["results"][0]
        assert dog["text"] == "[1 May 2023] Alice: I finally adopted a greyhound called Pixel, she is so calm."
        # the stored memory itself is untouched
        memory = http.get(f"/v1/memories/{dog['id']}").json()
        assert memory["content"] == f"Alice: {CONVERSATION[0][1]}"


def test_memories_of_the_speaker_a_question_names_rank_first(proxy: Proxy) -> None:
    with proxy.http() as http:
        seed(http)
        warm(http, proxy)
        results = search(http, "What does Bob do on weekends?", top_k=2)["results"]
        assert [r["sources"] for r in results] == [["t1"], ["t3"]]


def test_a_speaker_who_joins_later_is_recognised_at_once(proxy: Proxy) -> None:
    """Speaker names are cached per space and extended by every write, not re-read on a timer."""
    with proxy.http() as http:
        seed(http)
        warm(http, proxy)  # the space's speakers are cached now: Alice and Bob
        late = {"role": "user", "name": "Carol", "content": "On weekends I restore old bicycles.", "id": "t9"}
        http.post("/v1/memories", json={"user": "duo", "messages": [late], "mode": "raw", "sync": True})
        results = search(http, "What does Carol do on weekends?", top_k=1)["results"]
        assert [r["sources"] for r in results] == [["t9"]]
        space = http.get(f"/v1/memories/{results[0]['id']}").json()["space"]
        retriever = proxy.server.app.state.memory.retriever
        assert asyncio.run(retriever._speaker_names(space)) == {"Alice", "Bob", "Carol"}


def test_the_plain_preset_renders_whole_memories(
    backend: Backend, start_proxy: Callable[..., Proxy], tmp_path: Path
) -> None:
    proxy = start_proxy(proxy_settings(backend.url, tmp_path / "d", memory={"retrieval": {"preset": "plain"}}))
    with proxy.http() as http:
        seed(http)
        warm(http, proxy)
        top = search(http, "Where did Alice move to?")["results"][0]
        assert top["text"] == f"[5 May 2023] Alice: {CONVERSATION[4][1]}"


def test_a_cold_space_is_searched_exactly_from_sqlite_and_then_held(proxy: Proxy) -> None:
    with proxy.http() as http:
        seed(http)
    memory = proxy.server.app.state.memory
    memory.hot.drop("user:duo")
    assert not asyncio.run(memory.index.holds("user:duo"))  # no ANN index for a space this small
    with proxy.http() as http:
        cold = search(http, "regatta in Ghent")["results"]
    assert cold[0]["sources"] == ["t3"]
    assert memory.hot.get("user:duo") is not None  # read once, held for the next search


def test_space_vectors_score_whole_text_and_best_sentence() -> None:
    vectors = SpaceVectors(2)
    unit = [np.array(v, dtype=np.float32) / np.linalg.norm(v) for v in ([1, 0], [0, 1], [1, 1])]
    vectors.add(
        [
            VectorEntry("a", WHOLE, unit[2]),
            VectorEntry("a", 0, unit[0]),
            VectorEntry("a", 1, unit[1]),
            VectorEntry("b", WHOLE, unit[1]),
        ]
    )
    scores = dict(vectors.ranked(unit[0], sentence_weight=0.5))
    assert np.isclose(scores["a"], 0.5 * unit[2] @ unit[0] + 0.5 * 1.0)
    assert np.isclose(scores["b"], 0.0)
    assert vectors.best_sentence("a", unit[1]) == 1 and vectors.best_sentence("b", unit[1]) is None
    vectors.add([VectorEntry("a", WHOLE, unit[1])])  # replaced: the sentences are gone too
    assert vectors.best_sentence("a", unit[0]) is None
    assert np.isclose(dict(vectors.ranked(unit[1], sentence_weight=0.5))["a"], 1.0)
    vectors.remove(["b"])
    assert set(dict(vectors.ranked(unit[0], sentence_weight=0.0))) == {"a"}
    for i in range(200):  # growth and compaction keep every live cube
        vectors.add([VectorEntry(f"c{i}", WHOLE, unit[i % 3])])
        if i % 3 == 0:
            vectors.remove([f"c{i}"])
    assert len(dict(vectors.ranked(unit[0], sentence_weight=0.5))) == 1 + 200 - 67


def test_small_pieces() -> None:
    assert fuse([(["a", "b"], 1.0), (["b", "c"], 2.0)], k=10) == {"a": 1 / 11, "b": 1 / 12 + 2 / 11, "c": 2 / 12}
    assert mentioned({"Ann", "Bo"}, "Did Ann meet Bob?") == {"Ann"}
    assert split_speaker("Ann: I sail. Often.") == ("Ann", "I sail. Often.")
    assert split_speaker("The plan for today: sail") == (None, "The plan for today: sail")
    assert sentence_texts("Ann: I sail. Dr. Who sails too!") == ["Ann: I sail.", "Ann: Dr. Who sails too!"]
    assert sentence_texts("Just one sentence.") == []
    from datetime import UTC, datetime

    assert render_date(datetime(2023, 5, 8, tzinfo=UTC)) == "8 May 2023"


def test_hot_vectors_follow_writes_and_deletes(proxy: Proxy) -> None:
    with proxy.http() as http:
        seed(http)
        warm(http, proxy)
        memory = proxy.server.app.state.memory
        assert memory.hot.get("user:duo") is not None
        [added] = http.post(
            "/v1/memories", json={"user": "duo", "facts": ["Bob's brother is called Jonas"], "sync": True}
        ).json()["results"]
        assert search(http, "Who is Jonas?", top_k=1)["results"][0]["id"] == added["id"]
        http.delete(f"/v1/memories/{added['id']}")
        assert added["id"] not in [r["id"] for r in search(http, "Who is Jonas?")["results"]]
        assert added["id"] not in asyncio.run(_score_ids(memory))


async def _score_ids(memory: Any) -> set[str]:
    vectors = memory.hot.get("user:duo")
    return set(dict(vectors.ranked(np.ones(memory.embedder.dimension, dtype=np.float32), sentence_weight=0.5)))


def test_space_vectors_rank_best_first_within_limit_and_floor() -> None:
    vectors = SpaceVectors(2)
    angles = np.linspace(0, np.pi / 2, 50)
    vectors.add(
        [VectorEntry(f"c{i}", WHOLE, np.array([np.cos(a), np.sin(a)], np.float32)) for i, a in enumerate(angles)]
    )
    query = np.array([1, 0], np.float32)
    everything = vectors.ranked(query, sentence_weight=0.5)
    assert [cube_id for cube_id, _ in everything] == [f"c{i}" for i in range(50)]
    head = vectors.ranked(query, sentence_weight=0.5, limit=7)
    assert head == everything[:7]
    floored = vectors.ranked(query, sentence_weight=0.5, floor=0.5)
    assert floored == [pair for pair in everything if pair[1] >= 0.5] and 0 < len(floored) < 50


def test_a_subset_is_ranked_and_sentences_found_as_over_the_whole_space() -> None:
    """``ranked_among`` and ``best_sentence`` (indexed by cube) agree with the whole space's
    ranking and with a scan of each cube's sentences, through replacements and removals."""
    rng = np.random.default_rng(7)

    def unit() -> np.ndarray:
        v = rng.normal(size=8).astype(np.float32)
        return v / np.linalg.norm(v)

    vectors, sentences = SpaceVectors(8), {}
    for round_ in range(3):  # later rounds replace some cubes' entries
        for i in range(round_ * 10, 40):
            parts = [unit() for _ in range(i % 4)]  # no sentences, or 1-3 of them
            sentences[f"c{i}"] = parts
            vectors.add(
                [VectorEntry(f"c{i}", WHOLE, unit()), *(VectorEntry(f"c{i}", n, v) for n, v in enumerate(parts))]
            )
    vectors.remove(["c3", "c4"])
    query = unit()
    subset = {f"c{i}" for i in range(0, 40, 3)} | {"missing"}
    everything = [cube_id for cube_id, _ in vectors.ranked(query, sentence_weight=0.5)]
    assert vectors.ranked_among(query, subset, sentence_weight=0.5) == [c for c in everything if c in subset]
    for cube_id, parts in sentences.items():
        expected = int(np.argmax([p @ query for p in parts])) if parts and cube_id not in ("c3", "c4") else None
        assert vectors.best_sentence(cube_id, query) == expected
