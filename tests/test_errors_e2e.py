"""Every error case through real HTTP: OpenAI's error shape, the right status, the proxy stays up."""

from __future__ import annotations

import json
from collections.abc import Callable
from pathlib import Path
from typing import Any

import httpx
import openai
import pytest

from proxy import Settings
from proxy.dev.serve_thread import free_port
from tests.conftest import Backend, Proxy, proxy_settings

CHAT = {"model": "fake", "messages": [{"role": "user", "content": "hi"}]}


def assert_error(response: httpx.Response, status: int, type_: str | None = None) -> dict[str, Any]:
    assert response.status_code == status, response.text
    error = response.json()["error"]
    assert set(error) == {"message", "type", "param", "code"}
    assert error["message"]
    if type_ is not None:
        assert error["type"] == type_
    return error


def sse_events(response: httpx.Response) -> list[str]:
    return [line[6:] for line in response.text.split("\n") if line.startswith("data: ")]


@pytest.mark.parametrize(
    ("body", "param"),
    [
        (b'{"model": "fake", "messages": [', None),
        (b'{"messages": [{"role": "user", "content": "hi"}]}', "model"),
        (b'{"model": "fake"}', "messages"),
        (b'{"model": "fake", "messages": []}', "messages"),
        (b'{"model": "fake", "messages": [{"role": "wizard", "content": "hi"}]}', "messages[0].role"),
        (b'{"model": "fake", "messages": [{"role": "user", "content": [1]}]}', "messages[0].content"),
        (b'{"model": "fake", "messages": [{"role": "user", "content": [{"text": "no type"}]}]}', "messages[0].content"),
        (b'{"model": "fake", "messages": "hello"}', "messages"),
        (b"[" * 100_000, None),
        (b'{"model": "fake", "messages": [{"role": "user", "content": "\xff\xfe"}]}', None),
        (b"", None),
    ],
)
def test_malformed_requests_are_400(proxy: Proxy, body: bytes, param: str | None) -> None:
    with proxy.http() as http:
        response = http.post("/v1/chat/completions", content=body, headers={"content-type": "application/json"})
    error = assert_error(response, 400, "invalid_request_error")
    if param:
        assert error["param"].startswith(param), error
    with proxy.http() as http:
        assert http.post("/v1/chat/completions", json=CHAT).status_code == 200  # still up


def test_unknown_model_is_404(proxy: Proxy) -> None:
    with pytest.raises(openai.NotFoundError) as caught:
        proxy.openai().chat.completions.create(model="nope", messages=[{"role": "user", "content": "hi"}])
    assert caught.value.code == "model_not_found"
    assert "fake" in caught.value.message


def test_master_key_is_required_when_set(backend: Backend, start_proxy: Callable[..., Proxy], tmp_path: Path) -> None:
    settings = proxy_settings(backend.url, tmp_path / "d", general_settings={"master_key": "sk-master"})
    proxy = start_proxy(settings)
    for headers in ({}, {"authorization": "Bearer wrong"}, {"authorization": "Basic sk-master"}):
        for method, path, body in (
            ("POST", "/v1/chat/completions", CHAT),
            ("GET", "/v1/models", None),
            ("POST", "/v1/memories/search", {"user": "u", "query": "q"}),
        ):
            response = httpx.request(method, proxy.url + path, json=body, headers=headers)
            assert_error(response, 401, "authentication_error")
    with pytest.raises(openai.AuthenticationError):
        proxy.openai(api_key="wrong").models.list()
    assert [m.id for m in proxy.openai(api_key="sk-master").models.list()] == ["fake"]
    assert httpx.get(proxy.url + "/v1/models", headers={"x-api-key": "sk-master"}).status_code == 200
    assert httpx.get(proxy.url + "/healthz").status_code == 200


@pytest.mark.parametrize(
    ("step", "status", "error_type", "sdk_error"),
    [
        ({"status": 429, "message": "slow down"}, 429, "rate_limit_error", openai.RateLimitError),
        ({"status": 500, "message": "boom"}, 502, "upstream_error", openai.APIStatusError),
        ({"status": 503, "message": "overloaded"}, 503, "service_unavailable", openai.APIStatusError),
        ({"status": 400, "message": "bad param", "code": "x"}, 400, "scripted_error", openai.BadRequestError),
        ({"status": 401, "message": "bad upstream key"}, 502, "upstream_authentication_error", openai.APIStatusError),
        ({"status": 403, "message": "not allowed"}, 502, "upstream_authentication_error", openai.APIStatusError),
        ({"invalid_json": True}, 502, "upstream_error", openai.APIStatusError),
    ],
)
def test_backend_failures_map_to_openai_errors(
    proxy: Proxy, backend: Backend, step: dict[str, Any], status: int, error_type: str, sdk_error: type
) -> None:
    backend.queue(step)
    with proxy.http() as http:
        error = assert_error(http.post("/v1/chat/completions", json=CHAT), status, error_type)
    if "message" in step:  # the upstream's words go to the log, never to the client
        assert step["message"] not in error["message"] and "Request id req_" in error["message"]
    backend.queue(step)
    with pytest.raises(sdk_error) as caught:
        proxy.openai().chat.completions.create(**CHAT)
    assert caught.value.status_code == status
    backend.queue(step)
    with proxy.http() as http:  # a stream that fails before its first byte fails with a status too
        assert_error(http.post("/v1/chat/completions", json={**CHAT, "stream": True}), status, error_type)


