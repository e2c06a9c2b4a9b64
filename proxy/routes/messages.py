"""``POST /v1/messages`` and ``/v1/messages/count_tokens``: Anthropic's Messages API (Claude Code,
the Anthropic SDK). Errors on these paths are in Anthropic's shape (``proxy.errors``)."""

from __future__ import annotations

from typing import Any

from fastapi import APIRouter, Depends, Request
from starlette.responses import Response

from proxy.anthropic_protocol import AnthropicErrorResponse, CountTokensRequest, MessagesRequest
from proxy.auth import CurrentPrincipal, principal

router = APIRouter(dependencies=[Depends(principal)], tags=["anthropic"])

_ERRORS: dict[int | str, dict[str, Any]] = {
    status: {"model": AnthropicErrorResponse} for status in (400, 401, 403, 404, 413, 429, 502, 503, 504)
}
_RESPONSES: dict[int | str, dict[str, Any]] = {
    200: {
        "description": "An Anthropic message, or its events as server-sent events with `stream: true`",
        "content": {"application/json": {}, "text/event-stream": {}},
    },
    **_ERRORS,
}


@router.post("/v1/messages", responses=_RESPONSES)
async def create_message(body: MessagesRequest, request: Request, caller: CurrentPrincipal) -> Response:
    response: Response = await request.app.state.messages.create(body, request.headers, caller)
    return response


@router.post("/v1/messages/count_tokens", responses=_ERRORS)
async def count_message_tokens(body: CountTokensRequest, request: Request, caller: CurrentPrincipal) -> Response:
    response: Response = await request.app.state.messages.count_tokens(body, request.headers, caller)
    return response
