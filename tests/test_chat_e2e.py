"""End to end through real HTTP: the OpenAI SDK → memproxy (uvicorn) → the scripted backend."""

from __future__ import annotations

import json
import time
from collections.abc import Callable
from pathlib import Path

import httpx
import pytest
from openai import OpenAI

from tests.conftest import Backend, Proxy, proxy_settings


def forwarded_text(body: dict) -> str:
    return json.dumps(body["messages"])


def tell(client: OpenAI, user: str, text: str, **kwargs: object) -> None:
    client.chat.completions.create(model="fake", messages=[{"role": "user", "content": text}], user=user, **kwargs)


def test_fact_from_one_request_is_injected_into_a_later_one(proxy: Proxy, backend: Backend) -> None:
    client = proxy.openai()
    tell(client, "alice", "Hi! I live in Lisbon and I work as a nurse.")
    proxy.wait_writeback()
    raw = client.chat.completions.with_raw_response.create(
        model="fake",
        messages=[{"role": "system", "content": "You are helpful."}, {"role": "user", "content": "Where do I live?"}],
        user="alice",
    )
    sent = backend.last_body()["messages"]
    assert sent[0] == {"role": "system", "content": "You are helpful."}
    assert "<memories>" in sent[-1]["content"] and "Lisbon" in sent[-1]["content"]
    assert sent[-1]["content"].endswith("Where do I live?")
    assert raw.headers["x-memory-status"] == "ok"
    assert int(raw.headers["x-memory-injected"]) >= 1
    assert int(raw.headers["x-memory-tokens"]) > 0
    assert raw.headers["x-memory-ids"]
    assert float(raw.headers["x-memory-overhead-ms"]) >= 0


def test_streamed_exchange_is_remembered_and_injected_into_a_stream(proxy: Proxy, backend: Backend) -> None:
    client = proxy.openai()
    stream = client.chat.completions.create(
        model="fake", messages=[{"role": "user", "content": "My favorite color is teal."}], user="bob", stream=True
    )
    assert "".join(c.choices[0].delta.content or "" for c in stream if c.choices)
    proxy.wait_writeback()
    stream = client.chat.completions.create(
        model="fake",
        messages=[{"role": "user", "content": "What is my favorite color?"}],
        user="bob",
        stream=True,
    )
    answer = "".join(c.choices[0].delta.content or "" for c in stream if c.choices)
    assert "teal" in forwarded_text(backend.last_body())
    assert "teal" in answer  # the scripted model quotes the memories it was shown


def test_the_header_names_the_user_and_wins_over_the_body(proxy: Proxy, backend: Backend) -> None:
    client = proxy.openai()
    client.chat.completions.create(
        model="fake",
        messages=[{"role": "user", "content": "I have a dog named Rex."}],
        user="ignored",
        extra_headers={"X-Memory-User": "carol"},
    )
    proxy.wait_writeback()
    with proxy.http() as http:
        assert http.get("/v1/memories", params={"user": "carol"}).json()["data"]
        assert http.get("/v1/memories", params={"user": "ignored"}).json()["data"] == []


def test_another_user_never_sees_a_memory(proxy: Proxy, backend: Backend) -> None:
    client = proxy.openai()
    tell(client, "alice", "I am allergic to peanuts.")
    proxy.wait_writeback()
    raw = client.chat.completions.with_raw_response.create(
        model="fake", messages=[{"role": "user", "content": "Am I allergic to peanuts?"}], user="mallory"
    )
    assert "peanut" not in forwarded_text(backend.last_body()).replace("Am I allergic to peanuts?", "")
    assert raw.headers["x-memory-injected"] == "0"
    with proxy.http() as http:
        found = http.post("/v1/memories/search", json={"user": "mallory", "query": "peanuts"}).json()
    assert found["results"] == []


def test_memory_mode_off_injects_and_writes_nothing(proxy: Proxy, backend: Backend) -> None:
    client = proxy.openai()
    tell(client, "dave", "I live in Porto.")
    proxy.wait_writeback()
    off = {"X-Memory-Mode": "off"}
    raw = client.chat.completions.with_raw_response.create(
        model="fake",
        messages=[{"role": "user", "content": "I moved to Berlin. Where do I live?"}],
        user="dave",
        extra_headers=off,
    )
    assert raw.headers["x-memory-status"] == "off"
    assert "<memories>" not in forwarded_text(backend.last_body())
    proxy.wait_writeback()
    with proxy.http() as http:
        contents = [m["content"] for m in http.get("/v1/memories", params={"user": "dave"}).json()["data"]]
    assert not any("Berlin" in c for c in contents)


def test_read_mode_injects_but_writes_nothing_and_write_mode_the_reverse(proxy: Proxy, backend: Backend) -> None:
    client = proxy.openai()
    tell(client, "erin", "I play the cello.", extra_headers={"X-Memory-Mode": "write"})
    assert "<memories>" not in forwarded_text(backend.last_body())
    proxy.wait_writeback()
    tell(client, "erin", "I also play the piano. What do I play?", extra_headers={"X-Memory-Mode": "read"})
    assert "cello" in forwarded_text(backend.last_body())
    proxy.wait_writeback()
    with proxy.http() as http:
        contents = [m["content"] for m in http.get("/v1/memories", params={"user": "erin"}).json()["data"]]
    assert any("cello" in c for c in contents) and not any("piano" in c for c in contents)


