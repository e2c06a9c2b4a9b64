"""Activation (KV) memory: reused prefix caches must change nothing but speed.

Every test runs on a random 2-layer, 64-wide Llama written to a temporary folder, so nothing is
downloaded; greedy outputs with and without reuse are compared token for token.
"""

from __future__ import annotations

import os

os.environ.setdefault("HF_HUB_OFFLINE", "1")

import json
import threading
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

import pytest
import torch
from transformers import AutoModelForCausalLM, AutoTokenizer, DynamicCache
from transformers.cache_utils import DynamicLayer

from memcubes.activation import (
    ActivationStore,
    EncodedPrompt,
    GenerationEnd,
    LocalEngine,
    Prefilled,
    TextDelta,
    activation_key,
    build_tiny_tokenizer,
    model_fingerprint,
    write_tiny_model,
)
from memcubes.activation.detokenizer import IncrementalDecoder
from memcubes.activation.kv_store import PrivateLayer
from memcubes.activation.sampling import TokenSampler

Message = dict[str, Any]

MEMORY_BLOCKS = [
    "You are a helpful assistant. Known facts: the user prefers green tea in the morning; "
    "Alice lives in Paris with her two cats; the marathon is in October.",
    "You are a support agent for a furniture shop. Always answer in the customer's language. "
    "Refunds take five days. The warehouse is closed on Sundays.",
    "Memory: my sister's birthday is on the fourteenth of March. I am allergic to peanuts.",
]
USER_TURNS = [
    "What do I usually drink in the morning?",
    "Where does Alice live?",
    "Can you remind me about the marathon? Größe: 日本語 🎉",
    "Thanks! Anything else I should know?",
]


@pytest.fixture(scope="module")
def model_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return write_tiny_model(tmp_path_factory.mktemp("tiny") / "model", layers=2, hidden=64, heads=4, seed=0)


@pytest.fixture(scope="module")
def other_model_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return write_tiny_model(tmp_path_factory.mktemp("tiny") / "other", layers=2, hidden=64, heads=4, seed=1)


@pytest.fixture
def store(tmp_path: Path) -> ActivationStore:
    return ActivationStore(tmp_path / "kv")


@pytest.fixture
def engine(model_dir: Path, store: ActivationStore) -> LocalEngine:
    return LocalEngine.load(model_dir, activation_store=store)


def run(
    engine: LocalEngine,
    prompt: EncodedPrompt,
    *,
    reuse: bool,
    max_new_tokens: int = 24,
    temperature: float = 0.0,
    **kwargs: Any,
) -> tuple[str, GenerationEnd]:
    """Drain one generation: its text and its final event (checking the event order)."""
    text: list[str] = []
    end: GenerationEnd | None = None
    events = list(
        engine.generate(prompt, max_new_tokens=max_new_tokens, temperature=temperature, reuse_cache=reuse, **kwargs)
    )
    first = events.pop(0)
    assert isinstance(first, Prefilled) and first.prompt_tokens == len(prompt.token_ids)
    for event in events:
        if isinstance(event, TextDelta):
            assert end is None
            text.append(event.text)
        else:
            assert isinstance(event, GenerationEnd)
            end = event
    assert end is not None and end.reused_tokens == first.reused_tokens
    return "".join(text), end


def conversation(memory: str, turns: int) -> list[Message]:
    messages: list[Message] = [{"role": "system", "content": memory}]
    for i in range(turns):
        messages.append({"role": "user", "content": USER_TURNS[i]})
        if i < turns - 1:
            messages.append({"role": "assistant", "content": f"Answer number {i}."})
    return messages


def cache_tensors(cache: DynamicCache) -> list[tuple[torch.Tensor, torch.Tensor]]:
    pairs = []
    for layer in cache.layers:
        assert isinstance(layer, DynamicLayer)
        assert layer.keys is not None and layer.values is not None
        pairs.append((layer.keys.clone(), layer.values.clone()))
    return pairs


# -- the tiny model ------------------------------------------------------------------------


