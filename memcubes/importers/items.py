"""One memory of another system turned into a MemCube: its id, times, text and history.

Imported cubes get deterministic ids: a ULID whose time part is the memory's creation time and
whose random part derives from the foreign id. They sort by creation like memproxy's own ids
(listing stays newest first), and importing the same export twice meets the same ids, so
``on_conflict`` (skip, overwrite, new-ids) means the same for every format.
"""

from __future__ import annotations

import hashlib
import json
from collections.abc import Callable, Iterable, Sequence
from datetime import UTC, datetime
from typing import Any

from memcubes.bundle import BundleContents, Skipped
from memcubes.cube import MemCube, utcnow
from memcubes.errors import BundleError
from memcubes.lifecycle import fact_slot
from memcubes.store import HistoryEvent

_ULID_ALPHABET = "0123456789ABCDEFGHJKMNPQRSTVWXYZ"


def stable_id(system: str, foreign_id: str, *, at: datetime) -> str:
    """The ULID of a foreign memory: ``at`` in milliseconds, then 80 bits of a hash of its id."""
    entropy = int.from_bytes(hashlib.sha256(f"{system}\x00{foreign_id}".encode()).digest()[:10], "big")
    value = (max(0, int(at.timestamp() * 1000)) << 80) | entropy
    return "".join(_ULID_ALPHABET[(value >> shift) & 31] for shift in range(125, -1, -5))


def foreign_time(value: Any, *, where: str) -> datetime | None:
    """An ISO 8601 time (or date) as aware UTC; a time without offset is taken as UTC."""
    if value is None or value == "":
        return None
    if not isinstance(value, str):
        raise BundleError(f"{where}: not a time: {value!r}")
    try:
        moment = datetime.fromisoformat(value.strip())
    except ValueError:
        raise BundleError(f"{where}: not an ISO 8601 time: {value!r}") from None
    return (moment if moment.tzinfo else moment.replace(tzinfo=UTC)).astimezone(UTC)


def loose_time(value: Any) -> datetime | None:
    """A time written by a model (``memory_time``): used when it parses, ignored when it does not."""
    try:
        return foreign_time(value, where="")
    except BundleError:
        return None


def json_document(data: bytes, *, what: str) -> Any:
    try:
        return json.loads(data)
    except (json.JSONDecodeError, UnicodeDecodeError) as exc:
        raise BundleError(f"{what} is not valid JSON: {exc}") from None


def item_identity(item: Any, *, where: str, what: str = "an object") -> tuple[dict[str, Any], str, str]:
    """A foreign memory item as (the item, its text, its id): mem0 and MemOS items share these.
    The text is empty when the item has none (it is skipped, not refused)."""
    if not isinstance(item, dict):
        raise BundleError(f"{where}: not {what}")
    foreign_id = item.get("id")
    if not isinstance(foreign_id, str) or not foreign_id:
        raise BundleError(f"{where}: no id")
    return item, text_of(item.get("memory"), where=where), foreign_id


Build = Callable[[dict[str, Any], str, str, str], MemCube]  # (item, its text, its id, where) → cube


def read_items(
    items: Sequence[Any], *, label: str, build: Build, what: str = "an object"
) -> tuple[list[tuple[int, MemCube]], list[Skipped]]:
    """Each item as a cube with its position in the upload, or skipped when it has no text."""
    cubes: list[tuple[int, MemCube]] = []
    skipped: list[Skipped] = []
    for position, entry in enumerate(items):
        where = f"{label} {position + 1}"
        item, content, foreign_id = item_identity(entry, where=where, what=what)
        if content:
            cubes.append((position, build(item, content, foreign_id, where)))
        else:
            skipped.append(Skipped(position, foreign_id, "empty"))
    return cubes, skipped


def text_of(value: Any, *, where: str) -> str:
    if value is None:
        return ""
    if not isinstance(value, str):
        raise BundleError(f"{where}: the memory text is not a string")
    return value.strip()


def strings(value: Any) -> list[str]:
    """Tags and the like: a list of strings (anything else in it dropped), or nothing."""
    if not isinstance(value, list):
        return []
    return list(dict.fromkeys(item.strip() for item in value if isinstance(item, str) and item.strip()))


def without_none(values: dict[str, Any]) -> dict[str, Any]:
    return {key: value for key, value in values.items() if value is not None}


def slot_meta(content: str) -> dict[str, Any]:
    """The fact slot a native cube would carry, so later facts can supersede imported ones."""
    slot = fact_slot(content)
    return {"slot": slot} if slot else {}


def imported(
    cubes: Iterable[tuple[int, MemCube]], *, space: str, system: str, skipped: Iterable[Skipped] = ()
) -> BundleContents:
    """Bundle contents for foreign memories, each with its position in the upload: one
    ``IMPORT`` history event each (every cube has a history), oldest first; two memories with
    the same foreign id are an error."""
    placed = list(cubes)
    ordered = sorted((cube for _, cube in placed), key=lambda cube: cube.id)
    # By foreign id, not cube id: an item without a time gets "now", which may differ by a
    # millisecond between two copies of it, and so would its ULID.
    seen: set[str] = set()
    for cube in ordered:
        origin = str((cube.source.model_extra or {}).get("origin_id", cube.id))
        if origin in seen:
            raise BundleError(f"the {system} export holds memory {origin!r} twice")
        seen.add(origin)
    now = utcnow()
    history = [HistoryEvent(cube, "IMPORT", f"imported from {system}", now) for cube in ordered]
    return BundleContents(
        space=space,
        cubes=ordered,
        history=history,
        format=system,
        positions={cube.id: position for position, cube in placed},
        skipped=list(skipped),
    )
