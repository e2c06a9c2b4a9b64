"""The small surfaces around chat: a model by id, embeddings relayed, unknown paths explained,
and every body field that can name the memory owner, through the OpenAI SDK."""

from __future__ import annotations

import openai
import pytest

from tests.conftest import Backend, Proxy


def test_retrieve_a_model_by_id(proxy: Proxy) -> None:
    client = proxy.openai()
    assert client.models.retrieve("fake").id == "fake"
    with pytest.raises(openai.NotFoundError) as missing:
        client.models.retrieve("gpt-9")
    assert "gpt-9" in str(missing.value) and "fake" in str(missing.value)


def test_embeddings_are_relayed_to_the_backend(proxy: Proxy, backend: Backend) -> None:
    result = proxy.openai().embeddings.create(model="fake", input=["hello", "hi"], encoding_format="float")
    assert [item.embedding for item in result.data] == [[5.0, 0.5, -0.5], [2.0, 0.5, -0.5]]
    assert backend.last_body() == {"model": "fake", "input": ["hello", "hi"], "encoding_format": "float"}
    with pytest.raises(openai.NotFoundError):
        proxy.openai().embeddings.create(model="nope", input="x")


def test_an_unknown_path_names_itself_and_what_is_served(proxy: Proxy) -> None:
    with proxy.http() as http:
        response = http.post("/v1/moderations", json={"input": "x"})
    assert response.status_code == 404
    message = response.json()["error"]["message"]
    assert "POST /v1/moderations" in message
    for served in ("POST /v1/chat/completions", "POST /v1/messages", "POST /v1/embeddings", "GET /v1/models"):
        assert served in message
    with proxy.http() as http:
        anthropic_shaped = http.post("/v1/messages/batches", json={}).json()
    assert anthropic_shaped["type"] == "error" and "/v1/messages/batches" in anthropic_shaped["error"]["message"]


@pytest.mark.parametrize(
    ("fields", "owner"),
    [
        ({"safety_identifier": "sid"}, "sid"),
        ({"metadata": {"user_id": "meta"}}, "meta"),
        ({"user": "u", "safety_identifier": "sid", "metadata": {"user_id": "meta"}}, "u"),
        ({"safety_identifier": "sid", "metadata": {"user_id": "meta"}}, "sid"),
    ],
)
def test_owner_fields_and_their_precedence(proxy: Proxy, backend: Backend, fields: dict, owner: str) -> None:
    response = proxy.openai().chat.completions.with_raw_response.create(
        model="fake", messages=[{"role": "user", "content": "I play the cello."}], extra_body=fields
    )
    assert response.headers["x-memory-status"] == "ok"
    assert backend.last_body()["metadata" if "metadata" in fields else "model"]  # relayed as sent
    proxy.wait_writeback()
    with proxy.http() as http:
        assert http.get("/v1/memories", params={"user": owner}).json()["data"]
