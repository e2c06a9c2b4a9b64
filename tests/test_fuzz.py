"""Fuzzing the HTTP API of a real proxy over real HTTP: schemathesis against the proxy's own
OpenAPI (``/openapi.json``), and hypothesis properties for what the schema cannot describe (any JSON
document as a body, the ``X-Memory-*`` headers, owner ids, numbers, times).

The schema is the app's ``openapi()`` document, loaded when this module is imported (schemathesis
parametrizes tests at collection, before any server runs; its lazy ``from_fixture`` loader does not
work with pytest 9, which dropped ``Node._nodeid``), and a test checks it is exactly what the
running proxy serves at ``/openapi.json``. Cases are sent to that running proxy.

Every response must be a success or an OpenAI-shaped 4xx: never a 5xx, never a crash, and the proxy
must keep serving other tenants correctly afterwards. The fast tests are a smoke version with a
fixed seed (deterministic in CI); the ``slow`` ones explore at length with fresh seeds.
"""

from __future__ import annotations

import json
import math
import re
import tempfile
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta, timezone
from pathlib import Path
from typing import Any
from uuid import uuid4

import httpx
import pytest
import schemathesis
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from schemathesis import Case as GenericCase
from schemathesis import CheckContext, Response

from memcubes.embedder import Embedder
from proxy import build_app
from tests.conftest import Proxy, own_proxy, proxy_settings
from tests.test_bad_input import assert_still_serves_tenants

Case = GenericCase[Any]  # a case of any OpenAPI operation
ERROR_FIELDS = {"message", "type", "param", "code"}
JSON_ENDPOINTS = [
    ("POST", "/v1/chat/completions"),
    ("POST", "/v1/memories"),
    ("POST", "/v1/memories/search"),
    ("PATCH", "/v1/memories/{id}"),
]

# Fast: a fixed seed and few examples; no example database either way (runs do not replay old failures).
FAST = settings(
    max_examples=12, deadline=None, derandomize=True, database=None, suppress_health_check=list(HealthCheck)
)
FAST_SCHEMA = settings(FAST, max_examples=25)  # per operation, after schemathesis's coverage cases
SLOW = settings(max_examples=400, deadline=None, database=None, suppress_health_check=list(HealthCheck))


@pytest.fixture(scope="module")
def fuzz_proxy(embedder: Embedder, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Proxy]:
    """A proxy with its own scripted backend, shared by the module."""
    with own_proxy(embedder, tmp_path_factory.mktemp("fuzz") / "data") as proxy:
        yield proxy


@pytest.fixture(scope="module")
def memory_id(fuzz_proxy: Proxy) -> str:
    with fuzz_proxy.http() as http:
        added = http.post("/v1/memories", json={"user": "fuzzed", "facts": ["I like green tea."], "sync": True})
    memory: str = added.json()["results"][0]["id"]
    return memory


def schemathesis_config() -> schemathesis.Config:
    return schemathesis.Config.from_dict(
        {
            # `fake` is the proxy's only model: most chat cases name it, so they reach the backend.
            "dictionaries": {"models": {"values": ["fake"]}},
            "parameters": {"body.model": {"dictionary": "models", "probability": 0.8}},
            "generation": {"mode": "all"},
            "checks": {
                # A 502 is right when the backend itself failed (openai_error_shape checks it did).
                "not_a_server_error": {"expected-statuses": ["2XX", "3XX", "4XX", 502]},
                # The schema cannot say "user or space, or the X-Memory-User header", nor that an
                # edit needs a field, so schema-valid requests may rightly be refused.
                "positive_data_acceptance": {"enabled": False},
                # Deleting a memory keeps its history (GET .../history stays 200) by design.
                "use_after_free": {"enabled": False},
                # Starlette's 405 names only the methods of the first matching route in `Allow`.
                "unsupported_method": {"enabled": False},
                "allow_header_conformance": {"enabled": False},
            },
        }
    )


def openapi_document() -> dict[str, Any]:
    """What ``GET /openapi.json`` serves; building the app starts nothing (that is the lifespan's job)."""
    settings_ = proxy_settings("http://127.0.0.1:9", Path(tempfile.gettempdir()) / "memproxy-openapi")
    document: dict[str, Any] = build_app(settings_).openapi()
    return document