def test_backend_timeout_is_504(backend: Backend, start_proxy: Callable[..., Proxy], tmp_path: Path) -> None:
    settings = proxy_settings(backend.url, tmp_path / "d")
    settings.model_list[0].litellm_params.timeout = 0.3  # type: ignore[union-attr]
    proxy = start_proxy(settings)
    backend.queue({"delay": 2.0})
    with pytest.raises(openai.APIStatusError) as caught:
        proxy.openai().chat.completions.create(**CHAT)
    assert caught.value.status_code == 504
    assert caught.value.body["type"] == "timeout"  # type: ignore[index]


def test_unreachable_backend_is_502(start_proxy: Callable[..., Proxy], tmp_path: Path) -> None:
    proxy = start_proxy(proxy_settings(f"http://127.0.0.1:{free_port()}", tmp_path / "d"))
    with proxy.http() as http:
        error = assert_error(http.post("/v1/chat/completions", json=CHAT), 502, "upstream_error")
    assert error["code"] == "upstream_unreachable"


def test_oversized_body_is_413(backend: Backend, start_proxy: Callable[..., Proxy], tmp_path: Path) -> None:
    proxy = start_proxy(proxy_settings(backend.url, tmp_path / "d", general_settings={"max_request_size_mb": 0.01}))
    big = {**CHAT, "messages": [{"role": "user", "content": "x" * 20_000}]}
    with proxy.http() as http:
        assert_error(http.post("/v1/chat/completions", json=big), 413, "invalid_request_error")

        def chunks() -> Any:  # no Content-Length: the limit is enforced on the bytes received
            data = json.dumps(big).encode()
            for start in range(0, len(data), 4096):
                yield data[start : start + 4096]

        assert_error(
            http.post("/v1/chat/completions", content=chunks(), headers={"content-type": "application/json"}), 413
        )
        assert http.post("/v1/chat/completions", json=CHAT).status_code == 200


def test_backend_dropping_mid_stream_ends_the_stream_with_an_error_event(proxy: Proxy, backend: Backend) -> None:
    backend.queue({"text": "one two three four five", "drop_after": 2})
    with proxy.http() as http:
        response = http.post("/v1/chat/completions", json={**CHAT, "stream": True, "user": "kim"})
    assert response.status_code == 200
    events = sse_events(response)
    assert events[-1] == "[DONE]"
    error = json.loads(events[-2])["error"]
    assert error["type"] == "upstream_error" and "dropped" in error["message"]
    assert [json.loads(e)["choices"][0]["delta"].get("content") for e in events[1:3]] == ["one ", "two "]
    backend.queue({"text": "a b c", "drop_after": 1})
    with pytest.raises(openai.APIError):
        list(proxy.openai().chat.completions.create(**CHAT, stream=True))
    with proxy.http() as http:  # the proxy stays up, and what the user said is still journalled
        assert http.post("/v1/chat/completions", json=CHAT).status_code == 200


def test_retries_then_fallbacks(backend: Backend, start_proxy: Callable[..., Proxy], tmp_path: Path) -> None:
    settings = proxy_settings(backend.url, tmp_path / "d", router_settings={"num_retries": 1, "retry_backoff": 0.01})
    proxy = start_proxy(settings)
    backend.queue({"status": 429}, {"text": "after retry"})
    assert proxy.openai().chat.completions.create(**CHAT).choices[0].message.content == "after retry"
    backend.queue({"status": 400})  # a client error is not retried
    with pytest.raises(openai.BadRequestError):
        proxy.openai().chat.completions.create(**CHAT)
    assert len(backend.received) == 3

    data = settings.model_dump(mode="json")
    data["model_list"].append({**data["model_list"][0], "model_name": "backup"})
    data["router_settings"] = {"num_retries": 0, "retry_backoff": 0.01, "fallbacks": [{"fake": ["backup"]}]}
    data["memory"]["data_dir"] = str(tmp_path / "d2")
    proxy = start_proxy(Settings.model_validate(data))
    backend.queue({"status": 500}, {"text": "from backup"})
    assert proxy.openai().chat.completions.create(**CHAT).choices[0].message.content == "from backup"
    backend.queue({"status": 503}, {"text": "streamed from backup"})
    stream = proxy.openai().chat.completions.create(**CHAT, stream=True)
    assert "".join(c.choices[0].delta.content or "" for c in stream if c.choices) == "streamed from backup"


def test_default_config_without_key_fails_clearly_and_memory_api_works(
    start_proxy: Callable[..., Proxy], tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    env = {"MEMPROXY_MEMORY__DATA_DIR": str(tmp_path / "data")}
    settings = Settings.from_yaml(Path(__file__).parent.parent / "config" / "default.yaml", env=env)
    assert settings.general_settings.master_key is None
    proxy = start_proxy(settings)
    with proxy.http() as http:
        error = assert_error(http.post("/v1/chat/completions", json={**CHAT, "model": "gpt-4o-mini"}), 502)
        assert "OPENAI_API_KEY" in error["message"] and error["code"] == "missing_backend_api_key"
        added = http.post("/v1/memories", json={"user": "z", "facts": ["Likes tea"], "sync": True})
        assert added.status_code == 200 and added.json()["results"][0]["event"] == "ADD"
        found = http.post("/v1/memories/search", json={"user": "z", "query": "tea"}).json()
        assert found["results"][0]["text"].endswith("Likes tea")
