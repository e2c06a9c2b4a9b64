"""``POST /v1/responses``, ``GET`` and ``DELETE /v1/responses/{id}``: OpenAI's Responses API.
Stored responses belong to the API key that created them."""

from __future__ import annotations

from typing import Any

from fastapi import APIRouter, Depends, Request
from starlette.responses import Response

from proxy.auth import CurrentPrincipal, presented_key, principal
from proxy.protocol import ErrorResponse
from proxy.responses_protocol import ResponsesRequest

router = APIRouter(dependencies=[Depends(principal)], tags=["responses"])

_ERRORS: dict[int | str, dict[str, Any]] = {
    status: {"model": ErrorResponse} for status in (400, 401, 403, 404, 413, 429, 502, 503, 504)
}
_RESPONSES: dict[int | str, dict[str, Any]] = {
    200: {
        "description": "A response, or its typed events as server-sent events with `stream: true`",
        "content": {"application/json": {}, "text/event-stream": {}},
    },
    **_ERRORS,
}


@router.post("/v1/responses", responses=_RESPONSES)
async def create_response(body: ResponsesRequest, request: Request, caller: CurrentPrincipal) -> Response:
    service = request.app.state.responses
    response: Response = await service.create(body, request.headers, caller, key=presented_key(request))
    return response


@router.get("/v1/responses/{response_id}", responses=_ERRORS)
async def retrieve_response(response_id: str, request: Request) -> dict[str, Any]:
    found: dict[str, Any] = await request.app.state.responses.retrieve(response_id, key=presented_key(request))
    return found


@router.delete("/v1/responses/{response_id}", responses=_ERRORS)
async def delete_response(response_id: str, request: Request) -> dict[str, Any]:
    deleted: dict[str, Any] = await request.app.state.responses.delete(response_id, key=presented_key(request))
    return deleted
