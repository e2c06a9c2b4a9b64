"""Anthropic's Messages API end to end: the Anthropic SDK → memproxy → (a) a scripted backend that
speaks Anthropic's wire, relayed as it is, and (b) the OpenAI-wire scripted backend, through
translation. Both real HTTP servers."""

from __future__ import annotations

import json
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import anthropic
import httpx
import pytest

from memcubes import layout
from memcubes.retrieval import RetrievedItem
from memcubes.scheduler import InjectionPlan
from proxy.dev.scripted_anthropic import build_scripted_anthropic
from proxy.dev.scripted_backend import BackendScript
from proxy.dev.serve_thread import ServerThread
from proxy.serving.messages import inject
from tests.conftest import Backend, Proxy, proxy_settings

PIXEL = "iVBORw0KGgoAAAANSUhEUgAAAAEAAAABCAYAAAAfFcSJAAAADUlEQVR42mNk+M9QDwADhgGAWjR9awAAAABJRU5ErkJggg=="
WEATHER = {
    "name": "get_weather",
    "description": "Weather for a city",
    "input_schema": {"type": "object", "properties": {"city": {"type": "string"}}, "required": ["city"]},
}


@dataclass
class Upstream:
    url: str
    script: BackendScript

    def last(self) -> dict[str, Any]:
        return self.script.received[-1]


@pytest.fixture(scope="module")
def _anthropic_server() -> Iterator[tuple[ServerThread, BackendScript]]:
    script = BackendScript()
    with ServerThread(build_scripted_anthropic(script)) as server:
        yield server, script


@pytest.fixture
def upstream(_anthropic_server: tuple[ServerThread, BackendScript]) -> Upstream:
    server, script = _anthropic_server
    script.steps.clear()
    script.received.clear()
    return Upstream(server.url, script)


@pytest.fixture
def proxy(backend: Backend, upstream: Upstream, start_proxy: Callable[..., Proxy], tmp_path: Path) -> Proxy:
    settings = proxy_settings(
        backend.url,
        tmp_path / "data",
        general_settings={"master_key": "sk-test"},
        model_list=[
            {"model_name": "fake", "litellm_params": {"model": "openai/fake", "api_base": f"{backend.url}/v1"}},
            {
                "model_name": "claude",
                "litellm_params": {"model": "anthropic/claude-test", "api_base": upstream.url, "api_key": "ak-up"},
            },
        ],
    )
    return start_proxy(settings)


def client(proxy: Proxy, **kwargs: Any) -> anthropic.Anthropic:
    kwargs.setdefault("api_key", proxy.api_key)
    return anthropic.Anthropic(base_url=proxy.url, max_retries=0, **kwargs)


def image_question(text: str) -> list[dict[str, Any]]:
    image = {"type": "image", "source": {"type": "base64", "media_type": "image/png", "data": PIXEL}}
    return [{"role": "user", "content": [image, {"type": "text", "text": text}]}]


def teach(proxy: Proxy, model: str, user: str, fact: str) -> None:
    client(proxy).messages.create(
        model=model, max_tokens=64, messages=[{"role": "user", "content": fact}], metadata={"user_id": user}
    )
    proxy.wait_writeback()


