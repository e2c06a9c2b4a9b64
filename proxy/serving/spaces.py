"""Spaces for the inspector and operators: which exist (counts, last activity, size) and the
stable block each one's next request would get.

A key sees only the spaces it may read (``Principal.can_read``): the listing is filtered in SQL by
``visible_scope``, and a space it may not read answers 404 exactly like one that does not exist."""

from __future__ import annotations

from memcubes import layout
from memcubes.errors import SpaceNotFound
from memcubes.store import SpaceScope, SpaceStats
from memcubes.tokens import count_tokens
from proxy.principal import USER_SPACE_PREFIX, Principal, user_space
from proxy.protocol import SpaceOut, SpacePage, StableBlockOut, StableItem
from proxy.serving.memories import MemoryService, space_param


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


def visible_scope(caller: Principal) -> SpaceScope | None:
    """The spaces ``caller`` may list (``None``: all, for the master key): its user's space, or
    the spaces of its users' prefix, and its shared read and write spaces."""
    if caller.admin:
        return None
    names = set(caller.read_spaces | caller.write_spaces)
    if caller.user is not None:
        names.add(user_space(caller.user))
    prefix = None if caller.user is not None or caller.user_prefix is None else USER_SPACE_PREFIX + caller.user_prefix
    return SpaceScope(prefix=prefix, names=tuple(sorted(names)))


class SpaceService:
    def __init__(self, *, memories: MemoryService) -> None:
        self._memories = memories

    async def page(self, caller: Principal, *, contains: str | None, cursor: str | None, limit: int) -> SpacePage:
        """The spaces ``caller`` may read, in name order; ``cursor`` is the last name of the
        previous page."""
        caller.require_memory_api(write=False)
        found = await self._memories.memory.space_page(
            contains=contains, after=cursor, limit=limit + 1, scope=visible_scope(caller)
        )
        page = found[:limit]
        has_more = len(found) > limit
        return SpacePage(
            data=[space_json(stats) for stats in page],
            next_cursor=page[-1].space if has_more and page else None,
            has_more=has_more,
        )

    async def _stats(self, space: str, caller: Principal) -> SpaceStats:
        """The space's figures; 404 for one the caller may not read, as for one that does not exist."""
        caller.require_memory_api(write=False)
        name = space_param(space) or ""
        if not caller.can_read(name):
            raise SpaceNotFound(f"no space {name!r}")
        return await self._memories.memory.space_stats(name)

    async def get(self, space: str, caller: Principal) -> SpaceOut:
        return space_json(await self._stats(space, caller))

    async def stable(self, space: str, caller: Principal) -> StableBlockOut:
        """Exactly the messages the chat path inserts before a user turn (``cache_control`` aside,
        which Anthropic models get on the same text)."""
        space = (await self._stats(space, caller)).space  # an unknown space is a 404, not an empty block
        items = await self._memories.memory.stable_block(space)
        role = self._memories.memory.settings.scheduler.memory_role
        messages = layout.stable_messages(items, role=role)  # a conversation going on with a user turn
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
