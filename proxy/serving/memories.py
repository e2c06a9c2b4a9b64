"""The memory API's logic: owners to spaces, request models to memory operations, cubes to JSON."""

from __future__ import annotations

from datetime import datetime
from typing import Any, Literal

from starlette.datastructures import Headers

from memcubes import layout
from memcubes.cube import MemCube
from memcubes.exchange import Exchange, Turn
from memcubes.ids import new_id
from memcubes.memory_os import MemoryOS
from memcubes.retrieval import RetrievedItem
from memcubes.scheduler import InjectionPlan
from memcubes.store import CubeFilter, HistoryRecord
from proxy.config import Settings
from proxy.errors import InvalidRequest, MemoryUnavailable
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
from proxy.scope import identifier, memory_user_header, user_space


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
    def space_of(owner: Owner | None, headers: Headers, *, user: str | None = None, space: str | None = None) -> str:
        """The one space a memory request addresses: explicit space, else user (body, query or
        X-Memory-User header), each held to the same owner rules as the chat path."""
        space = (owner.space if owner else None) or identifier(space, param="space", max_length=512)
        user = (owner.user if owner else None) or identifier(user, param="user") or memory_user_header(headers)
        if space:
            return space
        if user:
            return user_space(user)
        raise InvalidRequest("say whose memories: give `user` (or the X-Memory-User header) or `space`", param="user")

    async def add(self, request: AddMemoriesRequest, headers: Headers) -> AddMemoriesResponse:
        space = self.space_of(request, headers)
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

    async def search(self, request: SearchRequest, headers: Headers) -> SearchResponse:
        space = self.space_of(request, headers)
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
            space=self.space_of(None, headers, user=user, space=space),
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

    async def get(self, cube_id: str) -> dict[str, Any]:
        return cube_json(await self.memory.get(cube_id))

    async def edit(self, cube_id: str, changes: dict[str, Any]) -> dict[str, Any]:
        return cube_json(await self.memory.edit(cube_id, changes))

    async def delete(self, cube_id: str, *, purge: bool) -> None:
        await self.memory.delete(cube_id, purge=purge)

    async def sources(self, cube_id: str) -> list[dict[str, Any]]:
        turns = await self.memory.source_messages(cube_id)
        return [turn.model_dump(mode="json", exclude={"generated"}) for turn in turns]

    async def history(self, cube_id: str) -> list[dict[str, Any]]:
        return [history_json(record) for record in await self.memory.history(cube_id)]

    async def delete_space(self, space: str) -> int:
        return await self.memory.delete_space(space)