def test_tiny_model_loads_offline_and_tokenizes_losslessly(model_dir: Path) -> None:
    tokenizer = AutoTokenizer.from_pretrained(model_dir)
    model = AutoModelForCausalLM.from_pretrained(model_dir)
    assert model.config.num_hidden_layers == 2
    assert model.config.vocab_size == len(tokenizer) >= 2000
    for text in ["Hello, world!", "Größe 日本語 🎉 \n\t  spaces", "", "<|im_end|> is special", "a" * 300]:
        ids = tokenizer.encode(text, add_special_tokens=False)
        assert tokenizer.decode(ids) == text
    assert tokenizer.bos_token and tokenizer.eos_token and tokenizer.pad_token


def test_chat_template_has_the_prefix_property() -> None:
    tokenizer = build_tiny_tokenizer()
    messages: list[Message] = [
        {"role": "system", "content": "Be brief."},
        {"role": "user", "content": "What is 2+2?"},
        {
            "role": "assistant",
            "content": None,
            "tool_calls": [{"id": "c1", "type": "function", "function": {"name": "add", "arguments": "[]"}}],
        },
        {"role": "tool", "tool_call_id": "c1", "content": "4"},
        {"role": "user", "content": [{"type": "text", "text": "Thanks"}, {"type": "image_url"}]},
    ]
    tools: list[dict[Any, Any] | Callable[..., Any]] = [
        {"type": "function", "function": {"name": "add", "parameters": {}}}
    ]
    full = tokenizer.apply_chat_template(messages, tools=tools, tokenize=False, add_generation_prompt=True)
    assert isinstance(full, str)
    assert full.endswith("<|im_start|>assistant\n")
    assert "Thanks" in full and '"name": "add"' in full and "id=c1" in full
    for k in range(1, len(messages) + 1):
        part = tokenizer.apply_chat_template(messages[:k], tools=tools, tokenize=False)
        assert isinstance(part, str) and full.startswith(part)


def test_fingerprint_tells_models_apart(model_dir: Path, other_model_dir: Path) -> None:
    tokenizer = AutoTokenizer.from_pretrained(model_dir)
    model = AutoModelForCausalLM.from_pretrained(model_dir)
    reloaded = AutoModelForCausalLM.from_pretrained(model_dir)
    again = model_fingerprint(reloaded, AutoTokenizer.from_pretrained(model_dir))
    assert model_fingerprint(model, tokenizer) == again
    other = AutoModelForCausalLM.from_pretrained(other_model_dir)
    assert other.config.to_dict() == {**model.config.to_dict(), "_name_or_path": other.config._name_or_path}
    assert model_fingerprint(other, tokenizer) != again
    tokenizer.chat_template = tokenizer.chat_template + " "
    assert model_fingerprint(model, tokenizer) != again
    half = AutoModelForCausalLM.from_pretrained(model_dir, dtype=torch.float16)
    assert model_fingerprint(half, AutoTokenizer.from_pretrained(model_dir)) != again


# -- reuse changes nothing ------------------------------------------------------------------


@pytest.mark.parametrize("memory", MEMORY_BLOCKS, ids=["assistant", "support", "personal"])
def test_greedy_with_reuse_equals_without_over_a_conversation(engine: LocalEngine, memory: str) -> None:
    for turn in range(1, 5):
        prompt = engine.encode(conversation(memory, turn), prefix_messages=1)
        assert 0 < prompt.prefix_len < len(prompt.token_ids)
        text, end = run(engine, prompt, reuse=True)
        base_text, base = run(engine, prompt, reuse=False)
        assert end.token_ids == base.token_ids
        assert text == base_text
        assert base.reused_tokens == 0
        # turn 1 builds and stores the prefix, later turns start from it
        assert end.reused_tokens == (0 if turn == 1 else prompt.prefix_len)
        assert end.prompt_tokens == len(prompt.token_ids)
        assert end.completion_tokens == len(end.token_ids)


def test_growing_history_prefix_reuses_the_previous_turn(engine: LocalEngine) -> None:
    previous_prefix = 0
    for turn in range(1, 5):
        messages = conversation(MEMORY_BLOCKS[0], turn)
        prompt = engine.encode(messages, prefix_messages=len(messages) - 1)
        _, end = run(engine, prompt, reuse=True, max_new_tokens=8)
        _, base = run(engine, prompt, reuse=False, max_new_tokens=8)
        assert end.token_ids == base.token_ids
        assert end.reused_tokens == previous_prefix
        previous_prefix = prompt.prefix_len


