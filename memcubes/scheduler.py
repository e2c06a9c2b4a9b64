"""The MemScheduler: decides, per request, which memories enter the prompt and where.

It returns an ``InjectionPlan``: a stable block (pinned cubes of the space, deterministic order,
so the prompt prefix stays byte-identical across turns) and a volatile block (retrieved for this
query, minus what the stable block already holds), both within one token budget.
"""

from __future__ import annotations

import asyncio
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any

from memcubes.layout import message_text
from memcubes.retrieval import RetrievedItem, Retriever, item_of, pack
from memcubes.store import Store

_SHORT_QUERY_WORDS = 6


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

    async def stable_items(self, spaces: Sequence[str]) -> list[RetrievedItem]:
        """Pinned cubes in a deterministic order (oldest first): the cacheable part of the prompt."""
        cubes = []
        for space in spaces:
            cubes.extend(await asyncio.to_thread(self._store.pinned, space, limit=self._stable_limit))
        cubes.sort(key=lambda cube: cube.id)
        return [item_of(cube, 1.0) for cube in cubes if cube.is_live()]

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
        stable = pack(await self.stable_items(spaces), top_k=limit, token_budget=budget)
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
