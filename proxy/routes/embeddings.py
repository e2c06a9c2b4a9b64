"""``POST /v1/embeddings``: relayed to the model's backend when it serves embeddings (OpenAI-wire
upstreams byte for byte, litellm providers through litellm). Memory is not involved."""

from __future__ import annotations

from typing import Any

from fastapi import APIRouter, Depends, Request
from starlette.responses import JSONResponse, Response

from proxy.auth import CurrentPrincipal, principal
from proxy.backends.base import BackendResponse
from proxy.protocol import EmbeddingRequest, ErrorResponse

router = APIRouter(dependencies=[Depends(principal)], tags=["embeddings"])
_ERRORS: dict[int | str, dict[str, Any]] = {
    status: {"model": ErrorResponse} for status in (400, 401, 403, 404, 413, 429, 502, 503, 504)
}


@router.post("/v1/embeddings", responses=_ERRORS)
@router.post("/embeddings", include_in_schema=False)
async def create_embeddings(body: EmbeddingRequest, request: Request, caller: CurrentPrincipal) -> Response:
    caller.check_model(body.model)
    payload = body.forward_body()
    response: BackendResponse = await request.app.state.router.attempt(
        body.model, lambda backend: backend.embeddings(payload)
    )
    if response.raw is not None:
        return Response(response.raw, media_type="application/json")
    return JSONResponse(response.data)
