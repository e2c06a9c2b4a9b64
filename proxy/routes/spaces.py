"""Spaces: list them (counts, last activity, size), one space's figures, and its stable block
as the next request would get it. Forgetting a space and bundles live with memories and bundles."""

from __future__ import annotations

from typing import Annotated, Any

from fastapi import APIRouter, Depends, Query, Request

from proxy.auth import CurrentPrincipal, principal
from proxy.memory_slots import memory_work
from proxy.protocol import ErrorResponse, SpaceOut, SpacePage, StableBlockOut
from proxy.serving.spaces import SpaceService

router = APIRouter(dependencies=[Depends(principal), Depends(memory_work)], tags=["spaces"])
_ERRORS: dict[int | str, dict[str, Any]] = {s: {"model": ErrorResponse} for s in (400, 401, 403, 404, 503)}


def service(request: Request) -> SpaceService:
    spaces: SpaceService = request.app.state.spaces
    return spaces


Service = Annotated[SpaceService, Depends(service)]


@router.get("/v1/spaces", responses=_ERRORS)
async def list_spaces(
    spaces: Service,
    caller: CurrentPrincipal,
    q: Annotated[str | None, Query(max_length=256, description="the space name contains this")] = None,
    cursor: Annotated[str | None, Query(max_length=512)] = None,
    limit: Annotated[int, Query(ge=1, le=200)] = 50,
) -> SpacePage:
    """The spaces the key may read, in name order, with memories per state, last activity and
    size; paged."""
    return await spaces.page(caller, contains=q or None, cursor=cursor, limit=limit)


@router.get("/v1/spaces/{space:path}/stable", responses=_ERRORS)
async def stable_block(space: str, spaces: Service, caller: CurrentPrincipal) -> StableBlockOut:
    """The stable block exactly as the next request of this space would get it, with its tokens."""
    return await spaces.stable(space, caller)


@router.get("/v1/spaces/{space:path}", responses=_ERRORS)
async def get_space(space: str, spaces: Service, caller: CurrentPrincipal) -> SpaceOut:
    return await spaces.get(space, caller)
