"""A local Hugging Face model behind the proxy, with activation (KV) memory, through real HTTP.

The model is a small randomly initialised Llama written by ``memproxy dev tiny-model`` (no
weights can be downloaded here): its answers are gibberish, but greedy decoding is deterministic,
which is what the equivalence tests need.
"""

from __future__ import annotations

import json
import threading
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import httpx
import pytest

from memcubes.activation import write_tiny_model
from tests.conftest import Backend, Proxy, proxy_settings

SYSTEM = {"role": "system", "content": "You are a terse assistant for a gardening club. " * 4}


@pytest.fixture(scope="module")
def tiny_model(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return write_tiny_model(tmp_path_factory.mktemp("tiny") / "model", layers=2, hidden=64, heads=4)


def local_settings(backend: Backend, data_dir: Path, model: Path, **memory: Any) -> Any:
    settings = proxy_settings(backend.url, data_dir, memory=memory)
    data = settings.model_dump(mode="json")
    data["model_list"].append({"model_name": "tiny", "local": {"path": str(model), "max_new_tokens": 12}})
    return type(settings).model_validate(data)


@pytest.fixture
def local_proxy(backend: Backend, start_proxy: Callable[..., Proxy], tmp_path: Path, tiny_model: Path) -> Proxy:
    return start_proxy(local_settings(backend, tmp_path / "data", tiny_model))


def ask(
    http: httpx.Client, messages: list[dict[str, Any]], *, kv: str = "on", user: str = "rosa", **extra: Any
) -> httpx.Response:
    response = http.post(
        "/v1/chat/completions",
        json={"model": "tiny", "messages": messages, "temperature": 0, "user": user, **extra},
        headers={"X-Memory-KV": kv, "X-Memory-Session": "s1"},
    )
    assert response.status_code == 200, response.text
    return response


def answer(response: httpx.Response) -> str:
    return str(response.json()["choices"][0]["message"]["content"])


def test_greedy_answers_with_and_without_reuse_are_identical_over_turns(local_proxy: Proxy) -> None:
    with local_proxy.http() as http:
        http.post(
            "/v1/memories", json={"user": "rosa", "facts": ["Grows tomatoes", "Has a small greenhouse"], "sync": True}
        )
        for cube in http.get("/v1/memories", params={"user": "rosa"}).json()["data"]:
            http.patch(f"/v1/memories/{cube['id']}", json={"pinned": True})
        history = [SYSTEM]
        reused = []
        for turn in ("What should I plant?", "And in winter?", "How often should I water?", "Thanks, anything else?"):
            history.append({"role": "user", "content": turn})
            with_reuse = ask(http, history)
            without = ask(http, history, kv="off")
            assert answer(with_reuse) == answer(without)
            assert with_reuse.json()["usage"] == without.json()["usage"]
            assert without.headers["x-memory-kv-reused-tokens"] == "0"
            reused.append(int(with_reuse.headers["x-memory-kv-reused-tokens"]))
            history.append({"role": "assistant", "content": answer(with_reuse)})
        # The system prompt + stable block prefix is cached after the first turn and reused after.
        assert reused[1] > 0 and len(set(reused[1:])) == 1
        # ... and the stable block really is in the prompt the model reads.
        bare = http.post(
            "/v1/chat/completions",
            headers={"X-Memory-Mode": "off"},
            json={"model": "tiny", "messages": [SYSTEM], "temperature": 0},
        ).json()
        assert reused[1] > bare["usage"]["prompt_tokens"] + 20


def test_streaming_token_by_token_with_usage(local_proxy: Proxy) -> None:
    with local_proxy.http() as http:
        whole = answer(ask(http, [SYSTEM, {"role": "user", "content": "hello"}]))
        response = http.post(
            "/v1/chat/completions",
            json={
                "model": "tiny",
                "messages": [SYSTEM, {"role": "user", "content": "hello"}],
                "temperature": 0,
                "stream": True,
                "stream_options": {"include_usage": True},
                "user": "rosa",
            },
        )
    events = [line[6:] for line in response.text.splitlines() if line.startswith("data: ")]
    assert events[-1] == "[DONE]"
    chunks = [json.loads(e) for e in events[:-1]]
    text = "".join(c["choices"][0]["delta"].get("content") or "" for c in chunks if c["choices"])
    assert text == whole and len([c for c in chunks if c["choices"]]) > 3
    assert chunks[-1]["usage"]["completion_tokens"] > 0
    assert int(response.headers["x-memory-kv-reused-tokens"]) > 0


def test_sampling_parameters_are_honoured(local_proxy: Proxy) -> None:
    with local_proxy.http() as http:
        messages = [{"role": "user", "content": "tell me a story"}]
        one = answer(ask(http, messages, temperature=0.9, top_p=0.8, seed=3))
        assert one == answer(ask(http, messages, temperature=0.9, top_p=0.8, seed=3))
        short = ask(http, messages, max_tokens=2).json()
        assert short["usage"]["completion_tokens"] <= 2 and short["choices"][0]["finish_reason"] == "length"
        bad = http.post("/v1/chat/completions", json={"model": "tiny", "messages": messages, "temperature": -1})
        assert bad.status_code == 400 and bad.json()["error"]["type"] == "invalid_request_error"


def test_two_concurrent_requests_of_one_user_both_get_correct_answers(local_proxy: Proxy) -> None:
    prompts = [[SYSTEM, {"role": "user", "content": f"question number {i}"}] for i in range(2)]
    with local_proxy.http() as http:
        expected = [answer(ask(http, p, kv="off")) for p in prompts]
        results: dict[int, str] = {}

        def run(i: int) -> None:
            with local_proxy.http() as client:
                results[i] = answer(ask(client, prompts[i]))

        threads = [threading.Thread(target=run, args=(i,)) for i in range(2)]
        for thread in threads:
            thread.start()
        for thread in threads:
            thread.join(60)
    assert [results[0], results[1]] == expected


def test_the_activation_cache_survives_a_restart(
    backend: Backend, start_proxy: Callable[..., Proxy], tmp_path: Path, tiny_model: Path
) -> None:
    settings = local_settings(backend, tmp_path / "data", tiny_model)
    messages = [SYSTEM, {"role": "user", "content": "first question"}]
    first = start_proxy(settings)
    with first.http() as http:
        cold = ask(http, messages)
        assert cold.headers["x-memory-kv-reused-tokens"] == "0"
    first.stop()
    assert list((tmp_path / "data" / "activation" / "tiny").glob("*.safetensors"))
    second = start_proxy(settings)
    with second.http() as http:
        warm = ask(http, [SYSTEM, {"role": "user", "content": "second question"}])
    assert int(warm.headers["x-memory-kv-reused-tokens"]) > 0
    with second.http() as http:
        assert answer(ask(http, messages)) == answer(cold)


def test_a_changed_stable_block_is_prefilled_in_the_background(local_proxy: Proxy, tmp_path: Path) -> None:
    entries = tmp_path / "data" / "activation" / "tiny"
    with local_proxy.http() as http:
        ask(http, [SYSTEM, {"role": "user", "content": "hi"}])  # the proxy learns this app's prefix
        before = len(list(entries.glob("*.json")))
        fact = http.post("/v1/memories", json={"user": "rosa", "facts": ["Allergic to bees"], "sync": True})
        http.patch(f"/v1/memories/{fact.json()['results'][0]['id']}", json={"pinned": True})
        deadline = time.monotonic() + 30
        while len(list(entries.glob("*.json"))) == before and time.monotonic() < deadline:
            time.sleep(0.05)
        assert len(list(entries.glob("*.json"))) == before + 1
        response = ask(http, [SYSTEM, {"role": "user", "content": "Is it safe to visit the hives?"}])
    meta = [json.loads(p.read_text()) for p in entries.glob("*.json")]
    prebuilt = max(meta, key=lambda m: m["created_at"])
    assert int(response.headers["x-memory-kv-reused-tokens"]) == prebuilt["token_count"]
    assert prebuilt["covers"] == [fact.json()["results"][0]["id"]]
