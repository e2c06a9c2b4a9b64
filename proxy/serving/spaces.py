"""Spaces for the inspector and operators: which exist (counts, last activity, size) and the
stable block each one's next request would get."""

from __future__ import annotations

from memcubes import layout
from memcubes.store import SpaceScope, SpaceStats
from memcubes.tokens import count_tokens
from proxy.protocol import SpaceOut, SpacePage, StableBlockOut, StableItem
from proxy.serving.memories import MemoryService


def space_json(stats: SpaceStats) -> SpaceOut:
    return SpaceOut(
        space=stats.space,
        memories=stats.states,
        total=sum(stats.states.values()),
        created_at=stats.created_at,
        last_activity=stats.last_activity,
        bytes=stats.bytes,
        bytes_estimated=stats.bytes_estimated,
    )


class SpaceService:
    def __init__(self, *, memories: MemoryService) -> None:
        self._memories = memories

    async def page(
        self, *, contains: str | None, cursor: str | None, limit: int, scope: SpaceScope | None = None
    ) -> SpacePage:
        """Spaces in name order, within ``scope`` (the caller's spaces; ``None``: all); ``cursor``
        is the last name of the previous page."""
        found = await self._memories.memory.space_page(contains=contains, after=cursor, limit=limit + 1, scope=scope)
        page = found[:limit]
        has_more = len(found) > limit
        return SpacePage(
            data=[space_json(stats) for stats in page],
            next_cursor=page[-1].space if has_more and page else None,
            has_more=has_more,
        )

    async def get(self, space: str) -> SpaceOut:
        return space_json(await self._memories.memory.space_stats(space))

    async def stable(self, space: str) -> StableBlockOut:
        """Exactly the messages the chat path inserts (``cache_control`` aside, which Anthropic
        models get on the same text)."""
        await self._memories.memory.space_stats(space)  # an unknown space is a 404, not an empty block
        items = await self._memories.memory.stable_block(space)
        messages = [layout.stable_block_message(items)] if items else []
        return StableBlockOut(
            space=space,
            items=[
                StableItem(
                    id=item.cube_ids[0], ids=item.cube_ids, text=item.text, tokens=item.tokens, pinned=item.pinned
                )
                for item in items
            ],
            tokens=sum(item.tokens for item in items),
            messages=messages,
            message_tokens=sum(count_tokens(message["content"]) for message in messages),
        )
