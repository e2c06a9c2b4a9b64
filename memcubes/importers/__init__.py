"""Importers: memproxy bundles, mem0 exports and MemOS cube dumps, read into bundle contents.

Every format ends as the same validated ``BundleContents``, so one import path (conflicts,
re-homing, one transaction, indexing) serves them all. ``load`` tells the formats apart by
their shape when asked for ``auto``: a zip with ``manifest.json`` is a memcube bundle, a zip with
``config.json`` a MemOS dump, JSON with ``results`` or items carrying ``hash``/``created_at`` a
mem0 export, JSON with ``nodes`` or vector-DB ``payload`` items a MemOS ``textual_memory.json``.
"""

from __future__ import annotations

from typing import Any, Literal

from pydantic import ValidationError

from memcubes.archive import SafeArchive
from memcubes.bundle import MANIFEST, MAX_BUNDLE_BYTES, BundleContents, read_bundle
from memcubes.errors import BundleError
from memcubes.importers.items import json_document
from memcubes.importers.mem0 import read_mem0
from memcubes.importers.memos import guess_layout, has_config, read_memos_archive, read_memos_document

ImportFormat = Literal["auto", "memproxy", "mem0", "memos"]
Format = Literal["memproxy", "mem0", "memos"]

__all__ = ["ImportFormat", "load"]

_MEM0_KEYS = frozenset({"hash", "created_at", "user_id", "agent_id", "run_id"})
_NAMES: dict[Format, str] = {"memproxy": "memcube bundle", "mem0": "mem0 export", "memos": "MemOS dump"}


def load(
    data: bytes, *, format: ImportFormat = "auto", space: str | None = None, max_bytes: int = MAX_BUNDLE_BYTES
) -> BundleContents:
    """Parse and validate ``data`` completely; a zip's members may inflate to ``max_bytes`` in
    all. Foreign formats name no memproxy space, so they need ``space``; a memcube bundle defaults
    to its own. Whatever a file holds that a MemCube cannot (an out-of-range time, a non-finite
    number, invalid Unicode) is a ``BundleError``."""
    try:
        return _load(data, format=format, space=space, max_bytes=max_bytes)
    except (ValidationError, OverflowError, ValueError) as exc:
        raise BundleError(f"the upload holds a value memproxy cannot store: {exc}") from None


def _load(data: bytes, *, format: ImportFormat, space: str | None, max_bytes: int) -> BundleContents:
    if data[:2] == b"PK":
        if format == "mem0":
            raise BundleError("a mem0 export is JSON, not a zip archive")
        with SafeArchive(data, max_bytes=max_bytes) as archive:
            kind = _archive_format(archive) if format == "auto" else format
            if kind == "memproxy":
                return read_bundle(data, max_bytes=max_bytes)
            if kind == "memos":
                return read_memos_archive(archive, space=_target(space, kind))
        raise BundleError("a mem0 export is JSON, not a zip archive")
    if format == "memproxy":
        raise BundleError("a memcube bundle is a zip archive")
    document = json_document(data, what="the upload (neither a zip archive nor JSON)")
    kind = _document_format(document) if format == "auto" else format
    if kind == "mem0":
        return read_mem0(document, space=_target(space, kind))
    return read_memos_document(document, space=_target(space, kind))


def _target(space: str | None, kind: Format) -> str:
    if not space:
        raise BundleError(f"a {_NAMES[kind]} names no memproxy space: say which space to import it into")
    return space


def _archive_format(archive: SafeArchive) -> Format:
    names = archive.namelist()
    if MANIFEST in names:
        return "memproxy"
    if has_config(names):
        return "memos"
    raise BundleError(f"the archive has no {MANIFEST} (memcube bundle) and no config.json (MemOS dump)")


def _document_format(document: Any) -> Format:
    """mem0 items carry ``hash``/``created_at`` at the top; MemOS items keep everything but
    ``id`` and ``memory`` in ``metadata``."""
    if isinstance(document, dict) and "results" in document:
        return "mem0"
    if isinstance(document, list):
        first = document[0] if document else {}
        if isinstance(first, dict) and (not first or _MEM0_KEYS & first.keys()):
            return "mem0"
    if guess_layout(document) is not None:
        return "memos"
    raise BundleError("unrecognised JSON: expected a mem0 get_all export or a MemOS textual_memory.json")