def test_anthropic_wire_create_with_tools_and_image_is_relayed_with_memory(proxy: Proxy, upstream: Upstream) -> None:
    teach(proxy, "claude", "alice", "Hi! I live in Lisbon and I work as a nurse.")
    upstream.script.steps.append({"tool_calls": [{"name": "get_weather", "arguments": {"city": "Lisbon"}}]})
    raw = client(proxy).messages.with_raw_response.create(
        model="claude",
        max_tokens=64,
        system=[{"type": "text", "text": "You are helpful."}],
        messages=image_question("What is the weather where I live?"),
        tools=[WEATHER],
        tool_choice={"type": "auto"},
        metadata={"user_id": "alice"},
        extra_headers={"anthropic-beta": "prompt-caching-2024-07-31"},
    )
    message = raw.parse()
    assert message.stop_reason == "tool_use"
    assert message.content[0].type == "tool_use" and message.content[0].input == {"city": "Lisbon"}
    assert raw.headers["x-memory-status"] == "ok" and int(raw.headers["x-memory-injected"]) >= 1
    sent = upstream.last()
    assert sent["path"] == "/v1/messages"
    assert sent["headers"]["x-api-key"] == "ak-up" and "authorization" not in sent["headers"]
    assert sent["headers"]["anthropic-beta"] == "prompt-caching-2024-07-31"
    assert sent["headers"]["anthropic-version"] == raw.http_request.headers["anthropic-version"]
    body = sent["body"]
    assert body["model"] == "claude-test" and body["tools"] == [WEATHER] and body["tool_choice"] == {"type": "auto"}
    assert body["system"] == [{"type": "text", "text": "You are helpful."}]  # memory is not in the system prompt
    last = body["messages"][-1]["content"]
    assert last[-2]["type"] == "image" and last[-2]["source"]["data"] == PIXEL
    assert last[-1] == {"type": "text", "text": "What is the weather where I live?"}
    assert "Lisbon" in json.dumps(body["messages"][:-1]) + json.dumps(last[:-2])


def test_anthropic_wire_stream_is_relayed_and_remembered(proxy: Proxy, upstream: Upstream) -> None:
    with client(proxy).messages.stream(
        model="claude",
        max_tokens=64,
        messages=[{"role": "user", "content": "My favourite colour is teal."}],
        metadata={"user_id": "bob"},
    ) as stream:
        text = "".join(stream.text_stream)
        final = stream.get_final_message()
    assert text.startswith("Noted:") and final.stop_reason == "end_turn"
    proxy.wait_writeback()
    upstream.script.steps.append({"tool_calls": [{"name": "get_weather", "arguments": {"city": "Porto"}}]})
    with client(proxy).messages.stream(
        model="claude",
        max_tokens=64,
        messages=[{"role": "user", "content": "Which colour do I like best?"}],
        tools=[WEATHER],
        extra_headers={"X-Memory-User": "bob"},
    ) as stream:
        final = stream.get_final_message()
    assert final.content[0].type == "tool_use" and final.content[0].input == {"city": "Porto"}
    assert "teal" in json.dumps(upstream.last()["body"])
    assert upstream.last()["body"]["stream"] is True


def test_translated_create_and_stream_with_tools_and_image(proxy: Proxy, backend: Backend) -> None:
    teach(proxy, "fake", "carol", "I have a dog named Rex.")
    assert "dog named Rex" in json.dumps(backend.last_body()["messages"])
    backend.queue({"tool_calls": [{"name": "get_weather", "arguments": {"city": "Oslo"}}]})
    message = client(proxy).messages.create(
        model="fake",
        max_tokens=64,
        system="Be brief.",
        messages=image_question("What is my dog called, and the weather?"),
        tools=[WEATHER],
        tool_choice={"type": "tool", "name": "get_weather"},
        metadata={"user_id": "carol"},
    )
    assert message.stop_reason == "tool_use" and message.content[0].input == {"city": "Oslo"}
    body = backend.last_body()
    assert body["tools"][0]["function"]["name"] == "get_weather"
    assert body["tool_choice"] == {"type": "function", "function": {"name": "get_weather"}}
    assert body["max_tokens"] == 64 and body["messages"][0]["role"] == "system"
    parts = body["messages"][-1]["content"]
    assert {"type": "image_url", "image_url": {"url": f"data:image/png;base64,{PIXEL}"}} in parts
    assert "Rex" in json.dumps(body["messages"])

    # the tool result goes back; the streamed answer quotes the memories
    history = [
        *image_question("What is my dog called, and the weather?"),
        {"role": "assistant", "content": [{"type": "tool_use", "id": "call_0", "name": "get_weather", "input": {}}]},
        {"role": "user", "content": [{"type": "tool_result", "tool_use_id": "call_0", "content": "sunny"}]},
    ]
    with client(proxy).messages.stream(
        model="fake", max_tokens=64, messages=history, tools=[WEATHER], metadata={"user_id": "carol"}
    ) as stream:
        text = "".join(stream.text_stream)
        final = stream.get_final_message()
    assert "Rex" in text and final.stop_reason == "end_turn" and final.usage.output_tokens > 0
    sent = backend.last_body()["messages"]
    # the memories follow the tool result (Anthropic wants results first): a user turn after it
    assert sent[-2] == {"role": "tool", "tool_call_id": "call_0", "content": "sunny"}
    assert sent[-3]["tool_calls"][0]["id"] == "call_0"
    assert sent[-1]["role"] == "user" and "<memories>" in sent[-1]["content"][0]["text"]

    backend.queue({"tool_calls": [{"name": "get_weather", "arguments": {"city": "Rome"}}]})
    with client(proxy).messages.stream(
        model="fake", max_tokens=64, messages=[{"role": "user", "content": "Weather in Rome?"}], tools=[WEATHER]
    ) as stream:
        events = [event.type for event in stream]
        final = stream.get_final_message()
    assert final.content[0].type == "tool_use" and final.content[0].input == {"city": "Rome"}
    assert events[0] == "message_start" and events[-1] == "message_stop"


