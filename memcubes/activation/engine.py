"""A causal LM served in-process, reusing KV caches of prompt prefixes across turns.

The memory proxy puts a stable block (the application's system messages and pinned memories)
at the start of every prompt. Prefilling it again each turn dominates time to first token on a
local model, so its KV cache is computed once, stored as an activation MemCube, and later turns
start from a copy of it and prefill only what follows.

Why the token loop is written here instead of calling ``model.generate``: the cache must be
seeded from a copy, extended to the prefix boundary, snapshotted into the store, then extended
again, with explicit positions — all of which ``generate`` hides.

Transformers 5.x API used (checked against 5.24): the forward argument is ``cache=`` (the old
``past_key_values=`` is a deprecated alias), output caches are ``outputs.cache``, caches are
``DynamicCache`` with per-layer ``layers[i].keys`` / ``.values`` (``key_cache`` / ``value_cache``
are gone), ``position_ids`` gives the positions of the new tokens, ``logits_to_keep=1`` computes
only the last position's logits, and ``from_pretrained`` takes ``dtype=``.

Threading: the proxy runs ``generate`` in worker threads. A model forward is not reentrant with
shared state, so every forward pass holds ``self._lock``; the lock is taken per pass rather than
per generation, so concurrent streams interleave fairly and a generator abandoned mid-stream
cannot keep the model locked. Each generation owns its cache copy and its RNG, so interleaving
changes no output.
"""

from __future__ import annotations

import logging
import threading
import time
from collections import OrderedDict
from collections.abc import Iterator, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Literal

import torch
from transformers import (
    AutoModelForCausalLM,
    AutoTokenizer,
    DynamicCache,
    PreTrainedModel,
    PreTrainedTokenizerBase,
)
from transformers.cache_utils import DynamicLayer

from memcubes.activation.detokenizer import IncrementalDecoder
from memcubes.activation.errors import ActivationError, ModelLoadError
from memcubes.activation.fingerprint import model_fingerprint
from memcubes.activation.kv_store import ActivationStore, activation_key
from memcubes.activation.sampling import TokenSampler
from memcubes.environment import apply_offline_defaults

logger = logging.getLogger(__name__)

Message = Mapping[str, Any]
FinishReason = Literal["stop", "length"]
_DTYPES = {"float32": torch.float32, "float16": torch.float16, "bfloat16": torch.bfloat16}
_PREFIXES_KEPT = 256


@dataclass(frozen=True)
class EncodedPrompt:
    """Prompt token ids whose first ``prefix_len`` tokens are the cacheable prefix.

    The prefix is tokenized on its own, so its ids never depend on what follows it.
    ``covers`` names the memories the prefix encodes; they are recorded with its cache.
    """

    token_ids: tuple[int, ...]
    prefix_len: int = 0
    covers: tuple[str, ...] = ()


@dataclass(frozen=True)
class Prefilled:
    """The first event: the prompt is in the cache. Sent before any text so a server can report
    how much of the prompt came from activation memory before it starts streaming."""

    prompt_tokens: int
    reused_tokens: int
    seconds: float


@dataclass(frozen=True)
class TextDelta:
    """Newly generated text that decodes cleanly and cannot be part of a stop string."""

    text: str


@dataclass(frozen=True)
class GenerationEnd:
    """The last event of a generation: why it stopped and what it cost."""

    finish_reason: FinishReason
    prompt_tokens: int
    completion_tokens: int
    reused_tokens: int
    token_ids: tuple[int, ...]
    prefill_seconds: float


GenerationEvent = Prefilled | TextDelta | GenerationEnd


