"""Who is calling: the one dependency every route uses, ``principal``, and what it checks.

    request ─▶ origin guard (only without a master key) ─▶ key ─▶ Principal ─▶ the route asks it

- With ``general_settings.master_key`` set, every request presents a key, as
  ``Authorization: Bearer <key>`` (what the OpenAI SDK sends) or ``x-api-key``: the master key
  (an admin ``Principal``) or a key it created (``POST /v1/keys``), looked up by its SHA-256
  digest. A revoked, expired or unknown key is a 401; a key past its ``rpm`` a 429 with
  ``retry-after``.
- Without a master key the server is meant for this machine only (``memproxy serve`` refuses a
  non-loopback ``--host`` unless ``allow_unauthenticated``): every request acts as admin, but one
  whose ``Host`` is not a loopback name (DNS rebinding) or whose ``Origin`` is another site (a
  web page posting cross-site) is refused with 403. Keys are not looked up then.
- Routes open to anyone (the health probes) depend on ``public`` instead, which keeps the guard.

A new route gets all of this by depending on ``principal`` (``CurrentPrincipal`` as a parameter,
or the router's ``dependencies``; ``admin`` for master-key-only routes), then asks the
``Principal`` (``acting_user``, ``authorize``, ``can_read``, ``chat_spaces``). A surface that is
not a FastAPI route (a mounted ASGI app such as an MCP server) calls ``await
principal(Request(scope))`` itself (``scope["app"]`` being memproxy's app) and answers the
``ProxyError`` it may raise.
``tests/test_security.py`` enumerates the app's routes and mounts and fails for one that does not
refuse a request without a key.

Keys are cached by digest in ``KeyRing``; the cache is dropped whenever the store's file changed
(``KeyStore.changed``), so a key revoked by another process is refused on its next request.
"""

from __future__ import annotations

import asyncio
import hashlib
import hmac
import ipaddress
import math
import secrets
import time
from collections import deque
from typing import Annotated
from urllib.parse import urlsplit

from fastapi import Depends, Request

from memcubes.keystore import KeyStore, StoredKey
from proxy.config import Settings
from proxy.errors import AuthenticationFailed, KeyRateLimited, MemoryUnavailable, PermissionDenied
from proxy.principal import Principal

SECRET_PREFIX = "sk-mp-"
_CACHE_LIMIT = 10_000
_WINDOW_SECONDS = 60.0


def new_secret() -> str:
    return SECRET_PREFIX + secrets.token_urlsafe(32)


def digest(secret: str) -> str:
    """What the store keeps of a key: its secret is 256 random bits, so a fast hash is enough."""
    return hashlib.sha256(secret.encode()).hexdigest()


def presented_key(request: Request) -> str | None:
    authorization = request.headers.get("authorization", "")
    scheme, _, token = authorization.partition(" ")
    if scheme.lower() == "bearer" and token.strip():
        return token.strip()
    return request.headers.get("x-api-key")


class KeyRing:
    """Keys by digest, cached while the store's file is unchanged; each key's rpm window."""

    def __init__(self, keys: KeyStore | None) -> None:
        self._keys = keys
        self._cache: dict[str, StoredKey | None] = {}
        self._version: int | str | None = None
        self._windows: dict[str, deque[float]] = {}

    async def lookup(self, secret: str) -> StoredKey | None:
        if self._keys is None:
            raise MemoryUnavailable("the key store is unavailable (the memory layer failed to start)")
        version = await self._keys.changed_now()
        if version != self._version:
            self._cache.clear()
            self._version = version
        key_digest = digest(secret)
        if key_digest in self._cache:
            return self._cache[key_digest]
        found = await asyncio.to_thread(self._keys.find, key_digest)
        if len(self._cache) >= _CACHE_LIMIT:
            self._cache.clear()
        self._cache[key_digest] = found
        return found

    def spend(self, key: StoredKey) -> None:
        """Count one request against the key's ``rpm`` (a sliding minute, per process)."""
        rpm = key.settings.rpm
        if rpm is None:
            return
        now = time.monotonic()
        window = self._windows.setdefault(key.id, deque())
        while window and now - window[0] >= _WINDOW_SECONDS:
            window.popleft()
        if len(window) >= rpm:
            wait = max(1, math.ceil(_WINDOW_SECONDS - (now - window[0])))
            raise KeyRateLimited(
                f"this API key allows {rpm} requests per minute; retry in {wait} s", headers={"retry-after": str(wait)}
            )
        window.append(now)


def _host_name(value: str) -> str:
    """``[::1]:8080`` → ``::1``; ``Example.COM:80`` → ``example.com``."""
    value = value.strip().lower()
    if value.startswith("["):
        return value[1 : value.find("]")] if "]" in value else value
    return value.rsplit(":", 1)[0] if value.count(":") == 1 else value


def is_loopback(host: str) -> bool:
    if host == "localhost" or host.endswith(".localhost"):
        return True
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return False


def check_origin(request: Request, settings: Settings) -> None:
    """Without a master key: refuse a ``Host`` that is not loopback (or the configured host) and
    an ``Origin`` of another site. ``allow_unauthenticated`` on a wildcard address (0.0.0.0)
    lifts the Host check (the operator chose to be reached by any name), never the Origin check."""
    if settings.general_settings.master_key:
        return
    configured = _host_name(settings.server.host)
    host = _host_name(request.headers.get("host", ""))
    wildcard = configured in ("0.0.0.0", "::") and settings.general_settings.allow_unauthenticated
    if not (wildcard or is_loopback(host) or host == configured):
        raise PermissionDenied(
            "this memproxy has no master key and answers only requests to a loopback address "
            "(Host header); set general_settings.master_key to serve other hosts"
        )
    origin = request.headers.get("origin")
    if origin is not None:
        parts = urlsplit(origin)
        origin_host = (parts.hostname or "").lower()
        same_site = parts.netloc.lower() == request.headers.get("host", "").lower()
        if not (same_site or is_loopback(origin_host)):
            raise PermissionDenied(
                "cross-site request refused: this memproxy has no master key, so only pages it serves "
                "itself or pages on this machine may call it"
            )


async def principal(request: Request) -> Principal:
    """The dependency every protected route uses. Cached per request by FastAPI, so a route may
    both list it in its router's ``dependencies`` and take it as a parameter."""
    settings: Settings = request.app.state.settings
    check_origin(request, settings)
    master_key = settings.general_settings.master_key
    if not master_key:
        return Principal.master()
    secret = presented_key(request)
    if secret is None:
        raise AuthenticationFailed("Missing API key: send Authorization: Bearer <key>.")
    if hmac.compare_digest(secret.encode(), master_key.encode()):
        return Principal.master()
    keyring: KeyRing = request.app.state.keyring
    key = await keyring.lookup(secret)
    if key is None:
        raise AuthenticationFailed("Incorrect API key provided.")
    if key.revoked_at is not None:
        raise AuthenticationFailed("This API key was revoked.", code="key_revoked")
    if not key.usable():
        raise AuthenticationFailed("This API key has expired.", code="key_expired")
    keyring.spend(key)
    return Principal.of_key(key.id, key.settings)


async def admin(caller: Annotated[Principal, Depends(principal)]) -> Principal:
    """The dependency of admin routes (keys, audit, docs): the master key only."""
    caller.require_admin()
    return caller


async def public(request: Request) -> None:
    """The dependency of routes anyone may call (health probes): only the origin guard."""
    check_origin(request, request.app.state.settings)


CurrentPrincipal = Annotated[Principal, Depends(principal)]
