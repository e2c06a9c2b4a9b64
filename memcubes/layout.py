"""Prompt layout: where memories go in an OpenAI-style message list, and how they read.

Provider prefix caches (OpenAI's automatic caching of >=1024-token prefixes, Anthropic's
``cache_control``, vLLM's automatic prefix caching, our own KV cache) only hit when the start of
the prompt is byte-identical from turn to turn. So:

- the **stable block** (pinned and hot memories, which change rarely) is a system message placed
  right after the application's own leading system messages;
- the **volatile block** (retrieved for this query) is prepended to the *last user message*, so
  everything before that message stays exactly what the application sent. Putting it inside the
  user turn rather than in a mid-conversation system message is what works with every provider:
  several chat templates reject non-leading system messages, and litellm folds all system messages
  of Anthropic and Gemini requests into one system prompt, which would change that prompt (and
  miss its cache) on every turn.
"""

from __future__ import annotations

import copy
import hashlib
import re
from collections.abc import Sequence
from typing import Any

from memcubes.retrieval import RetrievedItem

OPEN_TAG = "<memories>"
CLOSE_TAG = "</memories>"
STABLE_HEADING = "Long-term memories about the user. Use them when relevant; the user does not see this block."
VOLATILE_HEADING = (
    "Memories that may be relevant to the next message, dated when they happened. "
    "Use them when relevant; the user does not see this block."
)
_BLOCK = re.compile(re.escape(OPEN_TAG) + r".*?" + re.escape(CLOSE_TAG) + r"\s*", re.DOTALL)
_LEADING_ROLES = ("system", "developer")


def render_block(texts: Sequence[str], *, heading: str) -> str:
    lines = [OPEN_TAG, heading, *(f"- {text}" for text in texts), CLOSE_TAG]
    return "\n".join(lines)


def strip_memory_blocks(text: str) -> str:
    """Remove injected blocks, so memories are never distilled or queried as if the user said them."""
    return _BLOCK.sub("", text) if OPEN_TAG in text else text


def message_text(message: dict[str, Any], *, keep_memories: bool = False) -> str:
    """The text of a message; multimodal content keeps only its text parts. Injected memory
    blocks are removed unless ``keep_memories`` (the user never said them)."""
    content = message.get("content")
    if isinstance(content, list):
        parts = [p.get("text", "") for p in content if isinstance(p, dict) and p.get("type") == "text"]
        content = "\n".join(part for part in parts if isinstance(part, str))
    if not isinstance(content, str):
        return ""
    return content if keep_memories else strip_memory_blocks(content)


def stable_insert_index(messages: Sequence[dict[str, Any]]) -> int:
    """Position right after the application's leading system (or developer) messages."""
    index = 0
    while index < len(messages) and messages[index].get("role") in _LEADING_ROLES:
        index += 1
    return index


def last_user_index(messages: Sequence[dict[str, Any]]) -> int | None:
    for index in range(len(messages) - 1, -1, -1):
        if messages[index].get("role") == "user":
            return index
    return None


def _prepend(message: dict[str, Any], block: str) -> dict[str, Any]:
    updated = copy.copy(message)
    content = message.get("content")
    if isinstance(content, list):
        updated["content"] = [{"type": "text", "text": block}, *content]
    else:
        updated["content"] = f"{block}\n\n{content or ''}"
    return updated


def stable_block_message(items: Sequence[RetrievedItem], *, cache_hint: bool = False) -> dict[str, Any]:
    """The system message holding the stable block. ``cache_hint`` marks it with Anthropic's
    ``cache_control`` (litellm passes it on), so Anthropic caches the prompt up to its end."""
    block = render_block([item.text for item in items], heading=STABLE_HEADING)
    if cache_hint:
        return {"role": "system", "content": [{"type": "text", "text": block, "cache_control": {"type": "ephemeral"}}]}
    return {"role": "system", "content": block}


def prompt_cache_key(space: str) -> str:
    """OpenAI's ``prompt_cache_key``: routes a space's requests to the same prefix cache without
    telling OpenAI who the user is (a one-way digest of the space)."""
    return "mp-" + hashlib.sha256(space.encode()).hexdigest()[:32]


def inject(
    messages: Sequence[dict[str, Any]],
    *,
    stable: Sequence[RetrievedItem] = (),
    volatile: Sequence[RetrievedItem] = (),
    stable_message: dict[str, Any] | None = None,
) -> list[dict[str, Any]]:
    """A new message list with the blocks in place; the input list and its messages are untouched.

    ``stable_message`` is the shaped system message for the stable block (``stable_block_message``);
    by default a plain one."""
    result = list(messages)
    if volatile:
        target = last_user_index(result)
        if target is not None:
            result[target] = _prepend(
                result[target], render_block([item.text for item in volatile], heading=VOLATILE_HEADING)
            )
    if stable:
        result.insert(stable_insert_index(result), stable_message or stable_block_message(stable))
    return result
