"""A Hugging Face causal LM served in-process, with activation (KV) memory.

``model_list: [{model_name: tiny, local: {path: ./models/tiny}}]`` loads the model and its
tokenizer from a folder, renders messages with the tokenizer's chat template and answers in
OpenAI's shape, streaming token by token. The cacheable prefix of every prompt (the application's
system messages and memproxy's stable block) is kept as an activation MemCube
(``memcubes.activation``): a later turn starts from a copy of its KV cache and prefills only what
follows. When the scheduler changes a space's stable block, the new prefix is prefilled in the
background, so even the first request after the change finds it cached.

Leading system messages are merged into one before rendering: many chat templates accept a
single system message only, and one message keeps the cacheable prefix a single unit.

Generation runs in worker threads; the engine serialises forward passes, so concurrent requests
interleave safely (each owns its cache copy and random generator).
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from collections import OrderedDict
from collections.abc import AsyncIterator, Iterator
from pathlib import Path
from typing import Any

from memcubes.activation import (
    ActivationError,
    ActivationStore,
    GenerationEnd,
    GenerationEvent,
    LocalEngine,
    Prefilled,
    TextDelta,
)
from memcubes.ids import new_id
from memcubes.layout import OPEN_TAG, message_text
from proxy.backends.base import Backend, BackendResponse, ForwardContext, StreamChunk
from proxy.config import ModelEntry
from proxy.errors import BackendError, BackendRejected

log = logging.getLogger(__name__)

_LEADING = ("system", "developer")
_REMEMBERED_SPACES = 1024


def merge_leading_system(messages: list[dict[str, Any]], prefix_messages: int) -> tuple[list[dict[str, Any]], int]:
    """One system message from the leading system/developer ones; the prefix count follows."""
    lead = 0
    while lead < len(messages) and messages[lead].get("role") in _LEADING:
        lead += 1
    if lead <= 1:
        return messages, prefix_messages
    merged = {"role": "system", "content": "\n\n".join(message_text(m, keep_memories=True) for m in messages[:lead])}
    return [merged, *messages[lead:]], max(0, prefix_messages - lead + 1) if prefix_messages >= lead else 0


def _stop_list(value: Any) -> list[str]:
    if value is None:
        return []
    if isinstance(value, str):
        return [value]
    if isinstance(value, list) and all(isinstance(item, str) for item in value):
        return value
    problem = "stop must be a string or a list of strings"
    raise BackendRejected(problem, status=400, public=problem, param="stop")


class LocalHFBackend(Backend):
    provider = "local"

    def __init__(self, entry: ModelEntry, *, data_dir: Path) -> None:
        super().__init__(entry.model_name)
        assert entry.local is not None
        self._settings = entry.local
        safe_name = "".join(ch if ch.isalnum() or ch in "-_." else "_" for ch in entry.model_name)
        self._cache_dir = data_dir / "activation" / safe_name
        self._engine: LocalEngine | None = None
        # Per space: the application's leading system messages and tools seen last, so a changed
        # stable block can be prefilled before that user's next request.
        self._prefixes: OrderedDict[str, tuple[list[dict[str, Any]], list[dict[str, Any]] | None]] = OrderedDict()
        self._rebuilds: set[asyncio.Task[None]] = set()

    @property
    def engine(self) -> LocalEngine:
        if self._engine is None:
            raise BackendError(f"local model {self.model_name!r} is not loaded")
        return self._engine

    async def start(self) -> None:
        settings = self._settings
        if not (settings.path / "config.json").is_file():
            raise BackendError(
                f"local model {self.model_name!r}: no model folder at {settings.path} "
                "(write a test model with `memproxy dev tiny-model PATH`)"
            )
        store = ActivationStore(self._cache_dir, ram_budget_bytes=settings.kv_cache_mb * 1024 * 1024)
        self._engine = await asyncio.to_thread(
            LocalEngine.load, settings.path, device=settings.device, dtype=settings.dtype, activation_store=store
        )

    async def aclose(self) -> None:
        for task in list(self._rebuilds):
            task.cancel()
        await asyncio.gather(*self._rebuilds, return_exceptions=True)

    # -- requests -----------------------------------------------------------------------------

    def _events(self, body: dict[str, Any], ctx: ForwardContext) -> Iterator[GenerationEvent]:
        messages, prefix = merge_leading_system(list(body["messages"]), ctx.prefix_messages)
        tools = body.get("tools")
        if ctx.space is not None:
            self._remember(ctx.space, body["messages"], tools, stable=ctx.prefix_messages)
        limit = body.get("max_completion_tokens") or body.get("max_tokens") or self._settings.max_new_tokens
        try:
            prompt = self.engine.encode(messages, prefix_messages=prefix, tools=tools, covers=ctx.stable_ids)
            return self.engine.generate(
                prompt,
                max_new_tokens=min(int(limit), self._settings.max_new_tokens),
                temperature=float(body.get("temperature", 1.0)),
                top_p=float(body.get("top_p", 1.0)),
                stop=_stop_list(body.get("stop")),
                seed=body.get("seed"),
                reuse_cache=ctx.kv_reuse,
            )
        except (ValueError, TypeError) as exc:
            raise BackendRejected(f"invalid request for local model {self.model_name!r}: {exc}", status=400) from exc
        except ActivationError as exc:
            raise BackendError(f"local model {self.model_name!r} failed: {exc}") from exc

    async def complete(self, body: dict[str, Any], ctx: ForwardContext) -> BackendResponse:
        choices = []
        prompt_tokens = completion_tokens = 0
        for index in range(int(body.get("n") or 1)):
            events = await asyncio.to_thread(lambda: list(self._events(body, ctx)))
            start = next(e for e in events if isinstance(e, Prefilled))
            end = next(e for e in events if isinstance(e, GenerationEnd))
            ctx.kv_reused_tokens = start.reused_tokens
            text = "".join(e.text for e in events if isinstance(e, TextDelta))
            prompt_tokens, completion_tokens = end.prompt_tokens, completion_tokens + end.completion_tokens
            choices.append(
                {
                    "index": index,
                    "message": {"role": "assistant", "content": text},
                    "finish_reason": end.finish_reason,
                    "logprobs": None,
                }
            )
        return BackendResponse(
            {
                "id": f"chatcmpl-{new_id()}",
                "object": "chat.completion",
                "created": int(time.time()),
                "model": self.model_name,
                "choices": choices,
                "usage": {
                    "prompt_tokens": prompt_tokens,
                    "completion_tokens": completion_tokens,
                    "total_tokens": prompt_tokens + completion_tokens,
                },
            }
        )

    async def stream(self, body: dict[str, Any], ctx: ForwardContext) -> AsyncIterator[StreamChunk]:
        if int(body.get("n") or 1) != 1:
            problem = "local models stream one choice at a time (n=1)"
            raise BackendRejected(problem, status=400, public=problem, param="n")
        events = self._events(body, ctx)
        loop = asyncio.get_running_loop()
        queue: asyncio.Queue[GenerationEvent | BaseException | None] = asyncio.Queue()
        cancelled = False

        def produce() -> None:
            try:
                for event in events:
                    if cancelled:
                        return
                    loop.call_soon_threadsafe(queue.put_nowait, event)
            except BaseException as exc:  # handed to the consumer, raised there
                loop.call_soon_threadsafe(queue.put_nowait, exc)
            else:
                loop.call_soon_threadsafe(queue.put_nowait, None)

        worker = loop.run_in_executor(None, produce)
        completion_id = f"chatcmpl-{new_id()}"
        created = int(time.time())

        def chunk(delta: dict[str, Any], finish: str | None = None, **extra: Any) -> StreamChunk:
            choices = [{"index": 0, "delta": delta, "finish_reason": finish, "logprobs": None}]
            return StreamChunk(
                {
                    "id": completion_id,
                    "object": "chat.completion.chunk",
                    "created": created,
                    "model": self.model_name,
                    "choices": choices,
                    **extra,
                }
            )

        try:
            while (event := await queue.get()) is not None:
                if isinstance(event, BaseException):
                    raise BackendError(f"local model {self.model_name!r} failed: {event}") from event
                if isinstance(event, Prefilled):
                    ctx.kv_reused_tokens = event.reused_tokens
                    yield chunk({"role": "assistant", "content": ""})
                elif isinstance(event, TextDelta):
                    yield chunk({"content": event.text})
                else:
                    yield chunk({}, event.finish_reason)
                    if (body.get("stream_options") or {}).get("include_usage"):
                        usage = {
                            "prompt_tokens": event.prompt_tokens,
                            "completion_tokens": event.completion_tokens,
                            "total_tokens": event.prompt_tokens + event.completion_tokens,
                        }
                        yield StreamChunk(
                            {
                                "id": completion_id,
                                "object": "chat.completion.chunk",
                                "created": created,
                                "model": self.model_name,
                                "choices": [],
                                "usage": usage,
                            }
                        )
        finally:
            cancelled = True
            with contextlib.suppress(Exception):
                await worker

    # -- background rebuilds ------------------------------------------------------------------

    def _remember(self, space: str, messages: list[dict[str, Any]], tools: Any, *, stable: int) -> None:
        lead = 0
        while lead < len(messages) and lead < stable and messages[lead].get("role") in _LEADING:
            lead += 1
        app_system = [m for m in messages[:lead] if OPEN_TAG not in message_text(m, keep_memories=True)]
        self._prefixes[space] = (app_system, tools)
        self._prefixes.move_to_end(space)
        while len(self._prefixes) > _REMEMBERED_SPACES:
            self._prefixes.popitem(last=False)

    def stable_changed(self, space: str, stable_messages: list[dict[str, Any]], *, covers: list[str]) -> None:
        """The scheduler changed ``space``'s stable block: prefill the new prefix off the request
        path, if this model has served that space (we need its application system messages)."""
        remembered = self._prefixes.get(space)
        if remembered is None or self._engine is None or self._engine.activation_store is None:
            return
        app_system, tools = remembered
        prefix = [*app_system, *stable_messages]
        if not prefix:
            return
        messages, _ = merge_leading_system(prefix, len(prefix))
        engine = self._engine

        async def rebuild() -> None:
            try:
                await asyncio.to_thread(engine.prefill_prefix, messages, tools=tools, covers=covers, label=space)
            except Exception as exc:  # a failed prebuild only means the next request prefills
                log.warning("could not prebuild the activation cache of %s: %s", space, exc)

        task = asyncio.get_running_loop().create_task(rebuild())
        self._rebuilds.add(task)
        task.add_done_callback(self._rebuilds.discard)

    async def wait_rebuilds(self) -> None:
        """Until background prefills finish (tests and benchmarks)."""
        while self._rebuilds:
            await asyncio.gather(*self._rebuilds, return_exceptions=True)
