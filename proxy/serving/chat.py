"""The chat path: plan memories, inject them, forward, relay the answer, journal the exchange.

    scope ─▶ MemScheduler.plan ─▶ inject ─▶ router (retries, fallbacks) ─▶ relay ─▶ journal

The scope comes from the request and its key (``proxy.principal``): chat reads the user's space
and the key's shared spaces (memories from those are marked as shared in the injected block) and
writes only to the user's own space.

Memory never makes a request fail: if planning raises or exceeds its time budget the request is
forwarded without memory and says so (``x-memory-status: degraded``), unless the operator chose
``memory.fail_closed``. The exchange is journalled durably before the last byte of the answer goes
out (so a crash after the client got its answer loses nothing); distillation happens later, in the
write-back workers, and never delays the response.
"""

from __future__ import annotations

import asyncio
import dataclasses
import logging
import time
from collections.abc import AsyncIterator
from datetime import datetime
from typing import Any

from starlette.datastructures import Headers
from starlette.responses import JSONResponse, Response, StreamingResponse

from memcubes import layout, quarantine
from memcubes.cube import utcnow
from memcubes.exchange import Exchange, Turn
from memcubes.memory_os import MemoryOS
from memcubes.retrieval import RetrievedItem
from memcubes.scheduler import InjectionPlan
from proxy.access import current_request
from proxy.backends import ForwardContext, ModelRouter
from proxy.backends.base import BackendResponse, StreamChunk, answer_text, chunk_text
from proxy.config import Settings
from proxy.errors import BackendError, InvalidRequest, MemoryUnavailable, sse_error
from proxy.metrics import Metrics
from proxy.principal import Principal
from proxy.protocol import ChatCompletionRequest
from proxy.scope import MemoryMode, Scope, resolve_scope
from proxy.sse import DONE, sse
from proxy.tracing import Tracing

log = logging.getLogger(__name__)

_REMEMBERED_ROLES = ("user", "assistant")


