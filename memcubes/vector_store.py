"""Vectors in the system of record: each cube's entries (its whole text and, when it has several
sentences, each sentence) stored with it in SQLite, compactly, written in the same transaction
as the cube.

The ``vectors`` table (created by ``memcubes.store``, whose transactions write it) is keyed by
(space key, cube id, sentence) and stored without row ids, so a space's vectors are one
contiguous range of the table's b-tree: a space of 1,000 memories is read, decoded and searched
exactly in a few milliseconds, which made a per-space ANN index (one embedded Chroma collection
per space, the previous layout) slower than no index at all for all but large spaces (see
``VectorIndexSettings.ann_min_entries``).

Encodings (``vector_index.precision``), told apart by length when read, so a data dir may hold
several: ``float16`` (default, 768 bytes for MiniLM's 384 dimensions); ``int8``: a float32 scale
then one signed byte per dimension (388 bytes); ``float32`` (1,536 bytes). Measured on the LOCOMO
dev split (``memproxy eval locomo``, evidence recall within 1,000 tokens, memproxy / memproxy-raw):
float32 0.885 / 0.889, float16 0.884 / 0.888, int8 0.880 / 0.888 (main before this change, vectors
in Chroma: 0.888 / 0.893); int8 costs 0.005, float16 0.001.

Methods are blocking (SQLite); callers run them in worker threads.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np
import numpy.typing as npt

from memcubes.config import Precision
from memcubes.cube import MemCube
from memcubes.embedder import Embedder, Vectors
from memcubes.sentences import sentence_texts
from memcubes.store import ChangeSet, Store, space_key

WHOLE = -1  # the sentence number of a cube's whole-text entry
_PAGE = 500  # ids per IN (...) list
_SCALE = np.dtype("<f4")


@dataclass(frozen=True)
class VectorEntry:
    cube_id: str
    sentence: int
    vector: Vectors

    @property
    def id(self) -> str:
        return self.cube_id if self.sentence == WHOLE else f"{self.cube_id}#{self.sentence}"


@dataclass(frozen=True)
class SpaceMatrix:
    """A space's entries as read: row ``i`` is entry (``cube_ids[i]``, ``sentences[i]``)."""

    cube_ids: list[str]
    sentences: npt.NDArray[np.int64]
    matrix: Vectors

    def entries(self) -> list[VectorEntry]:
        return [
            VectorEntry(cube_id, int(sentence), row)
            for cube_id, sentence, row in zip(self.cube_ids, self.sentences, self.matrix, strict=True)
        ]


def encode(vector: Vectors, precision: Precision) -> bytes:
    """One vector as stored. int8 is symmetric with a per-vector scale (its largest component
    maps to 127): unit vectors of 384 dimensions keep a cosine of ~0.9999 to the original."""
    vector = np.asarray(vector, dtype=np.float32)
    if precision == "float32":
        return bytes(vector.astype("<f4").tobytes())
    if precision == "float16":
        return bytes(vector.astype("<f2").tobytes())
    peak = float(np.max(np.abs(vector))) if vector.size else 0.0
    scale = peak / 127.0 if peak > 0 else 1.0
    quantised = np.clip(np.rint(vector / scale), -127, 127).astype(np.int8)
    return bytes(np.array([scale], dtype=_SCALE).tobytes() + quantised.tobytes())


def decode(blobs: Sequence[bytes], dimension: int) -> Vectors:
    """Stored vectors back to a float32 matrix, each row in the encoding its length says."""
    lengths = set(map(len, blobs))
    if len(lengths) == 1:  # the usual case: one encoding, decoded in one go
        return _decoded(b"".join(blobs), lengths.pop(), dimension)
    out = np.empty((len(blobs), dimension), dtype=np.float32)
    for length in lengths:
        rows = [row for row, blob in enumerate(blobs) if len(blob) == length]
        out[rows] = _decoded(b"".join(blobs[row] for row in rows), length, dimension)
    return out


