"""Model backends by kind, and the router built from ``model_list``."""

from __future__ import annotations

import aiohttp

from proxy.backends.anthropic_wire import AnthropicWire
from proxy.backends.base import Backend, BackendResponse, ForwardContext, StreamChunk
from proxy.backends.litellm_backend import LiteLLMBackend
from proxy.backends.openai_wire import OpenAIWireBackend
from proxy.backends.router import ModelRouter
from proxy.config import ModelEntry, Settings

__all__ = [
    "Backend",
    "BackendResponse",
    "ForwardContext",
    "ModelRouter",
    "StreamChunk",
    "build_backend",
    "build_router",
]


def build_backend(entry: ModelEntry, settings: Settings, client: aiohttp.ClientSession) -> Backend:
    if entry.local is not None:
        from proxy.backends.local_hf import LocalHFBackend

        return LocalHFBackend(entry, data_dir=settings.memory.data_dir)
    assert entry.litellm_params is not None
    provider = entry.litellm_params.model.partition("/")[0]
    backend: Backend
    if entry.openai_wire:
        backend = OpenAIWireBackend(entry, client=client, router=settings.router_settings)
    else:
        backend = LiteLLMBackend(entry, router=settings.router_settings, module_settings=settings.litellm_settings)
    if provider == "anthropic" and entry.forward != "passthrough":
        backend.anthropic = AnthropicWire(entry, client=client, router=settings.router_settings)
    return backend


def build_router(settings: Settings, client: aiohttp.ClientSession) -> ModelRouter:
    deployments: dict[str, list[Backend]] = {}
    for entry in settings.model_list:
        deployments.setdefault(entry.model_name, []).append(build_backend(entry, settings, client))
    return ModelRouter(deployments, settings.router_settings)
