"""The MemScheduler: stable block (pins, heat with hysteresis, append-only order), volatile block,
working memory per session, one token budget, and the prompt layout across a session."""

from __future__ import annotations

import asyncio
import json
from collections.abc import AsyncIterator, Callable
from pathlib import Path
from typing import Any

import aiohttp
import pytest

from memcubes import layout
from memcubes.config import MemorySettings
from memcubes.embedder import Embedder
from memcubes.exchange import Exchange
from memcubes.memory_os import MemoryOS
from memcubes.retrieval import RetrievedItem
from proxy.backends.openai_wire import OpenAIWireBackend
from proxy.config import ModelEntry, RouterSettings
from tests.conftest import Backend, Proxy, proxy_settings

SPACE = "user:sched"


@pytest.fixture
async def memory(embedder: Embedder, tmp_path: Path) -> AsyncIterator[MemoryOS]:
    settings = MemorySettings.model_validate(
        {
            "data_dir": str(tmp_path / "data"),
            "scheduler": {"promote_heat": 2.5, "demote_heat": 1, "heat_half_life_hours": 1 / 3600, "stable_max": 2},
        }
    )
    os_ = await MemoryOS.open(settings, embedder=embedder)
    yield os_
    await os_.close()


async def add(memory: MemoryOS, *facts: str) -> list[str]:
    changes = await memory.add(Exchange(space=SPACE, facts=list(facts), mode="heuristic"), sync=True)
    assert changes is not None
    return [change.id for change in changes]


def texts(items: list[RetrievedItem]) -> list[str]:
    return [item.text.split("] ", 1)[1] for item in items]


async def test_pins_form_the_stable_block_in_joining_order(memory: MemoryOS) -> None:
    a, b, c = await add(memory, "Allergic to penicillin", "Vegetarian since 2015", "Lives in Porto")
    await memory.edit(c, {"pinned": True})
    await memory.edit(a, {"pinned": True})
    plan = await memory.plan([SPACE], [{"role": "user", "content": "What should I eat tonight?"}])
    assert texts(plan.stable) == ["Lives in Porto", "Allergic to penicillin"]  # pinned c first: it joined first
    assert not set(plan.stable[0].cube_ids) & set(plan.volatile[0].cube_ids if plan.volatile else [])
    assert all(item.cube_ids[0] not in {a, c} for item in plan.volatile)
    await memory.edit(b, {"pinned": True})
    plan = await memory.plan([SPACE], [{"role": "user", "content": "anything"}])
    assert texts(plan.stable) == ["Lives in Porto", "Allergic to penicillin", "Vegetarian since 2015"]


async def test_heat_promotes_and_cooling_demotes_with_hysteresis(memory: MemoryOS) -> None:
    hot, cold = await add(memory, "Plays the cello in an orchestra", "Owns a red bicycle")
    for _ in range(3):
        plan = await memory.plan([SPACE], [{"role": "user", "content": "Tell me about my cello playing"}])
        memory.record_hits(plan.relevant)
    await memory._flush_heat()
    plan = await memory.plan([SPACE], [{"role": "user", "content": "unrelated question about taxes"}])
    assert [item.cube_ids[0] for item in plan.stable] == [hot]
    cube = await memory.get(hot)
    assert cube.access.stable_since is not None and cube.access.heat > 2.5
    assert (await memory.get(cold)).access.stable_since is None
    # One more hit keeps it (heat has not cooled below demote_heat yet) ...
    memory.record_hits([hot])
    await memory._flush_heat()
    assert (await memory.get(hot)).access.stable_since is not None
    # ... and once it cools (half-life of one second here) it leaves the block.
    await asyncio.sleep(3.0)
    assert await memory.scheduler.rebalance(SPACE) is True
    taxes = [{"role": "user", "content": "unrelated question about taxes"}]
    assert (await memory.plan([SPACE], taxes, session="next")).stable == []
    # The conversation that saw it keeps its block: the demotion waits for its next conversation.
    assert [item.cube_ids[0] for item in (await memory.plan([SPACE], taxes)).stable] == [hot]