def _decoded(joined: bytes, length: int, dimension: int) -> Vectors:
    if length == 4 * dimension:
        return np.frombuffer(joined, dtype="<f4").reshape(-1, dimension).astype(np.float32)
    if length == 2 * dimension:
        return np.frombuffer(joined, dtype="<f2").reshape(-1, dimension).astype(np.float32)
    if length == dimension + _SCALE.itemsize:
        raw = np.frombuffer(joined, dtype=np.uint8).reshape(-1, length)
        scales = raw[:, : _SCALE.itemsize].copy().view(_SCALE)
        return raw[:, _SCALE.itemsize :].view(np.int8).astype(np.float32) * scales
    raise ValueError(f"a stored vector of {length} bytes does not have {dimension} dimensions")


async def cube_entries(
    cubes: Sequence[MemCube], *, embedder: Embedder, known: Mapping[str, Vectors], urgent: bool = False
) -> list[VectorEntry]:
    """Whole-text and sentence entries of cubes, embedding in one batch what is not ``known``."""
    texts: list[str] = []
    slots: list[tuple[str, int]] = []
    for cube in cubes:
        if cube.id not in known:
            texts.append(cube.content)
            slots.append((cube.id, WHOLE))
        for number, sentence in enumerate(sentence_texts(cube.content)):
            texts.append(sentence)
            slots.append((cube.id, number))
    vectors = await embedder.embed(texts, urgent=urgent) if texts else np.zeros((0, 0), dtype=np.float32)
    entries = [VectorEntry(cube.id, WHOLE, known[cube.id]) for cube in cubes if cube.id in known]
    entries += [VectorEntry(cube_id, number, vector) for (cube_id, number), vector in zip(slots, vectors, strict=True)]
    return entries


async def embed_texts(
    embedder: Embedder, texts: Sequence[str], *, urgent: bool = False
) -> tuple[Vectors, list[Vectors]]:
    """Each text's vector and those of its sentences (none for a text of one sentence), in one
    embedder call: what a cube of that text stores."""
    parts = [sentence_texts(text) for text in texts]
    flat = [*texts, *(sentence for sentences in parts for sentence in sentences)]
    vectors = await embedder.embed(flat, urgent=urgent) if flat else np.zeros((0, 0), dtype=np.float32)
    sentence_vectors: list[Vectors] = []
    start = len(texts)
    for sentences in parts:
        sentence_vectors.append(vectors[start : start + len(sentences)])
        start += len(sentences)
    return vectors[: len(texts)], sentence_vectors


def text_entries(cube_id: str, whole: Vectors, sentences: Vectors) -> list[VectorEntry]:
    """A cube's entries from ``embed_texts``' vectors of its text."""
    return [VectorEntry(cube_id, WHOLE, whole), *(VectorEntry(cube_id, n, v) for n, v in enumerate(sentences))]


