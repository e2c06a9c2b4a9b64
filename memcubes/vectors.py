"""The ANN index: derived data over the vectors the store holds (``memcubes.vector_store``), one
Chroma collection per space, kept only for spaces above ``vector_index.ann_min_entries`` (smaller
ones are searched exactly from SQLite, faster than a Chroma query: see that setting).

One collection per space rather than one shared collection with a metadata filter: measured for
the architecture, a filtered query in a shared 100k collection took 47 ms against 2 ms unfiltered,
and forgetting a user becomes dropping one collection. Collection names are the space's opaque
key (Chroma restricts names; user ids must not leak into them).

Each cube has one entry for its whole text (id = the cube id) and, when it has several
sentences, one per sentence (``<cube id>#<n>``): a long message about many things is found by
the one sentence that matters, and rendered by it (see ``memcubes.retrieval``). Every entry
carries its cube id in its metadata, so a cube's entries are deleted together.

Chroma calls block, so every method here runs in a worker thread.
"""

from __future__ import annotations

import asyncio
import threading
from abc import ABC, abstractmethod
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np

from memcubes.config import VectorIndexSettings
from memcubes.embedder import Vectors
from memcubes.errors import IndexUnavailable
from memcubes.store import space_key
from memcubes.vector_store import WHOLE, VectorEntry


class VectorIndex(ABC):
    """Nearest-neighbour search over the cubes of a space."""

    @abstractmethod
    async def upsert(self, space: str, entries: Sequence[VectorEntry]) -> None: ...

    @abstractmethod
    async def delete_cubes(self, space: str, cube_ids: Sequence[str]) -> None:
        """Remove every entry (whole text and sentences) of these cubes."""

    @abstractmethod
    async def drop_space(self, space: str) -> None: ...

    @abstractmethod
    async def query(self, space: str, vector: Vectors, *, limit: int) -> list[tuple[str, float]]:
        """(cube id, cosine similarity) of whole-text entries, most similar first."""

    @abstractmethod
    async def entries(self, space: str) -> list[VectorEntry]:
        """Every entry of a space (what a data dir of the previous layout kept only here)."""

    @abstractmethod
    async def holds(self, space: str) -> bool:
        """Whether the index has a collection for the space."""

    @abstractmethod
    async def count(self, space: str) -> int:
        """Cubes (not entries) in the space's index."""

    def close(self) -> None:  # noqa: B027 - optional hook
        """Release clients; the default holds nothing."""


