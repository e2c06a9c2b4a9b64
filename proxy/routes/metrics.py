"""``GET /metrics``: Prometheus text exposition. ``server.metrics`` decides who may read it:
``key`` (the default) the master key only, as for the other admin routes (the counts span every
user); ``open`` anyone who reaches the port (a scraper on a cluster-internal port); ``off`` no
route at all (404)."""

from __future__ import annotations

import logging
from typing import Literal

from fastapi import APIRouter, Depends, Request
from starlette.responses import Response

from proxy.auth import admin, public
from proxy.metrics import Metrics

log = logging.getLogger(__name__)


async def metrics(request: Request) -> Response:
    registry: Metrics = request.app.state.metrics
    memory = request.app.state.memory
    if memory is not None:
        try:
            await registry.sample(memory)
        except Exception as exc:  # the store is down: the request metrics still go out
            log.warning("could not sample write-back state for /metrics: %s", exc)
    body, content_type = registry.render()
    return Response(body, media_type=content_type)


def metrics_router(access: Literal["key", "open", "off"]) -> APIRouter:
    """The router serving ``/metrics`` under ``server.metrics``'s access rule (empty when off)."""
    router = APIRouter(tags=["operations"])
    if access != "off":
        guard = admin if access == "key" else public
        router.add_api_route(
            "/metrics", metrics, methods=["GET"], dependencies=[Depends(guard)], include_in_schema=False
        )
    return router
