"""The past on request: facts an update replaced, shown as past when a question asks about before.

Injection shows what is current: a superseded fact never comes back for "where do I live?". But
"where did I live before Porto?" needs the fact "I moved to Porto" replaced, and the model must
see that it no longer holds. So when a query asks about the past (``asks_about_past``), each
retrieved fact brings the chain of facts it superseded (``predecessors``), rendered with their
validity ("until 25 Nov 2026") instead of the date they were said. Superseded facts are not in the
search indexes; following ``supersedes`` from what was retrieved finds them without a second search.
"""

from __future__ import annotations

import re
from collections.abc import Awaitable, Callable, Mapping, Sequence
from datetime import datetime

from memcubes.cube import CubeState, MemCube

__all__ = ["asks_about_past", "label", "predecessors"]

_DEPTH = 3  # older versions than this add tokens, rarely answers
_PAST_QUERY = re.compile(
    r"\b(?:before|used\s+to|previous(?:ly)?|(?<!how\s)old|former(?:ly)?|earlier|prior|past|originally|ex|"
    r"back\s+(?:then|when|in)|any\s?more|no\s+longer|first|initially|change[ds]?|switch(?:ed)?|history|"
    r"until|since\s+when|did\s+i\s+(?:use|live|work|have|own|drive|study|date|eat)|was\s+i|were\s+we)\b",
    re.I,
)


def asks_about_past(query: str) -> bool:
    """True when the question is about how things were ("before", "used to", "my old job" ...)."""
    return _PAST_QUERY.search(query) is not None


async def predecessors(
    cubes: Mapping[str, MemCube], load: Callable[[Sequence[str]], Awaitable[Mapping[str, MemCube]]]
) -> dict[str, list[MemCube]]:
    """For each retrieved live cube that superseded others, those others, newest first (at most
    ``_DEPTH`` deep); ``load`` reads cubes by id."""
    chains: dict[str, list[MemCube]] = {}
    frontier = {cube_id: cube.supersedes for cube_id, cube in cubes.items() if cube.is_live() and cube.supersedes}
    for _ in range(_DEPTH):
        if not frontier:
            break
        loaded = await load(list(set(frontier.values())))
        step: dict[str, str] = {}
        for head, wanted in frontier.items():
            old = loaded.get(wanted)
            if old is None or old.state is not CubeState.SUPERSEDED:
                continue
            chains.setdefault(head, []).append(old)
            if old.supersedes:
                step[head] = old.supersedes
        frontier = step
    return chains


def label(cube: MemCube, render: Callable[[datetime], str]) -> str | None:
    """The date label of a superseded fact: its interval, said to be past; None for any other."""
    if cube.state is not CubeState.SUPERSEDED or cube.valid_to is None:
        return None
    began = cube.valid_from
    if began is not None and began < cube.valid_to:
        return f"past: {render(began)} until {render(cube.valid_to)}"
    return f"past: until {render(cube.valid_to)}"
