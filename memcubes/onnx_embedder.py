"""The default embedder: a sentence-transformers model run by ONNX Runtime.

Embedding the query is the largest cost of a memory lookup. Measured here (2 cores) for one
short query with all-MiniLM-L6-v2: 6.0 ms through sentence-transformers/torch, 2.4 ms through
ONNX Runtime with spinning threads (~3.9 ms without, which is how it runs: see ``_Runtime``), same
vectors (max difference 2e-7). The graph (transformer, mean pooling, normalisation) is exported
from the local model once (about a second, no download), checked against torch on a few inputs,
and cached under ``environment.cache_dir()`` with a small description. Later starts load only the
ONNX file and the fast tokenizer: no torch, so a proxy starts in a fraction of the time and holds
a fraction of the memory. If export or the check fails, the torch embedder is used.
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
from memcubes.embedder import BatchedEmbedder, SentenceTransformerEmbedder, Vectors, model_name, model_path
from memcubes.environment import apply_offline_defaults

log = logging.getLogger(__name__)

_CHECK_TEXTS = ["hi", "I moved to Porto last year and I love it there.", "Ünïcödé 日本語 " * 40]
_INPUTS = ("input_ids", "attention_mask", "token_type_ids")
_IDENTITY_FILES = (
    "config.json",
    "tokenizer.json",
    "modules.json",
    "sentence_bert_config.json",
    "1_Pooling/config.json",
)


def _identity(folder: Path) -> str:
    """A digest of what determines the vectors: configs, tokenizer, and the weights (size plus
    their first megabyte, which holds the safetensors header with every tensor's offsets)."""
    digest = hashlib.sha256()
    for name in _IDENTITY_FILES:
        path = folder / name
        if path.exists():
            digest.update(name.encode() + path.read_bytes())
    for weights in sorted(folder.glob("*.safetensors")) + sorted(folder.glob("*.bin")):
        with weights.open("rb") as handle:
            digest.update(weights.name.encode() + str(weights.stat().st_size).encode() + handle.read(1 << 20))
    return digest.hexdigest()[:20]


def _export(settings: EmbedderSettings, onnx_path: Path, description: Path) -> None:
    """Export with torch, check against sentence-transformers, then write the description (its
    presence says the export is good)."""
    import torch

    reference = SentenceTransformerEmbedder(settings)
    try:
        pooling = getattr(reference._model[1], "get_pooling_mode_str", lambda: "mean")()
        if pooling != "mean":
            raise ValueError(f"only mean pooling is exported, the model uses {pooling}")
        transformer: Any = reference._model[0].auto_model
        tokenizer = reference._model.tokenizer

        class MeanPooled(torch.nn.Module):
            def __init__(self) -> None:
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
        partial = onnx_path.with_suffix(".tmp")
        with warnings.catch_warnings():  # tracer warnings about shapes held constant: checked below
            warnings.simplefilter("ignore")
            torch.onnx.export(
                MeanPooled().eval(),
                tuple(sample[name] for name in _INPUTS),
                str(partial),
                input_names=list(_INPUTS),
                output_names=["embedding"],
                dynamic_axes={**{n: {0: "batch", 1: "tokens"} for n in _INPUTS}, "embedding": {0: "batch"}},
                opset_version=17,
                dynamo=False,
            )
        partial.replace(onnx_path)
        max_length = int(reference._model.max_seq_length or 256)
        meta = {"name": reference.name, "dimension": reference.dimension, "max_length": max_length}
        exported = _Runtime(onnx_path, Path(model_path(settings)), max_length=max_length)
        difference = float(np.abs(exported.encode(_CHECK_TEXTS) - reference._encode(_CHECK_TEXTS)).max())
        if difference > 1e-4:
            onnx_path.unlink(missing_ok=True)
            raise ValueError(f"exported model disagrees with torch (max difference {difference:.2e})")
        description.write_text(json.dumps(meta))
    finally:
        reference.close()


class _Runtime:
    """ONNX Runtime session plus the fast tokenizer: all that encoding needs."""

    def __init__(self, onnx_path: Path, folder: Path, *, max_length: int) -> None:
        import onnxruntime
        from tokenizers import Tokenizer

        options = onnxruntime.SessionOptions()
        options.graph_optimization_level = onnxruntime.GraphOptimizationLevel.ORT_ENABLE_ALL
        options.log_severity_level = 3
        # Idle threads sleep instead of spinning: spinning saves ~1.5 ms on a lone query, but it
        # burns the cores a local model's prefill and the rest of the proxy need (measured: time
        # to first token with KV reuse 97.6 -> 81.3 ms at 2048 tokens; search p50 10.4 -> 13.2 ms).
        options.add_session_config_entry("session.intra_op.allow_spinning", "0")
        self._session = onnxruntime.InferenceSession(str(onnx_path), options, providers=["CPUExecutionProvider"])
        self._tokenizer = Tokenizer.from_file(str(folder / "tokenizer.json"))
        self._tokenizer.enable_truncation(max_length=max_length)
        self._tokenizer.enable_padding()

    def encode(self, texts: list[str]) -> Vectors:
        encodings = self._tokenizer.encode_batch(texts)
        feeds = {
            "input_ids": np.array([e.ids for e in encodings], dtype=np.int64),
            "attention_mask": np.array([e.attention_mask for e in encodings], dtype=np.int64),
            "token_type_ids": np.array([e.type_ids for e in encodings], dtype=np.int64),
        }
        (vectors,) = self._session.run(["embedding"], feeds)
        return np.asarray(vectors, dtype=np.float32)


class OnnxEmbedder(BatchedEmbedder):
    """Same model, same vectors as ``SentenceTransformerEmbedder``; ONNX Runtime does the math."""

    def __init__(self, settings: EmbedderSettings, *, cache_dir: Path) -> None:
        apply_offline_defaults()
        folder = Path(model_path(settings))
        if not (folder / "tokenizer.json").is_file():
            raise ValueError(f"{folder} is not a local model folder with a fast tokenizer")
        onnx_path = cache_dir / f"embedder-{_identity(folder)}.onnx"
        description = onnx_path.with_suffix(".json")
        if not description.exists():
            cache_dir.mkdir(parents=True, exist_ok=True)
            _export(settings, onnx_path, description)
        meta = json.loads(description.read_text())
        self._runtime = _Runtime(onnx_path, folder, max_length=int(meta["max_length"]))
        self.name = model_name(settings)
        self.dimension = int(meta["dimension"])
        self.backend = "onnx"
        super().__init__(settings)

    def _encode(self, texts: list[str]) -> Vectors:
        return self._runtime.encode(texts)
