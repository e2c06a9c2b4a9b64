"""The memory API: add, search, list, get, edit, delete, history, forget a space."""

from __future__ import annotations

from typing import Annotated, Any, Literal

from fastapi import APIRouter, Depends, Query, Request
from fastapi.responses import JSONResponse

from memcubes.cube import CubeState
from proxy.auth import CurrentPrincipal, principal
from proxy.errors import InvalidRequest
from proxy.memory_slots import memory_work
from proxy.protocol import (
    AddMemoriesRequest,
    AddMemoriesResponse,
    DeletedResponse,
    ErrorResponse,
    MemoryPage,
    NoNulText,
    PatchMemoryRequest,
    SearchRequest,
    SearchResponse,
    Timestamp,
)
from proxy.serving.memories import MemoryService

router = APIRouter(dependencies=[Depends(principal), Depends(memory_work)], tags=["memories"])
_ERRORS: dict[int | str, dict[str, Any]] = {s: {"model": ErrorResponse} for s in (400, 401, 403, 404, 503)}
_STATES = tuple(state.value for state in CubeState)


def service(request: Request) -> MemoryService:
    memories: MemoryService = request.app.state.memories
    return memories


Service = Annotated[MemoryService, Depends(service)]


@router.post(
    "/v1/memories",
    response_model=AddMemoriesResponse,
    responses={202: {"model": AddMemoriesResponse, "description": "Queued for write-back (without `sync`)"}, **_ERRORS},
)
async def add_memories(
    body: AddMemoriesRequest, request: Request, memories: Service, caller: CurrentPrincipal
) -> JSONResponse:
    """Store memories distilled from messages (or given as facts); ``sync`` waits until searchable."""
    result = await memories.add(body, request.headers, caller)
    return JSONResponse(result.model_dump(mode="json"), status_code=200 if result.status == "done" else 202)


@router.post("/v1/memories/search", responses=_ERRORS, response_model_exclude_unset=True)
async def search_memories(
    body: SearchRequest, request: Request, memories: Service, caller: CurrentPrincipal
) -> SearchResponse:
    """Exactly what the chat path would inject for ``query``, best first, within the budget."""
    return await memories.search(body, request.headers, caller)


@router.get("/v1/memories", responses=_ERRORS)
async def list_memories(
    request: Request,
    memories: Service,
    caller: CurrentPrincipal,
    user: Annotated[str | None, Query(max_length=256)] = None,
    space: Annotated[str | None, Query(max_length=512)] = None,
    state: Annotated[list[str] | None, Query()] = None,
    tag: Annotated[NoNulText | None, Query(max_length=256)] = None,
    since: Timestamp | None = None,
    until: Timestamp | None = None,
    q: Annotated[NoNulText | None, Query(max_length=256, description="content contains this text")] = None,
    order: Literal["newest", "oldest"] = "newest",
    cursor: Annotated[NoNulText | None, Query(max_length=64)] = None,
    limit: Annotated[int, Query(ge=1, le=500)] = 50,
) -> MemoryPage:
    states = state or ["active"]
    unknown = [s for s in states if s not in _STATES]
    if unknown:
        raise InvalidRequest(f"unknown state {unknown[0]!r}; use one of {', '.join(_STATES)}", param="state")
    return await memories.page(
        request.headers,
        caller,
        user=user,
        space=space,
        state=states,
        tag=tag,
        since=since,
        until=until,
        text=q or None,
        oldest_first=order == "oldest",
        cursor=cursor,
        limit=limit,
    )


@router.get("/v1/memories/{memory_id}", responses=_ERRORS)
async def get_memory(memory_id: str, memories: Service, caller: CurrentPrincipal) -> dict[str, Any]:
    return await memories.get(memory_id, caller)


@router.patch("/v1/memories/{memory_id}", responses=_ERRORS)
async def edit_memory(
    memory_id: str, body: PatchMemoryRequest, memories: Service, caller: CurrentPrincipal
) -> dict[str, Any]:
    changes = body.model_dump(exclude_unset=True)
    if not changes:
        raise InvalidRequest("nothing to change: give at least one field")
    return await memories.edit(memory_id, changes, caller)


@router.post("/v1/memories/{memory_id}/approve", responses=_ERRORS)
async def approve_memory(memory_id: str, memories: Service, caller: CurrentPrincipal) -> dict[str, Any]:
    """Release a quarantined memory (one that read as an instruction to the assistant)."""
    return await memories.approve(memory_id, caller)


@router.delete("/v1/memories/{memory_id}", responses=_ERRORS, response_model_exclude_none=True)
async def delete_memory(
    memory_id: str,
    memories: Service,
    caller: CurrentPrincipal,
    purge: Annotated[bool, Query(description="remove it for good, from every file of the data dir")] = False,
    by_source: Annotated[
        bool, Query(description="with purge: also every memory derived from one of its source messages")
    ] = False,
) -> DeletedResponse:
    """Soft delete (history kept), ``purge=true`` (gone everywhere), or ``purge=true&by_source=true``
    (gone with every memory sharing one of its source messages: a fact and its episode)."""
    removed = await memories.delete(memory_id, caller, purge=purge, by_source=by_source)
    return DeletedResponse(id=memory_id, purged=purge, ids=removed if purge else None)


@router.get("/v1/memories/{memory_id}/history", responses=_ERRORS)
async def memory_history(memory_id: str, memories: Service, caller: CurrentPrincipal) -> dict[str, Any]:
    return {"object": "list", "data": await memories.history(memory_id, caller)}


@router.get("/v1/memories/{memory_id}/sources", responses=_ERRORS)
async def memory_sources(memory_id: str, memories: Service, caller: CurrentPrincipal) -> dict[str, Any]:
    """The messages the memory was distilled from (those journalled with its exchange)."""
    return {"object": "list", "data": await memories.sources(memory_id, caller)}


@router.delete("/v1/spaces/{space:path}", responses=_ERRORS)
async def forget_space(space: str, memories: Service, caller: CurrentPrincipal) -> dict[str, Any]:
    """Forget everything of one space (a user), in SQLite and in the vector index; nothing else."""
    name, count = await memories.delete_space(space, caller)
    return {"space": name, "deleted": count}