class ChatService:
    def __init__(
        self,
        *,
        router: ModelRouter,
        memory: MemoryOS | None,
        settings: Settings,
        metrics: Metrics | None = None,
        tracing: Tracing | None = None,
    ) -> None:
        self._router = router
        self._memory = memory
        self._settings = settings
        self._metrics = metrics or Metrics()
        self._tracing = tracing or Tracing()
        self._background: set[asyncio.Task[None]] = set()

    async def create(self, request: ChatCompletionRequest, headers: Headers, principal: Principal) -> Response:
        limit = self._settings.general_settings.max_messages
        if len(request.messages) > limit:
            raise InvalidRequest(
                f"messages: {len(request.messages)} messages; at most {limit} per request "
                "(general_settings.max_messages)",
                param="messages",
            )
        principal.check_model(request.model)
        scope = resolve_scope(headers, request.user, principal)
        self._router.check(request.model)
        record = current_request()
        record.model, record.user = request.model, scope.user
        body = request.forward_body()
        request_id = record.request_id
        started = time.perf_counter()
        with self._tracing.span("memproxy.retrieve", {"memproxy.request_id": request_id}) as span:
            plan, status, outcome = await self._plan(scope, body["messages"])
            if span is not None:
                span.set_attribute("memproxy.memory_status", status)
                span.set_attribute("memproxy.memories_injected", len(plan.items))
        record.memory_status = status
        messages = body["messages"]
        backend = self._router.primary(request.model)
        stable, volatile = _marked(plan.stable, scope), _marked(plan.volatile, scope)
        stable_layout = layout.stable_messages(
            stable,
            role=self._settings.memory.scheduler.memory_role,
            cache_hint=backend.provider == "anthropic",
            next_role=layout.next_role(messages),
        )
        ctx = ForwardContext(
            request_id=request_id,
            space=scope.space,
            kv_reuse=scope.kv_reuse,
            prefix_messages=layout.stable_insert_index(messages) + len(stable_layout),
            stable_ids=[cube_id for item in plan.stable for cube_id in item.cube_ids],
        )
        if plan.items:
            body["messages"] = layout.inject(messages, stable=stable, volatile=volatile, stable_layout=stable_layout)
        if backend.prompt_cache_key and scope.space is not None and "prompt_cache_key" not in body:
            body["prompt_cache_key"] = layout.prompt_cache_key(scope.space)
        memory_headers = {
            "x-memory-status": status,
            "x-memory-injected": str(len(plan.items)),
            "x-memory-tokens": str(plan.tokens),
            "x-memory-volatile-tokens": str(plan.volatile_tokens),
            "x-memory-ids": ",".join(plan.cube_ids),
            "x-memory-overhead-ms": f"{(time.perf_counter() - started) * 1000:.2f}",
            "x-memory-considered": str(plan.considered),
            "x-request-id": request_id,
        }
        if plan.reason is not None:
            memory_headers["x-memory-reason"] = plan.reason
        if outcome is not None:
            self._metrics.memory(
                outcome=outcome,
                seconds=time.perf_counter() - started,
                injected=len(plan.items),
                tokens=plan.tokens,
                stable=bool(plan.stable),
                considered=plan.considered,
                volatile_tokens=plan.volatile_tokens,
                skipped=plan.reason,
            )
        if self._memory is not None and plan.relevant:
            self._memory.record_hits(plan.relevant)
        injected = [item.text for item in plan.items]
        try:
            if request.stream:
                return await self._stream(request.model, body, ctx, scope, messages, memory_headers, injected)
            forwarded = time.perf_counter()
            with self._tracing.span("memproxy.forward", {"memproxy.model": request.model, "memproxy.stream": False}):
                response = await self._router.complete(request.model, body, ctx)
        except BackendError as exc:
            _failed(exc, request_id)
            raise
        self._metrics.first_token(model=request.model, stream=False, seconds=time.perf_counter() - forwarded)
        self._metrics.usage(model=request.model, usage=response.data.get("usage"))
        answer = quarantine.without_restated(answer_text(response.data), injected)
        await self._journal(scope, request_id, request.model, messages, answer)
        return self._complete_response(response, ctx, memory_headers, request.model)

    async def _plan(self, scope: Scope, messages: list[dict[str, Any]]) -> tuple[InjectionPlan, str, str | None]:
        """The plan, the ``x-memory-status`` and the retrieval outcome for metrics (``None``
        when no lookup was due)."""
        if scope.user is None:
            return InjectionPlan(), "no-user", None
        if scope.mode is MemoryMode.OFF:
            return InjectionPlan(), "off", None
        if self._memory is None:
            return self._degraded("memory layer is not available", "degraded")
        if not scope.reads:
            return InjectionPlan(), "ok", None
        timeout = self._settings.memory.retrieval.timeout_ms / 1000
        try:
            plan = await asyncio.wait_for(
                self._memory.plan(scope.readable_spaces, messages, session=scope.session), timeout
            )
        except TimeoutError:
            log.warning("memory lookup took over %.0f ms, answering without memory", timeout * 1000)
            return self._degraded("memory lookup timed out", "timeout")
        except Exception as exc:  # memory trouble must never break a chat request
            log.warning("memory planning failed, answering without memory: %r", exc)
            return self._degraded("memory lookup failed", "degraded")
        status = "degraded" if plan.degraded else "ok"
        return plan, status, status

    def _degraded(self, reason: str, outcome: str) -> tuple[InjectionPlan, str, str]:
        if self._settings.memory.fail_closed:
            self._metrics.memory(outcome=outcome, seconds=0.0, injected=0, tokens=0, stable=False)
            raise MemoryUnavailable(f"{reason}; memory.fail_closed is set, so the request is refused")
        return InjectionPlan(), "degraded", outcome

    def _complete_response(
        self, response: BackendResponse, ctx: ForwardContext, headers: dict[str, str], model: str
    ) -> Response:
        self._kv_reused(ctx, headers, model)
        if response.raw is not None:
            return Response(response.raw, media_type="application/json", headers=headers)
        return JSONResponse(response.data, headers=headers)

    def _kv_reused(self, ctx: ForwardContext, headers: dict[str, str], model: str) -> None:
        if ctx.kv_reused_tokens is not None:
            headers["x-memory-kv-reused-tokens"] = str(ctx.kv_reused_tokens)
            self._metrics.activation_reused(model=model, tokens=ctx.kv_reused_tokens)

    async def _stream(
        self,
        model: str,
        body: dict[str, Any],
        ctx: ForwardContext,
        scope: Scope,
        messages: list[dict[str, Any]],
        headers: dict[str, str],
        injected: list[str],
    ) -> Response:
        """``injected``: the texts of the memories in the prompt (not stored again from the answer)."""
        forwarded = time.perf_counter()
        with self._tracing.span("memproxy.forward", {"memproxy.model": model, "memproxy.stream": True}):
            first, rest = await self._router.stream(model, body, ctx)
        self._metrics.first_token(model=model, stream=True, seconds=time.perf_counter() - forwarded)
        self._kv_reused(ctx, headers, model)

        async def relay() -> AsyncIterator[bytes]:
            parts: list[str] = []
            complete = False
            try:
                if first is not None:
                    parts.append(chunk_text(first.data))
                    self._metrics.usage(model=model, usage=first.data.get("usage"))
                    yield _event(first)
                try:
                    async for chunk in rest:
                        parts.append(chunk_text(chunk.data))
                        self._metrics.usage(model=model, usage=chunk.data.get("usage"))
                        yield _event(chunk)
                    complete = True
                except BackendError as exc:
                    yield sse_error(_failed(exc, ctx.request_id, after_start=True))
                answer = quarantine.without_restated("".join(parts), injected) if complete else None
                await self._journal(scope, ctx.request_id, model, messages, answer)
                yield DONE
            except (asyncio.CancelledError, GeneratorExit):
                # The client went away: what it said is still worth remembering.
                self._spawn(self._journal(scope, ctx.request_id, model, messages, None))
                raise

        return StreamingResponse(relay(), media_type="text/event-stream", headers=headers)

    async def _journal(
        self, scope: Scope, request_id: str, model: str, messages: list[dict[str, Any]], answer: str | None
    ) -> None:
        """Journal the exchange; failures are logged, never raised (the answer is already out)."""
        if self._memory is None or not scope.writes or scope.space is None:
            return
        now = utcnow()
        turns = _turns(request_id, messages, now, limit=self._settings.memory.writeback.chat_turns)
        if answer:
            turns.append(
                Turn(id=f"{request_id}-answer", role="assistant", content=answer, created_at=now, generated=True)
            )
        if not turns:
            return
        exchange = Exchange(
            id=request_id,
            space=scope.space,
            turns=turns,
            mode=self._settings.memory.extraction.mode,
            model=model,
            session=scope.session,
            skip_seen=True,
        )
        try:
            with self._tracing.span("memproxy.writeback", {"memproxy.request_id": request_id}):
                await self._memory.record(exchange)
        except Exception as exc:
            log.warning("could not journal exchange %s: %r", request_id, exc)

    def _spawn(self, work: Any) -> None:
        task = asyncio.get_running_loop().create_task(work)
        self._background.add(task)
        task.add_done_callback(self._background.discard)


