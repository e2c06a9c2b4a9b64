"""OpenTelemetry spans for a request's stages: ``memproxy.retrieve`` (memory lookup),
``memproxy.forward`` (until the model's answer starts) and ``memproxy.writeback`` (journalling the
exchange), under one server span per HTTP request.

Tracing is off unless ``server.otlp_endpoint`` (``$OTEL_EXPORTER_OTLP_ENDPOINT``) is set; the SDK
is imported only then, so a proxy without it pays nothing. Each app has its own tracer provider
(not the process-global one), which lets tests hand in an in-memory exporter.
"""

from __future__ import annotations

import contextlib
from collections.abc import Iterator, Mapping
from typing import Any

AttributeValue = str | int | float | bool


class Tracing:
    """``span(name)`` is a no-op context manager while tracing is off."""

    def __init__(self, provider: Any | None = None) -> None:
        self._provider = provider
        self._tracer = provider.get_tracer("memproxy") if provider is not None else None

    @property
    def enabled(self) -> bool:
        return self._tracer is not None

    @contextlib.contextmanager
    def span(self, name: str, attributes: Mapping[str, AttributeValue] | None = None) -> Iterator[Any]:
        """A span around the block (the current span's child), or nothing while tracing is off.
        An exception leaving the block is recorded on the span and re-raised."""
        if self._tracer is None:
            yield None
            return
        with self._tracer.start_as_current_span(name, attributes=attributes) as span:
            yield span

    def close(self) -> None:
        """Send what is buffered and stop exporting."""
        if self._provider is not None:
            self._provider.shutdown()


def build_tracing(endpoint: str | None, *, exporter: Any | None = None) -> Tracing:
    """Spans to the OTLP (gRPC) collector at ``endpoint``, batched; or, for tests, to ``exporter``
    as each span ends. Neither: tracing off."""
    if endpoint is None and exporter is None:
        return Tracing()
    from opentelemetry.sdk.resources import Resource
    from opentelemetry.sdk.trace import TracerProvider
    from opentelemetry.sdk.trace.export import BatchSpanProcessor, SimpleSpanProcessor

    provider = TracerProvider(resource=Resource.create({"service.name": "memproxy"}))
    if exporter is not None:
        provider.add_span_processor(SimpleSpanProcessor(exporter))
    else:
        from opentelemetry.exporter.otlp.proto.grpc.trace_exporter import OTLPSpanExporter

        provider.add_span_processor(BatchSpanProcessor(OTLPSpanExporter(endpoint=endpoint)))
    return Tracing(provider)
