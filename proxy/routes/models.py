"""``GET /v1/models``: the model names of ``model_list``."""

from __future__ import annotations

from fastapi import APIRouter, Depends, Request

from proxy.auth import CurrentPrincipal, principal
from proxy.protocol import ModelCard, ModelList

router = APIRouter(dependencies=[Depends(principal)], tags=["models"])


@router.get("/v1/models")
@router.get("/models", include_in_schema=False)
async def list_models(request: Request, caller: CurrentPrincipal) -> ModelList:
    """The models the caller's key may use."""
    names = request.app.state.router.model_names
    return ModelList(data=[ModelCard(id=name) for name in names if caller.may_use(name)])
