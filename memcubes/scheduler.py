"""The MemScheduler: decides, per request, which memories enter the prompt and where.

It returns an ``InjectionPlan``: a stable block (pinned cubes of the space, deterministic order,
so the prompt prefix stays byte-identical across turns) and a volatile block (retrieved for this
query, minus what the stable block already holds), both within one token budget.
"""

from __future__ import annotations

import asyncio
import time
from collections import OrderedDict
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any

from memcubes.cube import MemCube
from memcubes.layout import message_text
from memcubes.retrieval import RetrievedItem, Retriever, pack
from memcubes.store import Store

_SHORT_QUERY_WORDS = 6
_STABLE_TTL = 5.0
_STABLE_SPACES = 10_000


@dataclass(frozen=True)
class InjectionPlan:
    stable: list[RetrievedItem] = field(default_factory=list)
    volatile: list[RetrievedItem] = field(default_factory=list)

    @property
    def items(self) -> list[RetrievedItem]:
        return [*self.stable, *self.volatile]

    @property
    def tokens(self) -> int:
        return sum(item.tokens for item in self.items)

    @property
    def cube_ids(self) -> list[str]:
        return [cube_id for item in self.items for cube_id in item.cube_ids]


def query_from(messages: Sequence[dict[str, Any]]) -> str:
    """The retrieval query: the last user turn, with the previous user turn when it is too short
    to stand alone ("and her sister?")."""
    user_texts = [message_text(m) for m in messages if m.get("role") == "user"]
    user_texts = [text.strip() for text in user_texts if text.strip()]
    if not user_texts:
        return ""
    query = user_texts[-1]
    if len(query.split()) < _SHORT_QUERY_WORDS and len(user_texts) > 1:
        query = f"{user_texts[-2]}\n{query}"
    return query


class MemScheduler:
    def __init__(self, *, retriever: Retriever, store: Store, stable_limit: int = 32) -> None:
        self._retriever = retriever
        self._store = store
        self._stable_limit = stable_limit
        # Stable candidates per space, kept until a write to the space invalidates them (and at
        # most _STABLE_TTL seconds, in case another process wrote to the same store).
        self._stable: OrderedDict[str, tuple[float, list[MemCube]]] = OrderedDict()

    def invalidate(self, space: str) -> None:
        """A cube of ``space`` changed: its stable block must be recomputed."""
        self._stable.pop(space, None)

    async def _space_stable(self, space: str) -> list[MemCube]:
        cached = self._stable.get(space)
        if cached is not None and time.monotonic() - cached[0] < _STABLE_TTL:
            self._stable.move_to_end(space)
            return cached[1]
        cubes = await asyncio.to_thread(self._store.pinned, space, limit=self._stable_limit)
        self._stable[space] = (time.monotonic(), cubes)
        while len(self._stable) > _STABLE_SPACES:
            self._stable.popitem(last=False)
        return cubes

    async def stable_cubes(self, spaces: Sequence[str]) -> list[MemCube]:
        """Pinned cubes in a deterministic order (oldest first): the cacheable part of the prompt."""
        cubes = [cube for space in spaces for cube in await self._space_stable(space)]
        cubes.sort(key=lambda cube: cube.id)
        return [cube for cube in cubes if cube.is_live()]

    async def plan(
        self,
        spaces: Sequence[str],
        messages: Sequence[dict[str, Any]],
        *,
        top_k: int | None = None,
        token_budget: int | None = None,
    ) -> InjectionPlan:
        settings = self._retriever.settings
        budget = settings.token_budget if token_budget is None else token_budget
        limit = settings.top_k if top_k is None else top_k
        stable = pack(((cube, 1.0) for cube in await self.stable_cubes(spaces)), top_k=limit, token_budget=budget)
        used = sum(item.tokens for item in stable)
        query = query_from(messages)
        volatile: list[RetrievedItem] = []
        if query and budget - used > 0 and limit - len(stable) > 0:
            result = await self._retriever.search(
                spaces,
                query,
                top_k=limit - len(stable),
                token_budget=budget - used,
                exclude=[cube_id for item in stable for cube_id in item.cube_ids],
            )
            volatile = result.items
        return InjectionPlan(stable=stable, volatile=volatile)