def test_last_token_logits_agree(engine: LocalEngine) -> None:
    prompt = engine.encode(conversation(MEMORY_BLOCKS[1], 3), prefix_messages=1)
    cold = engine.next_token_logits(prompt, reuse_cache=False)
    engine.next_token_logits(prompt, reuse_cache=True)  # stores the prefix
    warm = engine.next_token_logits(prompt, reuse_cache=True)
    assert engine.activation_store is not None and len(engine.activation_store) == 1
    assert torch.allclose(cold, warm, atol=1e-4, rtol=0)


def test_stored_cache_is_never_mutated(engine: LocalEngine, store: ActivationStore) -> None:
    prompt = engine.encode(conversation(MEMORY_BLOCKS[0], 1), prefix_messages=1)
    run(engine, prompt, reuse=True)
    (entry,) = store.entries()
    probe = [*entry.token_ids, 7]
    hit = store.longest_prefix(engine.fingerprint, probe)
    assert hit is not None and hit.reused_tokens == entry.token_count
    saved = cache_tensors(hit.cache)

    # generation extends its copy; a caller scribbling on its copy must not reach the store
    for turn in range(2, 5):
        run(engine, engine.encode(conversation(MEMORY_BLOCKS[0], turn), prefix_messages=1), reuse=True)
    for layer in hit.cache.layers:
        assert isinstance(layer, DynamicLayer) and layer.keys is not None
        layer.keys.zero_()
    hit.cache.crop(-3)

    again = store.longest_prefix(engine.fingerprint, probe)
    assert again is not None
    assert again.cache.get_seq_length() == entry.token_count
    for (keys, values), (new_keys, new_values) in zip(saved, cache_tensors(again.cache), strict=True):
        assert torch.equal(keys, new_keys) and torch.equal(values, new_values)
    reloaded = ActivationStore(store.directory).longest_prefix(engine.fingerprint, probe)
    assert reloaded is not None
    for (keys, _), (disk_keys, _) in zip(saved, cache_tensors(reloaded.cache), strict=True):
        assert torch.equal(keys, disk_keys)


def test_cache_of_another_model_is_never_used(model_dir: Path, other_model_dir: Path, tmp_path: Path) -> None:
    shared = ActivationStore(tmp_path / "shared")
    first = LocalEngine.load(model_dir, activation_store=shared)
    second = LocalEngine.load(other_model_dir, activation_store=shared)
    assert first.fingerprint != second.fingerprint
    prompt = first.encode(conversation(MEMORY_BLOCKS[0], 1), prefix_messages=1)
    run(first, prompt, reuse=True)
    assert run(first, prompt, reuse=True)[1].reused_tokens == prompt.prefix_len

    assert second.encode(conversation(MEMORY_BLOCKS[0], 1), prefix_messages=1) == prompt  # same tokenizer
    assert shared.longest_prefix(second.fingerprint, prompt.token_ids) is None
    _, end = run(second, prompt, reuse=True)
    _, base = run(second, prompt, reuse=False)
    assert end.reused_tokens == 0
    assert end.token_ids == base.token_ids
    assert {e.fingerprint for e in shared.entries()} == {first.fingerprint, second.fingerprint}


def test_at_least_one_prompt_token_is_left_uncached(engine: LocalEngine, store: ActivationStore) -> None:
    messages = conversation(MEMORY_BLOCKS[2], 2)
    key = engine.prefill_prefix(messages)
    entry = store.entry(key)
    assert entry is not None
    assert engine.prefill_prefix(messages) == key and len(store) == 1  # idempotent

    # a prompt that is exactly the stored tokens: the copy is cropped by one token
    prompt = EncodedPrompt(token_ids=entry.token_ids)
    _, end = run(engine, prompt, reuse=True)
    _, base = run(engine, prompt, reuse=False)
    assert end.reused_tokens == entry.token_count - 1
    assert end.token_ids == base.token_ids
    hit = store.longest_prefix(engine.fingerprint, entry.token_ids)
    assert hit is not None and hit.cache.get_seq_length() == entry.token_count - 1
    assert store.longest_prefix(engine.fingerprint, entry.token_ids[:1]) is None


