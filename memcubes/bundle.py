"""Portable bundles: one space as a ``memcube-bundle`` zip, written and read back atomically.

A bundle carries every cube of a space in every state, the space's history and, when the index
has them, the vectors, so moving a space to another memproxy (or another system) loses nothing:
superseded facts keep their validity, deleted ones their history, and search ranks the same when
the embedder matches. The format is specified in ``docs/memcube-bundle.md``.

Reading validates everything (checksums, version, every line) before anything is written, so a
corrupt or tampered bundle changes nothing; ``memcubes.importing`` then writes the plan, all or
nothing.
"""

from __future__ import annotations

import asyncio
import functools
import hashlib
import io
import json
import logging
import zipfile
from collections import Counter
from collections.abc import Iterator, Mapping, Sequence, Set
from dataclasses import asdict, dataclass, field
from datetime import datetime
from importlib import metadata
from typing import IO, Any, Literal

import numpy as np
from pydantic import BaseModel, ConfigDict, Field, ValidationError

from memcubes import quarantine
from memcubes.archive import SafeArchive
from memcubes.cube import CubeState, MemCube, UTCDatetime, utcnow
from memcubes.embedder import Embedder, Vectors
from memcubes.errors import BundleError
from memcubes.ids import new_id
from memcubes.store import ChangeSet, CubeFilter, HistoryEvent, HistoryRecord, Store, content_hash
from memcubes.vector_store import VectorStore

log = logging.getLogger(__name__)

FORMAT = "memcube-bundle"
FORMAT_NAME = "memproxy"  # ``BundleContents.format`` of a memcube bundle
FORMAT_VERSION = 1
SUPPORTED_VERSIONS = frozenset({1})

MANIFEST = "manifest.json"
CUBES = "cubes.jsonl"
HISTORY = "history.jsonl"
EMBEDDINGS = "embeddings.npy"
EMBEDDING_IDS = "embedding_ids.json"

OnConflict = Literal["skip", "overwrite", "new-ids"]

# Decompressed bytes a bundle may hold: a zip of a few MB can inflate to gigabytes.
MAX_BUNDLE_BYTES = 8 * 1024**3
_PAGE = 1000


class EmbedderInfo(BaseModel):
    """The embedder whose vectors a bundle carries; vectors are reused only on an exact match."""

    model_config = ConfigDict(extra="allow")

    id: str = Field(min_length=1)
    dimension: int = Field(ge=1)


class MemberInfo(BaseModel):
    sha256: str = Field(pattern=r"^[0-9a-f]{64}$")
    bytes: int = Field(ge=0)


class Generator(BaseModel):
    model_config = ConfigDict(extra="allow")

    name: str
    version: str | None = None


class Counts(BaseModel):
    model_config = ConfigDict(extra="allow")

    cubes: int = Field(ge=0)
    history: int = Field(ge=0)
    embeddings: int = Field(0, ge=0)
    states: dict[str, int] = Field(default_factory=dict)


class Manifest(BaseModel):
    """``manifest.json``. Unknown keys are kept and ignored, so writers may add their own."""

    model_config = ConfigDict(extra="allow")

    format: Literal["memcube-bundle"]
    format_version: int
    space: str = Field(min_length=1)
    created_at: UTCDatetime
    generator: Generator | None = None
    embedder: EmbedderInfo | None = None
    counts: Counts
    members: dict[str, MemberInfo]


class HistoryLine(BaseModel):
    """One line of ``history.jsonl``: the cube as it was right after ``event``."""

    model_config = ConfigDict(extra="forbid")

    event: str = Field(min_length=1)
    at: UTCDatetime
    reason: str | None = None
    cube: MemCube


# Why a memory of an upload was not imported, said once per reason in the reply.
SKIP_REASONS = {
    "exists": "the target space holds a memory with that id: on_conflict=overwrite replaces it, new-ids copies it",
    "duplicate": "a memory of the space, or an earlier one of the upload, has the same text",
    "empty": "the memory has no text",
}
LISTED = 100  # skipped and quarantined memories a reply names one by one (it counts them all)


