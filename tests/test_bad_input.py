"""Bad input through real HTTP: every case is a clear 4xx in OpenAI's error shape, never a 500, and
the proxy keeps serving other tenants correctly afterwards.

``test_errors_e2e.py`` covers the basic malformed chat requests (broken JSON, missing fields, a bad
role, a content part without a type, an unterminated deep array, invalid UTF-8, the body limit);
this file covers the rest of the request surface: the memory API field by field, owner ids and the
``X-Memory-*`` headers, extreme numbers, times, lone surrogates, deep and huge bodies. Most cases
share one proxy (module scope), so the last test can check it is still healthy after all of them.
"""

from __future__ import annotations

import hashlib
import io
import json
import socket
import zipfile
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any
from uuid import uuid4

import httpx
import pytest

from memcubes.embedder import Embedder
from proxy.protocol import MAX_ITEMS, MAX_TAGS
from tests.conftest import Backend, Proxy, own_proxy, proxy_settings
from tests.test_errors_e2e import assert_error

CHAT: dict[str, Any] = {"model": "fake", "messages": [{"role": "user", "content": "hi"}]}
JSON_HEADERS = {"content-type": "application/json"}

# One JSON value of each type, to send where a field expects another.
SAMPLES: dict[str, Any] = {
    "null": None,
    "bool": True,
    "int": 7,
    "float": 1.5,
    "str": "x",
    "list": ["x"],
    "object": {"x": 1},
}


@pytest.fixture(scope="module")
def server(embedder: Embedder, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Proxy]:
    """One proxy (and its own scripted backend) shared by the cases of this module."""
    with own_proxy(embedder, tmp_path_factory.mktemp("bad-input") / "data") as proxy:
        yield proxy


@pytest.fixture
def http(server: Proxy) -> Iterator[httpx.Client]:
    with server.http() as client:
        yield client


@pytest.fixture(scope="module")
def memory_id(server: Proxy) -> str:
    """A memory the PATCH cases edit (only ever with invalid changes, so it stays as it is)."""
    with server.http() as http:
        added = http.post("/v1/memories", json={"user": "patched", "facts": ["I like green tea."], "sync": True})
    assert added.status_code == 200, added.text
    memory: str = added.json()["results"][0]["id"]
    return memory


def post_raw(http: httpx.Client, path: str, body: bytes, **headers: str) -> httpx.Response:
    return http.post(path, content=body, headers={**JSON_HEADERS, **headers})


def assert_bad_request(response: httpx.Response, param: str | None = None) -> dict[str, Any]:
    """A 400 ``invalid_request_error``; with ``param``, the error names that field (or a part of it)."""
    error = assert_error(response, 400, "invalid_request_error")
    if param is not None:
        assert error["param"] is not None and error["param"].startswith(param), error
    return error


def after_server_errors(url: str) -> None:
    """Return once a server has logged the 500s it just answered. A known bug's test calls this
    before it fails: uvicorn logs the traceback on the server's event-loop thread after the answer
    went out, and CPython 3.11's traceback formatting parses source with ``ast``, which is not
    thread-safe, so pytest formatting the failure at that moment dies with "SystemError: AST
    constructor recursion depth mismatch". The next request is served only once logging is done."""
    assert httpx.get(f"{url}/healthz", timeout=30).status_code == 200


def assert_still_serves_tenants(proxy: Proxy) -> None:
    """A fresh tenant can store a memory, have it injected into chat, and write-back drains; what
    one tenant stored is invisible to another."""
    tenant = f"healthy-{uuid4().hex[:8]}"
    with proxy.http() as http:
        assert http.get("/readyz").status_code == 200
        added = http.post("/v1/memories", json={"user": tenant, "facts": ["My cat is called Miso."], "sync": True})
        assert added.status_code == 200, added.text
        question = {**CHAT, "user": tenant, "messages": [{"role": "user", "content": "What is my cat called?"}]}
        answer = http.post("/v1/chat/completions", json=question)
        assert answer.status_code == 200, answer.text
        assert answer.headers["x-memory-status"] == "ok"
        assert "Miso" in answer.json()["choices"][0]["message"]["content"]
        other = http.post("/v1/memories/search", json={"user": f"{tenant}-other", "query": "cat called Miso"})
        assert other.status_code == 200 and other.json()["results"] == []
    proxy.wait_writeback()


# -- the memory API, field by field --------------------------------------------------------------


def wrong_types(accepted: set[str]) -> list[str]:
    return [kind for kind in SAMPLES if kind not in accepted]


ADD_FIELDS: dict[str, set[str]] = {
    "user": {"str", "null"},
    "space": {"str", "null"},
    "messages": {"list"},
    "facts": {"list"},
    "mode": {"null"},  # a string, but only one of the extraction modes
    "sync": {"bool"},
    "tags": {"list"},
    "created_at": {"str", "null"},  # ISO 8601
}
MESSAGE_FIELDS: dict[str, set[str]] = {
    "role": set(),  # one of the roles
    "content": {"str", "list"},
    "name": {"str", "null"},
    "id": {"str", "null"},
    "created_at": {"str", "null"},
}
SEARCH_FIELDS: dict[str, set[str]] = {
    "user": {"str", "null"},
    "space": {"str", "null"},
    "query": {"str"},
    "top_k": {"int", "null"},
    "token_budget": {"int", "null"},
}
PATCH_FIELDS: dict[str, set[str]] = {
    "content": {"str"},
    "tags": {"list"},
    "pinned": {"bool"},
    "expires_at": {"str", "null"},
    "valid_from": {"str", "null"},
    "valid_to": {"str", "null"},
}


@pytest.mark.parametrize(
    ("field", "kind"), [(field, kind) for field, accepted in ADD_FIELDS.items() for kind in wrong_types(accepted)]
)
def test_add_memories_rejects_a_wrong_type_in_every_field(http: httpx.Client, field: str, kind: str) -> None:
    body = {"user": "typed", "facts": ["I like tea."], field: SAMPLES[kind]}
    assert_bad_request(http.post("/v1/memories", json=body), field)


