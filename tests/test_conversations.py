"""The stable block is frozen per conversation: heat promotes memories meanwhile, but a conversation
keeps the block it was first shown (so the provider's prefix cache holds its whole history), while a
person's change (here a delete) reaches it at once."""

from __future__ import annotations

import json
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest

from memcubes.conversations import FrozenStableBlocks, conversation_id
from memcubes.cube import CubeState, MemCube
from tests.conftest import Backend, Proxy, proxy_settings

PINNED = ["Mira is allergic to peanuts", "Mira prefers metric units"]
TOPICS = [
    "Mira plays the cello in a youth orchestra",
    "Mira's sister Hanne lives in Bergen",
    "Mira drives an old blue Volvo",
    "Mira grows tomatoes on her balcony",
    "Mira is training for the Oslo half marathon",
    "Mira's cat is called Pepper",
]
QUESTIONS = [
    "How should I practise the cello before the orchestra concert?",
    "What could I bring my sister Hanne when I visit Bergen?",
    "Does my old blue Volvo need winter tyres?",
    "When should I water the tomatoes on my balcony?",
    "How far should I run this week for the Oslo half marathon?",
    "What toy would my cat Pepper like?",
]
SYSTEM = {"role": "system", "content": "You are Mira's assistant."}


def stable_prefix(sent: list[dict[str, Any]], history: list[dict[str, Any]]) -> str:
    """The forwarded messages up to the end of the stable block, whatever its role: the client's
    leading system message plus what memproxy inserted (the volatile block goes into the last
    user message, it inserts no message)."""
    inserted = len(sent) - len(history)
    return json.dumps(sent[: 1 + inserted])


def test_thirty_turns_keep_one_stable_prefix_until_a_person_deletes_a_member(
    backend: Backend, start_proxy: Callable[..., Proxy], tmp_path: Path
) -> None:
    scheduler = {"promote_heat": 1.5, "demote_heat": 0.5, "stable_max": 8}
    proxy = start_proxy(proxy_settings(backend.url, tmp_path / "data", memory={"scheduler": scheduler}))
    with proxy.http() as http:
        added = http.post("/v1/memories", json={"user": "mira", "sync": True, "facts": PINNED + TOPICS}).json()
        ids = {fact["text"]: fact["id"] for fact in added["results"]}
        for text in PINNED:
            assert http.patch(f"/v1/memories/{ids[text]}", json={"pinned": True}).status_code == 200
        history: list[dict[str, Any]] = [SYSTEM]
        prefixes: list[str] = []
        volatile: list[int] = []
        for turn in range(30):
            if turn == 20:  # a person deletes a member of the block mid-conversation
                assert http.delete(f"/v1/memories/{ids[PINNED[0]]}").status_code in (200, 204)
            history.append({"role": "user", "content": QUESTIONS[turn % len(QUESTIONS)]})
            response = http.post("/v1/chat/completions", json={"model": "fake", "user": "mira", "messages": history})
            assert response.status_code == 200
            volatile.append(int(response.headers["x-memory-volatile-tokens"]))
            sent = backend.last_body()["messages"]
            prefixes.append(stable_prefix(sent, history))
            history.append({"role": "assistant", "content": response.json()["choices"][0]["message"]["content"]})
            if turn in (6, 12):
                time.sleep(1.2)  # heat is flushed and the block rebalanced every second
        # Before the delete: one prefix in 20 turns; after it: another one, without the deleted text.
        assert len(set(prefixes[:20])) == 1 and len(set(prefixes[20:])) == 1
        assert "peanuts" in prefixes[0] and "peanuts" not in prefixes[20]
        assert volatile[0] > 0  # what the question retrieved, beside the block: its tokens are reported
        # Heat did promote meanwhile: a new conversation (another opening) sees a bigger block.
        fresh = [SYSTEM, {"role": "user", "content": "A new day: what should I cook?"}]
        http.post("/v1/chat/completions", json={"model": "fake", "user": "mira", "messages": fresh})
        assert len(stable_prefix(backend.last_body()["messages"], fresh)) > len(prefixes[0])


def test_a_conversation_is_its_session_header_or_its_opening() -> None:
    opening = [SYSTEM, {"role": "user", "content": "hi"}]
    later = [*opening, {"role": "assistant", "content": "Hello!"}, {"role": "user", "content": "more"}]
    assert conversation_id(opening) == conversation_id(later) != conversation_id([SYSTEM, later[-1]])
    injected = [SYSTEM, {"role": "user", "content": "<memories>\n- x\n</memories>\n\nhi"}]
    assert conversation_id(injected) == conversation_id(opening)
    assert conversation_id(later, session="s1") == conversation_id(opening, session="s1") != conversation_id(later)