@dataclass(frozen=True)
class Skipped:
    """A memory of an upload left out: where it was (``index``: its position in the upload's
    list of memories, from 0), its id there, and why (a key of ``SKIP_REASONS``)."""

    index: int
    id: str
    reason: str


@dataclass(frozen=True)
class BundleContents:
    """A space's memories, validated: what a bundle holds and what every importer produces.
    ``positions``: each cube's index in the upload; ``skipped``: what the reader left out."""

    space: str
    cubes: list[MemCube]
    history: list[HistoryEvent]
    vectors: dict[str, Vectors] = field(default_factory=dict)
    embedder: EmbedderInfo | None = None
    format: str = FORMAT_NAME
    positions: dict[str, int] = field(default_factory=dict)
    skipped: list[Skipped] = field(default_factory=list)


@dataclass(frozen=True)
class ImportReport:
    """What an import did. ``vectors_embedded`` counts active cubes embedded afresh. The lists
    name at most ``LISTED`` memories each, in upload order; the counts count them all."""

    space: str
    format: str
    imported: int
    quarantined: int  # of those imported or overwritten: held back as instructions (memcubes.quarantine)
    overwritten: int
    skipped: int
    history: int
    vectors_reused: int
    vectors_embedded: int
    skipped_because: dict[str, int] = field(default_factory=dict)
    skipped_items: list[dict[str, Any]] = field(default_factory=list)
    quarantined_items: list[dict[str, Any]] = field(default_factory=list)
    reasons: dict[str, str] = field(default_factory=dict)

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


@dataclass(frozen=True)
class ImportPlan:
    changes: ChangeSet
    vectors: dict[str, Vectors]
    report: ImportReport


# -- writing ------------------------------------------------------------------------------------


def _generator() -> Generator:
    try:
        version: str | None = metadata.version("memproxy")
    except metadata.PackageNotFoundError:
        version = None
    return Generator(name="memproxy", version=version)


def _jsonl(documents: Sequence[str]) -> bytes:
    return "".join(f"{document}\n" for document in documents).encode()


def _history_line(event: HistoryEvent) -> str:
    cube = event.cube.model_dump(mode="json", exclude={"access"})
    line = {"event": event.event, "at": event.at.isoformat(), "reason": event.reason, "cube": cube}
    return json.dumps(line, ensure_ascii=False, separators=(",", ":"))


def _npy(matrix: Vectors) -> bytes:
    buffer = io.BytesIO()
    np.save(buffer, np.ascontiguousarray(matrix, dtype="<f4"), allow_pickle=False)
    return buffer.getvalue()


def write_bundle(target: IO[bytes], contents: BundleContents, *, created_at: datetime | None = None) -> Manifest:
    """Write ``contents`` as a bundle zip to ``target``; returns the manifest written."""
    members = {
        CUBES: _jsonl([cube.model_dump_json() for cube in contents.cubes]),
        HISTORY: _jsonl([_history_line(event) for event in contents.history]),
    }
    ids = [cube.id for cube in contents.cubes if cube.id in contents.vectors]
    if ids and contents.embedder is not None:
        members[EMBEDDINGS] = _npy(np.stack([contents.vectors[cube_id] for cube_id in ids]))
        members[EMBEDDING_IDS] = json.dumps(ids).encode()
    else:
        ids = []
    manifest = Manifest(
        format=FORMAT,
        format_version=FORMAT_VERSION,
        space=contents.space,
        created_at=created_at or utcnow(),
        generator=_generator(),
        embedder=contents.embedder,
        counts=Counts(
            cubes=len(contents.cubes),
            history=len(contents.history),
            embeddings=len(ids),
            states=dict(sorted(Counter(cube.state.value for cube in contents.cubes).items())),
        ),
        members={
            name: MemberInfo(sha256=hashlib.sha256(data).hexdigest(), bytes=len(data)) for name, data in members.items()
        },
    )
    with zipfile.ZipFile(target, "w", compression=zipfile.ZIP_DEFLATED) as archive:
        archive.writestr(MANIFEST, manifest.model_dump_json(indent=2, exclude_none=True))
        for name, data in members.items():
            archive.writestr(name, data)
    return manifest


