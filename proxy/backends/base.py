"""What a model backend is: an async object that answers OpenAI chat requests.

Two shapes of answer: a complete response, or a stream of chunks. Backends raise only
``proxy.errors.BackendError`` subclasses (translated from httpx, litellm or torch where they
call them), so routing, retries and the error table need to know no provider.
"""

from __future__ import annotations

from abc import ABC, abstractmethod
from collections.abc import AsyncIterator
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

from proxy.errors import InvalidRequest

if TYPE_CHECKING:
    from proxy.backends.anthropic_wire import AnthropicWire
    from proxy.backends.responses_wire import ResponsesWire


@dataclass(frozen=True)
class BackendResponse:
    data: dict[str, Any]
    raw: bytes | None = None  # the upstream's exact bytes, when it speaks OpenAI's wire format


@dataclass(frozen=True)
class StreamChunk:
    data: dict[str, Any]
    raw: bytes | None = None  # the upstream's exact SSE event


@dataclass
class ForwardContext:
    """Per-request facts a backend may use, and what it reports back for response headers."""

    request_id: str
    space: str | None = None
    kv_reuse: bool = True
    prefix_messages: int = 0  # leading messages up to the end of the stable block (cacheable)
    stable_ids: list[str] = field(default_factory=list)  # memories the stable block holds
    kv_reused_tokens: int | None = None
    extra: dict[str, Any] = field(default_factory=dict)


class Backend(ABC):
    """``provider`` names the API family (openai, anthropic, local ...) so the prompt layout can
    use its caching hints; ``prompt_cache_key`` says whether the upstream accepts OpenAI's key."""

    provider: str = "openai"
    prompt_cache_key: bool = False
    # A deployment that speaks Anthropic's Messages API natively: /v1/messages relays to it.
    anthropic: AnthropicWire | None = None
    # A deployment that serves OpenAI's Responses API natively: /v1/responses relays to it.
    responses: ResponsesWire | None = None

    def __init__(self, model_name: str) -> None:
        self.model_name = model_name

    @abstractmethod
    async def complete(self, body: dict[str, Any], ctx: ForwardContext) -> BackendResponse: ...

    @abstractmethod
    def stream(self, body: dict[str, Any], ctx: ForwardContext) -> AsyncIterator[StreamChunk]:
        """Chunks as the backend produces them; the caller adds the final ``[DONE]``."""

    async def embeddings(self, body: dict[str, Any]) -> BackendResponse:
        """``POST /v1/embeddings``, for backends whose upstream serves it."""
        raise InvalidRequest(f"model {self.model_name!r} does not serve embeddings", param="model")

    async def start(self) -> None:  # noqa: B027 - optional hook
        """Load what the backend needs (models, clients); the default needs nothing."""

    async def aclose(self) -> None:  # noqa: B027 - optional hook
        """Release clients and models; the default holds nothing."""

    def stable_changed(self, space: str, stable_messages: list[dict[str, Any]], *, covers: list[str]) -> None:  # noqa: B027
        """A space's stable block changed; backends with activation memory rebuild its cache."""


def answer_text(data: dict[str, Any]) -> str:
    """The assistant text of the first choice of a complete response."""
    choices = data.get("choices") or []
    if not choices or not isinstance(choices[0], dict):
        return ""
    content = (choices[0].get("message") or {}).get("content")
    return content if isinstance(content, str) else ""


def chunk_text(data: dict[str, Any]) -> str:
    """The text a stream chunk adds to the first choice."""
    for choice in data.get("choices") or []:
        if isinstance(choice, dict) and choice.get("index", 0) == 0:
            content = (choice.get("delta") or {}).get("content")
            return content if isinstance(content, str) else ""
    return ""


def chunk_finished(data: dict[str, Any]) -> bool:
    return any(isinstance(c, dict) and c.get("finish_reason") for c in data.get("choices") or [])
