"""Server-sent events: the one formatter for events memproxy emits, and a parser for upstreams."""

from __future__ import annotations

import json
from collections.abc import AsyncIterator
from typing import Any

DONE = b"data: [DONE]\n\n"


def sse(data: dict[str, Any], *, event: str | None = None) -> bytes:
    """One event; ``event`` names it (Anthropic's and the Responses API's streams name every event)."""
    line = b"data: " + json.dumps(data, separators=(",", ":")).encode() + b"\n\n"
    return b"event: " + event.encode() + b"\n" + line if event else line


async def sse_events(chunks: AsyncIterator[bytes]) -> AsyncIterator[tuple[bytes, bytes]]:
    """Split a byte stream into events as they complete: ``(raw event bytes, data payload)``.

    Events are relayed whole, never split across writes, so a client never sees half an event;
    comment lines (keep-alives) and events without data are skipped."""
    buffer = b""
    async for chunk in chunks:
        buffer += chunk.replace(b"\r\n", b"\n")
        while (end := buffer.find(b"\n\n")) >= 0:
            event, buffer = buffer[: end + 2], buffer[end + 2 :]
            data = b"\n".join(line[5:].lstrip(b" ") for line in event.split(b"\n") if line.startswith(b"data:"))
            if data:
                yield event, data
    if buffer.strip():
        data = b"\n".join(line[5:].lstrip(b" ") for line in buffer.split(b"\n") if line.startswith(b"data:"))
        if data:
            yield buffer + b"\n\n", data