def test_cache_survives_a_restart(model_dir: Path, tmp_path: Path) -> None:
    directory = tmp_path / "kv"
    before = LocalEngine.load(model_dir, activation_store=ActivationStore(directory))
    prompt = before.encode(conversation(MEMORY_BLOCKS[0], 2), prefix_messages=1)
    text, _ = run(before, prompt, reuse=True)
    del before

    after = LocalEngine.load(model_dir, activation_store=ActivationStore(directory))
    assert after.activation_store is not None and len(after.activation_store) == 1
    assert after.activation_store.ram_bytes == 0
    restarted_text, end = run(after, prompt, reuse=True)
    assert end.reused_tokens == prompt.prefix_len > 0
    assert restarted_text == text
    assert end.token_ids == run(after, prompt, reuse=False)[1].token_ids


def test_ram_budget_evicts_but_disk_keeps(engine: LocalEngine, tmp_path: Path) -> None:
    prompts = [engine.encode(conversation(memory, 1), prefix_messages=1) for memory in MEMORY_BLOCKS]
    # a budget that holds the largest prefix but not two
    one_entry = 2 * 2 * 4 * 16 * 4  # layers * (k, v) * heads * head_dim * float32 bytes per token
    budget = max(p.prefix_len for p in prompts) * one_entry
    small = ActivationStore(tmp_path / "small", ram_budget_bytes=budget)
    engine.activation_store = small
    keys = []
    for prompt in prompts:
        run(engine, prompt, reuse=True, max_new_tokens=2)
        keys.append(activation_key(engine.fingerprint, prompt.token_ids[: prompt.prefix_len]))
        assert small.ram_bytes <= budget
    assert len(small) == 3
    assert [small.in_ram(k) for k in keys] == [False, False, True]
    for prompt in prompts:
        _, end = run(engine, prompt, reuse=True, max_new_tokens=4)
        _, base = run(engine, prompt, reuse=False, max_new_tokens=4)
        assert end.reused_tokens == prompt.prefix_len
        assert end.token_ids == base.token_ids
        assert small.ram_bytes <= budget
    assert small.evict(keys[2]) is True and not small.in_ram(keys[2])
    assert small.longest_prefix(engine.fingerprint, prompts[2].token_ids) is not None


def test_drop_forgets_everywhere(engine: LocalEngine, store: ActivationStore) -> None:
    system = conversation(MEMORY_BLOCKS[1], 1)[:1]
    key = engine.prefill_prefix(system, covers=["cube-1", "cube-2"], label="stable")
    entry = store.entry(key)
    assert entry is not None and entry.covers == ("cube-1", "cube-2") and entry.label == "stable"
    meta = json.loads((store.directory / f"{key}.json").read_text())
    assert meta["fingerprint"] == engine.fingerprint and meta["token_count"] == entry.token_count
    assert meta["covers"] == ["cube-1", "cube-2"] and meta["created_at"] > 0
    (store.directory / "garbage.json").write_text("{not json")
    assert len(ActivationStore(store.directory)) == 1
    assert store.drop(key) is True
    assert len(store) == 0 and store.ram_bytes == 0
    assert not (store.directory / f"{key}.safetensors").exists()
    assert store.drop(key) is False
    assert len(ActivationStore(store.directory)) == 0


# -- concurrency ---------------------------------------------------------------------------