def test_count_tokens_native_and_estimated(proxy: Proxy, upstream: Upstream) -> None:
    messages = [{"role": "user", "content": "How many tokens are in this sentence of nine words?"}]
    native = client(proxy).messages.count_tokens(model="claude", messages=messages)
    assert native.input_tokens == 10 and upstream.last()["path"] == "/v1/messages/count_tokens"
    estimate = client(proxy).messages.count_tokens(model="fake", messages=messages, tools=[WEATHER])
    assert 10 < estimate.input_tokens < 100


def test_errors_raise_the_sdks_exception_classes(proxy: Proxy, backend: Backend, upstream: Upstream) -> None:
    question = [{"role": "user", "content": "hi"}]
    with pytest.raises(anthropic.AuthenticationError):
        client(proxy, api_key="wrong").messages.create(model="claude", max_tokens=8, messages=question)
    with pytest.raises(anthropic.NotFoundError) as missing:
        client(proxy).messages.create(model="nope", max_tokens=8, messages=question)
    assert "nope" in str(missing.value)
    with pytest.raises(anthropic.BadRequestError):
        client(proxy).messages.create(model="claude", max_tokens=0, messages=question)
    upstream.script.steps.append({"status": 429, "message": "slow down"})
    with pytest.raises(anthropic.RateLimitError):
        client(proxy).messages.create(model="claude", max_tokens=8, messages=question)
    backend.queue({"status": 500, "message": "boom"})
    with pytest.raises(anthropic.InternalServerError):
        client(proxy).messages.create(model="fake", max_tokens=8, messages=question)
    with httpx.Client(base_url=proxy.url, headers={"x-api-key": "sk-test"}) as http:
        response = http.post("/v1/messages", json={"model": "claude", "messages": question})
        assert response.status_code == 400
        error = response.json()
        assert error["type"] == "error" and error["error"]["type"] == "invalid_request_error"
        assert "max_tokens" in error["error"]["message"]
        response = http.post("/v1/messages", content=b"{", headers={"content-type": "application/json"})
        assert response.status_code == 400 and response.json()["type"] == "error"
    backend.queue({"drop_after": 1})
    with (
        pytest.raises(anthropic.APIStatusError) as dropped,
        client(proxy).messages.stream(model="fake", max_tokens=8, messages=question) as stream,
    ):
        list(stream)
    assert "dropped" in str(dropped.value)


