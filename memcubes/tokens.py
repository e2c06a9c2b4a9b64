"""Token counting with tiktoken's cl100k_base: the unit of every memory budget."""

from __future__ import annotations

import functools

import tiktoken

from memcubes.environment import apply_offline_defaults


@functools.cache
def _encoding() -> tiktoken.Encoding:
    apply_offline_defaults()
    return tiktoken.get_encoding("cl100k_base")


def encode(text: str) -> list[int]:
    """The cl100k token ids of ``text`` (special-token markup counts as plain text)."""
    return _encoding().encode(text, disallowed_special=())


@functools.lru_cache(maxsize=65536)
def count_tokens(text: str) -> int:
    """Cached: search renders the same memories again and again."""
    return len(encode(text))