OPENAPI = openapi_document()
schema = schemathesis.openapi.from_dict(OPENAPI, config=schemathesis_config())


UPSTREAM_FAILED = re.compile(r"^The model backend failed \(HTTP 502\)\. Request id req_\w+")


def openai_error_shape(ctx: CheckContext, response: Response, case: Case) -> bool | None:
    """Every error is ``{"error": {"message", "type", "param", "code"}}`` (Anthropic's
    ``{"type": "error", "error": {"type", "message"}}`` on ``/v1/messages``) with a message, and a 502
    only ever reports that the backend failed. (The scripted backend answers 500 to a few bodies a
    real upstream would refuse with a 400; see test_bad_input.)"""
    if response.status_code < 400:
        return None
    body = response.json()
    if case.path.startswith("/v1/messages"):  # Anthropic's shape on Anthropic's API
        assert set(body) == {"type", "error"} and set(body["error"]) == {"type", "message"}, body
        assert body["error"]["message"] and (response.status_code != 502 or "backend" in body["error"]["message"])
        return True
    assert isinstance(body, dict) and set(body) == {"error"}, body
    error = body["error"]
    assert set(error) == ERROR_FIELDS and isinstance(error["message"], str) and error["message"], body
    if response.status_code == 502:
        assert error["type"] == "upstream_error" and UPSTREAM_FAILED.match(error["message"]), body
    return True


def test_the_fuzzed_schema_is_what_the_proxy_serves(fuzz_proxy: Proxy) -> None:
    with fuzz_proxy.http() as http:
        assert http.get("/openapi.json").json() == OPENAPI


@schema.parametrize()
@FAST_SCHEMA
def test_api_schema_fuzz_smoke(case: Case, fuzz_proxy: Proxy) -> None:
    case.call_and_validate(base_url=fuzz_proxy.url, additional_checks=[openai_error_shape], timeout=60)


@pytest.mark.slow
@schema.parametrize()
@SLOW
def test_api_schema_fuzz(case: Case, fuzz_proxy: Proxy) -> None:
    case.call_and_validate(base_url=fuzz_proxy.url, additional_checks=[openai_error_shape], timeout=60)


@pytest.mark.slow
def test_api_stateful_fuzz(fuzz_proxy: Proxy) -> None:
    """Sequences of calls along the links schemathesis infers (add, then get, edit, delete ...)."""

    # Not the space listing: a link from it draws its inputs from whatever spaces the server holds
    # at that moment, which hypothesis cannot replay ("FlakyStrategyDefinition"). The stateless
    # fuzz above covers the listing.
    stateful = schema.exclude(path="/v1/spaces", method="GET")

    class Workflow(stateful.as_state_machine()):  # type: ignore[misc]
        def get_call_kwargs(self, case: Case) -> dict[str, Any]:
            return {"base_url": fuzz_proxy.url, "timeout": 60}

        def validate_response(self, response: Response, case: Case, **kwargs: Any) -> None:
            super().validate_response(response, case, additional_checks=[openai_error_shape], **kwargs)

    Workflow.run(
        settings=settings(
            max_examples=60,
            stateful_step_count=8,
            deadline=None,
            database=None,
            suppress_health_check=list(HealthCheck),
        )
    )


def test_proxy_serves_tenants_after_the_fuzzing(fuzz_proxy: Proxy) -> None:
    assert_still_serves_tenants(fuzz_proxy)


# -- hypothesis properties ------------------------------------------------------------------------


def assert_handled(response: httpx.Response) -> None:
    """A success, or an OpenAI-shaped 4xx: never a 5xx."""
    assert response.status_code < 500, response.text[:1000]
    if response.status_code >= 400:
        error = response.json()["error"]
        assert set(error) == ERROR_FIELDS and error["message"], error


json_values = st.recursive(
    st.none() | st.booleans() | st.integers() | st.floats() | st.text(),
    lambda children: st.lists(children, max_size=4) | st.dictionaries(st.text(max_size=8), children, max_size=4),
    max_leaves=20,
)
KNOWN_FIELDS = [
    "model", "messages", "stream", "user", "n", "space", "facts", "mode", "sync", "tags", "created_at",
    "query", "top_k", "token_budget", "content", "pinned", "expires_at", "valid_from", "valid_to",
    "role", "name", "id", "type", "text",
]  # fmt: skip
# Bodies close to the real ones: known field names (at the top and inside messages) with any values.
near_bodies = st.dictionaries(
    st.sampled_from(KNOWN_FIELDS),
    json_values
    | st.lists(st.dictionaries(st.sampled_from(KNOWN_FIELDS), json_values, max_size=5), min_size=1, max_size=3),
    max_size=8,
)