def test_without_a_user_the_request_passes_through(proxy: Proxy, backend: Backend) -> None:
    raw = proxy.openai().chat.completions.with_raw_response.create(
        model="fake", messages=[{"role": "user", "content": "hello"}]
    )
    assert raw.headers["x-memory-status"] == "no-user"
    assert backend.last_body()["messages"] == [{"role": "user", "content": "hello"}]


def test_memories_survive_a_restart(backend: Backend, start_proxy: Callable[..., Proxy], tmp_path: Path) -> None:
    settings = proxy_settings(backend.url, tmp_path / "data")
    first = start_proxy(settings)
    tell(first.openai(), "frank", "I work at Acme Corp as an engineer.")
    first.wait_writeback()
    first.stop()
    second = start_proxy(settings)
    tell(second.openai(), "frank", "Where do I work?")
    assert "Acme" in forwarded_text(backend.last_body())


def test_stream_is_relayed_chunk_by_chunk_not_buffered(proxy: Proxy, backend: Backend) -> None:
    backend.script.chunk_interval = 0.15
    backend.queue({"text": "one two three four five six"})
    started = time.monotonic()
    arrivals = []
    stream = proxy.openai().chat.completions.create(
        model="fake", messages=[{"role": "user", "content": "count"}], stream=True
    )
    for chunk in stream:
        if chunk.choices and chunk.choices[0].delta.content:
            arrivals.append(time.monotonic() - started)
    assert len(arrivals) == 6
    assert arrivals[0] < 0.5 * arrivals[-1], arrivals  # the first word came long before the last


def test_everything_is_passed_through_untouched(proxy: Proxy, backend: Backend) -> None:
    tools = [
        {
            "type": "function",
            "function": {
                "name": "get_weather",
                "description": "Weather",
                "parameters": {"type": "object", "properties": {"city": {"type": "string"}}},
            },
        }
    ]
    messages = [
        {"role": "system", "content": "Be brief."},
        {
            "role": "user",
            "content": [
                {"type": "text", "text": "What is in this picture?"},
                {"type": "image_url", "image_url": {"url": "data:image/png;base64,iVBORw0KGgo=", "detail": "low"}},
            ],
        },
    ]
    backend.queue({"tool_calls": [{"name": "get_weather", "arguments": {"city": "Lisbon"}}]})
    response = proxy.openai().chat.completions.create(
        model="fake",
        messages=messages,
        tools=tools,
        tool_choice="auto",
        response_format={"type": "json_object"},
        temperature=0.3,
        top_p=0.9,
        n=2,
        stop=["END"],
        seed=7,
        max_tokens=50,
        extra_body={"logit_bias": {"50256": -100}, "vendor_specific": {"a": [1, 2]}},
    )
    sent = backend.last_body()
    assert sent["messages"] == messages
    assert sent["tools"] == tools and sent["tool_choice"] == "auto"
    assert sent["response_format"] == {"type": "json_object"}
    assert (sent["temperature"], sent["top_p"], sent["n"], sent["stop"], sent["seed"], sent["max_tokens"]) == (
        0.3,
        0.9,
        2,
        ["END"],
        7,
        50,
    )
    assert sent["logit_bias"] == {"50256": -100} and sent["vendor_specific"] == {"a": [1, 2]}
    assert response.id.startswith("chatcmpl-scripted-")
    assert response.system_fingerprint == "fp_scripted"
    assert len(response.choices) == 2
    assert response.choices[0].finish_reason == "tool_calls"
    call = response.choices[0].message.tool_calls[0]
    assert call.function.name == "get_weather" and json.loads(call.function.arguments) == {"city": "Lisbon"}
    assert response.usage.total_tokens == response.usage.prompt_tokens + response.usage.completion_tokens


def test_stream_with_usage_and_tool_calls_is_passed_back(proxy: Proxy, backend: Backend) -> None:
    stream = proxy.openai().chat.completions.create(
        model="fake",
        messages=[{"role": "user", "content": "hello there"}],
        stream=True,
        stream_options={"include_usage": True},
    )
    chunks = list(stream)
    assert all(c.id == chunks[0].id for c in chunks) and chunks[0].id.startswith("chatcmpl-scripted-")
    assert chunks[-1].usage is not None and chunks[-1].usage.completion_tokens > 0
    assert [c.choices[0].finish_reason for c in chunks if c.choices][-1] == "stop"
    backend.queue({"tool_calls": [{"name": "lookup", "arguments": {"q": "x"}}]})
    stream = proxy.openai().chat.completions.create(
        model="fake",
        messages=[{"role": "user", "content": "call a tool"}],
        stream=True,
        tools=[{"type": "function", "function": {"name": "lookup", "parameters": {"type": "object"}}}],
    )
    calls = [c.choices[0].delta.tool_calls for c in stream if c.choices and c.choices[0].delta.tool_calls]
    assert calls[0][0].function.name == "lookup"