@pytest.mark.parametrize(
    ("field", "kind"), [(field, kind) for field, accepted in MESSAGE_FIELDS.items() for kind in wrong_types(accepted)]
)
def test_add_memories_rejects_a_wrong_type_in_every_message_field(http: httpx.Client, field: str, kind: str) -> None:
    message = {"role": "user", "content": "I like tea.", field: SAMPLES[kind]}
    assert_bad_request(http.post("/v1/memories", json={"user": "typed", "messages": [message]}), f"messages[0].{field}")


@pytest.mark.parametrize(
    ("field", "kind"), [(field, kind) for field, accepted in SEARCH_FIELDS.items() for kind in wrong_types(accepted)]
)
def test_search_rejects_a_wrong_type_in_every_field(http: httpx.Client, field: str, kind: str) -> None:
    body = {"user": "typed", "query": "tea", field: SAMPLES[kind]}
    assert_bad_request(http.post("/v1/memories/search", json=body), field)


@pytest.mark.parametrize(
    ("field", "kind"), [(field, kind) for field, accepted in PATCH_FIELDS.items() for kind in wrong_types(accepted)]
)
def test_edit_rejects_a_wrong_type_in_every_field(http: httpx.Client, memory_id: str, field: str, kind: str) -> None:
    assert_bad_request(http.patch(f"/v1/memories/{memory_id}", json={field: SAMPLES[kind]}), field)


@pytest.mark.parametrize("kind", wrong_types({"object"}))
@pytest.mark.parametrize(
    ("method", "path"), [("POST", "/v1/memories"), ("POST", "/v1/memories/search"), ("PATCH", "/v1/memories/{id}")]
)
def test_memory_bodies_must_be_objects(http: httpx.Client, memory_id: str, method: str, path: str, kind: str) -> None:
    body = json.dumps(SAMPLES[kind]).encode()
    error = assert_bad_request(http.request(method, path.format(id=memory_id), content=body, headers=JSON_HEADERS))
    assert "must be a JSON object" in error["message"], error


@pytest.mark.parametrize(
    ("content_type", "body", "message"),
    [
        ("text/plain", json.dumps(CHAT).encode(), "Content-Type: application/json"),
        ("application/x-www-form-urlencoded", b"model=fake", "Content-Type: application/json"),
        ("application/json", json.dumps(CHAT).encode() + b" trailing", "could not parse the JSON body"),
        ("application/json", json.dumps(CHAT).encode() + b"\x00", "could not parse the JSON body"),
        ("application/json", b"\xef\xbb\xbf\xef\xbb\xbf{}", "could not parse the JSON body"),
    ],
)
def test_bodies_that_are_not_one_json_object_are_400(
    http: httpx.Client, content_type: str, body: bytes, message: str
) -> None:
    error = assert_bad_request(http.post("/v1/chat/completions", content=body, headers={"content-type": content_type}))
    assert message in error["message"], error


@pytest.mark.parametrize(
    ("body", "param"),
    [
        ({"user": "", "facts": ["x"]}, "user"),
        ({"space": "", "facts": ["x"]}, "space"),
        ({"user": "   ", "facts": ["x"]}, "user"),  # only whitespace: no owner at all
        ({"facts": ["x"]}, "user"),
        ({"user": "u"}, "messages"),
        ({"user": "u", "facts": [], "messages": []}, "messages"),
        ({"user": "u", "facts": [""]}, "facts[0]"),
        ({"user": "u", "facts": [None]}, "facts[0]"),
        ({"user": "u", "facts": ["x"], "tags": [""]}, "tags[0]"),
        ({"user": "u", "facts": ["x"], "tags": ["t" * 257]}, "tags[0]"),
        ({"user": "u", "facts": ["x"], "tags": ["t"] * (MAX_TAGS + 1)}, "tags"),
        ({"user": "u", "facts": ["x"], "mode": ""}, "mode"),
        ({"user": "u", "facts": ["x"], "mode": "telepathy"}, "mode"),
        ({"user": "u", "facts": ["x"], "colour": "blue"}, "colour"),
        ({"user": "u", "messages": [{"role": "user"}]}, "messages[0].content"),
        ({"user": "u", "messages": [{"content": "hi"}]}, "messages[0].role"),
        ({"user": "u", "messages": [{"role": "user", "content": "hi", "id": ""}]}, "messages[0].id"),
        ({"user": "u", "messages": [{"role": "user", "content": "hi", "extra": 1}]}, "messages[0].extra"),
        ({"user": "u", "messages": [None]}, "messages[0]"),
        ({"user": "u" * 257, "facts": ["x"]}, "user"),
        ({"space": "s" * 513, "facts": ["x"]}, "space"),
    ],
)
def test_add_memories_rejects_empty_null_and_unknown_values(
    http: httpx.Client, body: dict[str, Any], param: str
) -> None:
    assert_bad_request(http.post("/v1/memories", json=body), param)


