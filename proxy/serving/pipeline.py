"""The one serving path every chat-like surface shares: plan → inject → forward → relay → journal.

    scope ─▶ MemScheduler.plan ─▶ (surface injects) ─▶ router ─▶ relay ─▶ journal

Chat completions, Anthropic's Messages API and OpenAI's Responses API differ only in their wire
shapes; each surface (``proxy/serving/chat.py``, ``messages.py``, ``responses.py``) turns its
request into an OpenAI-style *view* (the user and assistant turns memory reads), asks this module
for a plan, writes the plan into its own request shape, and hands the answer back here to be
relayed and journalled. So memory behaves the same whichever API a client speaks.

Memory never makes a request fail: if planning raises or exceeds its time budget the request is
forwarded without memory and says so (``x-memory-status: degraded``), unless the operator chose
``memory.fail_closed``. The exchange is journalled durably before the last byte of the answer goes
out (so a crash after the client got its answer loses nothing); distillation happens later, in the
write-back workers, and never delays the response.
"""

from __future__ import annotations

import asyncio
import contextlib
import dataclasses
import logging
import time
from collections.abc import AsyncIterator, Awaitable, Callable, Coroutine, Iterator
from dataclasses import dataclass
from datetime import datetime
from typing import Any, TypeVar

from starlette.datastructures import Headers
from starlette.responses import StreamingResponse

from memcubes import deadline, layout, quarantine
from memcubes.cube import utcnow
from memcubes.errors import DeadlineExceeded
from memcubes.exchange import Exchange, Turn
from memcubes.ids import new_id
from memcubes.memory_os import MemoryOS
from memcubes.retrieval import RetrievedItem
from memcubes.scheduler import InjectionPlan
from proxy.access import current_request
from proxy.backends import Backend, ForwardContext, ModelRouter
from proxy.config import Settings
from proxy.errors import BackendError, InvalidRequest, MemoryBusy, MemoryUnavailable, ProxyError
from proxy.memory_slots import MemorySlots
from proxy.metrics import Metrics
from proxy.principal import Principal
from proxy.scope import MemoryMode, Scope, resolve_scope
from proxy.tracing import Tracing

log = logging.getLogger(__name__)

_REMEMBERED_ROLES = ("user", "assistant")
T = TypeVar("T")


@dataclass
class Prepared:
    """One request after planning: what to inject, where to forward, what to tell the client."""

    scope: Scope
    model: str
    view: list[dict[str, Any]]  # OpenAI-style turns memory reads and journals
    plan: InjectionPlan
    backend: Backend  # the model's first deployment: the one the prompt layout is shaped for
    ctx: ForwardContext
    headers: dict[str, str]
    stable_layout: list[dict[str, Any]]  # the messages the stable block is inserted as (OpenAI-style)

    @property
    def request_id(self) -> str:
        return self.ctx.request_id


@dataclass(frozen=True)
class StreamShape:
    """How a surface writes a stream: each chunk's text (journalled), its bytes, the event that
    ends a stream which failed after it started, and what closes a stream (``data: [DONE]``)."""

    text: Callable[[Any], str]
    encode: Callable[[Any], bytes]
    error: Callable[[ProxyError], bytes]
    end: bytes = b""
    usage: Callable[[Any], Any] = lambda chunk: None  # the provider usage a chunk carries (metrics)


