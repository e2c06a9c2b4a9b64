"""``/openapi.json``, ``/docs`` and ``/redoc``, behind the same key check as every route (the
master key when one is set) and self-contained: FastAPI's own pages load Swagger UI and ReDoc
from a CDN, which would tell a third party who reads the docs and run its script on this origin.
``/docs`` and ``/redoc`` are one server-rendered page listing every operation."""

from __future__ import annotations

import html
from typing import Any

from fastapi import APIRouter, Depends, Request
from fastapi.responses import HTMLResponse, JSONResponse

from proxy.auth import admin, principal

router = APIRouter(dependencies=[Depends(principal), Depends(admin)], include_in_schema=False)


@router.get("/openapi.json")
async def openapi(request: Request) -> JSONResponse:
    return JSONResponse(request.app.openapi())


@router.get("/docs")
@router.get("/redoc")
async def docs(request: Request) -> HTMLResponse:
    schema: dict[str, Any] = request.app.openapi()
    rows = []
    for path, operations in schema.get("paths", {}).items():
        for method, operation in operations.items():
            summary = operation.get("summary", "")
            text = (operation.get("description") or "").split("\n\n")[0]
            rows.append(
                f"<tr><td><code>{html.escape(method.upper())}</code></td><td><code>{html.escape(path)}</code></td>"
                f"<td><b>{html.escape(summary)}</b> {html.escape(text)}</td></tr>"
            )
    title = html.escape(f"{schema['info']['title']} {schema['info']['version']}")
    page = (
        f"<!doctype html><html><head><meta charset='utf-8'><title>{title}</title></head><body>"
        f"<h1>{title}</h1><p>The full schema: <a href='/openapi.json'>/openapi.json</a>.</p>"
        f"<table border='1' cellpadding='4' cellspacing='0'>{''.join(rows)}</table></body></html>"
    )
    return HTMLResponse(page, headers={"content-security-policy": "default-src 'none'"})
