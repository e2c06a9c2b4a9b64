"""Several real ``memproxy serve`` processes sharing their memory (one data dir, or one PostgreSQL
database: ``tests/test_workers.py``, ``tests/test_replicas.py``), with a real ``chroma run``
server (tests/conftest.py's ``chroma``) for the vector index they share: the config they are
started with, and the checks both kinds of sharing must pass."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import time
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

import httpx

from tests.conftest import Backend

WORDS = (
    "amber basalt cedar dune ember fjord garnet harbor indigo juniper kelp lagoon marble nectar onyx pebble quartz "
    "reef saffron tundra umber velvet willow xenon yarrow zephyr"
).split()
BURST = 240


# Runs one query (no parameters) against the shared system of record and returns its rows.
Query = Callable[[str], Sequence[tuple[Any, ...]]]


def shared_config(
    path: Path, backend: Backend, data_dir: Path, chroma_port: int, *, database_url: str = "", master_key: str = ""
) -> Path:
    """A config of one process; those given the same ``data_dir`` (or ``database_url``) share it."""
    path.write_text(
        "model_list:\n"
        "  - model_name: fake\n"
        f"    litellm_params: {{model: openai/fake, api_base: '{backend.url}/v1', api_key: x}}\n"
        + (f"general_settings: {{master_key: {master_key}}}\n" if master_key else "")
        + "memory:\n"
        f"  data_dir: {data_dir}\n"
        + (f"  database_url: '{database_url}'\n" if database_url else "")
        + "  extraction: {mode: raw}\n"
        f"  vector_index: {{host: 127.0.0.1, port: {chroma_port}}}\n"
        "  writeback: {lease_seconds: 2, retry_seconds: 0.5}\n"
    )
    return path


def ask(port: int, user: str, question: str, headers: dict[str, str] | None = None) -> httpx.Response:
    body = {"model": "fake", "user": user, "messages": [{"role": "user", "content": question}]}
    return httpx.post(f"http://127.0.0.1:{port}/v1/chat/completions", json=body, headers=headers, timeout=60)


def check_written_through_one_injected_through_the_other(
    ports: Sequence[int], backend: Backend, headers: dict[str, str] | None = None
) -> None:
    """Facts added and changed through one process, asked about through the other (whose caches
    hold the space already), alternating; then the space deleted through the first is gone for
    the second."""
    for round_ in range(6):
        writer, reader = f"http://127.0.0.1:{ports[round_ % 2]}", ports[(round_ + 1) % 2]
        ask(reader, "ola", "What do you know about me?", headers)  # the reader's caches hold the space now
        fact = f"Ola keeps a {WORDS[round_]} {WORDS[round_ + 10]} in drawer {round_}."
        added = httpx.post(
            f"{writer}/v1/memories", json={"user": "ola", "facts": [fact], "sync": True}, headers=headers, timeout=60
        )
        assert added.status_code == 200, added.text
        question = f"What is in drawer {round_}? The {WORDS[round_]} one?"
        assert ask(reader, "ola", question, headers).status_code == 200
        assert fact in backend.last_body()["messages"][-1]["content"], round_
        # Changed through the writer (the reader holds the cube now): the reader shows the new words.
        moved = fact.replace("in drawer", "on shelf")
        memory_id = added.json()["results"][0]["id"]
        edited = httpx.patch(f"{writer}/v1/memories/{memory_id}", json={"content": moved}, headers=headers, timeout=60)
        assert edited.status_code == 200, edited.text
        assert ask(reader, "ola", question, headers).status_code == 200
        prompt = backend.last_body()["messages"][-1]["content"]
        assert moved in prompt and fact not in prompt, round_
    forgotten = httpx.delete(f"http://127.0.0.1:{ports[0]}/v1/spaces/user:ola", headers=headers, timeout=60)
    assert forgotten.status_code == 200, forgotten.text
    listed = httpx.get(f"http://127.0.0.1:{ports[1]}/v1/memories", params={"user": "ola"}, headers=headers).json()
    assert listed["data"] == []
    assert ask(ports[1], "ola", "What is in drawer 3?", headers).headers["x-memory-injected"] == "0"


def check_a_killed_process_leaves_its_claims_to_the_other(
    ports: Sequence[int], victim: subprocess.Popen[bytes], query: Query, headers: dict[str, str] | None = None
) -> None:
    """A write-back burst split between the processes of ``ports``; ``victim`` (serving
    ``ports[0]``) killed (-9) while it holds claimed exchanges: the other completes the journal,
    every exchange distilled exactly once. ``query`` reads the shared system of record."""
    said = [f"Note {n}: the {WORDS[n % 26]} {WORDS[(n * 7) % 26]} box holds {n * 13} marbles." for n in range(BURST)]
    with httpx.Client(timeout=60, headers=headers) as http:
        for n, text in enumerate(said):  # the burst, split between the two, answered 202 each
            body = {"user": f"burst{n % 3}", "messages": [{"role": "user", "content": text}]}
            assert http.post(f"http://127.0.0.1:{ports[n % 2]}/v1/memories", json=body).status_code == 202
    claims = query("SELECT claimed_by FROM journal WHERE state = 'pending' AND claimed_by IS NOT NULL")
    held = sum(1 for (claimer,) in claims if str(claimer).startswith(f"{victim.pid}-"))
    os.kill(victim.pid, signal.SIGKILL)  # its claims are taken over at once: its pid is gone
    victim.wait(timeout=30)
    assert held > 0  # the kill left claimed work behind: the test is about taking it over
    deadline = time.monotonic() + 180
    while time.monotonic() < deadline:
        states = dict(query("SELECT state, count(*) FROM journal GROUP BY state"))
        if states == {"done": len(said)}:
            break
        time.sleep(0.5)
    assert states == {"done": len(said)}
    docs = [_json(doc) for (doc,) in query("SELECT doc FROM cubes")]
    results = [_json(result) for (result,) in query("SELECT result FROM journal")]
    assert sorted(doc["content"] for doc in docs) == sorted(f"user: {text}" for text in said)  # each exactly once
    added = sorted(change["id"] for result in results for change in result["changes"] if change["event"] == "ADD")
    assert added == sorted(doc["id"] for doc in docs)


def _json(value: Any) -> Any:
    """A JSON column's value: text (SQLite) or already decoded (a ``jsonb`` column)."""
    return json.loads(value) if isinstance(value, str | bytes) else value
