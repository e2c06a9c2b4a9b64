"""memproxy's Prometheus metrics: every definition in one place, recorded through small typed
methods, so a new HTTP surface (``/v1/messages``, ``/v1/responses``) or a new memory stage records
into the same series instead of defining its own.

    request line    memproxy_requests_total{route,model,status}, memproxy_request_duration_seconds{route}
    memory          memproxy_memory_duration_seconds, memproxy_retrieval_total{outcome=ok|degraded|timeout|busy},
                    memproxy_memories_injected, memproxy_memory_tokens (per request, histograms)
    upstream        memproxy_upstream_first_token_seconds{model,stream} (JSON answers: the whole answer)
    prompt cache    memproxy_prompt_tokens_total{model}, memproxy_prompt_cached_tokens_total{model}
                    (hit rate = cached / prompt), memproxy_stable_block_requests_total and
                    memproxy_stable_block_changes_total (churn = changes / requests)
    write-back      memproxy_writeback_queue_depth, _spilled, _lag_seconds, _journal_entries{state},
                    memproxy_writeback_failures_total, memproxy_index_outbox
    abandoned work  memproxy_memory_reads_interrupted_total (reads stopped at their request's deadline)
    activation      memproxy_activation_reused_tokens_total{model}

Each app owns its registry (tests run several apps in one process). Under several worker
processes prometheus_client writes every value to files in ``$PROMETHEUS_MULTIPROC_DIR`` (it
decides that at import), and ``render`` adds up every process's files; gauges say how
(``livesum`` for per-process queues, ``max`` for what all workers read from the one store).
"""

from __future__ import annotations

import os
from collections.abc import Mapping
from pathlib import Path
from typing import Any

from prometheus_client import (
    CONTENT_TYPE_LATEST,
    CollectorRegistry,
    Counter,
    Gauge,
    Histogram,
    generate_latest,
    multiprocess,
)

from memcubes.memory_os import MemoryOS

_SECONDS = (0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0, 60.0, 120.0)
_COUNTS = (0, 1, 2, 4, 8, 16, 32, 64)
_TOKENS = (0, 50, 100, 200, 400, 800, 1600, 3200, 6400)
RETRIEVAL_OUTCOMES = ("ok", "degraded", "timeout", "busy")


def prompt_cache_tokens(usage: Mapping[str, Any] | None) -> tuple[int, int] | None:
    """``(prompt tokens, of which served from the provider's prompt cache)`` from a usage object:
    OpenAI's ``prompt_tokens_details.cached_tokens`` (litellm puts Anthropic's cache reads there
    too), or Anthropic's own ``input_tokens`` + ``cache_read_input_tokens`` (+ cache writes),
    where ``input_tokens`` counts only the uncached part. ``None`` when there is no usage."""
    if not isinstance(usage, Mapping):
        return None

    def count(value: Any) -> int:
        return value if isinstance(value, int) and not isinstance(value, bool) and value > 0 else 0

    details = usage.get("prompt_tokens_details")
    cache_read = count(usage.get("cache_read_input_tokens"))
    if "prompt_tokens" in usage:
        cached = count(details.get("cached_tokens")) if isinstance(details, Mapping) else 0
        return count(usage["prompt_tokens"]), cached or cache_read
    if "input_tokens" in usage:
        written = count(usage.get("cache_creation_input_tokens"))
        return count(usage["input_tokens"]) + cache_read + written, cache_read
    return None


