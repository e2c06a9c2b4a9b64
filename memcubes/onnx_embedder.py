"""The default embedder: a sentence-transformers model run by ONNX Runtime.

Embedding the query is the largest cost of a memory lookup. Measured here (2 cores) for one
short query with all-MiniLM-L6-v2: 6.0 ms through sentence-transformers/torch, 2.4 ms through
ONNX Runtime, same vectors (max difference 2e-7). The ONNX graph is exported from the local
sentence-transformers model on first use (about a second, no download), checked against torch on
a few inputs, and cached next to the data; if export or the check fails, the torch embedder is
used instead.
"""

from __future__ import annotations

import hashlib
import json
import logging
import warnings
from pathlib import Path
from typing import Any

import numpy as np

from memcubes.config import EmbedderSettings
from memcubes.embedder import SentenceTransformerEmbedder, Vectors

log = logging.getLogger(__name__)

_CHECK_TEXTS = ["hi", "I moved to Porto last year and I love it there.", "Ünïcödé 日本語 " * 40]
_INPUTS = ("input_ids", "attention_mask", "token_type_ids")


def _export(model: Any, tokenizer: Any, path: Path) -> None:
    import torch

    class MeanPooled(torch.nn.Module):
        """Transformer + mean pooling + L2 normalisation, as the sentence-transformers pipeline."""

        def __init__(self, transformer: Any) -> None:
            super().__init__()
            self.transformer = transformer

        def forward(self, input_ids: Any, attention_mask: Any, token_type_ids: Any) -> Any:
            hidden = self.transformer(
                input_ids=input_ids, attention_mask=attention_mask, token_type_ids=token_type_ids
            ).last_hidden_state
            mask = attention_mask.unsqueeze(-1).to(hidden.dtype)
            pooled = (hidden * mask).sum(1) / mask.sum(1).clamp(min=1e-9)
            return torch.nn.functional.normalize(pooled, dim=-1)

    sample = tokenizer(["a sample", "another, longer sample sentence"], return_tensors="pt", padding=True)
    dynamic = {name: {0: "batch", 1: "tokens"} for name in _INPUTS}
    tmp = path.with_suffix(".tmp")
    with warnings.catch_warnings():  # tracer warnings about shapes held constant: checked after export
        warnings.simplefilter("ignore")
        torch.onnx.export(
            MeanPooled(model).eval(),
            tuple(sample[name] for name in _INPUTS),
            str(tmp),
            input_names=list(_INPUTS),
            output_names=["embedding"],
            dynamic_axes={**dynamic, "embedding": {0: "batch"}},
            opset_version=17,
            dynamo=False,
        )
    tmp.replace(path)


class OnnxEmbedder(SentenceTransformerEmbedder):
    """Same model, same vectors as ``SentenceTransformerEmbedder``; ONNX Runtime does the math."""

    def __init__(self, settings: EmbedderSettings, *, cache_dir: Path) -> None:
        super().__init__(settings)  # loads the torch model: needed to export and to check
        import onnxruntime
        import torch

        transformer: Any = self._model[0].auto_model
        tokenizer = self._model.tokenizer
        self._max_length = int(self._model.max_seq_length or 256)
        pooling = getattr(self._model[1], "get_pooling_mode_str", lambda: "mean")()
        if pooling != "mean":
            raise ValueError(f"only mean pooling is exported, the model uses {pooling}")
        identity = json.dumps([self.name, transformer.config.to_dict(), torch.__version__], sort_keys=True, default=str)
        path = cache_dir / f"embedder-{hashlib.sha256(identity.encode()).hexdigest()[:16]}.onnx"
        if not path.exists():
            cache_dir.mkdir(parents=True, exist_ok=True)
            _export(transformer, tokenizer, path)
        options = onnxruntime.SessionOptions()
        options.graph_optimization_level = onnxruntime.GraphOptimizationLevel.ORT_ENABLE_ALL
        options.log_severity_level = 3
        self._session = onnxruntime.InferenceSession(str(path), options, providers=["CPUExecutionProvider"])
        self._tokenizer = tokenizer
        expected = super()._encode(_CHECK_TEXTS)
        difference = float(np.abs(self._encode(_CHECK_TEXTS) - expected).max())
        if difference > 1e-4:
            path.unlink(missing_ok=True)
            raise ValueError(f"exported model disagrees with torch (max difference {difference:.2e})")
        self.backend = "onnx"

    def _encode(self, texts: list[str]) -> Vectors:
        batch = self._tokenizer(texts, return_tensors="np", padding=True, truncation=True, max_length=self._max_length)
        feeds = {name: batch[name].astype(np.int64) for name in _INPUTS}
        (vectors,) = self._session.run(["embedding"], feeds)
        return np.asarray(vectors, dtype=np.float32)
