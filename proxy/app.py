"""``build_app(settings)``: wires routers, middleware, error handlers and a lifespan that opens
the memory layer and the backends onto ``app.state``. No module-level state."""

from __future__ import annotations

import asyncio
import contextlib
import logging
import urllib.request
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from typing import Any

import aiohttp
from fastapi import FastAPI

from memcubes import layout
from memcubes.embedder import Embedder
from memcubes.memory_os import MemoryOS
from memcubes.reader import LLMComplete
from memcubes.retrieval import RetrievedItem
from memcubes.scheduler import StableListener
from proxy.access import AccessLog
from proxy.auth import KeyRing
from proxy.backends import ForwardContext, ModelRouter, build_router
from proxy.backends.base import answer_text
from proxy.config import Settings
from proxy.content_type import JsonByDefault
from proxy.errors import install_error_handlers
from proxy.limits import BodySizeLimit
from proxy.memory_slots import MemorySlots
from proxy.metrics import Metrics
from proxy.routes import (
    bundles,
    chat,
    docs,
    embeddings,
    health,
    keys,
    mcp,
    memories,
    messages,
    models,
    responses,
    spaces,
    ui,
)
from proxy.routes.metrics import metrics_router
from proxy.serving.chat import ChatService
from proxy.serving.memories import MemoryService
from proxy.serving.messages import MessagesService
from proxy.serving.pipeline import MemoryPipeline
from proxy.serving.responses import ResponsesService
from proxy.serving.spaces import SpaceService
from proxy.tracing import build_tracing

log = logging.getLogger("memproxy")

VERSION = "0.1.0"


def extraction_llm(settings: Settings, router: ModelRouter) -> LLMComplete | None:
    """The extraction model for ``llm`` mode: ``memory.extraction.model``, else the first model."""
    model = settings.memory.extraction.model or (router.model_names[0] if router.model_names else None)
    if model is None:
        return None

    async def complete(messages: list[dict[str, Any]]) -> str:
        body = {"messages": messages, "temperature": 0, "response_format": {"type": "json_object"}}
        response = await router.complete(model, body, ForwardContext(request_id="extraction"))
        return answer_text(response.data)

    return complete


def rebuild_activation_caches(router: ModelRouter, settings: Settings) -> StableListener:
    """When a space's stable block changes, local models prefill the new prompt prefix in the
    background, so the next request of that space reuses it instead of paying for it (laid out
    for the common case, a conversation that goes on with a user turn)."""

    def listener(space: str, stable: list[RetrievedItem]) -> None:
        messages = layout.stable_messages(stable, role=settings.memory.scheduler.memory_role)
        for backend in router.backends():
            backend.stable_changed(space, messages, covers=[cube_id for item in stable for cube_id in item.cube_ids])

    return listener


_SAMPLE_SECONDS = 15.0


async def _sample_forever(metrics: Metrics, memory: MemoryOS) -> None:
    """Keep this process's write-back gauges current for scrapes another worker answers."""
    while True:
        with contextlib.suppress(Exception):  # a store that is down shows in /readyz; retry later
            await metrics.sample(memory)
        await asyncio.sleep(_SAMPLE_SECONDS)


def build_app(settings: Settings, *, embedder: Embedder | None = None, span_exporter: Any | None = None) -> FastAPI:
    """The ASGI app. ``embedder`` lets tests and benchmarks share one loaded model;
    ``span_exporter`` (an OpenTelemetry exporter) turns tracing on for tests."""
    metrics = Metrics(multiproc_dir=settings.server.prometheus_multiproc_dir)
    tracing = build_tracing(settings.server.otlp_endpoint, exporter=span_exporter)

    @asynccontextmanager
    async def lifespan(app: FastAPI) -> AsyncIterator[None]:
        client = aiohttp.ClientSession(
            # idle connections go before common upstream keep-alive limits (uvicorn's is 5 s)
            connector=aiohttp.TCPConnector(limit=2048, limit_per_host=0, keepalive_timeout=4.0),
            timeout=aiohttp.ClientTimeout(total=None),
            # HTTPS_PROXY and friends, as httpx and the OpenAI SDK honour them; only when set: aiohttp
            # then looks them (and ~/.netrc) up in a worker thread on every request.
            trust_env=bool(urllib.request.getproxies()),
        )
        router = build_router(settings, client)
        try:
            for backend in router.backends():
                await backend.start()
        except BaseException:
            await client.close()  # else aiohttp warns "Unclosed client session" on the way out
            raise
        memory: MemoryOS | None = None
        try:
            memory = await MemoryOS.open(settings.memory, embedder=embedder, llm=extraction_llm(settings, router))
            memory.scheduler.on_stable_change(rebuild_activation_caches(router, settings))
            memory.scheduler.on_stable_change(lambda space, stable: metrics.stable_block_changed())
            await memory.start()
        except Exception:
            log.exception("memory layer failed to start; chat is served without memory (degraded)")
            memory = None
        app.state.router = router
        app.state.memory = memory
        app.state.keyring = KeyRing(memory.keys if memory is not None else None)
        pipeline = MemoryPipeline(
            router=router, memory=memory, settings=settings, metrics=metrics, tracing=tracing, slots=slots
        )
        app.state.chat = ChatService(pipeline)
        app.state.messages = MessagesService(pipeline)
        app.state.responses = ResponsesService(pipeline, memory.responses if memory is not None else None)
        app.state.memories = MemoryService(memory=memory, settings=settings)
        app.state.spaces = SpaceService(memories=app.state.memories)
        sampler = asyncio.create_task(_sample_forever(metrics, memory)) if memory is not None else None
        try:
            async with mcp_endpoint.running():
                yield
        finally:
            if sampler is not None:
                sampler.cancel()
            tracing.close()
            metrics.close()
            if memory is not None:
                await memory.close()
            for backend in router.backends():
                await backend.aclose()
            await client.close()

    # FastAPI's own /docs, /redoc and /openapi.json are off: proxy.routes.docs serves them behind
    # the key check, without CDN assets.
    app = FastAPI(title="memproxy", version=VERSION, lifespan=lifespan, docs_url=None, redoc_url=None, openapi_url=None)
    app.state.settings = settings
    app.state.metrics = metrics
    slots = MemorySlots.of(settings.general_settings)
    app.state.memory_slots = slots  # shared by chat and the memory API (proxy.memory_slots.memory_work)
    install_error_handlers(app)
    limits = settings.general_settings
    app.add_middleware(
        BodySizeLimit,
        max_bytes=int(limits.max_request_size_mb * 1024 * 1024),
        path_limits={bundles.IMPORT_PATH: int(limits.max_import_size_mb * 1024 * 1024)},
    )
    app.add_middleware(JsonByDefault)
    app.add_middleware(
        AccessLog, metrics=metrics, tracing=tracing, log_user_ids=settings.server.log_user_ids
    )  # outermost: what the size limit refuses is logged and counted too
    for module in (chat, messages, responses, embeddings, models, memories, bundles, spaces, keys, health, docs, ui):
        app.include_router(module.router)
    app.include_router(metrics_router(settings.server.metrics))
    mcp_endpoint = mcp.MCPEndpoint(mcp.build_mcp_server())
    app.router.routes.append(mcp.route(mcp_endpoint))
    return app