# -- reading ------------------------------------------------------------------------------------


def _error_text(exc: ValidationError) -> str:
    first = exc.errors()[0]
    where = ".".join(str(part) for part in first["loc"])
    more = f" (and {exc.error_count() - 1} more)" if exc.error_count() > 1 else ""
    return f"{where}: {first['msg']}{more}" if where else f"{first['msg']}{more}"


def _lines(data: bytes, member: str) -> Iterator[tuple[int, Any]]:
    try:
        text = data.decode("utf-8")
    except UnicodeDecodeError as exc:
        raise BundleError(f"{member} is not UTF-8 text: {exc}") from None
    for number, line in enumerate(text.splitlines(), start=1):
        if not line.strip():
            continue
        try:
            yield number, json.loads(line)
        except json.JSONDecodeError as exc:
            raise BundleError(f"{member} line {number}: not valid JSON ({exc.msg})") from None


def _validated(model: type[BaseModel], value: Any, where: str) -> Any:
    try:  # the format requires every time to carry its UTC offset
        return model.model_validate(value, context={"require_offset": True})
    except ValidationError as exc:
        raise BundleError(f"{where}: not a valid {model.__name__}: {_error_text(exc)}") from None


def _manifest(archive: SafeArchive) -> Manifest:
    try:
        raw = json.loads(archive.read(MANIFEST))
    except KeyError:
        raise BundleError(f"not a memcube bundle: {MANIFEST} is missing") from None
    except (json.JSONDecodeError, UnicodeDecodeError) as exc:
        raise BundleError(f"{MANIFEST} is not valid JSON: {exc}") from None
    if not isinstance(raw, dict) or raw.get("format") != FORMAT:
        raise BundleError(f"{MANIFEST} does not name the {FORMAT!r} format")
    version = raw.get("format_version")
    if version not in SUPPORTED_VERSIONS:
        known = ", ".join(str(v) for v in sorted(SUPPORTED_VERSIONS))
        raise BundleError(f"unknown {FORMAT} format_version {version!r}; this memproxy reads {known}")
    manifest: Manifest = _validated(Manifest, raw, MANIFEST)
    return manifest


def _members(archive: SafeArchive, manifest: Manifest, *, max_bytes: int) -> dict[str, bytes]:
    """Every member listed in the manifest, checked against its size and sha256."""
    entries = [info for info in archive.infolist() if not info.is_dir()]
    present = {info.filename: info for info in entries}
    if len(present) != len(entries):
        raise BundleError("the archive holds two members with the same name")
    unlisted = sorted(set(present) - set(manifest.members) - {MANIFEST})
    if unlisted:
        raise BundleError(f"member {unlisted[0]} is not listed (with a checksum) in {MANIFEST}")
    for required in (CUBES, HISTORY):
        if required not in manifest.members:
            raise BundleError(f"required member {required} is not listed in {MANIFEST}")
    if (EMBEDDINGS in manifest.members) != (EMBEDDING_IDS in manifest.members):
        raise BundleError(f"{EMBEDDINGS} and {EMBEDDING_IDS} come together or not at all")
    if sum(info.bytes for info in manifest.members.values()) > max_bytes:
        raise BundleError(f"bundle members exceed {max_bytes} bytes once decompressed")
    data: dict[str, bytes] = {}
    for name, info in manifest.members.items():
        if name not in present:
            raise BundleError(f"member {name} is listed in {MANIFEST} but missing from the archive")
        content = archive.read(name)
        if len(content) != info.bytes:
            raise BundleError(f"member {name} has {len(content)} bytes, the manifest says {info.bytes}")
        if hashlib.sha256(content).hexdigest() != info.sha256:
            raise BundleError(f"checksum mismatch for {name}: the bundle is corrupt or was modified")
        data[name] = content
    return data


