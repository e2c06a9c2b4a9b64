"""Typed settings of the memory OS (the ``memory:`` section of memproxy's YAML).

Plain pydantic data with no environment access: the proxy's config module loads YAML, resolves
variables and hands these objects down, and a library user can build them in code. Unknown keys
are errors, so a typo in a config file is reported instead of silently ignored.
"""

from __future__ import annotations

from pathlib import Path
from typing import Literal

from pydantic import BaseModel, ConfigDict, Field

ExtractionMode = Literal["raw", "heuristic", "llm"]


class _Strict(BaseModel):
    model_config = ConfigDict(extra="forbid")


class ExtractionSettings(_Strict):
    """How write-back distils memories from an exchange."""

    mode: ExtractionMode = "heuristic"
    model: str | None = Field(None, description="model_name of the extraction LLM (mode llm)")
    roles: list[str] = Field(
        default_factory=lambda: ["user"],
        description="message roles heuristic/llm extraction reads; raw mode keeps every message",
    )
    dedupe_threshold: float = Field(
        0.95, ge=0.0, le=1.0, description="cosine similarity at or above which a new memory is a duplicate"
    )


class RetrievalSettings(_Strict):
    """What enters the prompt. ``token_budget`` (cl100k tokens) caps the injected memories."""

    top_k: int = Field(12, ge=1, le=200)
    token_budget: int = Field(1200, ge=0)
    candidates: int = Field(40, ge=1, le=1000, description="hits taken from each retriever before fusion")
    rrf_k: int = Field(60, ge=1)
    min_similarity: float = Field(0.0, ge=-1.0, le=1.0)
    timeout_ms: int = Field(2000, ge=1, description="a slower lookup is abandoned (status degraded)")


class EmbedderSettings(_Strict):
    kind: Literal["onnx", "sentence-transformers"] = Field(
        "onnx", description="onnx: the same model run by ONNX Runtime (2.5x faster here), torch as fallback"
    )
    model: str | None = Field(None, description="path or hub id; default is the bundled all-MiniLM-L6-v2")
    device: str = "cpu"
    batch_size: int = Field(64, ge=1)
    cache_size: int = Field(8192, ge=0, description="texts whose embeddings are kept (LRU)")


class VectorIndexSettings(_Strict):
    """Chroma: embedded under ``data_dir/chroma`` unless ``host`` names a ``chroma run`` server."""

    kind: Literal["chroma"] = "chroma"
    host: str | None = None
    port: int = 8000
    ssl: bool = False


class WritebackSettings(_Strict):
    queue_size: int = Field(1024, ge=1, description="exchanges waiting in memory; more wait in the journal")
    max_attempts: int = Field(5, ge=1)
    retry_seconds: float = Field(5.0, gt=0, description="how often journalled work is swept up again")


class MemorySettings(_Strict):
    data_dir: Path = Path("./data")
    fail_closed: bool = Field(False, description="refuse chat (503) instead of answering without memory")
    extraction: ExtractionSettings = Field(default_factory=ExtractionSettings)
    retrieval: RetrievalSettings = Field(default_factory=RetrievalSettings)
    embedder: EmbedderSettings = Field(default_factory=EmbedderSettings)
    vector_index: VectorIndexSettings = Field(default_factory=VectorIndexSettings)
    writeback: WritebackSettings = Field(default_factory=WritebackSettings)