class ChromaIndex(VectorIndex):
    def __init__(self, settings: VectorIndexSettings, data_dir: Path) -> None:
        try:
            import chromadb
            from chromadb.config import Settings as ChromaSettings

            chroma_settings = ChromaSettings(anonymized_telemetry=False, allow_reset=False)
            if settings.host:
                self._client: Any = chromadb.HttpClient(
                    host=settings.host, port=settings.port, ssl=settings.ssl, settings=chroma_settings
                )
            else:
                self._client = chromadb.PersistentClient(path=str(data_dir / "chroma"), settings=chroma_settings)
        except Exception as exc:
            raise IndexUnavailable(f"cannot open Chroma: {exc}") from exc
        self._collections: dict[str, Any] = {}
        self._names: set[str] | None = None  # collections that exist, listed once (``holds``)
        self._lock = threading.Lock()

    def _collection(self, space: str, *, create: bool) -> Any | None:
        name = space_key(space)
        with self._lock:
            collection = self._collections.get(name)
        if collection is not None:
            return collection
        if create:
            collection = self._client.get_or_create_collection(
                name, embedding_function=None, configuration={"hnsw": {"space": "cosine"}}
            )
            if self._names is not None:
                self._names.add(name)
        else:
            try:
                collection = self._client.get_collection(name, embedding_function=None)
            except Exception:  # chromadb raises NotFoundError (or ValueError on older releases)
                return None
        with self._lock:
            self._collections[name] = collection
        return collection

    async def _call(self, fn: Any, *args: Any, **kwargs: Any) -> Any:
        try:
            return await asyncio.to_thread(fn, *args, **kwargs)
        except IndexUnavailable:
            raise
        except Exception as exc:
            raise IndexUnavailable(f"Chroma failed: {exc}") from exc

    async def upsert(self, space: str, entries: Sequence[VectorEntry]) -> None:
        if not entries:
            return

        def run() -> None:
            collection = self._collection(space, create=True)
            assert collection is not None
            # Chroma refuses a batch over its limit (5,461 entries embedded: SQLite's variable cap)
            size = self._client.get_max_batch_size()
            for start in range(0, len(entries), size):
                chunk = entries[start : start + size]
                collection.upsert(
                    ids=[entry.id for entry in chunk],
                    embeddings=np.stack([np.asarray(entry.vector, dtype=np.float32) for entry in chunk]),
                    metadatas=[{"cube": entry.cube_id, "sentence": entry.sentence} for entry in chunk],
                )

        await self._call(run)

    async def delete_cubes(self, space: str, cube_ids: Sequence[str]) -> None:
        if not cube_ids:
            return

        def run() -> None:
            collection = self._collection(space, create=False)
            if collection is not None:
                collection.delete(where={"cube": {"$in": list(cube_ids)}})

        await self._call(run)

    async def drop_space(self, space: str) -> None:
        name = space_key(space)

        def run() -> None:
            with self._lock:
                self._collections.pop(name, None)
                if self._names is not None:
                    self._names.discard(name)
            try:
                self._client.delete_collection(name)
            except Exception as exc:  # already gone is the desired end state
                if "does not exist" not in str(exc).lower() and "not found" not in str(exc).lower():
                    raise

        await self._call(run)

    async def query(self, space: str, vector: Vectors, *, limit: int) -> list[tuple[str, float]]:
        def run() -> list[tuple[str, float]]:
            collection = self._collection(space, create=False)
            if collection is None:
                return []
            result = collection.query(
                query_embeddings=np.asarray(vector, dtype=np.float32).reshape(1, -1),
                n_results=limit,
                where={"sentence": WHOLE},
                include=["distances"],
            )
            ids = result["ids"][0]
            distances = result["distances"][0]
            return [(cube_id, 1.0 - float(distance)) for cube_id, distance in zip(ids, distances, strict=True)]

        result: list[tuple[str, float]] = await self._call(run)
        return result

    async def entries(self, space: str, cube_ids: Sequence[str] | None = None) -> list[VectorEntry]:
        def run() -> list[VectorEntry]:
            collection = self._collection(space, create=False)
            if collection is None or cube_ids == []:
                return []
            where = None if cube_ids is None else {"cube": {"$in": list(cube_ids)}}
            got = collection.get(where=where, include=["embeddings", "metadatas"])
            return [
                VectorEntry(str(meta["cube"]), int(meta["sentence"]), np.asarray(vector, dtype=np.float32))
                for meta, vector in zip(got["metadatas"], got["embeddings"], strict=True)
            ]

        result: list[VectorEntry] = await self._call(run)
        return result

    async def holds(self, space: str) -> bool:
        def run() -> bool:
            if self._names is None:
                self._names = {getattr(c, "name", c) for c in self._client.list_collections()}
            return space_key(space) in self._names

        result: bool = await self._call(run)
        return result

    async def count(self, space: str) -> int:
        def run() -> int:
            collection = self._collection(space, create=False)
            if collection is None:
                return 0
            return len(collection.get(where={"sentence": WHOLE}, include=[])["ids"])

        result: int = await self._call(run)
        return result


INDEXES: dict[str, type[ChromaIndex]] = {"chroma": ChromaIndex}


def build_index(settings: VectorIndexSettings, data_dir: Path) -> VectorIndex:
    return INDEXES[settings.kind](settings, data_dir)