@pytest.mark.parametrize(
    ("body", "param"),
    [
        ({"user": "u", "query": ""}, "query"),
        ({"user": "u"}, "query"),
        ({"user": "u", "query": None}, "query"),
        ({"user": "u", "query": "q" * 100_001}, "query"),
        ({"query": "tea"}, "user"),
        ({"user": "u", "query": "tea", "top_k": 0}, "top_k"),
        ({"user": "u", "query": "tea", "top_k": -1}, "top_k"),
        ({"user": "u", "query": "tea", "top_k": 201}, "top_k"),
        ({"user": "u", "query": "tea", "top_k": 2**63}, "top_k"),
        ({"user": "u", "query": "tea", "top_k": 10**300}, "top_k"),
        ({"user": "u", "query": "tea", "top_k": 5.0}, "top_k"),
        ({"user": "u", "query": "tea", "top_k": "5"}, "top_k"),
        ({"user": "u", "query": "tea", "top_k": 1e308}, "top_k"),
        ({"user": "u", "query": "tea", "token_budget": -1}, "token_budget"),
        ({"user": "u", "query": "tea", "token_budget": 1_000_001}, "token_budget"),
        ({"user": "u", "query": "tea", "token_budget": -(2**70)}, "token_budget"),
        ({"user": "u", "query": "tea", "token_budget": False}, "token_budget"),
    ],
)
def test_search_rejects_empty_null_and_extreme_values(http: httpx.Client, body: dict[str, Any], param: str) -> None:
    assert_bad_request(http.post("/v1/memories/search", json=body), param)


@pytest.mark.parametrize(
    "literal", [b"NaN", b"Infinity", b"-Infinity", b"1e400", b"9" * 5000, b"-" + b"9" * 5000, b"0x10", b"01"]
)
def test_numbers_json_cannot_hold_are_rejected(http: httpx.Client, literal: bytes) -> None:
    """Non-finite literals, huge ints (more digits than Python converts) and non-JSON spellings."""
    body = b'{"user": "u", "query": "tea", "top_k": ' + literal + b"}"
    assert_bad_request(post_raw(http, "/v1/memories/search", body))


def test_search_accepts_the_extreme_valid_numbers(http: httpx.Client) -> None:
    for extreme in ({"top_k": 1, "token_budget": 0}, {"top_k": 200, "token_budget": 1_000_000}):
        response = http.post("/v1/memories/search", json={"user": "patched", "query": "tea", **extreme})
        assert response.status_code == 200, response.text


@pytest.mark.parametrize(
    ("body", "param"),
    [
        ({}, None),
        ({"content": ""}, "content"),
        ({"content": None}, "content"),
        ({"tags": None}, "tags"),
        ({"pinned": None}, "pinned"),
        ({"pinned": "yes"}, "pinned"),
        ({"tags": ["t"] * (MAX_TAGS + 1)}, "tags"),
        ({"state": "deleted"}, "state"),
        ({"valid_from": "2030-01-01T00:00:00Z", "valid_to": "2020-01-01T00:00:00Z"}, None),
    ],
)
def test_edit_rejects_empty_null_and_contradictory_changes(
    http: httpx.Client, memory_id: str, body: dict[str, Any], param: str | None
) -> None:
    assert_bad_request(http.patch(f"/v1/memories/{memory_id}", json=body), param)


@pytest.mark.parametrize("memory", ["nope", "x" * 5000, "%00", "01M89DZZ ZZ", "é", "🙂"])
def test_unknown_memory_ids_are_404(http: httpx.Client, memory: str) -> None:
    for method in ("GET", "DELETE"):
        error = assert_error(http.request(method, f"/v1/memories/{memory}"), 404)
        assert error["code"] == "memory_not_found"
    assert assert_error(http.get(f"/v1/memories/{memory}/history"), 404)["code"] == "memory_not_found"
    patched = http.patch(f"/v1/memories/{memory}", json={"content": "new"})
    assert assert_error(patched, 404)["code"] == "memory_not_found"


@pytest.mark.parametrize(
    ("params", "param"),
    [
        ({"user": "u", "limit": "0"}, "limit"),
        ({"user": "u", "limit": "501"}, "limit"),
        ({"user": "u", "limit": "-1"}, "limit"),
        ({"user": "u", "limit": "9" * 400}, "limit"),
        ({"user": "u", "limit": "ten"}, "limit"),
        ({"user": "u", "limit": "NaN"}, "limit"),
        ({"user": "u", "state": "gone"}, "state"),
        ({"user": "u", "since": "yesterday"}, "since"),
        ({"user": "u", "until": "2024-13-01"}, "until"),
        ({"user": "u", "since": "0001-01-01T00:00:00+05:00"}, "since"),
        ({"user": "u", "until": "9999-12-31T23:59:59-05:00"}, "until"),
        ({"user": "u", "cursor": "c" * 65}, "cursor"),
        ({"user": "u" * 257}, "user"),
        ({"user": "a\x85b"}, "user"),
        ({"space": "a\nb"}, "space"),
        ({}, "user"),
    ],
)
def test_list_rejects_bad_query_parameters(http: httpx.Client, params: dict[str, str], param: str) -> None:
    assert_bad_request(http.get("/v1/memories", params=params), param)


def test_delete_rejects_a_purge_that_is_not_a_boolean(http: httpx.Client, memory_id: str) -> None:
    assert_bad_request(http.delete(f"/v1/memories/{memory_id}", params={"purge": "maybe"}), "purge")
    assert http.get(f"/v1/memories/{memory_id}").json()["state"] == "active"


# -- times ------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    "moment",
    ["0001-01-01T00:00:00+05:00", "9999-12-31T23:59:59-05:00", "2024-02-30T00:00:00Z", "24:00", "", 1e20, -1e20],
)
def test_times_outside_what_utc_can_hold_are_rejected(http: httpx.Client, memory_id: str, moment: Any) -> None:
    fact = {"user": "timed", "facts": ["I was born."], "created_at": moment}
    assert_bad_request(http.post("/v1/memories", json=fact), "created_at")
    message = {"role": "user", "content": "I moved.", "created_at": moment}
    assert_bad_request(http.post("/v1/memories", json={"user": "timed", "messages": [message]}), "messages[0]")
    for field in ("expires_at", "valid_from", "valid_to"):
        assert_bad_request(http.patch(f"/v1/memories/{memory_id}", json={field: moment}), field)


