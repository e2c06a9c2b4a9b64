"""``GET /v1/models`` and ``GET /v1/models/{id}``: the model names of ``model_list``."""

from __future__ import annotations

from fastapi import APIRouter, Depends, Request

from proxy.auth import CurrentPrincipal, principal
from proxy.protocol import ErrorResponse, ModelCard, ModelList

router = APIRouter(dependencies=[Depends(principal)], tags=["models"])


@router.get("/v1/models")
@router.get("/models", include_in_schema=False)
async def list_models(request: Request, caller: CurrentPrincipal) -> ModelList:
    """The models the caller's key may use."""
    names = request.app.state.router.model_names
    return ModelList(data=[ModelCard(id=name) for name in names if caller.may_use(name)])


@router.get("/v1/models/{model_id:path}", responses={s: {"model": ErrorResponse} for s in (401, 403, 404)})
@router.get("/models/{model_id:path}", include_in_schema=False)
async def retrieve_model(model_id: str, request: Request, caller: CurrentPrincipal) -> ModelCard:
    request.app.state.router.check(model_id)
    caller.check_model(model_id)
    return ModelCard(id=model_id)
