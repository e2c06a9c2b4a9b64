"""The memory API's logic: owners to spaces, request models to memory operations, cubes to JSON.

Every operation takes the caller's ``Principal`` and asks it: a space outside the key's users and
spaces is a 403 when the request names it, and a cube outside them is a 404 exactly like an id
that does not exist (ids are no oracle). Forgetting a space and purging a memory are recorded in
the audit trail (who, what, counts; never memory text).
"""

from __future__ import annotations

import asyncio
from datetime import datetime
from typing import Any, Literal

from starlette.datastructures import Headers

from memcubes import layout
from memcubes.cube import MemCube
from memcubes.exchange import Exchange, Turn
from memcubes.ids import new_id
from memcubes.memory_os import MemoryOS
from memcubes.names import MAX_SPACE
from memcubes.retrieval import RetrievedItem
from memcubes.scheduler import InjectionPlan
from memcubes.store import CubeFilter, HistoryRecord
from proxy.config import Settings
from proxy.errors import InvalidRequest, MemoryUnavailable
from proxy.principal import Principal, user_space
from proxy.protocol import (
    AddMemoriesRequest,
    AddMemoriesResponse,
    InjectedBlocks,
    MemoryChangeOut,
    MemoryPage,
    Owner,
    SearchCandidate,
    SearchRequest,
    SearchResponse,
    SearchResult,
)
from proxy.scope import identifier, memory_user_header


def _blocks(plan: InjectionPlan) -> list[tuple[Literal["stable", "volatile"], list[RetrievedItem]]]:
    return [("stable", plan.stable), ("volatile", plan.volatile)]


def _block(items: list[RetrievedItem], *, heading: str) -> str | None:
    return layout.render_block([item.text for item in items], heading=heading) if items else None


def cube_json(cube: MemCube) -> dict[str, Any]:
    data = cube.model_dump(mode="json")
    data["sources"] = cube.sources
    return data


def history_json(record: HistoryRecord) -> dict[str, Any]:
    return {
        "seq": record.seq,
        "event": record.event,
        "at": record.at,
        "reason": record.reason,
        "memory": cube_json(record.cube),
    }


