"""OpenAI's Responses API end to end: the OpenAI SDK → memproxy → the scripted chat backend
(bridged), with memory, streaming, tools and previous_response_id chains."""

from __future__ import annotations

import json

import openai
import pytest

from tests.conftest import Backend, Proxy

WEATHER = {
    "type": "function",
    "name": "get_weather",
    "description": "Weather for a city",
    "parameters": {"type": "object", "properties": {"city": {"type": "string"}}, "required": ["city"]},
}


def test_create_with_memory_recalled_in_a_later_conversation(proxy: Proxy, backend: Backend) -> None:
    client = proxy.openai()
    first = client.responses.create(model="fake", input="I live in Lisbon and I work as a nurse.", user="alice")
    assert first.status == "completed" and first.output_text.startswith("Noted:")
    proxy.wait_writeback()
    raw = client.responses.with_raw_response.create(
        model="fake", instructions="Be brief.", input="Where do I live?", safety_identifier="alice"
    )
    later = raw.parse()
    sent = backend.last_body()["messages"]
    assert sent[0] == {"role": "system", "content": "Be brief."}
    assert "Lisbon" in sent[-1]["content"] and sent[-1]["content"].endswith("Where do I live?")
    assert "Lisbon" in later.output_text and raw.headers["x-memory-status"] == "ok"
    assert later.usage is not None and later.usage.output_tokens > 0


def test_stream_with_typed_events_is_remembered(proxy: Proxy, backend: Backend) -> None:
    client = proxy.openai()
    stream = client.responses.create(
        model="fake", input=[{"role": "user", "content": "My favourite colour is teal."}], user="bob", stream=True
    )
    events = list(stream)
    kinds = [event.type for event in events]
    assert kinds[:2] == ["response.created", "response.in_progress"] and kinds[-1] == "response.completed"
    assert "response.output_text.delta" in kinds and "response.output_text.done" in kinds
    text = "".join(event.delta for event in events if event.type == "response.output_text.delta")
    assert events[-1].response.output_text == text
    assert [event.sequence_number for event in events] == list(range(len(events)))
    proxy.wait_writeback()
    with client.responses.stream(model="fake", input="Which colour do I like?", user="bob") as managed:
        final = managed.get_final_response()
    assert "teal" in final.output_text and "teal" in json.dumps(backend.last_body()["messages"])


def test_previous_response_id_chain_with_a_tool_call(proxy: Proxy, backend: Backend) -> None:
    client = proxy.openai()
    backend.queue({"tool_calls": [{"name": "get_weather", "arguments": {"city": "Oslo"}}]})
    first = client.responses.create(
        model="fake", instructions="Use tools.", input="Weather in Oslo?", tools=[WEATHER], user="carol"
    )
    call = first.output[0]
    assert call.type == "function_call" and json.loads(call.arguments) == {"city": "Oslo"}
    assert backend.last_body()["tools"][0]["function"]["name"] == "get_weather"
    second = client.responses.create(
        model="fake",
        previous_response_id=first.id,
        input=[{"type": "function_call_output", "call_id": call.call_id, "output": "sunny"}],
        user="carol",
    )
    sent = backend.last_body()["messages"]
    assert [m["role"] for m in sent] == ["user", "assistant", "tool"]  # instructions are not carried on
    assert sent[1]["tool_calls"][0]["id"] == call.call_id and sent[2]["content"] == "sunny"
    third = client.responses.create(model="fake", previous_response_id=second.id, input="Thanks!", user="carol")
    assert [m["role"] for m in backend.last_body()["messages"]] == ["user", "assistant", "tool", "assistant", "user"]
    assert client.responses.retrieve(third.id).output_text == third.output_text
    client.responses.delete(third.id)
    with pytest.raises(openai.NotFoundError):
        client.responses.retrieve(third.id)
    with pytest.raises(openai.NotFoundError):
        client.responses.create(model="fake", previous_response_id=third.id, input="again?")


def test_store_false_and_another_keys_responses(proxy: Proxy, backend: Backend) -> None:
    client = proxy.openai()
    unstored = client.responses.create(model="fake", input="hello", store=False)
    with pytest.raises(openai.NotFoundError):
        client.responses.retrieve(unstored.id)
    stored = client.responses.create(model="fake", input="hello")
    assert client.responses.retrieve(stored.id).id == stored.id
    with pytest.raises(openai.NotFoundError):
        proxy.openai(api_key="another-key").responses.retrieve(stored.id)


def test_errors_are_openai_shaped(proxy: Proxy, backend: Backend) -> None:
    client = proxy.openai()
    with pytest.raises(openai.BadRequestError) as builtin:
        client.responses.create(model="fake", input="search", tools=[{"type": "web_search"}])
    assert "web_search" in str(builtin.value)
    with pytest.raises(openai.NotFoundError):
        client.responses.create(model="nope", input="hi")
    backend.queue({"status": 429, "message": "slow down"})
    with pytest.raises(openai.RateLimitError):
        client.responses.create(model="fake", input="hi")