def test_models_lists_the_model_list(proxy: Proxy) -> None:
    assert [m.id for m in proxy.openai().models.list()] == ["fake"]


def test_memory_lookup_failure_degrades_instead_of_failing(
    backend: Backend, start_proxy: Callable[..., Proxy], tmp_path: Path
) -> None:
    proxy = start_proxy(proxy_settings(backend.url, tmp_path / "d", memory={"retrieval": {"timeout_ms": 1}}))
    client = proxy.openai()
    tell(client, "gina", "I live in Rome.")
    raw = client.chat.completions.with_raw_response.create(
        model="fake", messages=[{"role": "user", "content": "Where do I live? " + "x " * 3000}], user="gina"
    )
    assert raw.status_code == 200
    assert raw.headers["x-memory-status"] == "degraded"


def test_fail_closed_refuses_instead(backend: Backend, start_proxy: Callable[..., Proxy], tmp_path: Path) -> None:
    proxy = start_proxy(
        proxy_settings(backend.url, tmp_path / "d", memory={"retrieval": {"timeout_ms": 1}, "fail_closed": True})
    )
    with proxy.http() as http:
        response = http.post(
            "/v1/chat/completions",
            json={"model": "fake", "user": "h", "messages": [{"role": "user", "content": "my home? " * 3000}]},
        )
    assert response.status_code == 503
    assert response.json()["error"]["type"] == "memory_unavailable"


def test_the_memory_block_never_becomes_a_memory(proxy: Proxy, backend: Backend) -> None:
    client = proxy.openai()
    tell(client, "ivan", "I have three cats.")
    proxy.wait_writeback()
    tell(client, "ivan", "I also have a parrot.")
    proxy.wait_writeback()
    with proxy.http() as http:
        contents = [m["content"] for m in http.get("/v1/memories", params={"user": "ivan"}).json()["data"]]
    assert not any("<memories>" in c for c in contents)
    assert sorted(contents) == ["I also have a parrot.", "I have three cats."]


def test_history_resent_by_the_client_is_distilled_once(proxy: Proxy, backend: Backend) -> None:
    client = proxy.openai()
    history = [{"role": "user", "content": "I live in Oslo."}]
    reply = client.chat.completions.create(model="fake", messages=history, user="judy")
    history += [
        {"role": "assistant", "content": reply.choices[0].message.content},
        {"role": "user", "content": "I have a sister named Ana."},
    ]
    client.chat.completions.create(model="fake", messages=history, user="judy")
    proxy.wait_writeback()
    with proxy.http() as http:
        page = http.get("/v1/memories", params={"user": "judy"}).json()["data"]
    assert sorted(m["content"] for m in page) == ["I have a sister named Ana.", "I live in Oslo."]


def test_only_the_latest_chat_turns_are_considered_for_memory(
    backend: Backend, start_proxy: Callable[..., Proxy], tmp_path: Path
) -> None:
    settings = proxy_settings(
        backend.url, tmp_path / "d", memory={"extraction": {"mode": "raw"}, "writeback": {"chat_turns": 3}}
    )
    proxy = start_proxy(settings)
    messages = [
        {"role": "system", "content": "Be brief."},
        {"role": "user", "content": "I live in Oslo."},
        {"role": "assistant", "content": "Noted."},
        {"role": "user", "content": "I have a sister named Ana."},
        {"role": "tool", "tool_call_id": "c1", "content": "{}"},
        {"role": "user", "content": "I play the cello."},
    ]
    backend.queue({"text": "Lovely."})
    proxy.openai().chat.completions.create(model="fake", messages=messages, user="kai")  # type: ignore[arg-type]
    proxy.wait_writeback()
    with proxy.http() as http:
        page = http.get("/v1/memories", params={"user": "kai"}).json()["data"]
    # the three latest turns worth remembering of the request, and the answer
    assert sorted(m["content"] for m in page) == [
        "assistant: Lovely.",
        "assistant: Noted.",
        "user: I have a sister named Ana.",
        "user: I play the cello.",
    ]


def test_raw_http_without_sdk(proxy: Proxy) -> None:
    response = httpx.post(
        f"{proxy.url}/v1/chat/completions", json={"model": "fake", "messages": [{"role": "user", "content": "hi"}]}
    )
    assert response.status_code == 200
    assert response.json()["object"] == "chat.completion"


@pytest.mark.parametrize("mode", ["sometimes", "x"])
def test_bad_memory_mode_is_a_400(proxy: Proxy, mode: str) -> None:
    with proxy.http() as http:
        response = http.post(
            "/v1/chat/completions",
            headers={"X-Memory-Mode": mode},
            json={"model": "fake", "messages": [{"role": "user", "content": "hi"}]},
        )
    assert response.status_code == 400
    assert response.json()["error"]["param"] == "X-Memory-Mode"
