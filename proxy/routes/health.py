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
    """Ready when the memory layer is open (without it chat still works, degraded). Also reports
    the write-back journal, so operators (and tests) can see work waiting."""
    memory = request.app.state.memory
    checks: dict[str, object] = {"models": len(request.app.state.router.model_names)}
    if memory is None:
        checks["memory"] = "unavailable"
    else:
        try:
            checks["journal"] = await memory.journal_counts()
            checks["memory"] = "ok"
        except Exception as exc:  # the store is down: report it, don't fail the probe itself
            checks["memory"] = f"store unavailable: {exc}"
    ready = checks["memory"] == "ok"
    return JSONResponse({"status": "ok" if ready else "degraded", "checks": checks}, status_code=200 if ready else 503)
