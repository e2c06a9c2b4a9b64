"""Routing of a model name to its deployments, with retries and fallbacks, LiteLLM-style.

Several ``model_list`` entries may share a ``model_name`` (deployments, tried in turn);
``router_settings.num_retries`` retries retryable failures (429, 5xx, timeouts, connection
errors) with exponential backoff, then ``fallbacks`` name other models to try. A stream is only
retried before its first chunk: once bytes went to the client, a failure is an error event.
"""

from __future__ import annotations

import asyncio
import itertools
from collections.abc import AsyncIterator, Awaitable, Callable, Sequence
from typing import Any, TypeVar

from proxy.backends.base import Backend, BackendResponse, ForwardContext, StreamChunk
from proxy.config import RouterSettings
from proxy.errors import BackendError, NotFound

T = TypeVar("T")


class ModelRouter:
    def __init__(self, deployments: dict[str, list[Backend]], settings: RouterSettings) -> None:
        self._deployments = deployments
        self._settings = settings
        self._fallbacks: dict[str, list[str]] = {}
        for rule in settings.fallbacks:
            for primary, alternatives in rule.items():
                self._fallbacks.setdefault(primary, []).extend(alternatives)
        self._turns = {name: itertools.count() for name in deployments}

    @property
    def model_names(self) -> list[str]:
        return list(self._deployments)

    def primary(self, model: str) -> Backend:
        """The first deployment of a model: what the prompt layout is shaped for."""
        self.check(model)
        return self._deployments[model][0]

    def backends(self) -> list[Backend]:
        return [backend for group in self._deployments.values() for backend in group]

    def check(self, model: str) -> None:
        if model not in self._deployments:
            raise NotFound(
                f"The model {model!r} does not exist in this proxy's model_list "
                f"(available: {', '.join(self.model_names) or 'none'}).",
                param="model",
                code="model_not_found",
            )

    def _attempts(self, model: str) -> list[Backend]:
        """Every backend to try, in order: each deployment of each model of the fallback chain,
        repeated ``num_retries`` times, starting at a rotating deployment (round robin)."""
        self.check(model)
        order: list[Backend] = []
        for name in [model, *self._fallbacks.get(model, [])]:
            group = self._deployments[name]
            start = next(self._turns[name]) % len(group)
            rotated = group[start:] + group[:start]
            for _ in range(self._settings.num_retries + 1):
                order.extend(rotated)
        return order

    async def _with_retries(self, attempts: Sequence[Backend], call: Callable[[Backend], Awaitable[T]]) -> T:
        delay = self._settings.retry_backoff
        last: BackendError | None = None
        for position, backend in enumerate(attempts):
            try:
                return await call(backend)
            except BackendError as exc:
                if not exc.retryable or position == len(attempts) - 1:
                    raise
                last = exc
            await asyncio.sleep(delay)
            delay *= 2
        assert last is not None
        raise last

    async def attempt(self, model: str, call: Callable[[Backend], Awaitable[T]]) -> T:
        """``call`` on each deployment of ``model`` (and its fallbacks) in turn until one answers;
        every API surface forwards through here, whatever wire format it speaks."""
        return await self._with_retries(self._attempts(model), call)

    async def open_stream(
        self, model: str, call: Callable[[Backend], AsyncIterator[T]]
    ) -> tuple[T | None, AsyncIterator[T]]:
        """Open a stream and wait for its first chunk (retrying until one arrives), so a failure
        before any output is still an HTTP status. Returns that chunk and the rest."""

        async def first(backend: Backend) -> tuple[T | None, AsyncIterator[T]]:
            iterator = aiter(call(backend))
            try:
                return await anext(iterator), iterator
            except StopAsyncIteration:
                return None, iterator

        return await self.attempt(model, first)

    async def complete(self, model: str, body: dict[str, Any], ctx: ForwardContext) -> BackendResponse:
        return await self.attempt(model, lambda backend: backend.complete(body, ctx))

    async def stream(
        self, model: str, body: dict[str, Any], ctx: ForwardContext
    ) -> tuple[StreamChunk | None, AsyncIterator[StreamChunk]]:
        return await self.open_stream(model, lambda backend: backend.stream(body, ctx))