def _vectors(data: Mapping[str, bytes], manifest: Manifest, cube_ids: set[str]) -> dict[str, Vectors]:
    if EMBEDDINGS not in data:
        return {}
    if manifest.embedder is None:
        raise BundleError(f"{EMBEDDINGS} is present but the manifest names no embedder")
    try:
        matrix = np.load(io.BytesIO(data[EMBEDDINGS]), allow_pickle=False)
        ids = json.loads(data[EMBEDDING_IDS])
    except (ValueError, OSError) as exc:
        raise BundleError(f"{EMBEDDINGS} or {EMBEDDING_IDS} cannot be read: {exc}") from None
    if not isinstance(ids, list) or not all(isinstance(i, str) for i in ids) or len(set(ids)) != len(ids):
        raise BundleError(f"{EMBEDDING_IDS} must be a JSON array of distinct cube ids")
    expected = (len(ids), manifest.embedder.dimension)
    if matrix.dtype.kind != "f" or matrix.ndim != 2 or matrix.shape != expected:
        raise BundleError(f"{EMBEDDINGS} must be a float matrix of shape {expected}, got {matrix.dtype} {matrix.shape}")
    if not np.isfinite(matrix).all():
        raise BundleError(f"{EMBEDDINGS} holds non-finite values")
    unknown = next((i for i in ids if i not in cube_ids), None)
    if unknown is not None:
        raise BundleError(f"{EMBEDDING_IDS} names cube {unknown}, which is not in {CUBES}")
    if len(ids) != manifest.counts.embeddings:
        raise BundleError(f"{EMBEDDINGS} holds {len(ids)} vectors, the manifest counts {manifest.counts.embeddings}")
    rows = matrix.astype(np.float32)
    return {cube_id: rows[position] for position, cube_id in enumerate(ids)}


def read_bundle(data: bytes, *, max_bytes: int = MAX_BUNDLE_BYTES) -> BundleContents:
    """Parse and validate a whole bundle whose members inflate to at most ``max_bytes``; raises
    ``BundleError`` at the first problem."""
    with SafeArchive(data, max_bytes=max_bytes) as archive:
        manifest = _manifest(archive)
        members = _members(archive, manifest, max_bytes=max_bytes)
    cubes: list[MemCube] = []
    for number, value in _lines(members[CUBES], CUBES):
        cube: MemCube = _validated(MemCube, value, f"{CUBES} line {number}")
        if cube.space != manifest.space:
            raise BundleError(f"{CUBES} line {number}: cube of space {cube.space!r} in a bundle of {manifest.space!r}")
        cubes.append(cube)
    ids = {cube.id for cube in cubes}
    if len(ids) != len(cubes):
        raise BundleError(f"{CUBES} holds the same cube id twice")
    history: list[HistoryEvent] = []
    for number, value in _lines(members[HISTORY], HISTORY):
        line: HistoryLine = _validated(HistoryLine, value, f"{HISTORY} line {number}")
        if line.cube.id not in ids:
            raise BundleError(f"{HISTORY} line {number}: event of cube {line.cube.id}, which is not in {CUBES}")
        history.append(HistoryEvent(line.cube, line.event, line.reason, line.at))
    counts = manifest.counts
    if (len(cubes), len(history)) != (counts.cubes, counts.history):
        raise BundleError(
            f"the bundle holds {len(cubes)} cubes and {len(history)} history events, "
            f"the manifest counts {counts.cubes} and {counts.history}"
        )
    return BundleContents(
        space=manifest.space,
        cubes=cubes,
        history=history,
        vectors=_vectors(members, manifest, ids),
        embedder=manifest.embedder,
        positions={cube.id: position for position, cube in enumerate(cubes)},
    )


# -- import planning ------------------------------------------------------------------------------


def _rehomed(cube: MemCube, *, space: str, ids: Mapping[str, str]) -> MemCube:
    """``cube`` moved to ``space`` with its own id and links renamed by ``ids`` (links to cubes
    outside the bundle are kept as they are). The upload's cubes are the import's own and never
    changed in place, so a cube that stays as it is is not copied, and a copy shares the rest:
    deep copies were 60% of planning 20,000 memories (3.7 s of 6.1 s for 5,000)."""
    moved = {
        "space": space,
        "id": ids.get(cube.id, cube.id),
        "supersedes": ids.get(cube.supersedes, cube.supersedes) if cube.supersedes else None,
        "superseded_by": ids.get(cube.superseded_by, cube.superseded_by) if cube.superseded_by else None,
    }
    update = {key: value for key, value in moved.items() if getattr(cube, key) != value}
    return cube.model_copy(update=update) if update else cube