def test_times_are_normalized_to_utc_and_a_naive_time_is_utc(http: httpx.Client) -> None:
    for fact, moment in (("I like jazz.", "2024-05-08T12:00:00+02:00"), ("I like rock.", "2024-05-08T11:00:00")):
        added = http.post("/v1/memories", json={"user": "tz", "facts": [fact], "created_at": moment, "sync": True})
        assert added.status_code == 200, added.text
    window = {"user": "tz", "since": "2024-05-08T10:30:00+00:00", "until": "2024-05-08T11:30:00"}
    page = http.get("/v1/memories", params=window).json()["data"]
    assert [(memory["content"], memory["created_at"]) for memory in page] == [("I like rock.", "2024-05-08T11:00:00Z")]


def test_a_naive_expiry_does_not_break_write_back_for_anyone(server: Proxy, http: httpx.Client) -> None:
    """Regression: a naive ``expires_at`` was stored as given, then every comparison with an aware
    time raised (500 on the edit, and the shared index outbox stuck for every tenant)."""
    added = http.post("/v1/memories", json={"user": "expiring", "facts": ["I rent a flat."], "sync": True})
    memory = added.json()["results"][0]["id"]
    edited = http.patch(f"/v1/memories/{memory}", json={"expires_at": "2999-01-01T00:00:00"})
    assert edited.status_code == 200, edited.text
    assert edited.json()["expires_at"] == "2999-01-01T00:00:00Z"
    assert_still_serves_tenants(server)


# -- owner ids and the X-Memory-* headers --------------------------------------------------------


BAD_OWNERS = [
    "a\x00b",  # NUL
    "a\x07b",  # BEL
    "a\nb",
    "a\x7fb",  # DEL
    "a\x85b",  # NEL (C1 control)
    "a\u2028b",  # line separator
    "a\u2029b",  # paragraph separator
    "u" * 257,
]


@pytest.mark.parametrize("owner", BAD_OWNERS)
def test_bad_owner_ids_in_bodies_are_rejected_by_chat_and_memory_api_alike(http: httpx.Client, owner: str) -> None:
    assert_bad_request(http.post("/v1/chat/completions", json={**CHAT, "user": owner}), "user")
    assert_bad_request(http.post("/v1/memories", json={"user": owner, "facts": ["x"]}), "user")
    assert_bad_request(http.post("/v1/memories/search", json={"user": owner, "query": "x"}), "user")
    assert_bad_request(http.get("/v1/memories", params={"user": owner}), "user")


@pytest.mark.parametrize(
    "owner",
    [
        "José",
        "Zoë Ωmega",
        "李小龍",
        "\U0001f600 smile",
        "👨\u200d👩\u200d👧 family",  # a joiner between emoji is part of one picture, not hidden text
        "ｊｏｓé",  # NFKC: the same owner as "josé" (tested in test_security)
        "a b",
        "x" * 256,
    ],
)
def test_unicode_owner_ids_name_the_same_space_on_both_paths(http: httpx.Client, owner: str) -> None:
    fact = f"My favourite number is {len(owner)}."
    added = http.post("/v1/memories", json={"user": owner, "facts": [fact], "sync": True})
    assert added.status_code == 200, added.text
    question = {
        **CHAT,
        "user": f"  {owner} ",
        "messages": [{"role": "user", "content": "What is my favourite number?"}],
    }
    answer = http.post("/v1/chat/completions", json=question)
    assert answer.status_code == 200, answer.text
    assert fact in answer.json()["choices"][0]["message"]["content"]
    header = {b"x-memory-user": owner.encode()}  # raw UTF-8 bytes, as a gateway would send them
    found = http.post("/v1/memories/search", json={"query": "favourite number"}, headers=header)
    assert fact in [result["text"].split("] ", 1)[1] for result in found.json()["results"]]


@pytest.mark.parametrize(
    ("header", "value", "param"),
    [
        ("x-memory-user", b"a\x85b", "X-Memory-User"),
        ("x-memory-user", "a\u2028b".encode(), "X-Memory-User"),
        ("x-memory-user", "r\u202eight-to-left".encode(), "X-Memory-User"),  # bidi control
        ("x-memory-user", "alice\u200b".encode(), "X-Memory-User"),  # zero-width space
        ("x-memory-user", "al\u200dice".encode(), "X-Memory-User"),  # a joiner between letters
        ("x-memory-user", b"u" * 257, "X-Memory-User"),
        ("x-memory-user", "é".encode() * 257, "X-Memory-User"),
        ("x-memory-session", b"s\x85s", "X-Memory-Session"),
        ("x-memory-session", b"s" * 257, "X-Memory-Session"),
        ("x-memory-mode", b"sometimes", "X-Memory-Mode"),
        ("x-memory-mode", b"\xff\xfe", "X-Memory-Mode"),
        ("x-memory-mode", b"o" * 8000, "X-Memory-Mode"),
        ("x-memory-kv", b"maybe", "X-Memory-KV"),
        ("x-memory-kv", b"", "X-Memory-KV"),
    ],
)
def test_bad_memory_headers_are_400_naming_the_header(
    http: httpx.Client, header: str, value: bytes, param: str
) -> None:
    response = http.post("/v1/chat/completions", json=CHAT, headers={header.encode(): value})
    error = assert_bad_request(response, param)
    assert len(error["message"]) < 300  # a huge header is not echoed back whole


@pytest.mark.parametrize(
    ("header", "value"),
    [
        ("x-memory-user", "é".encode() * 256),  # 256 characters, 512 bytes of UTF-8
        ("x-memory-user", "caf\xe9".encode("latin-1")),  # Latin-1, as some clients send it
        ("x-memory-user", b""),  # empty: no owner, chat passes through
        ("x-memory-session", "séance 🕯".encode()),
        ("x-memory-mode", b"READ"),
        ("x-memory-kv", b"OFF"),
    ],
)
def test_unusual_but_valid_memory_headers_are_accepted(http: httpx.Client, header: str, value: bytes) -> None:
    response = http.post("/v1/chat/completions", json=CHAT, headers={header.encode(): value})
    assert response.status_code == 200, response.text