def test_concurrent_generations_match_sequential_ones(engine: LocalEngine) -> None:
    prompts = [engine.encode(conversation(memory, 2), prefix_messages=1) for memory in MEMORY_BLOCKS[:2]]
    settings: list[dict[str, Any]] = [{"temperature": 0.0}, {"temperature": 0.9, "top_p": 0.9, "seed": 11}]
    expected = [
        run(engine, p, reuse=False, max_new_tokens=32, **s)[1].token_ids for p, s in zip(prompts, settings, strict=True)
    ]

    results: dict[int, Sequence[int]] = {}
    errors: list[BaseException] = []
    barrier = threading.Barrier(2)

    def worker(i: int) -> None:
        try:
            barrier.wait()
            for _ in range(2):  # the first run stores the prefix, the second reuses it
                _, end = run(engine, prompts[i], reuse=True, max_new_tokens=32, **settings[i])
                results[i] = end.token_ids
        except BaseException as exc:  # surfaced below
            errors.append(exc)

    threads = [threading.Thread(target=worker, args=(i,)) for i in range(2)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(timeout=60)
    assert not errors
    assert [results[0], results[1]] == expected


# -- decoding ------------------------------------------------------------------------------


def test_decoder_releases_clean_text_and_cuts_stop_strings() -> None:
    tokenizer = build_tiny_tokenizer()
    text = "Größe: 日本語 🎉 and more 🎉🎉 text"
    ids = tokenizer.encode(text, add_special_tokens=False)
    decoder = IncrementalDecoder(tokenizer)
    deltas = [decoder.push(i) for i in ids] + [decoder.flush()]
    assert "".join(deltas) == text
    assert all("\ufffd" not in d for d in deltas)

    ids = tokenizer.encode("Alice lives in Paris with cats", add_special_tokens=False)
    decoder = IncrementalDecoder(tokenizer, stop=["in Par", "zzz"])
    released = ""
    for i in ids:
        delta = decoder.push(i)
        released += delta
        if decoder.stopped:
            break
    assert decoder.stopped and released == "Alice lives " and decoder.flush() == ""


def test_engine_stop_strings_and_limits(engine: LocalEngine) -> None:
    prompt = engine.encode(conversation(MEMORY_BLOCKS[0], 1))
    text, end = run(engine, prompt, reuse=False, max_new_tokens=20)
    assert end.finish_reason == "length" and end.completion_tokens == 20
    stop = text[len(text) // 2 : len(text) // 2 + 3]
    cut, stopped = run(engine, prompt, reuse=False, max_new_tokens=20, stop=[stop])
    assert stopped.finish_reason == "stop"
    assert cut == text[: text.index(stop)]
    _, one = run(engine, prompt, reuse=False, max_new_tokens=1)
    assert one.completion_tokens == 1 and one.token_ids == end.token_ids[:1]
    with pytest.raises(ValueError):
        engine.generate(prompt, max_new_tokens=0)
    with pytest.raises(ValueError):
        engine.generate(prompt, max_new_tokens=4, top_p=0.0)


def test_sampling_is_reproducible_with_a_seed(engine: LocalEngine) -> None:
    prompt = engine.encode(conversation(MEMORY_BLOCKS[1], 1), prefix_messages=1)
    first = run(engine, prompt, reuse=True, temperature=1.0, top_p=0.95, seed=3)[1].token_ids
    second = run(engine, prompt, reuse=True, temperature=1.0, top_p=0.95, seed=3)[1].token_ids
    assert first == second
    logits = torch.tensor([0.0, 5.0, 1.0])
    assert TokenSampler(temperature=0.0)(logits) == 1
    assert {TokenSampler(temperature=1.0, top_p=0.5, seed=s)(logits) for s in range(20)} == {1}


def test_a_private_layer_appends_like_a_dynamic_layer_and_grows_past_its_room() -> None:
    stored = torch.randn(1, 2, 5, 4), torch.randn(1, 2, 5, 4)
    private, reference = PrivateLayer(*stored, room=2), DynamicLayer()
    reference.update(*stored)
    before = stored[0].clone()
    for step in range(1, 6):  # 1 + 2 + ... + 5 new positions: the room (2) runs out twice
        new = torch.randn(1, 2, step, 4), torch.randn(1, 2, step, 4)
        got, want = private.update(*new), reference.update(*new)
        assert all(torch.equal(a, b) for a, b in zip(got, want, strict=True))
        assert private.get_seq_length() == reference.get_seq_length()
    private.crop(-3)
    reference.crop(-3)
    new = torch.randn(1, 2, 1, 4), torch.randn(1, 2, 1, 4)
    assert torch.equal(private.update(*new)[0], reference.update(*new)[0])
    assert torch.equal(stored[0], before)  # the tensors it was built from are untouched
