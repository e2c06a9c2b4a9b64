"""Activation (KV) memory: prompt-prefix KV caches stored as MemCubes and reused by a local model.

Importing this package imports torch and transformers; the rest of ``memcubes`` does not need it.
"""

from memcubes.activation.engine import (
    EncodedPrompt,
    FinishReason,
    GenerationEnd,
    GenerationEvent,
    LocalEngine,
    Prefilled,
    TextDelta,
)
from memcubes.activation.errors import (
    ActivationError,
    ActivationFileError,
    ModelLoadError,
    UnsupportedCache,
)
from memcubes.activation.fingerprint import model_fingerprint
from memcubes.activation.kv_store import ActivationEntry, ActivationStore, CacheHit, activation_key
from memcubes.activation.tiny_model import build_tiny_tokenizer, write_tiny_model

__all__ = [
    "ActivationEntry",
    "ActivationError",
    "ActivationFileError",
    "ActivationStore",
    "CacheHit",
    "EncodedPrompt",
    "FinishReason",
    "GenerationEnd",
    "GenerationEvent",
    "LocalEngine",
    "ModelLoadError",
    "Prefilled",
    "TextDelta",
    "UnsupportedCache",
    "activation_key",
    "build_tiny_tokenizer",
    "model_fingerprint",
    "write_tiny_model",
]