def test_the_header_owner_rule_holds_on_the_memory_api_too(http: httpx.Client) -> None:
    for value in (b"a\x85b", b"u" * 257):
        headers = {b"x-memory-user": value}
        assert_bad_request(http.post("/v1/memories", json={"facts": ["x"]}, headers=headers), "X-Memory-User")
        assert_bad_request(http.get("/v1/memories", headers=headers), "X-Memory-User")


def raw_request(url: str, request: bytes) -> bytes:
    """Send bytes no HTTP client would, and return the status line of the answer."""
    host, port = httpx.URL(url).host, httpx.URL(url).port
    with socket.create_connection((host, port), timeout=30) as sock:
        sock.sendall(request)
        answer = b""
        while b"\r\n" not in answer and (chunk := sock.recv(4096)):
            answer += chunk
    return answer.split(b"\r\n", 1)[0]


@pytest.mark.parametrize("value", [b"a\x00b", b"a\x7fb", b"a\rb", b"a\x01b"])
def test_header_bytes_the_http_server_refuses_are_4xx_and_harmless(server: Proxy, value: bytes) -> None:
    """Such headers never reach the app: the HTTP server answers 400 itself (plain text, not
    OpenAI-shaped, since memproxy never sees the request), and keeps serving."""
    body = json.dumps(CHAT).encode()
    request = (
        b"POST /v1/chat/completions HTTP/1.1\r\nHost: x\r\nContent-Type: application/json\r\n"
        b"X-Memory-User: " + value + b"\r\nContent-Length: " + str(len(body)).encode() + b"\r\n\r\n" + body
    )
    status = raw_request(server.url, request)
    assert status.split(b" ")[1].startswith(b"4"), status
    with server.http() as http:
        assert http.post("/v1/chat/completions", json=CHAT).status_code == 200


# -- lone surrogates and invalid text ------------------------------------------------------------


LONE = "\\ud800"  # as JSON spells it: a high surrogate with no low one after it


@pytest.mark.parametrize(
    ("path", "template", "param"),
    [
        ("/v1/chat/completions", '{"model": "fake", "messages": [{"role": "user", "content": "a%sb"}]}', "messages[0]"),
        (
            "/v1/chat/completions",
            '{"model": "fake", "messages": [{"role": "user", "content": [{"type": "text", "text": "%s"}]}]}',
            "messages[0].content[0].text",
        ),
        (
            "/v1/chat/completions",
            '{"model": "fake", "messages": [{"role": "user", "content": "hi", "name": "%s"}]}',
            "messages[0].name",
        ),
        (
            "/v1/chat/completions",
            '{"model": "fake", "user": "%s", "messages": [{"role": "user", "content": "hi"}]}',
            "user",
        ),
        ("/v1/chat/completions", '{"model": "fake%s", "messages": [{"role": "user", "content": "hi"}]}', "model"),
        ("/v1/memories", '{"user": "u", "facts": ["a%s"]}', "facts[0]"),
        ("/v1/memories", '{"user": "u", "tags": ["%s"], "facts": ["x"]}', "tags[0]"),
        ("/v1/memories", '{"user": "u%s", "facts": ["x"]}', "user"),
        ("/v1/memories", '{"space": "s%s", "facts": ["x"]}', "space"),
        ("/v1/memories", '{"user": "u", "messages": [{"role": "user", "content": "%s"}]}', "messages[0].content"),
        (
            "/v1/memories",
            '{"user": "u", "messages": [{"role": "user", "content": "hi", "id": "%s"}]}',
            "messages[0].id",
        ),
        ("/v1/memories/search", '{"user": "u", "query": "tea %s"}', "query"),
    ],
)
@pytest.mark.parametrize("surrogate", [LONE, "\\udfff", "\\udc00\\ud800"])
def test_lone_surrogates_are_rejected_where_memproxy_reads_text(
    http: httpx.Client, path: str, template: str, param: str, surrogate: str
) -> None:
    """JSON can spell half a UTF-16 pair; no store, tokenizer or upstream accepts the result, so
    it is a 400 at the door (it was a 503 "memory store unavailable", or a silently degraded chat
    whose exchange could never be journalled)."""
    assert_bad_request(post_raw(http, path, (template % surrogate).encode()), param)


def test_a_lone_surrogate_in_an_edit_is_rejected(http: httpx.Client, memory_id: str) -> None:
    body = ('{"content": "' + LONE + '"}').encode()
    response = http.patch(f"/v1/memories/{memory_id}", content=body, headers=JSON_HEADERS)
    assert_bad_request(response, "content")


def test_escaped_surrogate_pairs_and_backslashes_are_text(http: httpx.Client) -> None:
    """A valid pair (an emoji spelled with escapes) is fine, and so is a literal backslash-u."""
    fact = '{"user": "emoji", "facts": ["I love \\ud83c\\udf63 and \\\\ud800 is just text"], "sync": true}'
    added = post_raw(http, "/v1/memories", fact.encode())
    assert added.status_code == 200, added.text
    assert added.json()["results"][0]["text"] == "I love 🍣 and \\ud800 is just text"


@pytest.mark.parametrize(
    "body",
    [
        b'{"user": "u", "facts": ["\xc0\xaf"]}',  # an overlong encoding
        b'{"user": "u", "facts": ["\xff"]}',
        b'{"user": "u", "facts": ["caf\xe9"]}',  # Latin-1
    ],
)
def test_invalid_utf8_is_rejected_by_the_memory_api(http: httpx.Client, body: bytes) -> None:
    error = assert_bad_request(post_raw(http, "/v1/memories", body))
    assert "UTF-8" in error["message"]


