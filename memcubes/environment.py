"""Offline and threading defaults for the libraries memproxy sits on.

Nothing may be fetched at run time: sentence-transformers must not call the Hugging Face hub,
tiktoken must read its BPE files from litellm's bundled copy instead of downloading them, and
litellm must use its local model price map instead of fetching it on import. These are process
settings read by those libraries from the environment, so they are set (as defaults a user can
override) once, before the libraries are first used.

numpy's BLAS gets one thread: its only product here is one query vector against a few thousand
stored ones (0.05 ms on one core), and BLAS worker threads fighting ONNX Runtime's and the event
loop for two cores made that product take ~4 ms under write-back load (measured with py-spy).
This one must be set before numpy is first imported, which ``proxy/__init__`` guarantees.
"""

from __future__ import annotations

import importlib.util
import os
from pathlib import Path


def litellm_tokenizer_dir() -> Path | None:
    """litellm ships cl100k_base and o200k_base in this folder, named as tiktoken's cache expects."""
    spec = importlib.util.find_spec("litellm")
    if spec is None or spec.origin is None:
        return None
    folder = Path(spec.origin).parent / "litellm_core_utils" / "tokenizers"
    return folder if folder.is_dir() else None


def cache_dir() -> Path:
    """Where derived artefacts shared by every data dir live (the exported ONNX embedder)."""
    base = os.environ.get("MEMPROXY_CACHE_DIR") or os.environ.get("XDG_CACHE_HOME")
    return Path(base) / "memproxy" if base else Path.home() / ".cache" / "memproxy"


def apply_offline_defaults() -> None:
    os.environ.setdefault("HF_HUB_OFFLINE", "1")
    os.environ.setdefault("TRANSFORMERS_OFFLINE", "1")
    os.environ.setdefault("LITELLM_LOCAL_MODEL_COST_MAP", "True")
    os.environ.setdefault("ANONYMIZED_TELEMETRY", "False")
    os.environ.setdefault("OPENBLAS_NUM_THREADS", "1")
    folder = litellm_tokenizer_dir()
    if folder is not None:
        os.environ.setdefault("TIKTOKEN_CACHE_DIR", str(folder))
