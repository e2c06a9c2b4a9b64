"""The Responses store's bounds and sharing, on a real SQLite file: two ``Store`` objects on one
file stand for two workers on one data dir."""

from __future__ import annotations

import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest

from memcubes.config import ResponseStoreSettings
from memcubes.response_store import ResponseStore
from memcubes.store import Store


def _response(response_id: str, text: str = "hello") -> dict[str, Any]:
    return {"id": response_id, "object": "response", "output": [{"type": "message", "content": text}]}


@pytest.fixture
def stores(tmp_path: Path, open_store: Callable[[Path], Store]) -> list[Store]:
    """Two processes' stores on one data dir (or one database), on each engine."""
    return [open_store(tmp_path / "memproxy.db"), open_store(tmp_path / "memproxy.db")]


def test_workers_share_responses_and_keys_stay_apart(stores: list[Store]) -> None:
    settings = ResponseStoreSettings()
    one, two = (ResponseStore(store, settings) for store in stores)
    assert one.put("key-a", _response("r1"), [{"role": "user", "content": "hi"}], space="user:a")
    found = two.get("key-a", "r1")
    assert found is not None and found.conversation == [{"role": "user", "content": "hi"}]
    assert two.get("key-b", "r1") is None
    assert two.delete("key-a", "r1") and one.get("key-a", "r1") is None and not one.delete("key-a", "r1")


def test_caps_expiry_and_forgetting(stores: list[Store]) -> None:
    store = ResponseStore(stores[0], ResponseStoreSettings(max_per_key=2, max_mb=0.001, max_age_hours=1))
    for number in range(3):
        store.put("k", _response(f"r{number}"), [], space="user:a")
    assert store.get("k", "r0") is None and store.get("k", "r2") is not None  # the newest two per key
    assert not store.put("k", _response("huge", "x" * 2000), [], space="user:a")  # over max_mb alone
    store.put("other", _response("big", "y" * 900), [], space="user:b")  # the total cap drops the oldest first
    assert store.get("k", "r1") is None and store.get("other", "big") is not None
    with stores[0].transaction() as conn:
        conn.execute("UPDATE responses SET created = ?", (time.time() - 7200,))
    assert store.get("other", "big") is None  # expired


def test_forgetting_by_words_reads_the_decoded_text(stores: list[Store]) -> None:
    store = ResponseStore(stores[0], ResponseStoreSettings())
    secret = 'Zoë\'s code is "7\n1"'
    store.put("k", _response("quoted", f"You said: {secret}"), [], space="user:z")
    store.put("k", _response("plain"), [{"role": "user", "content": "tea"}], space="user:z")
    store.put("k", _response("elsewhere", secret), [], space="user:y")
    assert store.forget_space("user:z", containing=[secret, " "]) == 1
    assert store.get("k", "quoted") is None and store.get("k", "plain") is not None
    assert store.get("k", "elsewhere") is not None  # another space's
    assert store.forget_space("user:z") == 1 and store.get("k", "plain") is None
