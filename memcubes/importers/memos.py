"""MemOS ``GeneralMemCube`` dumps: a directory with ``config.json`` and ``textual_memory.json``.

``config.json`` is the cube's ``GeneralMemCubeConfig`` (``model_schema``, ``user_id``,
``cube_id``, ``text_mem: {backend, config: {memory_filename, ...}}``, ``act_mem``, ``para_mem``).
The textual memory file (``memory_filename``, by default ``textual_memory.json``) depends on
``text_mem.backend``:

- ``general_text``: the vector DB's items, ``[{"id", "vector", "payload": TextualMemoryItem}]``;
- ``tree_text``: the graph export, ``{"nodes": [TextualMemoryItem], "edges": [{"source",
  "target", "type"}]}`` (node ``sources`` may be JSON strings, as Neo4j stores them);
- ``naive_text``: ``[TextualMemoryItem]``.

A ``TextualMemoryItem`` is ``{"id", "memory", "metadata"}``. Mapping: ``memory`` → content;
``metadata.created_at`` (tree) or ``updated_at`` → created_at; ``updated_at`` → updated_at;
``memory_time`` (a ``YYYY-MM-DD`` the extractor wrote) → valid_from, else created_at; ``tags`` →
tags; ``confidence`` (MemOS: 0-100) → confidence (0-1); ``status`` activated/resolving → active,
archived → archived, deleted → deleted; ``version`` → version; ``sources`` → source message ids
and roles; everything else (``memory_type``, ``key``, ``background``, ``usage``, ``user_id``,
``session_id``, the raw ``sources``, outgoing graph ``edges``, the MemOS id...) →
``meta["memos"]``. Embeddings are dropped: they come from another embedder and are recomputed.
Tree dumps copy recent memories into ``WorkingMemory`` nodes; a copy whose text another node
holds is left out. MemOS writes local times without an offset; they are read as UTC.
"""

from __future__ import annotations

import json
import posixpath
from collections import defaultdict
from collections.abc import Mapping
from typing import Any

from memcubes.archive import SafeArchive
from memcubes.bundle import BundleContents, Skipped
from memcubes.cube import CubeState, MemCube, Source, utcnow
from memcubes.errors import BundleError
from memcubes.importers.items import (
    foreign_time,
    imported,
    json_document,
    loose_time,
    read_items,
    slot_meta,
    stable_id,
    strings,
    without_none,
)
from memcubes.store import content_hash

SYSTEM = "memos"
CONFIG = "config.json"
DEFAULT_MEMORY_FILE = "textual_memory.json"
LAYOUTS = {
    "general_text": "general_text",
    "tree_text": "tree_text",
    "simple_tree_text": "tree_text",
    "naive_text": "naive_text",
}
_STATES = {
    "activated": CubeState.ACTIVE,
    "resolving": CubeState.ACTIVE,
    "archived": CubeState.ARCHIVED,
    "deleted": CubeState.DELETED,
}
_MAPPED = frozenset({"created_at", "updated_at", "memory_time", "tags", "confidence", "status", "version", "embedding"})
_WORKING = "WorkingMemory"


def has_config(names: list[str]) -> bool:
    return any(name == CONFIG or name.endswith(f"/{CONFIG}") for name in names)


def read_memos_archive(archive: SafeArchive, *, space: str) -> BundleContents:
    """A dump directory, zipped (at the archive's root or in one folder)."""
    names = [name for name in archive.namelist() if name == CONFIG or name.endswith(f"/{CONFIG}")]
    if not names:
        raise BundleError(f"not a MemOS dump: {CONFIG} is missing")
    config_name = min(names, key=lambda name: name.count("/"))
    config = json_document(archive.read(config_name), what=config_name)
    config = _object(config)
    text_mem = _object(config.get("text_mem"))
    backend = text_mem.get("backend")
    if backend not in LAYOUTS:
        raise BundleError(f"{config_name}: text_mem.backend {backend!r} is not one of {', '.join(LAYOUTS)}")
    settings = _object(text_mem.get("config"))
    memory_file = posixpath.join(posixpath.dirname(config_name), settings.get("memory_filename") or DEFAULT_MEMORY_FILE)
    try:
        data = archive.read(memory_file)
    except KeyError:
        raise BundleError(f"not a complete MemOS dump: {memory_file} is missing") from None
    cube = without_none({"user_id": config.get("user_id"), "cube_id": config.get("cube_id")})
    document = json_document(data, what=memory_file)
    return read_memos_document(document, space=space, layout=LAYOUTS[backend], cube=cube)


def _object(value: Any) -> dict[str, Any]:
    return value if isinstance(value, dict) else {}


def guess_layout(document: Any) -> str | None:
    """The layout a bare ``textual_memory.json`` has, from its shape."""
    if isinstance(document, dict) and isinstance(document.get("nodes"), list):
        return "tree_text"
    if isinstance(document, list):
        first = document[0] if document else None
        if isinstance(first, dict) and isinstance(first.get("payload"), dict):
            return "general_text"
        if isinstance(first, dict) and "memory" in first and isinstance(first.get("metadata"), dict):
            return "naive_text"
    return None