def test_claude_code_request_sequence(proxy: Proxy, upstream: Upstream) -> None:
    """What Claude Code's gateway mode sends (ANTHROPIC_BASE_URL, ANTHROPIC_AUTH_TOKEN and
    ANTHROPIC_CUSTOM_HEADERS="X-Memory-User: dana"): bearer auth, ?beta=true, beta headers, system
    and tools with cache_control, a count_tokens call, then a streamed tool loop."""
    headers = {
        "authorization": "Bearer sk-test",
        "anthropic-version": "2023-06-01",
        "anthropic-beta": "claude-code-20250219,interleaved-thinking-2025-05-14,fine-grained-tool-streaming-2025-05-14",
        "anthropic-dangerous-direct-browser-access": "true",
        "x-app": "cli",
        "user-agent": "claude-cli/1.0.83 (external, cli)",
        "x-stainless-lang": "js",
        "X-Memory-User": "dana",
    }
    cached = {"type": "ephemeral"}
    system = [
        {"type": "text", "text": "You are Claude Code, Anthropic's official CLI for Claude.", "cache_control": cached},
        {"type": "text", "text": "You are an interactive CLI tool that helps users.", "cache_control": cached},
    ]
    tools = [{**WEATHER, "name": "Bash"}]
    reminder = "<system-reminder>As you answer, use this context: CLAUDE.md says use tabs.</system-reminder>"
    first_turn = {
        "role": "user",
        "content": [
            {"type": "text", "text": reminder},
            {"type": "text", "text": "My project is called Falcon and it deploys on Fridays.", "cache_control": cached},
        ],
    }
    base = {"model": "claude", "max_tokens": 32000, "system": system, "tools": tools, "stream": True}
    base["metadata"] = {"user_id": "user_abc_account_def_session_123"}
    with httpx.Client(base_url=proxy.url, headers=headers, timeout=30) as http:
        counted = http.post("/v1/messages/count_tokens?beta=true", json={"model": "claude", "messages": [first_turn]})
        assert counted.status_code == 200 and counted.json()["input_tokens"] > 0
        assert upstream.last()["headers"]["anthropic-beta"] == headers["anthropic-beta"]
        with http.stream("POST", "/v1/messages?beta=true", json={**base, "messages": [first_turn]}) as response:
            assert response.status_code == 200, response.read()
            events = [line[7:] for line in response.iter_lines() if line.startswith("event: ")]
        assert events[0] == "message_start" and events[-1] == "message_stop" and "content_block_delta" in events
        proxy.wait_writeback()
        with httpx.Client(base_url=proxy.url, headers={"authorization": "Bearer sk-test"}) as api:
            remembered = json.dumps(api.get("/v1/memories", params={"user": "dana"}).json())
        assert "Falcon" in remembered and "CLAUDE.md" not in remembered

        upstream.script.steps.append({"text": "done"})
        loop = [
            first_turn,
            {"role": "assistant", "content": [{"type": "tool_use", "id": "toolu_1", "name": "Bash", "input": {}}]},
            {
                "role": "user",
                "content": [
                    {"type": "tool_result", "tool_use_id": "toolu_1", "content": "ok", "cache_control": cached},
                    {"type": "text", "text": "When does my project deploy?"},
                ],
            },
        ]
        with http.stream("POST", "/v1/messages?beta=true", json={**base, "messages": loop}) as response:
            assert response.status_code == 200
            response.read()
    sent = upstream.last()["body"]
    assert sent["system"][:2] == system and "Fridays" in json.dumps(sent)
    last = sent["messages"][-1]["content"]
    assert last[0]["type"] == "tool_result"  # Anthropic wants tool results first
    assert json.dumps(sent).count('"cache_control"') == 4  # the client's four: Anthropic's limit


def _item(text: str) -> RetrievedItem:
    return RetrievedItem(cube_ids=[text], text=text, score=1.0, sources=[], created_at=datetime.now(UTC), tokens=5)