def test_an_idle_conversation_takes_a_new_snapshot() -> None:
    frozen = FrozenStableBlocks(idle_seconds=0.05, limit=2)
    key = (("user:a",), "session:s")
    block = [MemCube(space="user:a", content="Lives in Oslo")]
    frozen.keep(key, block, epoch=frozen.epoch(["user:a"]))
    assert frozen.get(key) is block
    time.sleep(0.1)
    assert frozen.get(key) is None
    epoch = frozen.epoch(["user:a"])
    frozen.changed("user:a", None, by_person=True)  # read across a person's change: not kept
    frozen.keep(key, block, epoch=epoch)
    assert frozen.get(key) is None


def test_openai_cache_numbers_pass_the_relay_untouched(proxy: Proxy, backend: Backend) -> None:
    backend.queue({"text": "hello", "usage": {"prompt_tokens_details": {"cached_tokens": 1024}}})
    usage = proxy.openai().chat.completions.create(model="fake", messages=[SYSTEM], user="mira").usage
    assert usage is not None and usage.prompt_tokens_details is not None
    assert usage.prompt_tokens_details.cached_tokens == 1024


@pytest.mark.slow  # imports litellm: 3-15 s here
def test_provider_cache_numbers_pass_litellm_untouched(
    backend: Backend, start_proxy: Callable[..., Proxy], tmp_path: Path
) -> None:
    """OpenAI's ``prompt_tokens_details.cached_tokens`` and Anthropic's ``cache_read_input_tokens``
    through litellm (the Anthropic one from a real Messages-API answer)."""
    settings = proxy_settings(backend.url, tmp_path / "d")
    data = settings.model_dump(mode="json")
    via_litellm = {**data["model_list"][0], "model_name": "fake-litellm", "forward": "litellm"}
    claude = {
        "model_name": "claude",
        "litellm_params": {"model": "anthropic/claude-x", "api_base": backend.url, "api_key": "x"},
    }
    data["model_list"] += [via_litellm, claude]
    client = start_proxy(type(settings).model_validate(data)).openai()
    messages: Any = [SYSTEM, {"role": "user", "content": "hi"}]
    backend.queue({"text": "hello", "usage": {"prompt_tokens_details": {"cached_tokens": 1024}}})
    usage = client.chat.completions.create(model="fake-litellm", messages=messages, user="mira").usage
    assert usage is not None and usage.prompt_tokens_details is not None
    assert usage.prompt_tokens_details.cached_tokens == 1024
    backend.queue({"text": "hello", "usage": {"cache_read_input_tokens": 2048}})
    answer = client.chat.completions.create(model="claude", messages=messages, user="mira", max_tokens=50)
    assert answer.choices[0].message.content == "hello"
    assert answer.usage is not None and answer.usage.model_extra is not None
    assert answer.usage.model_extra["cache_read_input_tokens"] == 2048


def test_which_changes_reach_a_frozen_block() -> None:
    frozen = FrozenStableBlocks(idle_seconds=60, limit=10)
    member, other = MemCube(space="user:a", content="Lives in Oslo"), MemCube(space="user:a", content="Has a cat")
    key = (("user:a",), "session:s")

    def freeze() -> None:
        frozen.keep(key, [member], epoch=frozen.epoch(["user:a"]))

    freeze()
    frozen.changed("user:a", [other], by_person=True)  # a person deletes a memory outside the block
    reworded = member.model_copy(update={"content": "Lives in Oslo, Norway"})
    frozen.changed("user:a", [reworded], by_person=False)  # write-back rewords a member
    assert frozen.get(key) == [member]
    frozen.changed("user:a", [member.model_copy(update={"state": CubeState.SUPERSEDED})], by_person=False)
    assert frozen.get(key) is None  # a member that is no longer true goes at once
    freeze()
    frozen.changed("user:a", [other.model_copy(update={"pinned": True})], by_person=True)
    assert frozen.get(key) is None  # a pin joins every block of the space
    freeze()
    frozen.changed("user:a", [reworded], by_person=True)  # a person edits a member
    assert frozen.get(key) is None