def _same(left: MemCube, right: MemCube) -> bool:
    return left.model_dump(exclude={"access"}) == right.model_dump(exclude={"access"})


def _upload_id(cube: MemCube) -> str:
    """The id a memory had in the upload: a foreign system's own, else the cube's."""
    return str((cube.source.model_extra or {}).get("origin_id", cube.id))


def plan_import(
    contents: BundleContents,
    *,
    space: str,
    on_conflict: OnConflict,
    existing: Mapping[str, MemCube],
    recorded: Mapping[str, Sequence[HistoryRecord]],
    reuse_vectors: bool,
    held: Set[str] = frozenset(),
) -> ImportPlan:
    """Decide every write of an import without touching the store.

    ``existing`` are stored cubes sharing an id with the bundle, ``recorded`` their history.
    skip keeps them; overwrite replaces them and adds the bundle's events they lack, plus an
    ``IMPORT`` event when the cube changed; new-ids gives every bundle cube a fresh id, links
    renamed to match. A cube whose id belongs to another space gets a fresh id whatever
    ``on_conflict`` says: an import never takes over another space's cube, and its answer (no
    error, no skip) is the same as for an id that does not exist, so it reveals nothing about
    spaces the importer may not see. A foreign memory (mem0, MemOS) whose text an active memory
    of the space holds (``held``: their content hashes) or an earlier one of the upload is a
    duplicate, left out; a memcube bundle is a space's faithful copy and keeps every cube."""
    foreign = {cube_id for cube_id, cube in existing.items() if cube.space != space}
    renamed = sorted(cube.id for cube in contents.cubes if on_conflict == "new-ids" or cube.id in foreign)
    ids = {cube_id: new_id() for cube_id in renamed}
    existing = {cube_id: cube for cube_id, cube in existing.items() if cube_id not in foreign}
    texts = set(held) if contents.format != FORMAT_NAME else None
    changes = ChangeSet()
    written: dict[str, MemCube] = {}
    skipped = list(contents.skipped)
    overwritten = 0
    for original in contents.cubes:
        cube = quarantine.screen_cube(_rehomed(original, space=space, ids=ids))
        position = contents.positions.get(original.id, -1)
        if cube.id in existing:
            if on_conflict == "skip":
                skipped.append(Skipped(position, _upload_id(original), "exists"))
                continue
            overwritten += 1
        elif texts is not None and cube.is_live():
            digest = content_hash(cube.content)
            if digest in texts:
                skipped.append(Skipped(position, _upload_id(original), "duplicate"))
                continue
            texts.add(digest)
        written[cube.id] = cube
        changes.cubes.append(cube)
    now = utcnow()
    for event in contents.history:
        snapshot = _rehomed(event.cube, space=space, ids=ids)
        if snapshot.id not in written:
            continue
        seen = recorded.get(snapshot.id, ())
        if any(
            r.event == event.event and r.at == event.at.isoformat() and r.cube.version == snapshot.version for r in seen
        ):
            continue
        changes.events.append(HistoryEvent(snapshot, event.event, event.reason, event.at))
    for cube_id, cube in written.items():
        if cube.state is CubeState.QUARANTINED and "quarantine" in cube.meta:
            changes.events.append(HistoryEvent(cube, "QUARANTINE", cube.meta["quarantine"], now))
        before = existing.get(cube_id)
        if before is not None and not _same(before, cube):
            changes.events.append(HistoryEvent(cube, "IMPORT", f"overwritten by a {contents.format} import", now))
    live = [cube for cube in written.values() if cube.is_live()]
    originals = {new: old for old, new in ids.items()}
    vectors: dict[str, Vectors] = {}
    if reuse_vectors:
        for cube in live:
            vector = contents.vectors.get(originals.get(cube.id, cube.id))
            if vector is not None:
                vectors[cube.id] = vector
    held_back = [cube for cube in written.values() if cube.state is CubeState.QUARANTINED]
    skipped.sort(key=lambda skip: skip.index)
    report = ImportReport(
        space=space,
        format=contents.format,
        imported=len(written) - overwritten,
        quarantined=len(held_back),
        overwritten=overwritten,
        skipped=len(skipped),
        history=len(changes.events),
        vectors_reused=len(vectors),
        vectors_embedded=len(live) - len(vectors),
        skipped_because=dict(Counter(skip.reason for skip in skipped)),
        skipped_items=[asdict(skip) for skip in skipped[:LISTED]],
        quarantined_items=[
            {
                "index": contents.positions.get(originals.get(cube.id, cube.id), -1),
                "id": cube.id,
                "reason": str(cube.meta.get("quarantine", "")),
            }
            for cube in held_back[:LISTED]
        ],
        reasons={reason: SKIP_REASONS[reason] for reason in sorted({skip.reason for skip in skipped})},
    )
    return ImportPlan(changes=changes, vectors=vectors, report=report)


