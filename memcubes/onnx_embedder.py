"""The default embedder: a sentence-transformers model run by ONNX Runtime, int8 by default.

Embedding is the largest CPU cost of memory: every request embeds its query, every write-back
its new memories. Measured here (2 cores, one ~25-token query, all-MiniLM-L6-v2): 6.0 ms through
sentence-transformers/torch; through ONNX Runtime 6.0 ms on one thread, 4.9 ms on two (7.6 ms of
CPU); with int8 weights (dynamic quantisation, per channel) 1.6-2.1 ms on one thread, and a batch
of 16 takes 25 ms of CPU instead of 74. Int8 vectors keep cosine 0.98-0.99 to fp32 for sentences
(mean 0.993 over 400 LOCOMO turns, 91% of top-10 neighbours shared; 0.97 for a bare "ok") and the
same LOCOMO retrieval scores; ``precision: fp32`` keeps the exact model.

The graph (transformer, mean pooling, normalisation) is exported from the local model once (about
a second, no download), checked against torch on a few inputs, quantised and checked again, and
cached under ``environment.cache_dir()`` with a small description. Later starts load only the
ONNX file and the fast tokenizer: no torch, so a proxy starts in a fraction of the time and holds
a fraction of the memory. If export or a check fails, the torch embedder is used.
"""

from __future__ import annotations

import contextlib
import hashlib
import json
import logging
import os
import warnings
from collections.abc import Iterator
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np

from memcubes.config import EmbedderSettings
from memcubes.embedder import BatchedEmbedder, SentenceTransformerEmbedder, Vectors, model_name, model_path
from memcubes.environment import apply_offline_defaults

if TYPE_CHECKING:
    from tokenizers import Encoding

log = logging.getLogger(__name__)

_CHECK_TEXTS = ["hi", "I moved to Porto last year and I love it there.", "Ünïcödé 日本語 " * 40]
# Least cosine between an int8 vector and the fp32 one for the same text (measured: 0.97-0.99).
_INT8_MIN_COSINE = 0.95
_INPUTS = ("input_ids", "attention_mask", "token_type_ids")
_GROUP_SLACK = 1.15  # texts up to this many times longer than a group's shortest share its forward pass
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
    """ONNX Runtime session plus the fast tokenizer: all that encoding needs.

    A batch is run in groups of texts of about the same length (``_GROUP_SLACK``): padded to its
    longest, a batch of write-back texts (a fact, the message it came from, that message's
    sentences: 7 to 40 tokens) spent 2.2 ms of CPU per text, in such groups 1.2-1.4 ms
    (``python -m bench overhead``'s texts, int8). The int8 model quantises activations over the
    whole batch, padding included, so a text's vector also depends less on its neighbours."""

    def __init__(self, onnx_path: Path, folder: Path, *, max_length: int, threads: int = 1) -> None:
        import onnxruntime
        from tokenizers import Tokenizer

        options = onnxruntime.SessionOptions()
        options.graph_optimization_level = onnxruntime.GraphOptimizationLevel.ORT_ENABLE_ALL
        options.log_severity_level = 3
        options.intra_op_num_threads = threads
        # With more than one thread, idle ones sleep instead of spinning: spinning saves ~1.5 ms on
        # a lone query but burns the cores a local model's prefill and the rest of the proxy need.
        options.add_session_config_entry("session.intra_op.allow_spinning", "0")
        self._session = onnxruntime.InferenceSession(str(onnx_path), options, providers=["CPUExecutionProvider"])
        self._tokenizer = Tokenizer.from_file(str(folder / "tokenizer.json"))
        self._tokenizer.enable_truncation(max_length=max_length)
        self._tokenizer.no_padding()

    def encode(self, texts: list[str]) -> Vectors:
        encodings = self._tokenizer.encode_batch(texts)
        order = sorted(range(len(texts)), key=lambda i: len(encodings[i].ids))
        vectors: Vectors | None = None
        start = 0
        while start < len(order):
            shortest = len(encodings[order[start]].ids)
            end = start + 1
            while end < len(order) and len(encodings[order[end]].ids) <= shortest * _GROUP_SLACK:
                end += 1
            group = order[start:end]
            encoded = self._run([encodings[i] for i in group])
            if vectors is None:
                vectors = np.empty((len(texts), encoded.shape[1]), dtype=np.float32)
            vectors[group] = encoded
            start = end
        return vectors if vectors is not None else np.zeros((0, 0), dtype=np.float32)

    def _run(self, encodings: list[Encoding]) -> Vectors:
        """One forward pass over texts padded (with zeros, masked) to the longest of them."""
        width = max(len(e.ids) for e in encodings)
        feeds = {name: np.zeros((len(encodings), width), dtype=np.int64) for name in _INPUTS}
        for row, e in enumerate(encodings):
            count = len(e.ids)
            feeds["input_ids"][row, :count] = e.ids
            feeds["attention_mask"][row, :count] = e.attention_mask
            feeds["token_type_ids"][row, :count] = e.type_ids
        (vectors,) = self._session.run(["embedding"], feeds)
        return np.asarray(vectors, dtype=np.float32)


def _quantize(fp32_path: Path, max_length: int, folder: Path) -> Path:
    """The int8 twin of an exported model (dynamic quantisation of the weights, per channel: the
    per-tensor variant measured only 0.95 mean cosine), made once and checked against fp32."""
    from onnxruntime.quantization import QuantType, quantize_dynamic

    path = fp32_path.with_name(fp32_path.stem + "-int8.onnx")
    if path.exists():
        return path
    partial = path.with_suffix(f".{os.getpid()}.tmp")  # several proxies may start at once
    with _quiet_root_logger():  # it advises offline pre-processing on every call: not needed here
        quantize_dynamic(fp32_path, partial, weight_type=QuantType.QInt8, per_channel=True)
    exact = _Runtime(fp32_path, folder, max_length=max_length).encode(_CHECK_TEXTS)
    cosine = float((_Runtime(partial, folder, max_length=max_length).encode(_CHECK_TEXTS) * exact).sum(1).min())
    if cosine < _INT8_MIN_COSINE:
        partial.unlink(missing_ok=True)
        raise ValueError(f"int8 model disagrees with fp32 (cosine {cosine:.3f})")
    partial.replace(path)
    return path


def _not_preprocessing_advice(record: logging.LogRecord) -> bool:
    return not record.getMessage().startswith("Please consider to run pre-processing")


@contextlib.contextmanager
def _quiet_root_logger() -> Iterator[None]:
    """Drop the quantiser's advice (logged on the root logger), nothing else."""
    root = logging.getLogger()
    root.addFilter(_not_preprocessing_advice)
    try:
        yield
    finally:
        root.removeFilter(_not_preprocessing_advice)


class OnnxEmbedder(BatchedEmbedder):
    """Same model as ``SentenceTransformerEmbedder``; ONNX Runtime does the math. With fp32 the
    vectors are the same; with int8 they differ slightly, so the name says so (a bundle's vectors
    are reused only by an embedder of the same name)."""

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
        max_length = int(meta["max_length"])
        self.name = model_name(settings)
        if settings.precision == "int8":
            try:
                onnx_path = _quantize(onnx_path, max_length, folder)
                self.name += "@int8"
            except Exception as exc:
                log.warning("int8 embedder unavailable (%s); using fp32", exc)
        self._runtime = _Runtime(onnx_path, folder, max_length=max_length, threads=settings.threads)
        self.dimension = int(meta["dimension"])
        self.backend = "onnx"
        super().__init__(settings)

    def _encode(self, texts: list[str]) -> Vectors:
        return self._runtime.encode(texts)
