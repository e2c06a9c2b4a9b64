"""Typed settings of the memory OS (the ``memory:`` section of memproxy's YAML).

Plain pydantic data with no environment access: the proxy's config module loads YAML, resolves
variables and hands these objects down, and a library user can build them in code. Unknown keys
are errors, so a typo in a config file is reported instead of silently ignored.
"""

from __future__ import annotations

from pathlib import Path
from typing import Annotated, Any, Literal

from pydantic import AfterValidator, BaseModel, ConfigDict, Field, model_validator

from memcubes.database_url import parameters

# Entries above which a space is searched through an ANN index: measured with ``python -m bench ann``
# (see the README's "How memory is stored"): up to 10,000 entries an exact search costs about what a
# Chroma query does cold and a third of it warm; at 30,000, reading the space from SQLite costs three
# first Chroma queries (a warm exact search still costs a fifth of a warm Chroma query).
ANN_MIN_ENTRIES = 20_000
Precision = Literal["int8", "float16", "float32"]

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
    episodes: bool = Field(
        True,
        description="also keep each message as an episodic memory (the evidence) beside the facts distilled "
        "from it; raw mode keeps episodes only",
    )
    episode_roles: list[str] = Field(
        default_factory=lambda: ["user"],
        description="message roles kept as episodes (add assistant to keep the answers too; they often restate "
        "the memories injected into them)",
    )


RETRIEVAL_PRESETS: dict[str, dict[str, Any]] = {
    # Sentence-aware dense scoring, speaker matching and compact items: measured on the LOCOMO
    # development split (`make eval`), this packs about 2.5x more memories into a budget.
    "balanced": {},
    # Plain hybrid retrieval: whole-text vectors, reciprocal-rank fusion, items rendered whole.
    "plain": {"rrf_k": 60, "candidates": 40, "sentence_weight": 0.0, "speaker_boost": 1.0, "compact": False},
}


class RetrievalSettings(_Strict):
    """What enters the prompt. ``token_budget`` (cl100k tokens) caps the injected memories.
    ``preset`` names a set of the knobs below (see ``RETRIEVAL_PRESETS``); keys given explicitly
    override it, so a benchmark can compare presets and single knobs without code changes."""

    preset: Literal["balanced", "plain"] = "balanced"
    top_k: int = Field(12, ge=1, le=200)
    token_budget: int = Field(1200, ge=0)
    candidates: int = Field(50, ge=1, le=1000, description="hits taken from each retriever before fusion")
    rrf_k: int = Field(10, ge=1, description="reciprocal-rank fusion constant: lower trusts top ranks more")
    dense_weight: float = Field(1.0, ge=0)
    lexical_weight: float = Field(1.0, ge=0)
    hop_weight: float = Field(
        0.0,
        ge=0,
        description="weight of a second, lexical hop on the words the best first-hop memories add (0: one hop; "
        "0.5 measured on the LOCOMO dev split: multi-hop +0.010, overall -0.008)",
    )
    time_weight: float = Field(
        1.0, ge=0, description="weight of the memories dated in a window the query names (0: ignore dates)"
    )
    sentence_weight: float = Field(
        0.5, ge=0, le=1, description="dense score = (1-w) * whole-text similarity + w * best-sentence similarity"
    )
    speaker_boost: float = Field(2.0, ge=1, description="score factor for memories of a speaker the query names")
    stale_episode_weight: float = Field(
        0.25, ge=0, le=1, description="score factor for an episode whose fact was superseded (history, not current)"
    )
    compact: bool = Field(True, description="render a long memory as its sentence most relevant to the query")
    min_similarity: float = Field(-1.0, ge=-1.0, le=1.0)
    relevance: Literal["auto", "off"] = Field(
        "auto",
        description="auto: no volatile block for turns that need no personal context (small talk, arithmetic, "
        "generic tasks) and none of memories below min_relevance; off: always fill top_k",
    )
    min_relevance: float = Field(
        0.0, ge=-1.0, le=1.0, description="auto: a retrieved memory less similar than this (cosine) is not injected"
    )
    impersonal_min_relevance: float = Field(
        0.35,
        ge=-1.0,
        le=1.0,
        description="auto: a turn that does not speak of the user gets memory only when the best match is this close",
    )
    profile_floor: int = Field(
        5, ge=0, le=20, description="auto: profile facts a personal turn asking advice (or matching nothing) gets"
    )
    hot_vectors_mb: int = Field(512, ge=0, description="RAM for the vectors of recently searched spaces")
    timeout_ms: int = Field(2000, ge=1, description="a slower lookup is abandoned (status degraded)")

    @model_validator(mode="before")
    @classmethod
    def _apply_preset(cls, data: Any) -> Any:
        if isinstance(data, dict):
            preset = RETRIEVAL_PRESETS.get(str(data.get("preset", "balanced")), {})
            return {**preset, **data}
        return data