@pytest.mark.parametrize(
    ("path", "body", "param"),
    [
        ("/v1/memories", b'{"user": "u", "facts": ["\xed\xa0\x80"]}', "facts[0]"),
        (
            "/v1/chat/completions",
            b'{"model": "fake", "messages": [{"role": "user", "content": "\xed\xb0\x80"}]}',
            "messages",
        ),
    ],
)
def test_surrogates_encoded_as_utf8_bytes_are_rejected(http: httpx.Client, path: str, body: bytes, param: str) -> None:
    """Python's JSON parser lets UTF-8-encoded surrogates through as lone surrogates; same 400."""
    assert_bad_request(post_raw(http, path, body), param)


def test_control_characters_in_text_are_kept_as_text(http: httpx.Client) -> None:
    """Controls are valid Unicode: text that carries them is stored as sent, but for NUL, which
    PostgreSQL cannot store and memory drops on both engines (tests/test_nul_text.py)."""
    text = "tab\there, nul\x00, bell\x07, escape\x1b[31m"
    added = http.post("/v1/memories", json={"user": "controls", "facts": [text], "sync": True})
    assert added.status_code == 200 and added.json()["results"][0]["text"] == text.replace("\x00", "")
    chat = http.post(
        "/v1/chat/completions", json={**CHAT, "user": "controls", "messages": [{"role": "user", "content": text}]}
    )
    assert chat.status_code == 200


# -- chat content parts ------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("content", "param"),
    [
        (["just a string"], "messages[0].content[0]"),
        ([None], "messages[0].content[0]"),
        ([42], "messages[0].content[0]"),
        ([["nested"]], "messages[0].content[0]"),
        ([{"type": None}], "messages[0].content[0].type"),
        ([{"type": 3}], "messages[0].content[0].type"),
        ([{"type": ""}], "messages[0].content[0]"),
        ([{"type": ["text"]}], "messages[0].content[0].type"),
        ([{"type": "text"}], "messages[0].content[0]"),
        ([{"type": "text", "text": None}], "messages[0].content[0]"),
        ([{"type": "text", "text": 5}], "messages[0].content[0].text"),
        ([{"type": "text", "text": {"value": "hi"}}], "messages[0].content[0].text"),
        ([{"type": "text", "text": ["hi"]}], "messages[0].content[0].text"),
        ([{"type": "image_url", "image_url": {"url": "data:,"}}, {"type": "text"}], "messages[0].content[1]"),
        ({"type": "text", "text": "an object, not a list"}, "messages[0].content"),
        (7, "messages[0].content"),
        (True, "messages[0].content"),
    ],
)
def test_wrong_content_part_types_are_400(http: httpx.Client, content: Any, param: str) -> None:
    body = {**CHAT, "user": "parts", "messages": [{"role": "user", "content": content}]}
    assert_bad_request(http.post("/v1/chat/completions", json=body), param)
    memory = {"user": "parts", "messages": [{"role": "user", "content": content}]}
    assert_bad_request(http.post("/v1/memories", json=memory), param)


def test_the_scripted_backend_survives_a_null_text_on_a_non_text_part(http: httpx.Client) -> None:
    part = {"type": "image_url", "image_url": {"url": "data:,"}, "text": None}
    body = {**CHAT, "messages": [{"role": "user", "content": [part, {"type": "text", "text": "hi"}]}]}
    response = http.post("/v1/chat/completions", json=body)
    assert http.post("/v1/chat/completions", json=CHAT).status_code == 200  # the backend is done logging
    assert response.status_code == 200, response.text


def test_unknown_content_part_types_pass_through(http: httpx.Client) -> None:
    """Parts memproxy does not read (audio, files, a provider's own) reach the backend untouched."""
    parts = [
        {"type": "input_audio", "input_audio": {"data": "", "format": "wav"}},
        {"type": "x-vendor", "deep": [[{}]]},
    ]
    body = {
        **CHAT,
        "user": "parts",
        "messages": [{"role": "user", "content": [*parts, {"type": "text", "text": "hi"}]}],
    }
    assert http.post("/v1/chat/completions", json=body).status_code == 200


@pytest.mark.parametrize(
    ("field", "value"),
    [
        ("n", 0),
        ("n", 129),
        ("n", -1),
        ("n", 10**30),
        ("n", 2.0),
        ("n", "2"),
        ("n", True),
        ("stream", "yes"),
        ("stream", 1),
        ("stream", "true"),
        ("model", ""),
        ("model", None),
        ("model", 5),
        ("user", 5),
        ("user", ["alice"]),
        ("messages", None),
        ("messages", {"role": "user", "content": "hi"}),
        ("messages", [None]),
        ("messages", [{"role": None, "content": "hi"}]),
        ("messages", [{"role": "user", "content": "hi", "name": 5}]),
    ],
)
def test_chat_rejects_wrong_types_and_extreme_values(http: httpx.Client, field: str, value: Any) -> None:
    assert_bad_request(http.post("/v1/chat/completions", json={**CHAT, field: value}), field)


@pytest.mark.parametrize("literal", [b"NaN", b"Infinity", b"-Infinity"])
def test_non_finite_numbers_in_relayed_chat_fields_are_400(http: httpx.Client, literal: bytes) -> None:
    """Unknown fields go to the upstream as sent, so they must be JSON: Python's parser takes NaN."""
    for template in (b'"temperature": %s', b'"metadata": {"deep": [1, %s]}'):
        field = template.replace(b"%s", literal)
        body = b'{"model": "fake", "messages": [{"role": "user", "content": "hi"}], ' + field + b"}"
        error = assert_bad_request(post_raw(http, "/v1/chat/completions", body))
        assert "NaN and Infinity" in error["message"]


def test_chat_accepts_the_extreme_valid_n(http: httpx.Client) -> None:
    answer = http.post("/v1/chat/completions", json={**CHAT, "n": 128})
    assert answer.status_code == 200 and len(answer.json()["choices"]) == 128


