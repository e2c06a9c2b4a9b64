"""``GET /v1/models``: the model names of ``model_list``."""

from __future__ import annotations

from fastapi import APIRouter, Depends, Request

from proxy.auth import require_key
from proxy.protocol import ModelCard, ModelList

router = APIRouter(dependencies=[Depends(require_key)], tags=["models"])


@router.get("/v1/models")
@router.get("/models", include_in_schema=False)
async def list_models(request: Request) -> ModelList:
    return ModelList(data=[ModelCard(id=name) for name in request.app.state.router.model_names])