def post_json(http: httpx.Client, method: str, path: str, body: Any) -> httpx.Response:
    """``body`` as Python's JSON writes it (NaN and Infinity included, as a careless client sends)."""
    return http.request(method, path, content=json.dumps(body).encode(), headers={"content-type": "application/json"})


def check_any_body(proxy: Proxy, memory_id: str, body: Any) -> None:
    with proxy.http() as http:
        for method, path in JSON_ENDPOINTS:
            assert_handled(post_json(http, method, path.format(id=memory_id), body))


@FAST
@given(body=json_values | near_bodies)
def test_any_json_body_is_handled(fuzz_proxy: Proxy, memory_id: str, body: Any) -> None:
    check_any_body(fuzz_proxy, memory_id, body)


@pytest.mark.slow
@SLOW
@given(body=json_values | near_bodies)
def test_any_json_body_is_handled_at_length(fuzz_proxy: Proxy, memory_id: str, body: Any) -> None:
    check_any_body(fuzz_proxy, memory_id, body)


def sendable(raw: bytes) -> bytes:
    """What an HTTP server accepts in a header value: visible ASCII, obs-text, inner spaces and tabs
    (servers refuse the rest before memproxy sees the request; test_bad_input covers that)."""
    return bytes(b for b in raw if 0x21 <= b <= 0x7E or b >= 0x80 or b in b" \t").strip(b" \t")


header_values = (st.binary(max_size=300) | st.text(max_size=80).map(str.encode)).map(sendable)
MEMORY_HEADERS = ["x-memory-user", "x-memory-session", "x-memory-mode", "x-memory-kv"]
memory_headers = st.dictionaries(st.sampled_from(MEMORY_HEADERS), header_values, min_size=1)


def check_memory_headers(proxy: Proxy, headers: dict[str, bytes]) -> None:
    chat = {"model": "fake", "messages": [{"role": "user", "content": "I live in Lisbon."}]}
    with proxy.http() as http:
        raw = {name.encode(): value for name, value in headers.items()}  # bytes go out as they are
        assert_handled(http.post("/v1/chat/completions", json=chat, headers=raw))
        assert_handled(http.post("/v1/chat/completions", json={**chat, "stream": True}, headers=raw))
        assert_handled(http.post("/v1/memories/search", json={"query": "Lisbon"}, headers=raw))
        assert_handled(http.get("/v1/memories", headers=raw))


@FAST
@given(headers=memory_headers)
def test_any_memory_header_values_are_handled(fuzz_proxy: Proxy, headers: dict[str, bytes]) -> None:
    check_memory_headers(fuzz_proxy, headers)


@pytest.mark.slow
@SLOW
@given(headers=memory_headers)
def test_any_memory_header_values_are_handled_at_length(fuzz_proxy: Proxy, headers: dict[str, bytes]) -> None:
    check_memory_headers(fuzz_proxy, headers)


def check_owner(proxy: Proxy, owner: str) -> None:
    """An id the memory API accepts names the space chat reads; one it refuses, chat refuses too."""
    fact = "My lucky number is 7301."
    question = {"model": "fake", "user": owner, "messages": [{"role": "user", "content": "My lucky number?"}]}
    with proxy.http() as http:
        added = http.post("/v1/memories", json={"user": owner, "facts": [fact], "sync": True})
        answer = http.post("/v1/chat/completions", json=question)
    assert_handled(added)
    assert_handled(answer)
    if not owner.strip():  # no owner: the memory API needs one, chat passes through without memory
        assert added.status_code == 400 and answer.headers["x-memory-status"] == "no-user"
    elif added.status_code == 200:
        assert answer.status_code == 200 and fact in answer.json()["choices"][0]["message"]["content"]
    else:
        assert added.status_code == answer.status_code == 400
        assert added.json()["error"]["param"] == answer.json()["error"]["param"] == "user"


