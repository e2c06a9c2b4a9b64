"""Names of owners and spaces: one rule for every route, the CLI and every importer.

A name is NFKC-normalised (so ``ｊｏｓé``, ``josé`` and ``jose\u0301`` are one owner) and stripped;
it must then be 1 to ``max_length`` characters without control characters, surrogates, line or
paragraph separators, or invisible format characters (zero-width spaces and joiners, bidi
controls: ``user:alice\u200b`` would look like ``user:alice`` in a listing and be another space).
A name no route can type would be a space no route can reach or forget, so an import that names
one is refused like a request that does.
"""

from __future__ import annotations

import unicodedata

MAX_USER = 256
MAX_SPACE = 512

# Cc control, Cf format (zero-width, bidi), Cs surrogate, Zl/Zp line and paragraph separators.
_FORBIDDEN_CATEGORIES = frozenset({"Cc", "Cf", "Cs", "Zl", "Zp"})
_JOINER = "\u200d"
_EMOJI_PARTS = frozenset({"So", "Sk", "Mn"})  # pictographs, modifiers, variation selectors


def _hidden(value: str, index: int) -> bool:
    """Whether ``value[index]`` is an invisible character a name may not hold. A zero-width
    joiner between two pictographs is allowed: it is how emoji such as a family (man, joiner,
    woman, joiner, girl) are spelt."""
    ch = value[index]
    if unicodedata.category(ch) not in _FORBIDDEN_CATEGORIES:
        return False
    if ch != _JOINER or index == 0 or index == len(value) - 1:
        return True
    return not (
        unicodedata.category(value[index - 1]) in _EMOJI_PARTS and unicodedata.category(value[index + 1]) == "So"
    )


def clean_name(value: str, *, max_length: int = MAX_USER) -> str | None:
    """``value`` normalised and stripped (``None`` when nothing is left); ``ValueError`` saying
    why when it cannot name an owner or a space."""
    value = unicodedata.normalize("NFKC", value).strip()
    if not value:
        return None
    if len(value) > max_length:
        raise ValueError(f"must be 1-{max_length} characters")
    if any(_hidden(value, index) for index in range(len(value))):
        raise ValueError("must not contain control or invisible format characters (zero-width, bidi controls)")
    return value


def space_name(value: str) -> str:
    """A space name as every route and importer accepts it; ``ValueError`` otherwise."""
    name = clean_name(value, max_length=MAX_SPACE)
    if name is None:
        raise ValueError("must not be empty")
    return name
