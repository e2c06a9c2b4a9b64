"""A scripted OpenAI backend that behaves like a provider's prompt cache, for ``bench cache``.

Providers cache a prompt's token prefix: a request pays full price only for the tokens after the
longest prefix it shares with a recent request of the same conversation. This backend keeps the
previous request's tokens (cl100k, each message rendered as a chat template would:
``<|im_start|>role\\ncontent<|im_end|>\\n``), reports the longest common prefix as OpenAI does, in
``usage.prompt_tokens_details.cached_tokens``, and records per request what was cached and how
much of the prompt came before the last user message (the history). One conversation at a time:
``reset()`` before the next one. Exact prefixes, no 128-token blocks or 1024-token minimum, so
the numbers are the cache's best case for every variant alike.
"""

from __future__ import annotations

import time
from dataclasses import dataclass, field
from typing import Any

from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import JSONResponse, Response
from starlette.routing import Route

from bench.backend import REPLY
from memcubes.tokens import encode


@dataclass(frozen=True)
class Served:
    prompt_tokens: int
    cached_tokens: int
    history_tokens: int  # tokens before the last user message
    messages: list[dict[str, Any]]

    @property
    def prefill_tokens(self) -> int:
        return self.prompt_tokens - self.cached_tokens

    @property
    def cached_history_tokens(self) -> int:
        return min(self.cached_tokens, self.history_tokens)


@dataclass
class PrefixCache:
    previous: list[int] = field(default_factory=list)
    served: list[Served] = field(default_factory=list)

    def reset(self) -> None:
        self.previous = []
        self.served = []

    def serve(self, messages: list[dict[str, Any]]) -> Served:
        rendered = [encode(f"<|im_start|>{m.get('role')}\n{content_text(m)}<|im_end|>\n") for m in messages]
        tokens = [token for message in rendered for token in message]
        last_user = max((i for i, m in enumerate(messages) if m.get("role") == "user"), default=len(messages))
        served = Served(
            prompt_tokens=len(tokens),
            cached_tokens=common_prefix(self.previous, tokens),
            history_tokens=sum(len(message) for message in rendered[:last_user]),
            messages=messages,
        )
        self.previous = tokens
        self.served.append(served)
        return served


def content_text(message: dict[str, Any]) -> str:
    content = message.get("content")
    if isinstance(content, list):
        return "".join(part.get("text", "") for part in content if isinstance(part, dict))
    return content if isinstance(content, str) else ""


def common_prefix(a: list[int], b: list[int]) -> int:
    length = 0
    for x, y in zip(a, b, strict=False):
        if x != y:
            break
        length += 1
    return length


def build_prefix_cache_backend(cache: PrefixCache) -> Starlette:
    async def chat(request: Request) -> Response:
        body = await request.json()
        served = cache.serve(body["messages"])
        text = f"({len(cache.served)}) {REPLY}"
        completion = len(encode(text))
        return JSONResponse(
            {
                "id": f"chatcmpl-cache-{len(cache.served)}",
                "object": "chat.completion",
                "created": int(time.time()),
                "model": body.get("model", "cache"),
                "choices": [{"index": 0, "message": {"role": "assistant", "content": text}, "finish_reason": "stop"}],
                "usage": {
                    "prompt_tokens": served.prompt_tokens,
                    "completion_tokens": completion,
                    "total_tokens": served.prompt_tokens + completion,
                    "prompt_tokens_details": {"cached_tokens": served.cached_tokens},
                },
            }
        )

    return Starlette(routes=[Route("/v1/chat/completions", chat, methods=["POST"])])