@FAST
@given(owner=st.text(max_size=40))
def test_owner_ids_mean_the_same_on_chat_and_the_memory_api(fuzz_proxy: Proxy, owner: str) -> None:
    check_owner(fuzz_proxy, owner)


@pytest.mark.slow
@SLOW
@given(owner=st.text(max_size=300))
def test_owner_ids_mean_the_same_on_chat_and_the_memory_api_at_length(fuzz_proxy: Proxy, owner: str) -> None:
    check_owner(fuzz_proxy, owner)


big_numbers = (
    st.integers()
    | st.integers(min_value=2**63 - 2, max_value=2**64)
    | st.floats()
    | st.sampled_from([0, -1, 1, 200, 201, 128, 129, 500, 501, 1_000_000, 1_000_001])
)


def in_bounds(value: Any, low: int, high: int) -> bool:
    return isinstance(value, int) and low <= value <= high


@FAST
@given(top_k=big_numbers, token_budget=big_numbers, limit=big_numbers, n=big_numbers)
def test_numbers_are_accepted_exactly_within_their_bounds(
    fuzz_proxy: Proxy, top_k: Any, token_budget: Any, limit: Any, n: Any
) -> None:
    with fuzz_proxy.http() as http:
        search = post_json(http, "POST", "/v1/memories/search", {"user": "fuzzed", "query": "tea", "top_k": top_k})
        budget = post_json(
            http, "POST", "/v1/memories/search", {"user": "fuzzed", "query": "tea", "token_budget": token_budget}
        )
        listed = http.get("/v1/memories", params={"user": "fuzzed", "limit": str(limit)})
        chat = post_json(
            http,
            "POST",
            "/v1/chat/completions",
            {"model": "fake", "n": n, "messages": [{"role": "user", "content": "hi"}]},
        )
    for response, value, low, high in (
        (search, top_k, 1, 200),
        (budget, token_budget, 0, 1_000_000),
        (chat, n, 1, 128),
    ):
        assert_handled(response)
        assert (response.status_code == 200) == in_bounds(value, low, high), (value, response.text[:300])
    assert_handled(listed)
    if isinstance(limit, int):
        assert (listed.status_code == 200) == in_bounds(limit, 1, 500), (limit, listed.text[:300])
    elif not math.isfinite(limit) or not limit.is_integer():
        assert listed.status_code == 400


offsets = st.integers(min_value=-(24 * 60 - 1), max_value=24 * 60 - 1).map(lambda minutes: timedelta(minutes=minutes))
moments = st.datetimes(min_value=datetime(1, 1, 1), max_value=datetime(9999, 12, 31, 23, 59, 59)).flatmap(
    lambda naive: st.one_of(st.just(naive), offsets.map(lambda offset: naive.replace(tzinfo=timezone(offset))))
)


@FAST
@given(moment=moments)
def test_times_are_stored_as_the_same_instant_in_utc_or_refused(fuzz_proxy: Proxy, moment: datetime) -> None:
    user = f"timekeeper-{uuid4().hex}"  # a space of its own: no earlier fact to merge with
    fact = {"user": user, "facts": [f"It happened at {moment.isoformat()}."], "created_at": moment.isoformat()}
    with fuzz_proxy.http() as http:
        added = http.post("/v1/memories", json={**fact, "sync": True})
        assert_handled(added)
        instant = moment if moment.tzinfo else moment.replace(tzinfo=UTC)
        try:
            expected = instant.astimezone(UTC)
        except OverflowError:
            assert added.status_code == 400 and added.json()["error"]["param"] == "created_at"
            return
        assert added.status_code == 200, added.text
        stored = http.get(f"/v1/memories/{added.json()['results'][0]['id']}").json()
        assert datetime.fromisoformat(stored["created_at"]) == expected
        found = http.post("/v1/memories/search", json={"user": user, "query": "It happened at"})
        assert found.status_code == 200 and len(found.json()["results"]) == 1, found.text
        listed = http.get("/v1/memories", params={"user": user, "since": moment.isoformat()})
        assert listed.status_code == 200 and len(listed.json()["data"]) == 1, listed.text


def test_proxy_serves_tenants_after_the_properties(fuzz_proxy: Proxy) -> None:
    assert_still_serves_tenants(fuzz_proxy)