class Metrics:
    def __init__(self, *, multiproc_dir: Path | None = None) -> None:
        self._multiproc_dir = multiproc_dir
        self.registry = CollectorRegistry()
        r = self.registry
        self._requests = Counter(
            "memproxy_requests", "HTTP requests answered", ["route", "model", "status"], registry=r
        )
        self._duration = Histogram(
            "memproxy_request_duration_seconds", "time to the last byte", ["route"], buckets=_SECONDS, registry=r
        )
        self._memory_seconds = Histogram(
            "memproxy_memory_duration_seconds", "time spent on memory before forwarding", buckets=_SECONDS, registry=r
        )
        self._retrieval = Counter("memproxy_retrieval", "memory lookups by outcome", ["outcome"], registry=r)
        self._injected = Histogram("memproxy_memories_injected", "memories per request", buckets=_COUNTS, registry=r)
        self._considered = Histogram(
            "memproxy_memories_considered",
            "memories retrieved per request before the relevance cut",
            buckets=_COUNTS,
            registry=r,
        )
        self._skipped = Counter(
            "memproxy_memory_skipped", "requests given no volatile block, by reason", ["reason"], registry=r
        )
        self._volatile_tokens = Histogram(
            "memproxy_volatile_tokens", "tokens of the volatile block (paid every turn)", buckets=_TOKENS, registry=r
        )
        self._memory_tokens = Histogram(
            "memproxy_memory_tokens", "cl100k tokens of injected memories per request", buckets=_TOKENS, registry=r
        )
        self._first_token = Histogram(
            "memproxy_upstream_first_token_seconds",
            "forward until the first chunk (streams) or the whole answer (JSON)",
            ["model", "stream"],
            buckets=_SECONDS,
            registry=r,
        )
        self._prompt_tokens = Counter(
            "memproxy_prompt_tokens", "prompt tokens the provider reported", ["model"], registry=r
        )
        self._cached_tokens = Counter(
            "memproxy_prompt_cached_tokens", "prompt tokens from the provider's prompt cache", ["model"], registry=r
        )
        self._stable_requests = Counter(
            "memproxy_stable_block_requests", "requests that carried a stable block", registry=r
        )
        self._stable_changes = Counter(
            "memproxy_stable_block_changes", "times a space's stable block changed (prefix caches miss)", registry=r
        )
        self._kv_reused = Counter(
            "memproxy_activation_reused_tokens", "prompt tokens served from activation memory", ["model"], registry=r
        )
        self._queue = Gauge(
            "memproxy_writeback_queue_depth", "exchanges queued in memory", registry=r, multiprocess_mode="livesum"
        )
        self._spilled = Gauge(
            "memproxy_writeback_spilled", "exchanges waiting in the spill file", registry=r, multiprocess_mode="livesum"
        )
        self._lag = Gauge(
            "memproxy_writeback_lag_seconds", "age of the oldest pending exchange", registry=r, multiprocess_mode="max"
        )
        self._journal = Gauge(
            "memproxy_writeback_journal_entries", "exchanges by state", ["state"], registry=r, multiprocess_mode="max"
        )
        self._failures = Counter("memproxy_writeback_failures", "write-back attempts that failed", registry=r)
        self._failures_seen = 0
        self._interrupted = Counter(
            "memproxy_memory_reads_interrupted",
            "store reads stopped because the request waiting for them gave up (retrieval.timeout_ms)",
            registry=r,
        )
        self._interrupted_seen = 0
        self._outbox = Gauge(
            "memproxy_index_outbox", "vector index writes not applied yet", registry=r, multiprocess_mode="max"
        )

    # -- per request ------------------------------------------------------------------------------

    def request(self, *, route: str, model: str, status: int, seconds: float) -> None:
        self._requests.labels(route, model, str(status)).inc()
        self._duration.labels(route).observe(seconds)

    def memory(
        self,
        *,
        outcome: str,
        seconds: float,
        injected: int,
        tokens: int,
        stable: bool,
        considered: int = 0,
        volatile_tokens: int = 0,
        skipped: str | None = None,
    ) -> None:
        """One memory lookup of a request (``outcome``: one of ``RETRIEVAL_OUTCOMES``; ``skipped``:
        why it got no volatile block, see ``memcubes.relevance``)."""
        self._retrieval.labels(outcome).inc()
        self._memory_seconds.observe(seconds)
        self._injected.observe(injected)
        self._memory_tokens.observe(tokens)
        self._considered.observe(considered)
        self._volatile_tokens.observe(volatile_tokens)
        if skipped is not None:
            self._skipped.labels(skipped).inc()
        if stable:
            self._stable_requests.inc()

    def first_token(self, *, model: str, stream: bool, seconds: float) -> None:
        self._first_token.labels(model, "true" if stream else "false").observe(seconds)

    def usage(self, *, model: str, usage: Mapping[str, Any] | None) -> None:
        """The provider's usage object of one answer (JSON, or a stream's last chunk)."""
        counts = prompt_cache_tokens(usage)
        if counts is None:
            return
        prompt, cached = counts
        self._prompt_tokens.labels(model).inc(prompt)
        self._cached_tokens.labels(model).inc(cached)

    def activation_reused(self, *, model: str, tokens: int) -> None:
        self._kv_reused.labels(model).inc(tokens)

    # -- memory layer -----------------------------------------------------------------------------

    def stable_block_changed(self) -> None:
        self._stable_changes.inc()

    def writeback(
        self, *, journal: Mapping[str, int], lag_seconds: float, failures: int, queued: int, spilled: int, outbox: int
    ) -> None:
        """The write-back state as sampled; ``failures`` is the process's running total."""
        self._queue.set(queued)
        self._spilled.set(spilled)
        self._outbox.set(outbox)
        self._lag.set(lag_seconds)
        for state in ("pending", "done", "failed"):
            self._journal.labels(state).set(journal.get(state, 0))
        if failures > self._failures_seen:
            self._failures.inc(failures - self._failures_seen)
            self._failures_seen = failures

    async def sample(self, memory: MemoryOS) -> None:
        """Read the write-back state of ``memory`` into the gauges."""
        counts = await memory.journal_counts()
        oldest = await memory.oldest_pending_age()
        self.writeback(
            journal=counts,
            lag_seconds=oldest or 0.0,
            failures=memory.writeback.failures,
            queued=counts.get("queued", 0),
            spilled=counts.get("spilled", 0),
            outbox=counts.get("indexing", 0),
        )
        if memory.store.interrupted > self._interrupted_seen:
            self._interrupted.inc(memory.store.interrupted - self._interrupted_seen)
            self._interrupted_seen = memory.store.interrupted

    # -- exposition -------------------------------------------------------------------------------

    def render(self) -> tuple[bytes, str]:
        """The text exposition and its content type; every worker's values in multi-process mode."""
        if self._multiproc_dir is None:
            return generate_latest(self.registry), CONTENT_TYPE_LATEST
        registry = CollectorRegistry()
        multiprocess.MultiProcessCollector(registry, path=str(self._multiproc_dir))  # type: ignore[no-untyped-call]
        return generate_latest(registry), CONTENT_TYPE_LATEST

    def close(self) -> None:
        """This process is leaving: its live gauges stop counting in multi-process mode."""
        if self._multiproc_dir is not None:
            multiprocess.mark_process_dead(os.getpid(), str(self._multiproc_dir))  # type: ignore[no-untyped-call]
