"""Turning generated token ids into clean text deltas, with stop strings.

A byte-level token can end in the middle of a UTF-8 character; decoding it alone yields U+FFFD.
Text is therefore released only once the tokens decode cleanly (the offsets technique of TGI and
vLLM: decode a short window, never the whole answer, so each step costs O(1)). A stop string may
arrive split over several tokens, so any tail that could still grow into one is held back; once
it is complete, the text before it is released and nothing after it.
"""

from __future__ import annotations

from collections.abc import Sequence

from transformers import PreTrainedTokenizerBase


class IncrementalDecoder:
    """Feed token ids with ``push``; each call returns the text that is now safe to show."""

    def __init__(self, tokenizer: PreTrainedTokenizerBase, *, stop: Sequence[str] = ()) -> None:
        self._tokenizer = tokenizer
        self._stop = tuple(s for s in stop if s)
        self._ids: list[int] = []
        self._prefix_offset = 0
        self._read_offset = 0
        self._text = ""
        self._released = 0
        self.stopped = False

    @property
    def text(self) -> str:
        """Everything released so far (up to, excluding, a stop string)."""
        return self._text[: self._released]

    def push(self, token_id: int) -> str:
        if self.stopped:
            return ""
        self._ids.append(token_id)
        before = self._decode(self._ids[self._prefix_offset : self._read_offset])
        after = self._decode(self._ids[self._prefix_offset :])
        if len(after) > len(before) and not after.endswith("\ufffd"):
            self._text += after[len(before) :]
            self._prefix_offset = self._read_offset
            self._read_offset = len(self._ids)
        return self._release(final=False)

    def flush(self) -> str:
        """The rest at the end of generation, incomplete characters included."""
        if self.stopped:
            return ""
        if self._read_offset < len(self._ids):
            before = self._decode(self._ids[self._prefix_offset : self._read_offset])
            after = self._decode(self._ids[self._prefix_offset :])
            self._text += after[len(before) :]
            self._prefix_offset = self._read_offset = len(self._ids)
        return self._release(final=True)

    def _decode(self, ids: list[int]) -> str:
        if not ids:
            return ""
        text = self._tokenizer.decode(ids, skip_special_tokens=True, clean_up_tokenization_spaces=False)
        return str(text)

    def _release(self, *, final: bool) -> str:
        start = self._released
        hits = [pos for pos in (self._text.find(s, start) for s in self._stop) if pos >= 0]
        if hits:
            end = min(hits)
            self.stopped = True
        elif final:
            end = len(self._text)
        else:
            end = len(self._text) - self._held_back(start)
        self._released = max(start, end)
        return self._text[start : self._released]

    def _held_back(self, start: int) -> int:
        """Length of the longest unreleased tail that is a proper prefix of a stop string."""
        longest = 0
        for stop in self._stop:
            for size in range(min(len(stop) - 1, len(self._text) - start), longest, -1):
                if self._text.endswith(stop[:size]):
                    longest = size
                    break
        return longest
