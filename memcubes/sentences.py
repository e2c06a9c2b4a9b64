"""Sentence splitting, shared by fact extraction, sentence-level indexing and compact rendering.

Splits after ``.``, ``!`` or ``?`` followed by white space, and at line breaks, but not after
abbreviations ("Dr.", "e.g."), inside decimals ("3.5") or initials ("U.S. army"), so the pieces
match what a reader would call sentences. Sentences are returned as they are in the text.
"""

from __future__ import annotations

import functools
import re

_DOT = "\x00"  # stands in for a full stop that does not end a sentence while splitting
_ABBREVIATION = re.compile(r"\b(?:dr|mr|mrs|ms|prof|st|mt|jr|sr|vs|approx|cf|e\.g|i\.e)\.", re.I)
_INITIALS = re.compile(r"\b(?:[a-z]\.){2,}", re.I)
_CAPITAL_NEXT = re.compile(r"\s+[A-Z]")
_DECIMAL = re.compile(r"(?<=\d)\.(?=\d)")
_SENTENCE_END = re.compile(r"(?<=[.!?])\s+")


def _protect(match: re.Match[str]) -> str:
    return match.group().replace(".", _DOT)


def _protect_initials(match: re.Match[str]) -> str:
    # "the U.S. in 2020" continues the sentence; "5 p.m. Then ..." ends it.
    ends = _CAPITAL_NEXT.match(match.string, match.end()) is not None
    return match.group()[:-1].replace(".", _DOT) + ("." if ends else _DOT)


def split_lines(text: str) -> list[list[str]]:
    """The sentences of each non-empty line."""
    text = _DECIMAL.sub(_DOT, _INITIALS.sub(_protect_initials, _ABBREVIATION.sub(_protect, text)))
    lines = []
    for line in text.splitlines():
        sentences = [s.replace(_DOT, ".").strip() for s in _SENTENCE_END.split(line)]
        if sentences := [s for s in sentences if s]:
            lines.append(sentences)
    return lines


def split_sentences(text: str) -> list[str]:
    return [sentence for line in split_lines(text) for sentence in line]


def split_speaker(content: str) -> tuple[str | None, str]:
    """``("Alice", "I moved.")`` for ``"Alice: I moved."``: readers prefix a named speaker's
    memories with the name. A head of more than three words is not a name but part of the text."""
    head, sep, rest = content.partition(": ")
    if sep and head and len(head.split()) <= 3 and "\n" not in head:
        return head, rest
    return None, content


@functools.lru_cache(maxsize=65536)
def sentence_texts(content: str) -> list[str]:
    """The sentences of a memory, each with its speaker, as indexed and rendered; empty when the
    memory is a single sentence (its whole text is its only entry). Cached: search renders the
    same memories again and again; callers must not modify the list."""
    speaker, text = split_speaker(content)
    sentences = split_sentences(text)
    if len(sentences) < 2:
        return []
    return [f"{speaker}: {sentence}" if speaker else sentence for sentence in sentences]