class MemoryPipeline:
    def __init__(
        self,
        *,
        router: ModelRouter,
        memory: MemoryOS | None,
        settings: Settings,
        metrics: Metrics | None = None,
        tracing: Tracing | None = None,
        slots: MemorySlots | None = None,
    ) -> None:
        self.router = router
        self._memory = memory
        self._settings = settings
        self._slots = slots or MemorySlots.of(settings.general_settings)
        self.metrics = metrics or Metrics()
        self.tracing = tracing or Tracing()
        self._background: set[asyncio.Task[None]] = set()

    @property
    def memory_role(self) -> layout.MemoryRole:
        """Where the stable block goes: a user turn (the default, least privilege) or the system prompt."""
        return self._settings.memory.scheduler.memory_role

    @staticmethod
    def scope(headers: Headers, owner: str | None, caller: Principal, *, model: str) -> Scope:
        """Whose memory, as the caller's key allows (403 for a model or user it may not use)."""
        caller.check_model(model)
        return resolve_scope(headers, owner, caller)

    async def prepare(
        self, scope: Scope, model: str, view: list[dict[str, Any]], *, id_prefix: str = "req"
    ) -> Prepared:
        """Check the model, plan the memories for ``view`` and build the forward context."""
        limit = self._settings.general_settings.max_messages
        if len(view) > limit:
            raise InvalidRequest(
                f"messages: {len(view)} messages; at most {limit} per request (general_settings.max_messages)",
                param="messages",
            )
        backend = self.router.primary(model)
        record = current_request()
        record.model, record.user = model, scope.user
        started = time.perf_counter()
        with self.tracing.span("memproxy.retrieve", {"memproxy.request_id": record.request_id}) as span:
            plan, status, outcome = await self._plan(scope, view)
            if span is not None:
                span.set_attribute("memproxy.memory_status", status)
                span.set_attribute("memproxy.memories_injected", len(plan.items))
        record.memory_status = status
        plan = dataclasses.replace(plan, stable=_marked(plan.stable, scope), volatile=_marked(plan.volatile, scope))
        stable_layout = layout.stable_messages(
            plan.stable,
            role=self.memory_role,
            cache_hint=backend.provider == "anthropic",
            next_role=layout.next_role(view),
        )
        ctx = ForwardContext(
            request_id=record.request_id if id_prefix == "req" else f"{id_prefix}_{new_id()}",
            space=scope.space,
            kv_reuse=scope.kv_reuse,
            prefix_messages=layout.stable_insert_index(view) + len(stable_layout),
            stable_ids=[cube_id for item in plan.stable for cube_id in item.cube_ids],
        )
        headers = {
            "x-memory-status": status,
            "x-memory-injected": str(len(plan.items)),
            "x-memory-tokens": str(plan.tokens),
            "x-memory-volatile-tokens": str(plan.volatile_tokens),
            "x-memory-ids": ",".join(plan.cube_ids),
            "x-memory-overhead-ms": f"{(time.perf_counter() - started) * 1000:.2f}",
            "x-memory-considered": str(plan.considered),
            "x-request-id": record.request_id,
        }
        if plan.reason is not None:
            headers["x-memory-reason"] = plan.reason
        if outcome is not None:
            self.metrics.memory(
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
        return Prepared(
            scope=scope,
            model=model,
            view=view,
            plan=plan,
            backend=backend,
            ctx=ctx,
            headers=headers,
            stable_layout=stable_layout,
        )

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
            with deadline.within(timeout):  # the threads doing the lookup stop then too
                async with self._slots.hold(scope.key_id):
                    plan = await asyncio.wait_for(
                        self._memory.plan(scope.readable_spaces, messages, session=scope.session), timeout
                    )
        except MemoryBusy:
            return self._degraded("this key's memory work is at its bound", "busy")
        except (TimeoutError, DeadlineExceeded):
            log.warning("memory lookup took over %.0f ms, answering without memory", timeout * 1000)
            return self._degraded("memory lookup timed out", "timeout")
        except Exception as exc:  # memory trouble must never break a chat request
            log.warning("memory planning failed, answering without memory: %r", exc)
            return self._degraded("memory lookup failed", "degraded")
        status = "degraded" if plan.degraded else "ok"
        return plan, status, status

    def _degraded(self, reason: str, outcome: str) -> tuple[InjectionPlan, str, str]:
        if self._settings.memory.fail_closed:
            self.metrics.memory(outcome=outcome, seconds=0.0, injected=0, tokens=0, stable=False)
            raise MemoryUnavailable(f"{reason}; memory.fail_closed is set, so the request is refused")
        return InjectionPlan(), "degraded", outcome

    def response_headers(self, prepared: Prepared) -> dict[str, str]:
        """The memory headers, with what the backend reported while answering."""
        if prepared.ctx.kv_reused_tokens is not None:
            prepared.headers["x-memory-kv-reused-tokens"] = str(prepared.ctx.kv_reused_tokens)
            self.metrics.activation_reused(model=prepared.model, tokens=prepared.ctx.kv_reused_tokens)
        return prepared.headers

    async def forward(self, prepared: Prepared, call: Callable[[Backend], Awaitable[T]]) -> T:
        """``call`` on each deployment in turn (retries and fallbacks) until one answers."""
        with self._forwarding(prepared, stream=False):
            return await self.router.attempt(prepared.model, call)

    async def open_stream(
        self, prepared: Prepared, call: Callable[[Backend], AsyncIterator[T]]
    ) -> tuple[T | None, AsyncIterator[T]]:
        with self._forwarding(prepared, stream=True):
            return await self.router.open_stream(prepared.model, call)

    @contextlib.contextmanager
    def _forwarding(self, prepared: Prepared, *, stream: bool) -> Iterator[None]:
        """What reaching a deployment carries whichever way it answers: its span, the backend's
        error as the client's (sanitised, with the request id), and time to the first token."""
        forwarded = time.perf_counter()
        with self.tracing.span("memproxy.forward", {"memproxy.model": prepared.model, "memproxy.stream": stream}):
            try:
                yield
            except BackendError as exc:
                raise _failed(exc, prepared.request_id) from None
        self.metrics.first_token(model=prepared.model, stream=stream, seconds=time.perf_counter() - forwarded)

    def relay(self, prepared: Prepared, first: Any, rest: AsyncIterator[Any], shape: StreamShape) -> StreamingResponse:
        """Relay a stream, journalling its text once it ends (or what the user said, if the
        client goes away first)."""

        async def relay() -> AsyncIterator[bytes]:
            parts: list[str] = []
            complete = False
            try:
                if first is not None:
                    parts.append(shape.text(first))
                    self.metrics.usage(model=prepared.model, usage=shape.usage(first))
                    yield shape.encode(first)
                try:
                    async for chunk in rest:
                        parts.append(shape.text(chunk))
                        self.metrics.usage(model=prepared.model, usage=shape.usage(chunk))
                        yield shape.encode(chunk)
                    complete = True
                except BackendError as exc:
                    yield shape.error(_failed(exc, prepared.request_id, after_start=True))
                await self.journal(prepared, "".join(parts) if complete else None)
                if shape.end:
                    yield shape.end
            except (asyncio.CancelledError, GeneratorExit):
                # The client went away: what it said is still worth remembering.
                self._spawn(self.journal(prepared, None))
                raise

        headers = self.response_headers(prepared)
        return StreamingResponse(relay(), media_type="text/event-stream", headers=headers)

    async def journal(self, prepared: Prepared, answer: str | None) -> None:
        """Journal the exchange; failures are logged, never raised (the answer is already out)."""
        scope = prepared.scope
        if self._memory is None or not scope.writes or scope.space is None:
            return
        now = utcnow()
        request_id = prepared.request_id
        turns = _turns(request_id, prepared.view, now, limit=self._settings.memory.writeback.chat_turns)
        if answer:  # sentences restating the memories it was shown are not stored again
            answer = quarantine.without_restated(answer, [item.text for item in prepared.plan.items])
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
            model=prepared.model,
            session=scope.session,
            skip_seen=True,
        )
        try:
            with self.tracing.span("memproxy.writeback", {"memproxy.request_id": request_id}):
                await self._memory.record(exchange)
        except Exception as exc:
            log.warning("could not journal exchange %s: %r", request_id, exc)

    def _spawn(self, work: Coroutine[Any, Any, None]) -> None:
        task = asyncio.get_running_loop().create_task(work)
        self._background.add(task)
        task.add_done_callback(self._background.discard)


def _failed(error: BackendError, request_id: str, *, after_start: bool = False) -> BackendError:
    """The backend failed this request: the detail goes to the log, the client sees the request id."""
    error.request_id = request_id
    when = "after it started" if after_start else "before answering"
    log.warning("request %s: the upstream failed %s: %s", request_id, when, error)
    return error


def _marked(items: list[RetrievedItem], scope: Scope) -> list[RetrievedItem]:
    """Memories of a shared space say so (``(shared: org:acme) ...``): they are not about the
    user, and the model should not read them as if the user had said them."""
    return [
        item if item.space == scope.space else dataclasses.replace(item, text=f"(shared: {item.space}) {item.text}")
        for item in items
    ]


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