# -- deep and huge bodies -----------------------------------------------------------------------


def nested(depth: int) -> str:
    return "[" * depth + "]" * depth


@pytest.mark.parametrize(
    ("path", "template"),
    [
        ("/v1/chat/completions", '{"model": "fake", "messages": [{"role": "user", "content": "hi"}], "metadata": %s}'),
        (
            "/v1/chat/completions",
            '{"model": "fake", "messages": [{"role": "user", "content": [{"type": "x", "x": %s}]}]}',
        ),
        ("/v1/memories", '{"user": "u", "facts": %s}'),
        ("/v1/memories/search", '{"user": "u", "query": %s}'),
        ("/v1/memories/search", "%s"),
    ],
)
def test_json_nested_too_deeply_is_400(http: httpx.Client, path: str, template: str) -> None:
    error = assert_bad_request(post_raw(http, path, (template % nested(100_000)).encode()))
    assert "nested too deeply" in error["message"]


def test_moderately_deep_json_reaches_the_backend_intact(server: Proxy, http: httpx.Client) -> None:
    """Nesting the JSON parser accepts is relayed as sent (an unknown field: the backend's business)."""
    body = '{"model": "fake", "user": "deep", "messages": [{"role": "user", "content": "hi"}], "metadata": %s}'
    assert post_raw(http, "/v1/chat/completions", (body % nested(500)).encode()).status_code == 200
    assert_bad_request(
        post_raw(http, "/v1/memories", ('{"user": "u", "facts": ' + nested(500) + "}").encode()), "facts"
    )


def test_too_many_messages_or_facts_for_one_memory_request_is_400(http: httpx.Client) -> None:
    facts = [f"fact {i}" for i in range(MAX_ITEMS + 1)]
    error = assert_bad_request(http.post("/v1/memories", json={"user": "bulk", "facts": facts}), "facts")
    assert str(MAX_ITEMS) in error["message"]
    messages = [{"role": "user", "content": f"message {i}"} for i in range(MAX_ITEMS + 1)]
    assert_bad_request(http.post("/v1/memories", json={"user": "bulk", "messages": messages}), "messages")
    assert http.get("/v1/memories", params={"user": "bulk"}).json()["data"] == []


def test_a_huge_messages_array_within_the_body_limit_is_refused_past_max_messages(http: httpx.Client) -> None:
    """50,000 messages (about 2 MB) are more than general_settings.max_messages (4,096): a 400,
    while 4,096 of them are relayed and answered."""
    messages = [{"role": "user" if i % 2 else "assistant", "content": f"turn {i}"} for i in range(50_000)]
    body = {**CHAT, "user": "long-chat", "messages": messages}
    error = assert_bad_request(http.post("/v1/chat/completions", json=body), "messages")
    assert "4096" in error["message"]
    body["messages"] = messages[-4096:]
    answer = http.post("/v1/chat/completions", json=body, headers={"x-memory-mode": "read"})
    assert answer.status_code == 200, answer.text[:500]
    assert answer.headers["x-memory-status"] == "ok"


def test_oversized_bodies_are_413_on_every_json_endpoint(
    backend: Backend, start_proxy: Callable[..., Proxy], tmp_path: Path
) -> None:
    limit_mb = 0.05
    proxy = start_proxy(
        proxy_settings(backend.url, tmp_path / "data", general_settings={"max_request_size_mb": limit_mb})
    )
    limit = int(limit_mb * 1024 * 1024)
    with proxy.http() as http:
        added = http.post("/v1/memories", json={"user": "big", "facts": ["I like tea."], "sync": True})
        memory = added.json()["results"][0]["id"]
        huge_chat = {**CHAT, "messages": [{"role": "user", "content": "x"}] * 20_000}
        cases = [
            ("POST", "/v1/chat/completions", huge_chat),
            ("POST", "/v1/chat/completions", {**CHAT, "stream": True, "metadata": {"pad": "x" * limit}}),
            ("POST", "/v1/memories", {"user": "big", "facts": ["x" * 1000] * 60}),
            ("POST", "/v1/memories/search", {"user": "big", "query": "q" * (limit + 1)}),
            ("PATCH", f"/v1/memories/{memory}", {"content": "c" * (limit + 1)}),
        ]
        for method, path, body in cases:
            error = assert_error(http.request(method, path, json=body), 413, "invalid_request_error")
            assert error["code"] == "request_too_large" and str(limit) in error["message"]
        exact = json.dumps({"user": "big", "query": "q"}).encode()
        padded = exact[:-1] + b" " * (limit - len(exact)) + b"}"  # exactly at the limit: accepted
        assert len(padded) == limit
        assert post_raw(http, "/v1/memories/search", padded).status_code == 200
        assert_error(post_raw(http, "/v1/memories/search", padded + b" "), 413)
        assert http.get(f"/v1/memories/{memory}").json()["content"] == "I like tea."


# -- imports: bundles and foreign exports ----------------------------------------------------------


def rewrite_bundle(bundle: bytes, change: Callable[[dict[str, Any]], None]) -> bytes:
    """``bundle`` with ``change`` applied to every cube, checksums updated: a well-formed bundle
    carrying whatever values ``change`` puts in."""
    with zipfile.ZipFile(io.BytesIO(bundle)) as source:
        members = {name: source.read(name) for name in source.namelist()}
    cubes = [json.loads(line) for line in members["cubes.jsonl"].splitlines() if line.strip()]
    for cube in cubes:
        change(cube)
    members["cubes.jsonl"] = "".join(json.dumps(cube) + "\n" for cube in cubes).encode()
    manifest = json.loads(members["manifest.json"])
    for name, data in members.items():
        if name != "manifest.json":
            manifest["members"][name] = {"sha256": hashlib.sha256(data).hexdigest(), "bytes": len(data)}
    members["manifest.json"] = json.dumps(manifest).encode()
    target = io.BytesIO()
    with zipfile.ZipFile(target, "w") as archive:
        for name, data in members.items():
            archive.writestr(name, data)
    return target.getvalue()


