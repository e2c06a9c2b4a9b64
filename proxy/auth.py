"""API-key check: with ``general_settings.master_key`` set, every request must present it.

Accepted as ``Authorization: Bearer <key>`` (what the OpenAI SDK sends) or ``x-api-key``.
"""

from __future__ import annotations

import hmac

from fastapi import Request

from proxy.errors import AuthenticationFailed


def presented_key(request: Request) -> str | None:
    authorization = request.headers.get("authorization", "")
    scheme, _, token = authorization.partition(" ")
    if scheme.lower() == "bearer" and token.strip():
        return token.strip()
    return request.headers.get("x-api-key")


async def require_key(request: Request) -> None:
    """FastAPI dependency of every protected route."""
    master_key: str | None = request.app.state.settings.general_settings.master_key
    if not master_key:
        return
    key = presented_key(request)
    if key is None:
        raise AuthenticationFailed("Missing API key: send Authorization: Bearer <key>.")
    if not hmac.compare_digest(key.encode(), master_key.encode()):
        raise AuthenticationFailed("Incorrect API key provided.")
