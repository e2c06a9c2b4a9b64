"""mem0 exports: the JSON that mem0's ``get_all`` returns.

The open-source ``Memory.get_all`` answers ``{"results": [item, ...]}`` (plus ``"relations"`` with
a graph store); the platform's ``MemoryClient.get_all`` a bare list (v1 API) or
``{"count", "next", "previous", "results"}`` (v2). Every item has ``id``, ``memory`` (the text),
``hash``, ``metadata`` (the caller's, or null), ``created_at`` and ``updated_at`` (ISO 8601, often
with a US/Pacific offset), and when set ``user_id``, ``agent_id``, ``run_id``, ``actor_id`` and
``role``; platform items may add ``categories``, ``expiration_date`` (``YYYY-MM-DD``, the last day
the memory shows), ``immutable`` and more.

Mapping: ``memory`` → content; ``created_at`` → created_at and valid_from (mem0 keeps no world
time); ``updated_at`` → updated_at; ``categories`` → tags; ``expiration_date`` → expires_at (the
start of the next day, UTC); ``role``/``actor_id`` → source roles/names; the id → source
``origin_id``; every other field, ``hash`` and ``metadata`` included, → ``meta["mem0"]``.
``get_all`` lists live memories only, so every cube is active.
"""

from __future__ import annotations

from datetime import UTC, date, datetime, time, timedelta
from typing import Any

from memcubes.bundle import BundleContents
from memcubes.cube import MemCube, Source, utcnow
from memcubes.errors import BundleError
from memcubes.importers.items import (
    foreign_time,
    imported,
    read_items,
    slot_meta,
    stable_id,
    strings,
    without_none,
)

SYSTEM = "mem0"
_MAPPED = frozenset({"id", "memory", "created_at", "updated_at", "categories", "expiration_date"})


def read_mem0(document: Any, *, space: str) -> BundleContents:
    items = document.get("results") if isinstance(document, dict) else document
    if not isinstance(items, list):
        raise BundleError("a mem0 export is a list of memories or an object with a `results` list")
    cubes, skipped = read_items(
        items,
        label="mem0 memory",
        build=lambda item, content, foreign_id, where: _cube(item, content, foreign_id, space=space, where=where),
    )
    return imported(cubes, space=space, system=SYSTEM, skipped=skipped)


def _expiry(value: Any, *, where: str) -> datetime | None:
    """mem0 shows a memory through its ``expiration_date``: it expires when the next day starts."""
    if isinstance(value, str) and len(value.strip()) == 10:
        try:
            day = date.fromisoformat(value.strip())
        except ValueError:
            raise BundleError(f"{where}: not a date: {value!r}") from None
        return datetime.combine(day + timedelta(days=1), time(), tzinfo=UTC)
    return foreign_time(value, where=where)


def _cube(item: dict[str, Any], content: str, foreign_id: str, *, space: str, where: str) -> MemCube:
    created = foreign_time(item.get("created_at"), where=f"{where}.created_at") or utcnow()
    role, actor = item.get("role"), item.get("actor_id")
    source = Source.model_validate(
        {
            "roles": [role] if isinstance(role, str) else [],
            "names": [actor] if isinstance(actor, str) else [],
            "reader": SYSTEM,
            "imported_from": SYSTEM,
            "origin_id": foreign_id,
        }
    )
    rest = without_none({key: value for key, value in item.items() if key not in _MAPPED})
    return MemCube(
        id=stable_id(SYSTEM, foreign_id, at=created),
        space=space,
        content=content,
        created_at=created,
        updated_at=foreign_time(item.get("updated_at"), where=f"{where}.updated_at") or created,
        valid_from=created,
        source=source,
        tags=strings(item.get("categories")),
        expires_at=_expiry(item.get("expiration_date"), where=f"{where}.expiration_date"),
        meta={**slot_meta(content), SYSTEM: rest},
    )