def test_layout_in_anthropic_shape() -> None:
    """By default the stable block is a user turn and the acknowledgement ahead of the
    application's messages, the acknowledgement's block marked for caching while the request has
    room for a mark (Anthropic allows four); ``memory_role: system`` appends it to the system
    blocks instead. The volatile block follows the last turn's tool results."""
    cached = {"type": "ephemeral"}
    body: dict[str, Any] = {
        "system": "Be brief.",
        "messages": [
            {"role": "user", "content": [{"type": "tool_result", "tool_use_id": "t", "content": "ok"}]},
        ],
    }
    plan = InjectionPlan(stable=[_item("Lives in Lisbon")], volatile=[_item("Has a dog")])
    sent = inject(body, plan)
    assert sent["system"] == "Be brief."
    memory, ack, turn = sent["messages"]
    assert memory["role"] == "user" and "Lives in Lisbon" in memory["content"][0]["text"]
    assert "cache_control" not in memory["content"][0] and ack["content"][-1]["cache_control"] == cached
    assert ack["role"] == "assistant" and ack["content"][0]["text"] == layout.ACKNOWLEDGEMENT
    content = turn["content"]
    assert content[0]["type"] == "tool_result" and "Has a dog" in content[1]["text"]
    assert body["system"] == "Be brief." and len(body["messages"]) == 1  # the client's body is untouched
    assert len(body["messages"][0]["content"]) == 1
    full = {**body, "tools": [{"name": f"t{i}", "cache_control": cached} for i in range(4)]}
    assert "cache_control" not in json.dumps(inject(full, plan)["messages"])
    # a conversation that opens with an assistant turn needs no acknowledgement to alternate
    greeting = {**body, "messages": [{"role": "assistant", "content": "Hi!"}, *body["messages"]]}
    roles = [m["role"] for m in inject(greeting, plan)["messages"]]
    assert roles == ["user", "assistant", "user"]
    assert inject(greeting, plan)["messages"][0]["content"][-1]["cache_control"] == cached
    system = inject(body, plan, role="system")
    assert system["system"][0] == {"type": "text", "text": "Be brief."}
    assert "Lives in Lisbon" in system["system"][1]["text"] and system["system"][1]["cache_control"] == cached
    assert len(system["messages"]) == 1


def test_the_stable_prefix_is_a_user_turn_identical_across_turns(
    proxy: Proxy, upstream: Upstream, backend: Backend
) -> None:
    """Issue 12's least privilege on /v1/messages: the forwarded system prompt is the
    application's alone, roles alternate, and everything up to the end of the stable part is
    byte-identical turn after turn, relayed in Anthropic's wire (up to the cache mark) and
    translated to chat for an OpenAI-wire model alike."""
    with proxy.http() as http:
        added = http.post("/v1/memories", json={"user": "erin", "facts": ["Erin is allergic to bees."], "sync": True})
        assert http.patch(f"/v1/memories/{added.json()['results'][0]['id']}", json={"pinned": True}).status_code == 200
    for model in ("claude", "fake"):
        history: list[dict[str, Any]] = []
        prefixes = set()
        for question in ("What should I avoid outdoors?", "Where do I live?", "Any plans for the weekend?"):
            history.append({"role": "user", "content": question})
            answer = client(proxy).messages.create(
                model=model, max_tokens=64, system="Be brief.", messages=history, metadata={"user_id": "erin"}
            )
            if model == "claude":
                sent = upstream.last()["body"]
                system, turns = sent["system"], sent["messages"]
                assert turns[1]["content"][-1]["cache_control"] == {"type": "ephemeral"}
            else:
                system, *turns = backend.last_body()["messages"]
                system = system["content"]
            assert system == "Be brief."
            roles = [m["role"] for m in turns]
            assert roles == ["user", "assistant"] * (len(roles) // 2) + ["user"]
            assert "bees" in json.dumps(turns[0]) and "<memories>" not in json.dumps(turns[2:-1])
            prefixes.add(json.dumps({"system": system, "prefix": turns[:2]}))
            history.append({"role": "assistant", "content": answer.content[0].text})  # type: ignore[union-attr]
        assert len(prefixes) == 1, model
