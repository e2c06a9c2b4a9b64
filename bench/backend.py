"""``python -m bench.backend``: memproxy's scripted backend, answering every request with the
same text after a fixed latency.

The scripted backend's default answer quotes the memories it was shown, so with memory on it
would stream several times more chunks than for the other targets and the comparison would
measure answer length, not the proxies. Here every target gets the same answer, byte for byte
apart from ids and timestamps.
"""

from __future__ import annotations

import argparse
from typing import Any, SupportsIndex

import uvicorn

from proxy.dev.scripted_backend import BackendScript, build_scripted_backend

REPLY = (
    "Here is a short answer of about forty words, the same for every request, so that each proxy relays "
    "an identical stream: one chunk per word, a role chunk first and a finish chunk last, like a small "
    "model answering a simple question over a local network."
)


class SameStep(list[dict[str, Any]]):
    """A script that never runs out: every request consumes the same step."""

    def __init__(self, step: dict[str, Any]) -> None:
        super().__init__([step])

    def pop(self, index: SupportsIndex = -1) -> dict[str, Any]:
        return self[0]


def main() -> None:
    parser = argparse.ArgumentParser(prog="python -m bench.backend", description=__doc__)
    parser.add_argument("--port", type=int, required=True)
    parser.add_argument("--latency", type=float, default=0.02, help="seconds before answering")
    args = parser.parse_args()
    script = BackendScript(latency=args.latency, steps=SameStep({"text": REPLY}), record=False)
    app = build_scripted_backend(script)
    uvicorn.run(
        app, host="127.0.0.1", port=args.port, log_level="warning", loop="uvloop", http="httptools", access_log=False
    )


if __name__ == "__main__":
    main()
