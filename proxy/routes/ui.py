"""The memory inspector at ``/ui``: a small page of static files shipped in the package (no CDN,
no build step) that talks to the memory API with the key the user types in. The page itself
holds nothing secret, so it is served without a key; every call it makes carries one.

The security headers keep the page to its own files: no inline or remote script, no framing,
no referrer, and API calls only to this origin."""

from __future__ import annotations

import asyncio
from importlib import resources

from fastapi import APIRouter, Depends
from fastapi.responses import RedirectResponse, Response

from proxy.auth import public
from proxy.errors import NotFound

router = APIRouter(dependencies=[Depends(public)], tags=["ui"], include_in_schema=False)

_ASSETS = {
    "index.html": "text/html; charset=utf-8",
    "app.js": "text/javascript; charset=utf-8",
    "app.css": "text/css; charset=utf-8",
}
_HEADERS = {
    "content-security-policy": (
        "default-src 'none'; script-src 'self'; style-src 'self'; connect-src 'self'; img-src 'self' data:; "
        "form-action 'none'; frame-ancestors 'none'; base-uri 'none'"
    ),
    "x-content-type-options": "nosniff",
    "referrer-policy": "no-referrer",
    "cache-control": "no-cache",
}


async def _asset(name: str) -> Response:
    media_type = _ASSETS.get(name)
    if media_type is None:
        raise NotFound(f"no inspector file {name[:64]!r}")
    body = await asyncio.to_thread(resources.files("proxy.ui").joinpath(name).read_bytes)
    return Response(body, media_type=media_type, headers=_HEADERS)


@router.get("/ui")
async def inspector_root() -> RedirectResponse:
    return RedirectResponse("/ui/", status_code=307)


@router.get("/ui/")
async def inspector_page() -> Response:
    return await _asset("index.html")


@router.get("/ui/{name}")
async def inspector_asset(name: str) -> Response:
    return await _asset(name)
