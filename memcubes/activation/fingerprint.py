"""The identity of a model + tokenizer pair, as far as KV caches are concerned.

A KV cache is only valid for the exact weights, dtype and tokenization that produced it: loading
one built by another model gives fluent garbage, not an error. Every stored cache is therefore
keyed by this fingerprint. Config and tokenizer alone are not enough (two fine-tunes share both),
so a cheap digest of the weights is included: a fixed strided sample of every parameter, which
costs microseconds per tensor and changes when any tensor is retrained.
"""

from __future__ import annotations

import hashlib
import json
from typing import Any

import torch
from transformers import PreTrainedModel, PreTrainedTokenizerBase

# Fields that describe where or when a config was loaded, not what the model computes.
_TRANSIENT_CONFIG_FIELDS = frozenset({"transformers_version", "dtype", "torch_dtype"})
_SAMPLES_PER_TENSOR = 64


def model_fingerprint(model: PreTrainedModel, tokenizer: PreTrainedTokenizerBase) -> str:
    """Return a hex sha256 that changes whenever a cache built by this pair would be invalid."""
    digest = hashlib.sha256()
    digest.update(b"memproxy-kv-fingerprint/1\0")
    _feed(digest, "config", _config_json(model))
    _feed(digest, "dtype", str(model.dtype))
    _feed(digest, "tokenizer", _tokenizer_json(tokenizer))
    _feed_weights(digest, model)
    return digest.hexdigest()


def _feed(digest: Any, label: str, text: str) -> None:
    data = text.encode("utf-8")
    digest.update(f"{label}:{len(data)}\0".encode())
    digest.update(data)


def _config_json(model: PreTrainedModel) -> str:
    fields = {
        key: value
        for key, value in model.config.to_dict().items()
        if not key.startswith("_") and key not in _TRANSIENT_CONFIG_FIELDS
    }
    return json.dumps(fields, sort_keys=True, default=str)


def _tokenizer_json(tokenizer: PreTrainedTokenizerBase) -> str:
    backend = getattr(tokenizer, "backend_tokenizer", None)
    if backend is not None:
        # vocab, merges, normalizer, pre-tokenizer and added tokens in one canonical document
        model_text: str = backend.to_str()
    else:
        model_text = json.dumps(sorted(tokenizer.get_vocab().items()))
    chat_template = tokenizer.chat_template
    document = {
        "class": type(tokenizer).__name__,
        "backend": model_text,
        "special_tokens": {str(k): str(v) for k, v in tokenizer.special_tokens_map.items()},
        "chat_template": chat_template if isinstance(chat_template, str) else json.dumps(chat_template),
    }
    return json.dumps(document, sort_keys=True)


def _feed_weights(digest: Any, model: PreTrainedModel) -> None:
    with torch.no_grad():
        for name, tensor in sorted(model.state_dict().items()):
            flat = tensor.detach().reshape(-1)
            stride = max(1, flat.numel() // _SAMPLES_PER_TENSOR)
            sample = torch.cat([flat[:_SAMPLES_PER_TENSOR], flat[::stride][:_SAMPLES_PER_TENSOR], flat[-8:]])
            # float64 represents every float16/bfloat16/float32 value exactly, and numpy knows it
            data = sample.to(device="cpu", dtype=torch.float64).numpy().tobytes()
            digest.update(f"{name}:{tuple(tensor.shape)}\0".encode())
            digest.update(data)
