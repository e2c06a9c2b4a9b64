"""``POST /v1/chat/completions``: validate, hand to the chat service, return its response."""

from __future__ import annotations

from typing import Any

from fastapi import APIRouter, Depends, Request
from starlette.responses import Response

from proxy.auth import CurrentPrincipal, principal
from proxy.protocol import ChatCompletionRequest, ErrorResponse

router = APIRouter(dependencies=[Depends(principal)], tags=["chat"])

_RESPONSES: dict[int | str, dict[str, Any]] = {
    200: {
        "description": "A chat completion, or its chunks as server-sent events with `stream: true`",
        "content": {"application/json": {}, "text/event-stream": {}},
    },
    **{status: {"model": ErrorResponse} for status in (400, 401, 404, 413, 403, 429, 502, 503, 504)},
}


@router.post("/v1/chat/completions", responses=_RESPONSES)
@router.post("/chat/completions", include_in_schema=False)
async def create_chat_completion(body: ChatCompletionRequest, request: Request, caller: CurrentPrincipal) -> Response:
    response: Response = await request.app.state.chat.create(body, request.headers, caller)
    return response