# -- against a running memory OS --------------------------------------------------------------------


def _space_cubes(store: Store, space: str) -> list[MemCube]:
    """Every cube of ``space`` in every state, oldest first."""
    states = tuple(state.value for state in CubeState)
    cubes: list[MemCube] = []
    cursor: str | None = None
    while page := store.list_cubes(CubeFilter(space=space, states=states, cursor=cursor, limit=_PAGE)):
        cubes.extend(page)
        cursor = page[-1].id
    return cubes[::-1]


async def export_space(
    *, store: Store, vectors: VectorStore, embedder: Embedder, space: str, target: IO[bytes]
) -> Manifest:
    """Write ``space`` to ``target`` as a bundle. History is read before the cubes so that every
    event's cube is there even if a write lands in between (events of a cube purged meanwhile
    are left out). The vectors are the whole-text ones the store holds."""
    records = await asyncio.to_thread(store.space_history, space)
    cubes = await asyncio.to_thread(_space_cubes, store, space)
    ids = {cube.id for cube in cubes}
    history = [
        HistoryEvent(r.cube, r.event, r.reason, datetime.fromisoformat(r.at)) for r in records if r.cube.id in ids
    ]
    whole = await asyncio.to_thread(vectors.whole, space, [cube.id for cube in cubes if cube.is_live()])
    contents = BundleContents(
        space=space,
        cubes=cubes,
        history=history,
        vectors=whole,
        embedder=EmbedderInfo(id=embedder.name, dimension=embedder.dimension),
    )
    return await asyncio.to_thread(write_bundle, target, contents)


def _embedder_matches(bundled: EmbedderInfo | None, embedder: Embedder) -> bool:
    return bundled is not None and (bundled.id, bundled.dimension) == (embedder.name, embedder.dimension)


async def plan_against(
    *, store: Store, embedder: Embedder, contents: BundleContents, space: str | None, on_conflict: OnConflict
) -> ImportPlan:
    """Plan writing validated ``contents`` into ``space`` (default: the bundle's own) against
    what the store holds now, reusing the bundle's vectors when the embedder matches. Planning
    20,000 memories takes seconds of CPU: it runs in a worker thread, off the event loop."""
    target = space or contents.space
    existing: dict[str, MemCube] = {}
    recorded: dict[str, list[HistoryRecord]] = {}
    if on_conflict != "new-ids":
        existing = await asyncio.to_thread(store.get_many, [cube.id for cube in contents.cubes])
    if on_conflict == "overwrite":
        recorded = {cube_id: await asyncio.to_thread(store.history, cube_id) for cube_id in existing}
    held = await asyncio.to_thread(store.content_hashes, target) if contents.format != FORMAT_NAME else set()
    return await asyncio.to_thread(
        functools.partial(
            plan_import,
            contents,
            space=target,
            on_conflict=on_conflict,
            existing=existing,
            recorded=recorded,
            reuse_vectors=_embedder_matches(contents.embedder, embedder),
            held=held,
        )
    )
