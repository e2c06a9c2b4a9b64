"""Any provider litellm supports (Anthropic, Gemini, Bedrock, Ollama, Azure ...), through litellm.

The deployment's ``litellm_params`` are passed as LiteLLM proxy would pass them; retries and
fallbacks are memproxy's router's job, so litellm's own are off. litellm's exceptions are
translated here, at the one place it is called. litellm is imported when the first litellm
deployment is built (it takes ~2 s), so configs without one never pay for it.
"""

from __future__ import annotations

from collections.abc import AsyncIterator
from typing import Any

from proxy.backends.base import Backend, BackendResponse, ForwardContext, StreamChunk
from proxy.config import ModelEntry, RouterSettings
from proxy.errors import (
    BackendAuthenticationFailed,
    BackendError,
    BackendRateLimited,
    BackendRejected,
    BackendTimeout,
    BackendUnavailable,
    BackendUnreachable,
)


def translate(exc: Exception, model_name: str) -> BackendError:
    from litellm import exceptions as litellm_errors

    message = f"backend for {model_name!r} failed: {getattr(exc, 'message', None) or exc}"
    if isinstance(exc, litellm_errors.Timeout):
        return BackendTimeout(message)
    if isinstance(exc, litellm_errors.RateLimitError):
        return BackendRateLimited(message)
    if isinstance(exc, litellm_errors.APIConnectionError):
        return BackendUnreachable(message)
    if isinstance(exc, litellm_errors.ServiceUnavailableError):
        return BackendUnavailable(message)
    status = getattr(exc, "status_code", None)
    if status in (401, 403):
        return BackendAuthenticationFailed(message)
    if isinstance(status, int) and 400 <= status < 500:
        return BackendRejected(message, status=status)
    return BackendError(message)


class LiteLLMBackend(Backend):
    def __init__(self, entry: ModelEntry, *, router: RouterSettings, module_settings: dict[str, Any]) -> None:
        import litellm

        super().__init__(entry.model_name)
        for name, value in module_settings.items():
            setattr(litellm, name, value)
        assert entry.litellm_params is not None
        self._params = {k: v for k, v in entry.litellm_params.model_dump().items() if v is not None}
        self._params.setdefault("timeout", router.timeout)
        self.provider = entry.litellm_params.model.partition("/")[0]
        self.prompt_cache_key = self.provider in ("openai", "azure")

    def _kwargs(self, body: dict[str, Any]) -> dict[str, Any]:
        return {**body, **self._params, "num_retries": 0}

    async def complete(self, body: dict[str, Any], ctx: ForwardContext) -> BackendResponse:
        import litellm

        try:
            response = await litellm.acompletion(**self._kwargs(body))
        except Exception as exc:
            raise translate(exc, self.model_name) from exc
        return BackendResponse(response.model_dump())

    async def stream(self, body: dict[str, Any], ctx: ForwardContext) -> AsyncIterator[StreamChunk]:
        import litellm

        try:
            response = await litellm.acompletion(**self._kwargs({**body, "stream": True}))
            async for chunk in response:
                yield StreamChunk(chunk.model_dump(exclude_none=True))
        except Exception as exc:
            raise translate(exc, self.model_name) from exc

    async def embeddings(self, body: dict[str, Any]) -> BackendResponse:
        import litellm

        try:
            response = await litellm.aembedding(**self._kwargs(body))
        except Exception as exc:
            raise translate(exc, self.model_name) from exc
        return BackendResponse(response.model_dump())