class VectorStore:
    """Reads and writes of the ``vectors`` table for a store, in one encoding."""

    def __init__(self, store: Store, *, dimension: int, precision: Precision = "float16") -> None:
        self._store = store
        self.dimension = dimension
        self.precision: Precision = precision

    def encoded(self, entries: Sequence[VectorEntry]) -> dict[str, list[tuple[int, bytes]]]:
        """Entries by cube, encoded: what ``ChangeSet.vectors`` carries into the cube's transaction."""
        by_cube: dict[str, list[tuple[int, bytes]]] = {}
        for entry in entries:
            by_cube.setdefault(entry.cube_id, []).append((entry.sentence, encode(entry.vector, self.precision)))
        return by_cube

    async def attach(
        self, changes: ChangeSet, known: Mapping[str, Vectors], *, embedder: Embedder, urgent: bool = False
    ) -> None:
        """Give the live cubes of ``changes`` (all with new text: an import) their entries, embedding
        what is not ``known`` (whole-text vectors), so the store writes them with the cubes."""
        cubes = [cube for cube in changes.cubes if cube.is_live()]
        if cubes:
            entries = await cube_entries(cubes, embedder=embedder, known=known, urgent=urgent)
            changes.vectors.update(self.encoded(entries))

    def put(self, space: str, entries: Sequence[VectorEntry]) -> None:
        """Replace the entries of these cubes (of live cubes only: one deleted meanwhile keeps none)."""
        by_cube = self.encoded(entries)
        key = space_key(space)
        with self._store.transaction() as conn:
            for cube_id, rows in by_cube.items():
                conn.execute("DELETE FROM vectors WHERE space_key = ? AND cube_id = ?", (key, cube_id))
                live = conn.execute(
                    "SELECT 1 FROM cubes WHERE id = ? AND space = ? AND state = 'active'", (cube_id, space)
                ).fetchone()
                if live is not None:
                    conn.executemany(
                        "INSERT INTO vectors (space_key, cube_id, sentence, vec) VALUES (?, ?, ?, ?)",
                        [(key, cube_id, sentence, blob) for sentence, blob in rows],
                    )

    def matrix(self, space: str, cube_ids: Sequence[str] | None = None) -> SpaceMatrix:
        """Every entry of a space (one range read), or those of ``cube_ids``."""
        key = space_key(space)
        if cube_ids is None:
            rows = self._store.read("SELECT cube_id, sentence, vec FROM vectors WHERE space_key = ?", (key,))
        else:
            rows = []
            ids = list(dict.fromkeys(cube_ids))
            for start in range(0, len(ids), _PAGE):
                chunk = ids[start : start + _PAGE]
                rows += self._store.read(
                    "SELECT cube_id, sentence, vec FROM vectors WHERE space_key = ? "
                    f"AND cube_id IN ({','.join('?' * len(chunk))})",
                    (key, *chunk),
                )
        try:
            matrix = decode([row[2] for row in rows], self.dimension)
        except ValueError:
            # Vectors of another embedder (another dimension) cannot be compared with this one's:
            # left out until ``memproxy reindex`` embeds them again (``memory_os`` warns at start).
            sizes = {4 * self.dimension, 2 * self.dimension, self.dimension + _SCALE.itemsize}
            rows = [row for row in rows if len(row[2]) in sizes]
            matrix = decode([row[2] for row in rows], self.dimension)
        return SpaceMatrix(
            cube_ids=[row[0] for row in rows],
            sentences=np.fromiter((row[1] for row in rows), dtype=np.int64, count=len(rows)),
            matrix=matrix,
        )

    def whole(self, space: str, cube_ids: Sequence[str]) -> dict[str, Vectors]:
        """Whole-text vectors of these cubes (those that have one)."""
        read = self.matrix(space, cube_ids)
        return {
            cube_id: read.matrix[row]
            for row, (cube_id, sentence) in enumerate(zip(read.cube_ids, read.sentences, strict=True))
            if sentence == WHOLE
        }

    def count(self, space: str) -> int:
        """Entries (whole texts and sentences) of the space."""
        rows = self._store.read("SELECT count(*) FROM vectors WHERE space_key = ?", (space_key(space),))
        return int(rows[0][0])

    def missing(self, space: str, cube_ids: Sequence[str] | None = None) -> list[str]:
        """Live cubes of the space (of ``cube_ids``, when given) that have no entries."""
        sql = (
            "SELECT id FROM cubes WHERE space = ? AND state = 'active' AND NOT EXISTS "
            "(SELECT 1 FROM vectors v WHERE v.space_key = ? AND v.cube_id = cubes.id)"
        )
        params: list[Any] = [space, space_key(space)]
        if cube_ids is not None:
            sql += f" AND {self._store.engine.sql.members('id')}"
            params.append(self._store.engine.sql.listed(cube_ids))
        return [row[0] for row in self._store.read(sql, params)]