async def test_only_writes_that_can_touch_the_stable_block_make_it_be_read_again(
    memory: MemoryOS, monkeypatch: pytest.MonkeyPatch
) -> None:
    (lisbon,) = await add(memory, "I live in Lisbon")
    await memory.edit(lisbon, {"pinned": True})
    ask = [{"role": "user", "content": "Where do I live?"}]
    assert texts((await memory.plan([SPACE], ask)).stable) == ["I live in Lisbon"]
    reads: list[str] = []
    read = memory.store.stable_members
    monkeypatch.setattr(memory.store, "stable_members", lambda space: reads.append(space) or read(space))

    await add(memory, "I play the cello")  # a new memory, neither pinned nor a member
    assert texts((await memory.plan([SPACE], ask)).stable) == ["I live in Lisbon"]
    assert reads == []

    await add(memory, "I live in Porto")  # supersedes the pinned member
    plan = await memory.plan([SPACE], ask)
    assert reads and "I live in Lisbon" not in texts(plan.stable)


async def test_stable_block_respects_its_share_of_one_token_budget(memory: MemoryOS) -> None:
    facts = [
        "Keeps a rusty saw in the garden shed",
        "Grows basil on the kitchen window",
        "Drives an old blue van",
        "Sings in a choir on Thursdays",
        "Collects vintage postcards from Japan",
        "Swims every Sunday morning",
        "Reads detective novels before bed",
        "Fixed the roof of the shed in May",
    ]
    ids = await add(memory, *facts)
    assert len(set(ids)) == len(facts)
    for cube_id in ids:
        await memory.edit(cube_id, {"pinned": True})
    plan = await memory.plan([SPACE], [{"role": "user", "content": "garden shed"}], token_budget=100)
    assert sum(item.tokens for item in plan.stable) <= 50 < sum(item.tokens for item in plan.stable) + 20
    assert plan.tokens <= 100


async def test_working_memory_keeps_context_for_vague_follow_ups(memory: MemoryOS) -> None:
    await add(memory, "My daughter Mia studies marine biology in Lisbon", "I repaired the kitchen sink last week")
    first = await memory.plan([SPACE], [{"role": "user", "content": "What does Mia study?"}], session="s1", top_k=1)
    assert "marine biology" in first.volatile[0].text
    follow_up = [{"role": "user", "content": "How is the kitchen sink?"}]
    with_session = await memory.plan([SPACE], follow_up, session="s1", top_k=2)
    assert any("marine biology" in item.text for item in with_session.volatile)
    fresh = await memory.plan([SPACE], follow_up, session="other", top_k=1)
    assert "sink" in fresh.volatile[0].text
    for _ in range(4):  # without being retrieved again it fades out after a few turns
        later = await memory.plan([SPACE], [{"role": "user", "content": "kitchen sink pipes"}], session="s1", top_k=1)
    assert all("marine" not in item.text for item in later.volatile)


async def test_working_memory_never_brings_back_deleted_memories(memory: MemoryOS) -> None:
    [fact] = await add(memory, "Training for the Berlin marathon")
    await memory.plan([SPACE], [{"role": "user", "content": "my marathon training"}], session="s")
    await memory.delete(fact)
    plan = await memory.plan([SPACE], [{"role": "user", "content": "and then?"}], session="s")
    assert plan.items == []