class LocalEngine:
    """A local causal LM with activation memory; see the module docstring for why."""

    def __init__(
        self,
        model: PreTrainedModel,
        tokenizer: PreTrainedTokenizerBase,
        *,
        activation_store: ActivationStore | None = None,
    ) -> None:
        if not tokenizer.chat_template:
            raise ModelLoadError("the tokenizer has no chat template")
        model.eval()  # type: ignore[no-untyped-call]
        self.model = model
        self.tokenizer = tokenizer
        self.device = model.device
        self.fingerprint = model_fingerprint(model, tokenizer)
        self.activation_store = activation_store
        if activation_store is not None and not self._cache_is_storable():
            logger.warning("%s uses non-full-attention caches; KV reuse disabled", type(model).__name__)
            self.activation_store = None
        self._eos_ids = self._collect_eos_ids()
        self._lock = threading.Lock()
        # Token ids of recent prefixes: a session's prefix is the same text turn after turn, and
        # tokenizing a 4k-token prefix again each time would cost a good part of a cached turn.
        self._prefix_ids: OrderedDict[str, tuple[int, ...]] = OrderedDict()
        self._prefix_lock = threading.Lock()

    @classmethod
    def load(
        cls,
        path: Path | str,
        *,
        device: str = "cpu",
        dtype: str = "float32",
        activation_store: ActivationStore | None = None,
    ) -> LocalEngine:
        """Load a model folder (``save_pretrained`` layout) without touching the network."""
        if dtype not in _DTYPES:
            raise ValueError(f"dtype must be one of {sorted(_DTYPES)}, got {dtype!r}")
        apply_offline_defaults()
        try:
            tokenizer = AutoTokenizer.from_pretrained(str(path))
            model = AutoModelForCausalLM.from_pretrained(str(path), dtype=_DTYPES[dtype])
            model = model.to(device)  # type: ignore[arg-type]
        except (OSError, ValueError, RuntimeError) as exc:
            raise ModelLoadError(f"cannot load a causal LM from {path}: {exc}") from exc
        return cls(model, tokenizer, activation_store=activation_store)

    # -- prompts ---------------------------------------------------------------------------

    def encode(
        self,
        messages: Sequence[Message],
        *,
        prefix_messages: int = 0,
        tools: Sequence[Mapping[str, Any]] | None = None,
        covers: Sequence[str] = (),
    ) -> EncodedPrompt:
        """Render ``messages`` for generation; the first ``prefix_messages`` form the prefix.

        If the chat template breaks the prefix property (rendering the prefix alone is not a
        string prefix of the whole), the prompt is returned without a prefix: it still works,
        it is just not cached.
        """
        if not 0 <= prefix_messages <= len(messages):
            raise ValueError(f"prefix_messages={prefix_messages} with {len(messages)} messages")
        full = self._render(messages, tools=tools, add_generation_prompt=True)
        if prefix_messages == 0:
            return EncodedPrompt(token_ids=self._tokenize(full))
        prefix = self._render(messages[:prefix_messages], tools=tools, add_generation_prompt=False)
        if not full.startswith(prefix):
            logger.warning("chat template lacks the prefix property; prompt prefix not cached")
            return EncodedPrompt(token_ids=self._tokenize(full))
        prefix_ids = self._tokenize_prefix(prefix)
        return EncodedPrompt(
            token_ids=prefix_ids + self._tokenize(full[len(prefix) :]),
            prefix_len=len(prefix_ids),
            covers=tuple(covers),
        )

    def _render(
        self,
        messages: Sequence[Message],
        *,
        tools: Sequence[Mapping[str, Any]] | None,
        add_generation_prompt: bool,
    ) -> str:
        rendered = self.tokenizer.apply_chat_template(
            [dict(m) for m in messages],
            tools=[dict(t) for t in tools] if tools else None,
            tokenize=False,
            add_generation_prompt=add_generation_prompt,
        )
        if not isinstance(rendered, str):
            raise ActivationError(f"chat template rendered {type(rendered).__name__}, not text")
        return rendered

    def _tokenize_prefix(self, text: str) -> tuple[int, ...]:
        with self._prefix_lock:
            ids = self._prefix_ids.get(text)
            if ids is not None:
                self._prefix_ids.move_to_end(text)
                return ids
        ids = self._tokenize(text)
        with self._prefix_lock:
            self._prefix_ids[text] = ids
            while len(self._prefix_ids) > _PREFIXES_KEPT:
                self._prefix_ids.popitem(last=False)
        return ids

    def _tokenize(self, text: str) -> tuple[int, ...]:
        # the template writes BOS itself; add_special_tokens would add a second one
        ids = self.tokenizer.encode(text, add_special_tokens=False)
        return tuple(int(i) for i in ids)

    # -- caches ----------------------------------------------------------------------------

    def prefill_prefix(
        self,
        messages_prefix: Sequence[Message],
        *,
        tools: Sequence[Mapping[str, Any]] | None = None,
        covers: Sequence[str] = (),
        label: str | None = None,
    ) -> str:
        """Build and store the cache of a prefix ahead of time (background rebuilds); its key.

        The prefix is rendered exactly as ``encode`` renders it, so a later prompt that starts
        with these messages hits it.
        """
        store = self.activation_store
        if store is None:
            raise ActivationError("this engine has no activation store")
        ids = self._tokenize(self._render(messages_prefix, tools=tools, add_generation_prompt=False))
        key = activation_key(self.fingerprint, ids)
        if key in store:
            return key
        hit = store.longest_prefix(self.fingerprint, ids, device=self.device)
        cache, done = (hit.cache, hit.reused_tokens) if hit else (self._new_cache(), 0)
        self._forward(ids[done:], cache, start=done)
        return store.put(self.fingerprint, ids, cache, covers=covers, label=label)

    def next_token_logits(self, prompt: EncodedPrompt, *, reuse_cache: bool = True) -> torch.Tensor:
        """Logits for the token after the prompt (float32, on CPU), through the same prefill."""
        _, logits, _ = self._prefill(prompt, reuse_cache=reuse_cache)
        return logits.detach().to("cpu", torch.float32)

    def _new_cache(self) -> DynamicCache:
        return DynamicCache(config=self.model.config)

    def _cache_is_storable(self) -> bool:
        return all(type(layer) is DynamicLayer for layer in self._new_cache().layers)

    def _collect_eos_ids(self) -> frozenset[int]:
        ids: set[int] = set()
        for value in (
            self.tokenizer.eos_token_id,
            getattr(self.model.generation_config, "eos_token_id", None),
        ):
            if isinstance(value, int):
                ids.add(value)
            elif isinstance(value, list | tuple):
                ids.update(int(v) for v in value)
        return frozenset(ids)

    def _forward(self, ids: Sequence[int], cache: DynamicCache, *, start: int) -> torch.Tensor:
        """Extend ``cache`` (holding ``start`` tokens) by ``ids``; logits of the last one."""
        if cache.get_seq_length() != start:
            raise ActivationError(f"cache holds {cache.get_seq_length()} tokens, expected {start}")
        input_ids = torch.tensor([list(ids)], dtype=torch.long, device=self.device)
        position_ids = torch.arange(start, start + len(ids), device=self.device).unsqueeze(0)
        with self._lock, torch.no_grad():
            outputs = self.model(
                input_ids=input_ids,
                position_ids=position_ids,
                cache=cache,
                use_cache=True,
                logits_to_keep=1,
            )
        logits: torch.Tensor = outputs.logits[0, -1]
        return logits

    def _prefill(self, prompt: EncodedPrompt, *, reuse_cache: bool) -> tuple[DynamicCache, torch.Tensor, int]:
        """Cache for the whole prompt, next-token logits, and how many tokens were reused.

        Order: start from the longest stored prefix (a private copy); if the prompt's own prefix
        is not covered yet, extend to it and store a copy so the next turn can start there; then
        prefill the rest. One cache is only ever extended, never stitched from parts.
        """
        ids = prompt.token_ids
        if not ids:
            raise ValueError("empty prompt")
        store = self.activation_store if reuse_cache else None
        hit = store.longest_prefix(self.fingerprint, ids, device=self.device) if store else None
        cache, done = (hit.cache, hit.reused_tokens) if hit else (self._new_cache(), 0)
        reused = done
        if store is not None and done < prompt.prefix_len < len(ids):
            self._forward(ids[done : prompt.prefix_len], cache, start=done)
            done = prompt.prefix_len
            try:
                store.put(self.fingerprint, ids[:done], cache, covers=prompt.covers)
            except (OSError, ActivationError) as exc:  # memory must never fail a request
                logger.warning("could not store the prefix cache: %s", exc)
        logits = self._forward(ids[done:], cache, start=done)
        return cache, logits, reused

    # -- generation ------------------------------------------------------------------------

    def generate(
        self,
        prompt: EncodedPrompt,
        *,
        max_new_tokens: int,
        temperature: float = 1.0,
        top_p: float = 1.0,
        stop: Sequence[str] = (),
        seed: int | None = None,
        reuse_cache: bool = True,
    ) -> Iterator[GenerationEvent]:
        """One ``Prefilled``, then ``TextDelta``s as tokens are produced, then one ``GenerationEnd``.

        Arguments are checked now; the model runs as the iterator is consumed.

        ``completion_tokens`` counts sampled tokens, a final EOS included.
        """
        if max_new_tokens < 1:
            raise ValueError(f"max_new_tokens must be >= 1, got {max_new_tokens}")
        if not prompt.token_ids:
            raise ValueError("empty prompt")
        # built here so that bad arguments raise at the call, before a stream has started
        sampler = TokenSampler(temperature=temperature, top_p=top_p, seed=seed, device=self.device)
        return self._generate(
            prompt, max_new_tokens=max_new_tokens, sampler=sampler, stop=stop, reuse_cache=reuse_cache
        )

    def _generate(
        self,
        prompt: EncodedPrompt,
        *,
        max_new_tokens: int,
        sampler: TokenSampler,
        stop: Sequence[str],
        reuse_cache: bool,
    ) -> Iterator[GenerationEvent]:
        decoder = IncrementalDecoder(self.tokenizer, stop=stop)
        started = time.perf_counter()
        cache, logits, reused = self._prefill(prompt, reuse_cache=reuse_cache)
        prefill_seconds = time.perf_counter() - started
        yield Prefilled(prompt_tokens=len(prompt.token_ids), reused_tokens=reused, seconds=prefill_seconds)
        position = len(prompt.token_ids)
        generated: list[int] = []
        finish: FinishReason = "length"
        while True:
            token = sampler(logits)
            generated.append(token)
            if token in self._eos_ids:
                finish = "stop"
                break
            delta = decoder.push(token)
            if delta:
                yield TextDelta(delta)
            if decoder.stopped:
                finish = "stop"
                break
            if len(generated) >= max_new_tokens:
                break
            logits = self._forward([token], cache, start=position)
            position += 1
        tail = decoder.flush()
        if tail:
            yield TextDelta(tail)
        yield GenerationEnd(
            finish_reason=finish,
            prompt_tokens=len(prompt.token_ids),
            completion_tokens=len(generated),
            reused_tokens=reused,
            token_ids=tuple(generated),
            prefill_seconds=prefill_seconds,
        )