class EmbedderSettings(_Strict):
    kind: Literal["onnx", "sentence-transformers"] = Field(
        "onnx", description="onnx: the same model run by ONNX Runtime (2.5x faster here), torch as fallback"
    )
    model: str | None = Field(
        None,
        description="a sentence-transformers model folder (or hub id, when online); 'multilingual' for the "
        "bundled multilingual encoder (16 languages); default: the bundled all-MiniLM-L6-v2 (English)",
    )
    device: str = "cpu"
    batch_size: int = Field(64, ge=1)
    cache_size: int = Field(8192, ge=0, description="texts whose embeddings are kept (LRU)")
    cache_dir: Path | None = Field(None, description="where the ONNX export is kept (default ~/.cache/memproxy)")
    precision: Literal["int8", "fp32"] = Field(
        "int8", description="onnx only: int8 weights (3x less CPU per text, cosine 0.99 to fp32) or the exact model"
    )
    threads: int = Field(
        1, ge=1, description="onnx only: threads per forward pass (1 leaves the other cores to requests)"
    )


class VectorIndexSettings(_Strict):
    """Vectors live in SQLite with their cubes and are searched exactly per space; the ANN index
    (Chroma: embedded under ``data_dir/chroma`` unless ``host`` names a ``chroma run`` server) is
    derived data kept only for spaces above ``ann_min_entries``."""

    kind: Literal["chroma"] = "chroma"
    precision: Precision = Field(
        "float16",
        description="how vectors are stored in SQLite (read back whatever was written): float16 (768 bytes "
        "for 384 dimensions), int8 with a scale (388 bytes; LOCOMO dev recall 0.004 lower) or float32",
    )
    ann_min_entries: int = Field(
        ANN_MIN_ENTRIES,
        ge=0,
        description="spaces with more vector entries (whole texts and sentences) than this are searched "
        "through the ANN index instead of exactly",
    )
    host: str | None = None
    port: int = 8000
    ssl: bool = False
    write_delay_ms: float = Field(
        10_000.0,
        ge=0,
        description="background index writes are gathered into one write per space for at most this long "
        "(searches see them at once in RAM; a cold space searched through the index may miss them meanwhile)",
    )
    write_idle_ms: float = Field(200.0, ge=0, description="...or until no write has come for this long")