def test_prompt_prefix_is_byte_identical_across_a_five_turn_session(proxy: Proxy, backend: Backend) -> None:
    with proxy.http() as http:
        added = http.post(
            "/v1/memories",
            json={"user": "lena", "sync": True, "facts": ["Lena is allergic to peanuts", "Lena prefers metric units"]},
        ).json()["results"]
        for fact in added:
            http.patch(f"/v1/memories/{fact['id']}", json={"pinned": True})
        history: list[dict[str, Any]] = [{"role": "system", "content": "You are Lena's cooking assistant."}]
        prefixes = []
        for turn in (
            "I bought a wok.",
            "I have two kids.",
            "We like spicy food.",
            "I live in Vienna.",
            "What can I cook tonight?",
        ):
            history.append({"role": "user", "content": turn})
            reply = http.post(
                "/v1/chat/completions",
                headers={"X-Memory-Session": "dinner"},
                json={"model": "fake", "user": "lena", "messages": history},
            ).json()
            proxy.wait_writeback()  # write-back adds memories between turns: the prefix must not move
            sent = backend.last_body()["messages"]
            # the block is a user turn the assistant acknowledges: never system, roles alternate
            assert sent[1]["role"] == "user" and "peanuts" in sent[1]["content"]
            assert sent[2] == {"role": "assistant", "content": layout.ACKNOWLEDGEMENT}
            assert [m["role"] for m in sent[1:]] == ["user", "assistant"] * (len(sent) // 2 - 1) + ["user"]
            prefixes.append(json.dumps(sent[:3]))
            # everything before the last user turn is what the client sent, byte for byte
            assert json.dumps(sent[3:-1]) == json.dumps(history[1:-1])
            history.append({"role": "assistant", "content": reply["choices"][0]["message"]["content"]})
        assert len(set(prefixes)) == 1
        memories = http.get("/v1/memories", params={"user": "lena"}).json()["data"]
        assert len(memories) > 2  # the session did learn new facts meanwhile


def test_anthropic_models_get_cache_control_on_the_stable_block(
    backend: Backend, start_proxy: Callable[..., Proxy], tmp_path: Path
) -> None:
    settings = proxy_settings(backend.url, tmp_path / "d")
    data = settings.model_dump(mode="json")
    data["model_list"].append(
        {
            "model_name": "claude",
            "forward": "passthrough",
            "litellm_params": {"model": "anthropic/claude-x", "api_base": f"{backend.url}/v1", "api_key": "x"},
        }
    )
    proxy = start_proxy(type(settings).model_validate(data))
    with proxy.http() as http:
        [fact] = http.post("/v1/memories", json={"user": "max", "facts": ["Max is left-handed"], "sync": True}).json()[
            "results"
        ]
        http.patch(f"/v1/memories/{fact['id']}", json={"pinned": True})
        http.post(
            "/v1/chat/completions",
            json={"model": "claude", "user": "max", "messages": [{"role": "user", "content": "hi"}]},
        )
        stable, acknowledgement = backend.last_body()["messages"][:2]
        assert stable["role"] == "user" and acknowledgement["role"] == "assistant"
        assert stable["content"][0]["cache_control"] == {"type": "ephemeral"}
        assert "left-handed" in stable["content"][0]["text"]
        assert "prompt_cache_key" not in backend.last_body()
        http.post(
            "/v1/chat/completions",
            json={"model": "fake", "user": "max", "messages": [{"role": "user", "content": "hi"}]},
        )
        assert isinstance(backend.last_body()["messages"][0]["content"], str)


async def test_openai_models_get_a_prompt_cache_key_that_hides_the_user() -> None:
    client = aiohttp.ClientSession()
    entry = ModelEntry.model_validate(
        {"model_name": "gpt", "litellm_params": {"model": "openai/gpt-4o", "api_key": "k"}}
    )
    official = OpenAIWireBackend(entry, client=client, router=RouterSettings())
    assert official.prompt_cache_key
    custom = ModelEntry.model_validate(
        {"model_name": "v", "litellm_params": {"model": "openai/q", "api_base": "http://127.0.0.1:1/v1"}}
    )
    assert not OpenAIWireBackend(custom, client=client, router=RouterSettings()).prompt_cache_key
    key = layout.prompt_cache_key("user:alice@example.com")
    assert key == layout.prompt_cache_key("user:alice@example.com") != layout.prompt_cache_key("user:bob")
    assert "alice" not in key and len(key) < 64
    await client.close()


async def test_each_block_can_have_its_own_token_budget(embedder: Embedder, tmp_path: Path) -> None:
    settings = MemorySettings.model_validate(
        {
            "data_dir": str(tmp_path / "own"),
            "retrieval": {"token_budget": 40},
            "scheduler": {"stable_token_budget": 200, "volatile_token_budget": 25},
        }
    )
    memory = await MemoryOS.open(settings, embedder=embedder)
    try:
        ids = await add(memory, *(f"Keeps a {c} notebook in the {c} drawer" for c in ("red", "blue", "green", "gray")))
        for cube_id in ids[:3]:
            await memory.edit(cube_id, {"pinned": True})
        await add(memory, "Notebooks: buys them in Porto", "Notebook drawer squeaks")
        plan = await memory.plan([SPACE], [{"role": "user", "content": "Which notebook drawer?"}])
        # One shared budget of 40 would hold one pinned memory and leave the volatile block nothing.
        assert len(plan.stable) == 3 and sum(item.tokens for item in plan.stable) > 40
        assert 0 < plan.volatile_tokens <= 25
    finally:
        await memory.close()
