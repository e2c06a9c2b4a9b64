"""OpenAI's Responses API relayed to an upstream that serves it (``responses_api: native``): the
OpenAI SDK → memproxy → the scripted backend's real ``POST /v1/responses``. Memory goes into the
input items with chat's layout, answers come back byte for byte, chains are expanded by memproxy
(the upstream keeps nothing) and survive a restart through the SQLite response store."""

from __future__ import annotations

import contextlib
import json
import sqlite3
from collections.abc import Callable
from pathlib import Path
from typing import Any

import openai
import pytest

from memcubes import layout
from tests.conftest import Backend, Proxy, proxy_settings


def native_settings(backend: Backend, data_dir: Path, **memory: Any) -> Any:
    entry = {"model": "openai/gpt-up", "api_base": f"{backend.url}/v1", "api_key": "up-key"}
    return proxy_settings(
        backend.url,
        data_dir,
        model_list=[{"model_name": "native", "litellm_params": entry, "responses_api": "native"}],
        memory={"data_dir": str(data_dir), **memory},
    )


@pytest.fixture
def native(backend: Backend, start_proxy: Callable[..., Proxy], tmp_path: Path) -> Proxy:
    return start_proxy(native_settings(backend, tmp_path / "data"))


def sent(backend: Backend) -> dict[str, Any]:
    request = backend.received[-1]
    assert request["path"] == "/v1/responses"
    body: dict[str, Any] = request["body"]
    return body


def pin(proxy: Proxy, user: str, fact: str) -> None:
    with proxy.http() as http:
        added = http.post("/v1/memories", json={"user": user, "facts": [fact], "sync": True})
        assert http.patch(f"/v1/memories/{added.json()['results'][0]['id']}", json={"pinned": True}).status_code == 200


def test_create_is_relayed_with_memory_and_answered_byte_for_byte(native: Proxy, backend: Backend) -> None:
    client = native.openai()
    first = client.responses.create(model="native", input="I live in Lisbon and I work as a nurse.", user="alice")
    assert first.id.startswith("resp_scripted_") and first.output_text.startswith("Noted:")
    body = sent(backend)
    assert body["model"] == "gpt-up" and body["store"] is False and "previous_response_id" not in body
    assert backend.received[-1]["headers"]["authorization"] == "Bearer up-key"
    native.wait_writeback()
    raw = client.responses.with_raw_response.create(
        model="native",
        instructions="Be brief.",
        input=[{"role": "user", "content": [{"type": "input_text", "text": "Where do I live?"}]}],
        safety_identifier="alice",
        tools=[{"type": "web_search"}],  # a built-in tool: the upstream's business, relayed as it is
    )
    later = raw.parse()
    body = sent(backend)
    assert body["instructions"] == "Be brief." and body["tools"] == [{"type": "web_search"}]
    [item] = body["input"]
    assert item["content"][0]["type"] == "input_text" and "Lisbon" in item["content"][0]["text"]
    assert item["content"][1] == {"type": "input_text", "text": "Where do I live?"}
    assert "Lisbon" in later.output_text and raw.headers["x-memory-status"] == "ok"
    upstream = json.loads(raw.http_response.content)
    assert upstream["id"] == later.id and upstream["store"] is False  # the upstream's own bytes


def test_stream_relays_the_upstreams_events_and_is_remembered(native: Proxy, backend: Backend) -> None:
    client = native.openai()
    with client.responses.stream(model="native", input="My favourite colour is teal.", user="bob") as stream:
        events = list(stream)
        final = stream.get_final_response()
    kinds = [event.type for event in events]
    assert kinds[:2] == ["response.created", "response.in_progress"] and kinds[-1] == "response.completed"
    text = "".join(event.delta for event in events if event.type == "response.output_text.delta")
    assert final.id.startswith("resp_scripted_") and final.output_text == text
    assert sent(backend)["stream"] is True and sent(backend)["store"] is False
    native.wait_writeback()
    with native.http() as http:
        remembered = json.dumps(http.get("/v1/memories", params={"user": "bob"}).json())
    assert "teal" in remembered
    with contextlib.closing(sqlite3.connect(native.settings.memory.data_dir / "memproxy.db")) as db:
        [payload] = db.execute("SELECT payload FROM journal WHERE space = 'user:bob'").fetchone()
    answer = [turn for turn in json.loads(payload)["turns"] if turn["role"] == "assistant"]
    assert answer[0]["content"] == text  # the streamed answer is journalled with what the user said
    again = client.responses.create(model="native", input="Which colour do I like?", user="bob", stream=True)
    assert "teal" in "".join(e.delta for e in again if e.type == "response.output_text.delta")


