"""Liveness and readiness probes."""

from __future__ import annotations

from fastapi import APIRouter, Request
from fastapi.responses import JSONResponse

router = APIRouter(tags=["health"])


@router.get("/healthz")
async def healthz() -> dict[str, str]:
    return {"status": "ok"}


@router.get("/readyz")
async def readyz(request: Request) -> JSONResponse:
    """Ready when the memory layer is open; without it chat still works, degraded."""
    memory = request.app.state.memory
    checks = {"memory": "ok" if memory is not None else "unavailable", "models": str(len(request.app.state.router.model_names))}
    return JSONResponse({"status": "ok" if memory is not None else "degraded", "checks": checks},
                        status_code=200 if memory is not None else 503)
