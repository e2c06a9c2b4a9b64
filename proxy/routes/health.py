"""Liveness and readiness probes: open to anyone (orchestrators probe without a key), so they
say ok or not and counts, never an exception text, a path or a host."""

from __future__ import annotations

import logging

from fastapi import APIRouter, Depends, Request
from fastapi.responses import JSONResponse

from proxy.auth import public

log = logging.getLogger(__name__)
router = APIRouter(dependencies=[Depends(public)], tags=["health"])


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
        except Exception as exc:  # the store is down: report it (in the log), don't fail the probe itself
            log.warning("readiness: the memory store is unavailable: %r", exc)
            checks["memory"] = "store unavailable"
    ready = checks["memory"] == "ok"
    return JSONResponse({"status": "ok" if ready else "degraded", "checks": checks}, status_code=200 if ready else 503)