def read_memos_document(
    document: Any, *, space: str, layout: str | None = None, cube: Mapping[str, Any] | None = None
) -> BundleContents:
    layout = layout or guess_layout(document)
    edges: dict[str, list[dict[str, Any]]] = defaultdict(list)
    if layout == "tree_text" and isinstance(document, dict) and isinstance(document.get("nodes"), list):
        items = document["nodes"]
        for edge in document.get("edges") or []:
            if isinstance(edge, dict) and isinstance(edge.get("source"), str):
                edges[edge["source"]].append(without_none({"type": edge.get("type"), "target": edge.get("target")}))
    elif layout == "general_text" and isinstance(document, list):
        items = [entry.get("payload") if isinstance(entry, dict) else None for entry in document]
    elif layout == "naive_text" and isinstance(document, list):
        items = document
    else:
        raise BundleError(
            f"the MemOS textual memory does not have the {layout} layout"
            if layout
            else "not a MemOS textual memory: expected {nodes, edges} (tree_text) or a list of items (general_text)"
        )
    context = {"layout": layout, **(cube or {})}
    cubes, skipped = read_items(
        items,
        label="MemOS memory",
        what="a TextualMemoryItem object",
        build=lambda item, content, foreign_id, where: _cube(
            item, content, foreign_id, space=space, where=where, edges=edges, context=context
        ),
    )
    kept, copies = _without_working_copies(cubes)
    return imported(kept, space=space, system=SYSTEM, skipped=[*skipped, *copies])


def _without_working_copies(cubes: list[tuple[int, MemCube]]) -> tuple[list[tuple[int, MemCube]], list[Skipped]]:
    """Tree dumps copy recent memories into ``WorkingMemory`` nodes: a copy of another node's
    text is a duplicate."""
    held = {content_hash(c.content) for _, c in cubes if c.meta[SYSTEM].get("memory_type") != _WORKING}
    kept: list[tuple[int, MemCube]] = []
    copies: list[Skipped] = []
    for position, cube in cubes:
        if cube.meta[SYSTEM].get("memory_type") == _WORKING and content_hash(cube.content) in held:
            copies.append(Skipped(position, cube.meta[SYSTEM]["id"], "duplicate"))
        else:
            kept.append((position, cube))
    return kept, copies


def _sources(value: Any) -> list[dict[str, Any]]:
    """MemOS ``sources``: dicts, JSON strings of dicts, or plain strings (a document snippet)."""
    if isinstance(value, str):
        try:
            value = json.loads(value)
        except json.JSONDecodeError:
            value = [value]
    if not isinstance(value, list):
        return []
    sources: list[dict[str, Any]] = []
    for item in value:
        if isinstance(item, str):
            try:
                parsed = json.loads(item)
            except json.JSONDecodeError:
                parsed = None
            item = parsed if isinstance(parsed, dict) else {"type": "doc", "content": item}
        if isinstance(item, dict):
            sources.append(item)
    return sources


def _confidence(value: Any) -> float:
    """MemOS asks its extractor for 0-100; values up to 1 are taken as already a fraction."""
    if isinstance(value, bool) or not isinstance(value, int | float):
        return 1.0
    share = float(value) / 100 if value > 1 else float(value)
    return min(1.0, max(0.0, share))


def _cube(
    item: dict[str, Any],
    content: str,
    foreign_id: str,
    *,
    space: str,
    where: str,
    edges: Mapping[str, list[dict[str, Any]]],
    context: Mapping[str, Any],
) -> MemCube:
    metadata = _object(item.get("metadata"))
    updated = foreign_time(metadata.get("updated_at"), where=f"{where}.updated_at")
    created = foreign_time(metadata.get("created_at"), where=f"{where}.created_at") or updated or utcnow()
    sources = _sources(metadata.get("sources"))
    version = metadata.get("version")
    rest = {key: value for key, value in metadata.items() if key not in _MAPPED}
    rest["sources"] = sources or None
    return MemCube(
        id=stable_id(SYSTEM, foreign_id, at=created),
        space=space,
        content=content,
        created_at=created,
        updated_at=updated or created,
        valid_from=loose_time(metadata.get("memory_time")) or created,
        source=Source.model_validate(
            {
                "message_ids": [s["message_id"] for s in sources if isinstance(s.get("message_id"), str)],
                "roles": list(dict.fromkeys(s["role"] for s in sources if isinstance(s.get("role"), str))),
                "reader": SYSTEM,
                "imported_from": SYSTEM,
                "origin_id": foreign_id,
            }
        ),
        tags=strings(metadata.get("tags")),
        confidence=_confidence(metadata.get("confidence")),
        version=version if isinstance(version, int) and not isinstance(version, bool) and version >= 1 else 1,
        state=_STATES.get(str(metadata.get("status")), CubeState.ACTIVE),
        meta={
            **slot_meta(content),
            SYSTEM: without_none({"id": foreign_id, **context, **rest, "edges": edges.get(foreign_id) or None}),
        },
    )