def exported(http: httpx.Client, user: str) -> bytes:
    added = http.post("/v1/memories", json={"user": user, "facts": ["I like green tea."], "sync": True})
    assert added.status_code == 200, added.text
    return http.get(f"/v1/spaces/user:{user}/export").content


def import_into(http: httpx.Client, data: bytes, *, space: str, **params: str) -> httpx.Response:
    return http.post("/v1/spaces/import", params={"space": space, "on_conflict": "new-ids", **params}, content=data)


@pytest.mark.parametrize(
    ("name", "change"),
    [
        ("naive time", lambda cube: cube.update(expires_at="2030-01-01T00:00:00")),
        ("foreign space", lambda cube: cube.update(space="user:someone-else")),
        ("unknown state", lambda cube: cube.update(state="haunted")),
        ("text confidence", lambda cube: cube.update(confidence="high")),
    ],
)
def test_bundles_with_bad_cubes_are_rejected_whole(
    http: httpx.Client, name: str, change: Callable[[dict[str, Any]], None]
) -> None:
    space = f"user:import-{uuid4().hex[:8]}"
    error = assert_bad_request(import_into(http, rewrite_bundle(exported(http, "exporter"), change), space=space))
    assert error["code"] == "invalid_bundle", name
    assert http.get("/v1/memories", params={"space": space}).json()["data"] == []


def test_bundle_times_with_an_offset_are_listed_by_their_instant(http: httpx.Client) -> None:
    at_ten_utc = rewrite_bundle(
        exported(http, "exporter"), lambda cube: cube.update(created_at="2024-05-08T12:00:00+02:00")
    )
    space = f"user:offset-{uuid4().hex[:8]}"
    assert import_into(http, at_ten_utc, space=space).status_code == 200
    later = http.get("/v1/memories", params={"space": space, "since": "2024-05-08T10:30:00Z"}).json()["data"]
    earlier = http.get("/v1/memories", params={"space": space, "until": "2024-05-08T11:00:00Z"}).json()["data"]
    assert (len(later), len(earlier)) == (0, 1)


@pytest.mark.parametrize(
    "upload",
    [b"", b"PK\x03\x04 not a zip", b"\xff\xfe\x00", b"[[[[", b'"a string"', b"[1, 2]", b'{"results": 5}', b"null"],
)
def test_unreadable_imports_are_400(http: httpx.Client, upload: bytes) -> None:
    assert_bad_request(import_into(http, upload, space="user:unreadable"))


def test_a_bad_bundle_cannot_break_memory_for_other_tenants(
    backend: Backend, start_proxy: Callable[..., Proxy], tmp_path: Path
) -> None:
    proxy = start_proxy(proxy_settings(backend.url, tmp_path / "data"))
    with proxy.http() as http:
        poisoned = rewrite_bundle(exported(http, "exporter"), lambda cube: cube.update(confidence=float("inf")))
        imported = import_into(http, poisoned, space="user:poisoned")
    with proxy.http() as http:  # a fresh connection: the server closes one that got a 500
        bystander = http.post("/v1/memories", json={"user": "bystander", "facts": ["I like cocoa."], "sync": True})
    after_server_errors(proxy.url)
    assert imported.status_code != 200
    assert bystander.status_code == 200, bystander.text
    assert_still_serves_tenants(proxy)


@pytest.mark.parametrize(
    "change",
    [
        pytest.param(lambda cube: cube.update(confidence=float("inf")), id="confidence-infinite"),
        pytest.param(lambda cube: cube["access"].update(heat=float("nan")), id="heat-nan"),
        pytest.param(lambda cube: cube["access"].update(hits=-(10**30)), id="hits-huge"),
        pytest.param(lambda cube: cube.update(content="tea \ud800"), id="content-lone-surrogate"),
    ],
)
def test_bundles_with_unrepresentable_values_are_invalid_bundles(
    backend: Backend, start_proxy: Callable[..., Proxy], tmp_path: Path, change: Callable[[dict[str, Any]], None]
) -> None:
    proxy = start_proxy(proxy_settings(backend.url, tmp_path / "data"))
    with proxy.http() as http:
        response = import_into(http, rewrite_bundle(exported(http, "exporter"), change), space="user:unrepresentable")
    after_server_errors(proxy.url)
    assert assert_bad_request(response)["code"] == "invalid_bundle"


MEM0_ITEM = {"id": "m1", "memory": "Likes tea", "hash": "h", "user_id": "u", "created_at": "2024-01-01T00:00:00Z"}


@pytest.mark.parametrize(
    "item",
    [
        pytest.param({**MEM0_ITEM, "created_at": "0001-01-01T00:00:00+05:00"}, id="created-before-year-1-utc"),
        pytest.param({**MEM0_ITEM, "expiration_date": "9999-12-31"}, id="expires-after-9999"),
        pytest.param({**MEM0_ITEM, "memory": "Likes tea \ud800"}, id="lone-surrogate"),
    ],
)
def test_mem0_exports_with_unrepresentable_values_are_invalid_bundles(
    backend: Backend, start_proxy: Callable[..., Proxy], tmp_path: Path, item: dict[str, Any]
) -> None:
    proxy = start_proxy(proxy_settings(backend.url, tmp_path / "data"))
    with proxy.http() as http:
        response = import_into(http, json.dumps([item]).encode(), space="user:mem0", format="mem0")
    after_server_errors(proxy.url)
    assert assert_bad_request(response)["code"] == "invalid_bundle"


# -- afterwards ------------------------------------------------------------------------------


def test_other_tenants_are_served_correctly_after_all_the_bad_input(server: Proxy) -> None:
    assert_still_serves_tenants(server)