class SchedulerSettings(_Strict):
    """The MemScheduler: the stable block (pinned and hot memories, at the start of the prompt,
    cacheable, frozen per conversation) and the per-session working memory."""

    stable_max: int = Field(16, ge=0, description="promoted (non-pinned) memories in the stable block")
    stable_share: float = Field(0.5, ge=0.0, le=1.0, description="share of the token budget the stable block may use")
    stable_token_budget: int | None = Field(
        None, ge=0, description="cl100k tokens for the stable block (default: stable_share of retrieval.token_budget)"
    )
    volatile_token_budget: int | None = Field(
        None,
        ge=0,
        description="cl100k tokens for the volatile block, which no prefix cache holds "
        "(default: what the stable block leaves of retrieval.token_budget)",
    )
    stable_refresh_minutes: float = Field(
        60.0,
        ge=0,
        description="a conversation keeps the stable block it was first shown (promotions wait for the next one) "
        "until it has been idle this long; 0 turns the freeze off",
    )
    promote_heat: float = Field(4.0, gt=0, description="heat at which a memory joins the stable block")
    demote_heat: float = Field(1.0, ge=0, description="heat below which it leaves (hysteresis: < promote_heat)")
    heat_half_life_hours: float = Field(72.0, gt=0)
    working_memory_turns: int = Field(3, ge=0, description="turns an injected memory stays without being retrieved")
    working_memory_decay: float = Field(0.7, gt=0, le=1, description="score factor per turn in working memory")
    sessions: int = Field(10_000, ge=1, description="sessions whose working memory is kept (LRU)")
    memory_role: Literal["user", "system"] = Field(
        "user",
        description="role of the stable block's message: user (a context turn the assistant acknowledges; "
        "memories never get the system prompt's authority) or system",
    )


class WritebackSettings(_Strict):
    queue_size: int = Field(1024, ge=1, description="exchanges waiting in memory; more wait in the journal")
    max_attempts: int = Field(5, ge=1, description="attempts at an exchange that fails by itself (not the store)")
    spill_limit: int = Field(100_000, ge=1, description="exchanges kept while the journal cannot take them")
    chat_turns: int = Field(
        64, ge=1, description="latest messages of a chat request considered for memory (bulk: POST /v1/memories)"
    )
    retry_seconds: float = Field(5.0, gt=0, description="how often journalled work is swept up again")
    lease_seconds: float = Field(
        60.0,
        gt=0,
        description="how long a process's claim on an exchange it distils lasts: a killed process's claims "
        "are taken over by the others this long after (several processes serving one data dir)",
    )
    defer_ms: float = Field(
        100.0, ge=0, description="longest a write-back batch waits for no request to be retrieving (0: never waits)"
    )


class ResponseStoreSettings(_Strict):
    """What the Responses API keeps for ``previous_response_id`` and ``GET /v1/responses/{id}``
    (in the data dir's SQLite file, per API key; ``store: false`` responses are never kept)."""

    max_age_hours: float = Field(720.0, gt=0, description="a stored response is forgotten after this (OpenAI: 30 days)")
    max_per_key: int = Field(10_000, ge=1, description="responses kept per API key, newest first")
    max_mb: float = Field(256.0, gt=0, description="all stored responses together; the oldest go first")


def _database_url(value: str) -> str:
    """Checked once, here, with libpq's parser: a server would otherwise find a malformed URL
    only when its pool connects, and libpq's message quotes the part it could not read."""
    if value and not value.startswith(("postgresql://", "postgres://")):
        raise ValueError("must be a postgresql:// URL (or empty: SQLite under data_dir)")
    if value:
        parameters(value)
    return value


DatabaseUrl = Annotated[str, AfterValidator(_database_url)]


class MemorySettings(_Strict):
    data_dir: Path = Path("./data")
    database_url: DatabaseUrl = Field(
        "",
        description="the system of record on a PostgreSQL server shared by replicas "
        "(postgresql://user:pass@host:5432/db; ${ENV} works); empty: SQLite under data_dir",
    )
    fail_closed: bool = Field(False, description="refuse chat (503) instead of answering without memory")
    extraction: ExtractionSettings = Field(default_factory=ExtractionSettings)
    retrieval: RetrievalSettings = Field(default_factory=RetrievalSettings)
    embedder: EmbedderSettings = Field(default_factory=EmbedderSettings)
    vector_index: VectorIndexSettings = Field(default_factory=VectorIndexSettings)
    writeback: WritebackSettings = Field(default_factory=WritebackSettings)
    scheduler: SchedulerSettings = Field(default_factory=SchedulerSettings)
    responses: ResponseStoreSettings = Field(default_factory=ResponseStoreSettings)