def _marked(items: list[RetrievedItem], scope: Scope) -> list[RetrievedItem]:
    """Memories of a shared space say so (``(shared: org:acme) ...``): they are not about the
    user, and the model should not read them as if the user had said them."""
    return [
        item if item.space == scope.space else dataclasses.replace(item, text=f"(shared: {item.space}) {item.text}")
        for item in items
    ]


def _failed(error: BackendError, request_id: str, *, after_start: bool = False) -> BackendError:
    """The backend failed this request: the detail goes to the log, the client sees the request id."""
    error.request_id = request_id
    when = "after it started" if after_start else "before answering"
    log.warning("request %s: the upstream failed %s: %s", request_id, when, error)
    return error


def _event(chunk: StreamChunk) -> bytes:
    return chunk.raw if chunk.raw is not None else sse(chunk.data)


def _turns(request_id: str, messages: list[dict[str, Any]], now: datetime, *, limit: int) -> list[Turn]:
    """The latest ``limit`` turns worth remembering, oldest first; earlier messages are not read."""
    turns: list[Turn] = []
    for index in range(len(messages) - 1, -1, -1):
        if len(turns) == limit:
            break
        message = messages[index]
        if message.get("role") not in _REMEMBERED_ROLES:
            continue
        text = layout.message_text(message).strip()
        if text:
            name = message.get("name") if isinstance(message.get("name"), str) else None
            turns.append(
                Turn(id=f"{request_id}-{index}", role=message["role"], content=text, name=name, created_at=now)
            )
    turns.reverse()
    return turns