class MemoryService:
    def __init__(self, *, memory: MemoryOS | None, settings: Settings) -> None:
        self._memory = memory
        self._settings = settings

    @property
    def memory(self) -> MemoryOS:
        if self._memory is None:
            raise MemoryUnavailable("the memory layer failed to start; see the proxy's log")
        return self._memory

    @staticmethod
    def space_of(
        caller: Principal,
        owner: Owner | None,
        headers: Headers,
        *,
        write: bool,
        user: str | None = None,
        space: str | None = None,
    ) -> str:
        """The one space a memory request addresses: explicit space, else user (body, query or
        X-Memory-User header; a ``user`` key's own when none is named), each held to the same
        name rules as the chat path, then to what ``caller`` may read or write."""
        explicit = space_param((owner.space if owner else None) or space)
        if explicit:
            caller.authorize(explicit, write=write)
            return explicit
        named = (owner.user if owner else None) or identifier(user, param="user")
        acting = caller.acting_user(named, memory_user_header(headers))
        if acting is None:
            raise InvalidRequest(
                "say whose memories: give `user` (or the X-Memory-User header) or `space`", param="user"
            )
        caller.authorize(user_space(acting), write=write)
        return user_space(acting)

    async def audit(self, caller: Principal, action: str, *, target: str | None, **detail: object) -> None:
        """One row of the audit trail: who (the key's id; none for the master key), what, counts."""
        await asyncio.to_thread(self.memory.keys.record, action, key_id=caller.key_id, target=target, detail=detail)

    async def add(self, request: AddMemoriesRequest, headers: Headers, caller: Principal) -> AddMemoriesResponse:
        space = self.space_of(caller, request, headers, write=True)
        turns = [
            Turn(
                id=message.id or new_id(),
                role=message.role,
                content=layout.message_text(message.model_dump(exclude_unset=True)),
                name=message.name,
                created_at=message.created_at,
            )
            for message in request.messages
        ]
        if not turns and not request.facts:
            raise InvalidRequest("nothing to add: give `messages` or `facts`", param="messages")
        exchange = Exchange(
            space=space,
            turns=turns,
            facts=request.facts,
            created_at=request.created_at,
            mode=request.mode or self._settings.memory.extraction.mode,
            tags=request.tags,
        )
        changes = await self.memory.add(exchange, sync=request.sync)
        if changes is None:
            return AddMemoriesResponse(exchange_id=exchange.id, status="queued")
        return AddMemoriesResponse(
            exchange_id=exchange.id,
            status="done",
            results=[MemoryChangeOut(**change.to_dict()) for change in changes],
        )

    async def search(self, request: SearchRequest, headers: Headers, caller: Principal) -> SearchResponse:
        space = self.space_of(caller, request, headers, write=False)
        plan = await self.memory.search([space], request.query, top_k=request.top_k, token_budget=request.token_budget)
        results = [
            SearchResult(
                id=item.cube_ids[0],
                ids=item.cube_ids,
                text=item.text,
                score=item.score,
                sources=item.sources,
                created_at=item.created_at,
                tokens=item.tokens,
                pinned=item.pinned,
                block=block,
            )
            for block, items in _blocks(plan)
            for item in items
        ]
        if not request.explain:
            return SearchResponse(results=results, tokens=plan.tokens)
        explained = await self.memory.explain(
            [space], request.query, top_k=request.top_k, token_budget=request.token_budget
        )
        injected = set(plan.cube_ids)
        return SearchResponse(
            results=results,
            tokens=plan.tokens,
            candidates=[
                SearchCandidate(
                    id=item.cube_id,
                    content=item.content,
                    dense=item.dense,
                    lexical=item.lexical,
                    fused=item.fused,
                    injected=item.cube_id in injected,
                )
                for item in explained
            ],
            injected=InjectedBlocks(
                stable=_block(plan.stable, heading=layout.STABLE_HEADING),
                volatile=_block(plan.volatile, heading=layout.VOLATILE_HEADING),
            ),
        )

    async def page(
        self,
        headers: Headers,
        caller: Principal,
        *,
        user: str | None,
        space: str | None,
        state: list[str],
        tag: str | None,
        since: datetime | None,
        until: datetime | None,
        text: str | None,
        oldest_first: bool,
        cursor: str | None,
        limit: int,
    ) -> MemoryPage:
        query = CubeFilter(
            space=self.space_of(caller, None, headers, write=False, user=user, space=space),
            states=tuple(state),
            tag=tag,
            created_since=since,
            created_until=until,
            text=text,
            oldest_first=oldest_first,
            cursor=cursor,
            limit=limit + 1,
        )
        cubes = await self.memory.list_memories(query)
        page = cubes[:limit]
        has_more = len(cubes) > limit
        return MemoryPage(
            data=[cube_json(cube) for cube in page],
            next_cursor=page[-1].id if has_more and page else None,
            has_more=has_more,
        )

    async def get(self, cube_id: str, caller: Principal) -> dict[str, Any]:
        caller.require_memory_api(write=False)
        return cube_json(await self.memory.get(cube_id, visible=caller.can_read))

    async def _writable(self, cube_id: str, caller: Principal) -> None:
        """404 for a cube the caller cannot see; 403 for one it can read but not change."""
        caller.require_memory_api(write=True)
        cube = await self.memory.get(cube_id, visible=caller.can_read)
        caller.authorize(cube.space, write=True)

    async def edit(self, cube_id: str, changes: dict[str, Any], caller: Principal) -> dict[str, Any]:
        await self._writable(cube_id, caller)
        return cube_json(await self.memory.edit(cube_id, changes, visible=caller.can_write))

    async def approve(self, cube_id: str, caller: Principal) -> dict[str, Any]:
        await self._writable(cube_id, caller)
        return cube_json(await self.memory.approve(cube_id, visible=caller.can_write))

    async def delete(self, cube_id: str, caller: Principal, *, purge: bool, by_source: bool = False) -> list[str]:
        """Soft delete, or purge (``by_source``: with the memories sharing its source messages,
        all within the key's write scope: they live in the memory's own space). The ids removed."""
        if by_source and not purge:
            raise InvalidRequest("by_source removes memories for good: use it with purge=true", param="by_source")
        await self._writable(cube_id, caller)
        if not purge:
            await self.memory.delete(cube_id, visible=caller.can_write)
            return [cube_id]
        purged = await self.memory.purge(cube_id, visible=caller.can_write, by_source=by_source)
        action = "memory.purge_by_source" if by_source else "memory.purge"
        await self.audit(caller, action, target=purged.space, ids=purged.ids)
        return purged.ids

    async def sources(self, cube_id: str, caller: Principal) -> list[dict[str, Any]]:
        caller.require_memory_api(write=False)
        turns = await self.memory.source_messages(cube_id, visible=caller.can_read)
        return [turn.model_dump(mode="json", exclude={"generated"}) for turn in turns]

    async def stable_block(self, space: str) -> list[RetrievedItem]:
        """The space's stable block as a chat request of it would get it."""
        settings = self._settings.memory
        budget = settings.scheduler.stable_token_budget
        if budget is None:
            budget = int(settings.retrieval.token_budget * settings.scheduler.stable_share)
        return await self.memory.scheduler.stable_block([space], token_budget=budget)

    async def history(self, cube_id: str, caller: Principal) -> list[dict[str, Any]]:
        caller.require_memory_api(write=False)
        return [history_json(record) for record in await self.memory.history(cube_id, visible=caller.can_read)]

    async def delete_space(self, space: str, caller: Principal) -> tuple[str, int]:
        name = space_param(space) or ""
        caller.authorize(name, write=True)
        count = await self.memory.delete_space(name)
        await self.audit(caller, "space.forget", target=name, memories=count)
        return name, count


SPACE_PREFIXES = ("user:", "org:", "agent:")


def space_param(value: str | None) -> str | None:
    """A space named by a request (body, query or path), held to ``memcubes.names`` and to the
    known prefixes: 400 if bad, naming the expected form, so that a typo (``DELETE
    /v1/spaces/hank`` for ``user:hank``) is an error rather than a no-op on a space nobody uses."""
    name = identifier(value, param="space", max_length=MAX_SPACE)
    known = name is not None and any(name.startswith(p) and len(name) > len(p) for p in SPACE_PREFIXES)
    if value is not None and not known:
        raise InvalidRequest(f"space must be user:<id>, org:<name> or agent:<name> (got {value[:64]!r})", param="space")
    return name
