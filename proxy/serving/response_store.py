"""What ``previous_response_id`` needs: each stored response and the conversation up to its answer.

Kept per API key (a digest of it: another key's responses are not found) in this process, bounded
in count and size, oldest forgotten first; a restart forgets them, and a chain that names a
forgotten response gets a clear 404. ``store: false`` responses are never kept.
"""

from __future__ import annotations

import hashlib
import json
from collections import OrderedDict
from dataclasses import dataclass
from typing import Any

from proxy.errors import NotFound

MAX_RESPONSES = 4096
MAX_CHARACTERS = 64_000_000  # ~ the JSON of what is kept, all responses together


@dataclass(frozen=True)
class StoredResponse:
    response: dict[str, Any]
    conversation: list[dict[str, Any]]  # chat messages, the answer included; no instructions
    size: int


def key_digest(key: str | None) -> str:
    return hashlib.sha256((key or "").encode()).hexdigest()


class ResponseStore:
    def __init__(self, *, max_responses: int = MAX_RESPONSES, max_characters: int = MAX_CHARACTERS) -> None:
        self._entries: OrderedDict[tuple[str, str], StoredResponse] = OrderedDict()
        self._characters = 0
        self._max_responses = max_responses
        self._max_characters = max_characters

    def put(self, key: str | None, response: dict[str, Any], conversation: list[dict[str, Any]]) -> None:
        entry = StoredResponse(response, conversation, len(json.dumps(conversation)) + len(json.dumps(response)))
        if entry.size > self._max_characters:
            return
        self._entries[(key_digest(key), response["id"])] = entry
        self._characters += entry.size
        while len(self._entries) > self._max_responses or self._characters > self._max_characters:
            _, oldest = self._entries.popitem(last=False)
            self._characters -= oldest.size

    def get(self, key: str | None, response_id: str, *, param: str | None = None) -> StoredResponse:
        entry = self._entries.get((key_digest(key), response_id))
        if entry is None:
            raise NotFound(
                f"No response with id {response_id[:256]!r} is stored.", param=param, code="response_not_found"
            )
        return entry

    def delete(self, key: str | None, response_id: str) -> None:
        entry = self.get(key, response_id)
        del self._entries[(key_digest(key), response_id)]
        self._characters -= entry.size