def test_a_chain_survives_a_restart_with_a_byte_identical_stable_prefix(
    backend: Backend, start_proxy: Callable[..., Proxy], tmp_path: Path
) -> None:
    data_dir = tmp_path / "data"
    proxy = start_proxy(native_settings(backend, data_dir))
    pin(proxy, "carol", "Carol is allergic to bees.")
    client = proxy.openai()
    backend.queue({"tool_calls": [{"name": "get_weather", "arguments": {"city": "Oslo"}}]})
    first = client.responses.create(model="native", instructions="Use tools.", input="Weather in Oslo?", user="carol")
    call = first.output[0]
    assert call.type == "function_call" and json.loads(call.arguments) == {"city": "Oslo"}
    prefixes = {json.dumps(sent(backend)["input"][:2])}
    second = client.responses.create(
        model="native",
        previous_response_id=first.id,
        input=[{"type": "function_call_output", "call_id": call.call_id, "output": "sunny"}],
        user="carol",
        stream=True,
    )
    second_id = next(event for event in list(second) if event.type == "response.completed").response.id
    prefixes.add(json.dumps(sent(backend)["input"][:2]))
    proxy.stop()

    proxy = start_proxy(native_settings(backend, data_dir))  # a new process would see the same rows
    client = proxy.openai()
    assert client.responses.retrieve(second_id).output_text
    third = client.responses.create(model="native", previous_response_id=second_id, input="Thanks!", user="carol")
    body = sent(backend)
    prefixes.add(json.dumps(body["input"][:2]))
    assert len(prefixes) == 1  # the stable block leads every turn, the same bytes each time
    memory, ack, *conversation = body["input"]
    assert memory["role"] == "user" and "bees" in memory["content"] and ack["content"] == layout.ACKNOWLEDGEMENT
    assert [i.get("type", "message") for i in conversation] == [
        "message",
        "function_call",
        "function_call_output",
        "message",
        "message",
    ]
    assert "previous_response_id" not in body and "instructions" not in body  # not carried along a chain
    assert not any("<memories>" in json.dumps(item) for item in conversation[:-1])  # no earlier turn's memories
    client.responses.delete(third.id)
    with pytest.raises(openai.NotFoundError):
        client.responses.create(model="native", previous_response_id=third.id, input="again?")
    with pytest.raises(openai.NotFoundError):
        proxy.openai(api_key="another-key").responses.retrieve(second_id)


def test_memory_role_system_and_upstream_errors(
    backend: Backend, start_proxy: Callable[..., Proxy], tmp_path: Path
) -> None:
    proxy = start_proxy(native_settings(backend, tmp_path / "data", scheduler={"memory_role": "system"}))
    pin(proxy, "dora", "Dora is allergic to peanuts.")
    client = proxy.openai()
    dev = {"role": "developer", "content": "Answer in French."}
    client.responses.create(model="native", input=[dev, {"role": "user", "content": "hi"}], user="dora", store=False)
    developer, memory, question = sent(backend)["input"]
    assert developer == dev and memory["role"] == "system" and "peanuts" in memory["content"]
    assert question == {"role": "user", "content": "hi"}
    backend.queue({"status": 429, "message": "slow down, sk-secret"})
    with pytest.raises(openai.RateLimitError) as limited:
        client.responses.create(model="native", input="hi")
    assert "sk-secret" not in str(limited.value)


def test_a_locked_store_costs_the_chain_not_the_answer(native: Proxy, backend: Backend) -> None:
    """A backup or migration holding SQLite's write lock: the answer still comes (after at most a
    second's wait), only it cannot be continued; reads of kept responses go on (WAL)."""
    client = native.openai()
    kept = client.responses.create(model="native", input="hello", user="pia")
    blocker = sqlite3.connect(native.settings.memory.data_dir / "memproxy.db", isolation_level=None)
    blocker.execute("BEGIN EXCLUSIVE")
    try:
        answered = client.responses.create(model="native", input="still there?", user="pia")
        streamed = list(client.responses.create(model="native", input="and now?", user="pia", stream=True))
        assert answered.output_text and streamed[-1].type == "response.completed"
        assert client.responses.retrieve(kept.id).id == kept.id
    finally:
        blocker.execute("COMMIT")
        blocker.close()
    with pytest.raises(openai.NotFoundError):
        client.responses.retrieve(answered.id)
