"""``/v1/keys`` and ``/v1/audit``: the master key creates, lists and revokes keys, and reads the
audit trail. A key's secret is in the creation answer only; the store keeps its digest."""

from __future__ import annotations

import asyncio
from typing import Annotated, Any

from fastapi import APIRouter, Depends, Query

from memcubes.keystore import KeySettings, KeyStore
from proxy.auth import CurrentPrincipal, admin, digest, new_secret, principal
from proxy.errors import NotFound
from proxy.protocol import CreateKeyRequest, ErrorResponse
from proxy.routes.memories import Service
from proxy.serving.memories import MemoryService

router = APIRouter(dependencies=[Depends(principal), Depends(admin)], tags=["keys"])
_ERRORS: dict[int | str, dict[str, Any]] = {s: {"model": ErrorResponse} for s in (400, 401, 403, 404, 503)}


def _keys(memories: MemoryService) -> KeyStore:
    return memories.memory.keys


@router.post("/v1/keys", responses=_ERRORS)
async def create_key(body: CreateKeyRequest, memories: Service, caller: CurrentPrincipal) -> dict[str, Any]:
    """A new key; ``key`` (its secret) is shown in this answer only."""
    settings = KeySettings(
        user=body.user,
        user_prefix=body.user_prefix,
        read_spaces=tuple(dict.fromkeys(body.read_spaces)),
        write_spaces=tuple(dict.fromkeys(body.write_spaces)),
        memory_api=body.memory_api,
        models=None if body.models is None else tuple(body.models),
        expires_at=body.expires_at,
        rpm=body.rpm,
        alias=body.alias,
        metadata=body.metadata,
    )
    secret = new_secret()
    key = await asyncio.to_thread(_keys(memories).create, digest(secret), settings)
    await memories.audit(caller, "key.create", target=key.id)
    return {"object": "key", **key.to_json(), "key": secret}


@router.get("/v1/keys", responses=_ERRORS)
async def list_keys(memories: Service) -> dict[str, Any]:
    """Every key with its settings (revoked ones too, marked); never a secret."""
    keys = await asyncio.to_thread(_keys(memories).all)
    return {"object": "list", "data": [{"object": "key", **key.to_json()} for key in keys]}


@router.delete("/v1/keys/{key_id}", responses=_ERRORS)
async def revoke_key(key_id: str, memories: Service, caller: CurrentPrincipal) -> dict[str, Any]:
    """Revoke a key: its next request is refused, in every process using this data dir."""
    key = await asyncio.to_thread(_keys(memories).revoke, key_id)
    if key is None:
        raise NotFound(f"no API key with id {key_id[:80]}", code="key_not_found")
    await memories.audit(caller, "key.revoke", target=key.id)
    return {"object": "key", **key.to_json(), "revoked": True}


@router.get("/v1/audit", responses=_ERRORS)
async def audit_trail(
    memories: Service,
    limit: Annotated[int, Query(ge=1, le=1000)] = 100,
    before: Annotated[int | None, Query(ge=1, le=2**62)] = None,
) -> dict[str, Any]:
    """Newest first: who (key id; null for the master key), when, what (ids and counts). Page on
    with ``before`` = the last ``seq`` of the previous page."""
    entries = await asyncio.to_thread(_keys(memories).audit, limit=limit, before=before)
    data = [
        {"seq": e.seq, "at": e.at, "key_id": e.key_id, "action": e.action, "target": e.target, "detail": e.detail}
        for e in entries
    ]
    return {"object": "list", "data": data, "next_before": data[-1]["seq"] if len(data) == limit else None}
