"""An application with memproxy as its sidecar: it talks to http://127.0.0.1:8080 (memproxy shares
its network namespace) with nothing but the standard library, as any OpenAI client would.

It stores a fact through the memory API, searches it back (both work without a model key), then
asks the model through /v1/chat/completions (needs OPENAI_API_KEY on memproxy's side)."""

from __future__ import annotations

import json
import os
import time
import urllib.error
import urllib.request

BASE = os.environ.get("MEMPROXY_URL", "http://127.0.0.1:8080")
KEY = os.environ.get("MEMPROXY_API_KEY", "")


def call(path: str, body: dict[str, object]) -> tuple[int, dict[str, object], dict[str, str]]:
    request = urllib.request.Request(
        BASE + path,
        data=json.dumps(body).encode(),
        headers={"content-type": "application/json", "authorization": f"Bearer {KEY}"},
    )
    try:
        with urllib.request.urlopen(request, timeout=60) as response:
            return response.status, json.load(response), dict(response.headers)
    except urllib.error.HTTPError as error:
        return error.code, json.load(error), dict(error.headers)


def main() -> None:
    for _ in range(60):  # compose and Kubernetes start memproxy first; this only covers a restart
        try:
            urllib.request.urlopen(BASE + "/readyz", timeout=2)
            break
        except OSError:
            time.sleep(2)
    status, added, _ = call("/v1/memories", {"user": "demo", "sync": True, "facts": ["I live in Porto."]})
    print("add:", status, [change["text"] for change in added.get("results", [])])  # type: ignore[union-attr]
    status, found, _ = call("/v1/memories/search", {"user": "demo", "query": "Where do I live?"})
    print("search:", status, [result["text"] for result in found.get("results", [])])  # type: ignore[union-attr]
    chat = {"model": "gpt-4o-mini", "user": "demo", "messages": [{"role": "user", "content": "Where do I live?"}]}
    status, answer, headers = call("/v1/chat/completions", chat)
    print("chat:", status, headers.get("x-memory-status"), headers.get("x-memory-injected"), json.dumps(answer)[:300])


if __name__ == "__main__":
    main()
