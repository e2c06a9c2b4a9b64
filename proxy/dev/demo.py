"""``make demo``: the whole memory loop, offline, in under a minute.

Starts the scripted backend and memproxy on loopback, holds a three-turn conversation through the
official OpenAI SDK, and prints what memproxy injected each turn. Turn one states facts; turn
three, in a new conversation, asks about them and the backend's prompt carries them.
"""

from __future__ import annotations

import json
import tempfile
import time
from pathlib import Path
from typing import Any

import httpx
from openai import OpenAI

from memcubes.layout import CLOSE_TAG, OPEN_TAG
from proxy.app import build_app
from proxy.config import Settings
from proxy.dev.scripted_backend import BackendScript, build_scripted_backend
from proxy.dev.serve_thread import ServerThread

TURNS = [
    ("session-1", "Hi! I'm Sam. I just moved to Porto and I'm training for the Berlin marathon in September."),
    ("session-1", "Can you suggest a stretching routine for after long runs?"),
    ("session-2", "Remind me: which city do I live in, and what race am I training for?"),
]


def _injected(body: dict[str, Any]) -> str:
    text = json.dumps(body.get("messages"))
    if OPEN_TAG not in text:
        return "(nothing)"
    block = text[text.index(OPEN_TAG) : text.index(CLOSE_TAG) + len(CLOSE_TAG)]
    return str(json.loads(f'"{block}"'))


def _wait_for_writeback(url: str) -> None:
    for _ in range(200):
        journal = httpx.get(f"{url}/readyz").json()["checks"].get("journal", {})
        if not journal.get("pending") and not journal.get("queued"):
            return
        time.sleep(0.05)


def main() -> None:
    started = time.monotonic()
    script = BackendScript()
    with tempfile.TemporaryDirectory() as data_dir, ServerThread(build_scripted_backend(script)) as backend:
        settings = Settings.from_mapping(
            {
                "model_list": [
                    {
                        "model_name": "demo-model",
                        "litellm_params": {
                            "model": "openai/demo-model",
                            "api_base": f"{backend.url}/v1",
                            "api_key": "none",
                        },
                    }
                ],
                "memory": {"data_dir": str(Path(data_dir) / "data"), "extraction": {"mode": "heuristic"}},
            },
            env={},
        )
        print(f"scripted backend on {backend.url}; starting memproxy (loading the embedding model) ...")
        with ServerThread(build_app(settings)) as proxy:
            print(f"memproxy on {proxy.url}\n")
            client = OpenAI(base_url=f"{proxy.url}/v1", api_key="none")
            history: dict[str, list[Any]] = {}
            for number, (session, text) in enumerate(TURNS, start=1):
                messages = history.setdefault(session, [])
                messages.append({"role": "user", "content": text})
                raw = client.chat.completions.with_raw_response.create(
                    model="demo-model", messages=messages, user="sam", extra_headers={"X-Memory-Session": session}
                )
                answer = raw.parse().choices[0].message.content or ""
                messages.append({"role": "assistant", "content": answer})
                print(f"── turn {number} ({session}) ──")
                print(f"user:      {text}")
                print(
                    f"memory:    status={raw.headers['x-memory-status']} injected={raw.headers['x-memory-injected']}"
                    f" tokens={raw.headers['x-memory-tokens']} overhead={raw.headers['x-memory-overhead-ms']} ms"
                )
                print("injected:  " + _injected(script.received[-1]["body"]).replace("\n", "\n           "))
                print(f"assistant: {answer}\n")
                _wait_for_writeback(proxy.url)
            stored = httpx.get(f"{proxy.url}/v1/memories", params={"user": "sam"}).json()["data"]
            print("memories stored for sam:")
            for memory in reversed(stored):
                print(f"  - {memory['content']}")
    recalled = "Porto" in _injected(script.received[-1]["body"])
    print(f"\nturn 3 recalled turn 1's facts: {'yes' if recalled else 'NO'} ({time.monotonic() - started:.1f} s)")
    if not recalled:
        raise SystemExit(1)


if __name__ == "__main__":
    main()
