"""Activation MemCubes: KV caches of exact token prefixes, in RAM and on disk.

A stored cache is valid for exactly one model (its fingerprint) and exactly one token sequence,
so the key is ``sha256(fingerprint, token ids)``, like vLLM's block hashes. A prompt may reuse an
entry only when the entry's tokens are an exact prefix of the prompt's tokens; the memory text
stays in the prompt and the cache merely spares recomputing it.

Rules, each one a bug seen in MemOS:

- copy on read: generation appends to the cache it is given, so callers always get a fresh
  ``DynamicCache`` built from the stored tensors, which are never handed out or mutated;
- at least one prompt token stays uncached: the model needs a forward pass to produce the next
  token's logits. An entry that covers the whole prompt is still used, but its copy is cropped to
  ``len(prompt) - 1`` tokens (cropping a copy costs a slice; skipping the entry would fall back to
  a shorter one or to a full prefill);
- fingerprints never mix: lookups only see entries of the caller's fingerprint.

Every entry is written to ``<dir>/<key>.safetensors`` (``layers.<i>.keys`` / ``.values``) with a
``<key>.json`` beside it that is written last and so marks the entry complete; a new store on the
same folder finds them again. RAM holds an LRU of entries bounded by a byte budget; an evicted
entry is re-read from disk on its next hit.
"""

from __future__ import annotations

import hashlib
import json
import logging
import os
import struct
import threading
import time
from collections import OrderedDict
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch
from safetensors import SafetensorError
from safetensors.torch import load_file, save_file
from transformers import DynamicCache
from transformers.cache_utils import DynamicLayer

from memcubes.activation.errors import ActivationFileError, UnsupportedCache

logger = logging.getLogger(__name__)

_FORMAT = "memproxy-kv/1"
_DECODE_ROOM = 128  # positions a private cache has free beyond the prompt before it grows
_LayerTensors = tuple[tuple[torch.Tensor, torch.Tensor], ...]


@dataclass(frozen=True)
class ActivationEntry:
    """What is known about a stored cache without reading its tensors."""

    key: str
    fingerprint: str
    token_ids: tuple[int, ...]
    created_at: float
    covers: tuple[str, ...] = ()
    label: str | None = None
    nbytes: int = 0

    @property
    def token_count(self) -> int:
        return len(self.token_ids)


@dataclass
class CacheHit:
    """A private copy of a stored cache, ready to be extended by a forward pass."""

    entry: ActivationEntry
    cache: DynamicCache
    reused_tokens: int


@dataclass
class _FingerprintIndex:
    # token count -> keys of that length; a lookup hashes the prompt once per distinct length
    by_length: dict[int, set[str]] = field(default_factory=dict)


def activation_key(fingerprint: str, token_ids: Sequence[int]) -> str:
    """The store key of a token sequence under one model fingerprint."""
    digest = _key_digest(fingerprint)
    digest.update(_pack(token_ids))
    return digest.hexdigest()


def _key_digest(fingerprint: str) -> hashlib._Hash:
    digest = hashlib.sha256()
    digest.update(fingerprint.encode("ascii") + b"\0")
    return digest


def _pack(token_ids: Sequence[int]) -> bytes:
    return struct.pack(f"<{len(token_ids)}q", *token_ids)


class ActivationStore:
    """KV caches by exact token prefix; thread-safe, persistent, RAM bounded by bytes."""

    def __init__(self, directory: Path, *, ram_budget_bytes: int = 2 * 1024**3) -> None:
        self._directory = directory
        self._ram_budget = ram_budget_bytes
        self._lock = threading.Lock()
        self._entries: dict[str, ActivationEntry] = {}
        self._index: dict[str, _FingerprintIndex] = {}
        self._ram: OrderedDict[str, _LayerTensors] = OrderedDict()
        self._ram_bytes = 0
        directory.mkdir(parents=True, exist_ok=True)
        self._scan()

    # -- queries ---------------------------------------------------------------------------

    def __len__(self) -> int:
        with self._lock:
            return len(self._entries)

    def __contains__(self, key: object) -> bool:
        with self._lock:
            return key in self._entries

    @property
    def directory(self) -> Path:
        return self._directory

    @property
    def ram_bytes(self) -> int:
        """Bytes of cache tensors currently held in RAM."""
        with self._lock:
            return self._ram_bytes

    def in_ram(self, key: str) -> bool:
        with self._lock:
            return key in self._ram

    def entry(self, key: str) -> ActivationEntry | None:
        with self._lock:
            return self._entries.get(key)

    def entries(self, fingerprint: str | None = None) -> list[ActivationEntry]:
        """Entries, oldest first, optionally of one model only."""
        with self._lock:
            found = [e for e in self._entries.values() if fingerprint in (None, e.fingerprint)]
        return sorted(found, key=lambda e: e.created_at)

    def longest_prefix(
        self, fingerprint: str, token_ids: Sequence[int], *, device: torch.device | str | None = None
    ) -> CacheHit | None:
        """The longest stored exact prefix of ``token_ids``, as a private copy, or None.

        The copy always leaves at least one token of ``token_ids`` to compute (see module doc).
        """
        if len(token_ids) < 2:
            return None
        for entry in self._candidates(fingerprint, token_ids):
            tensors = self._tensors(entry)
            if tensors is None:
                continue
            reused = min(entry.token_count, len(token_ids) - 1)
            return CacheHit(
                entry=entry,
                cache=_private_cache(tensors, reused, len(token_ids) - reused + _DECODE_ROOM, device),
                reused_tokens=reused,
            )
        return None

    def _candidates(self, fingerprint: str, token_ids: Sequence[int]) -> list[ActivationEntry]:
        with self._lock:
            index = self._index.get(fingerprint)
            if index is None:
                return []
            lengths = sorted(n for n in index.by_length if 0 < n <= len(token_ids))
        # One pass over the prompt: snapshot the running hash at every stored length.
        digest = _key_digest(fingerprint)
        keys: list[str] = []
        done = 0
        for n in lengths:
            digest.update(_pack(token_ids[done:n]))
            done = n
            keys.append(digest.copy().hexdigest())
        with self._lock:
            found = [self._entries[key] for key in reversed(keys) if key in self._entries]
        # the key already implies both; comparing is cheap and makes a hash collision harmless
        return [
            entry
            for entry in found
            if entry.fingerprint == fingerprint and entry.token_ids == tuple(token_ids[: entry.token_count])
        ]

    # -- updates ---------------------------------------------------------------------------

    def put(
        self,
        fingerprint: str,
        token_ids: Sequence[int],
        cache: DynamicCache,
        *,
        covers: Sequence[str] = (),
        label: str | None = None,
    ) -> str:
        """Store a copy of ``cache``, which must hold exactly ``token_ids``; return the key.

        Idempotent: storing the same tokens under the same fingerprint again keeps the first
        entry (same tokens and model give the same tensors).
        """
        key = activation_key(fingerprint, token_ids)
        with self._lock:
            if key in self._entries:
                return key
        tensors = _snapshot(cache, len(token_ids))
        nbytes = sum(k.nbytes + v.nbytes for k, v in tensors)
        entry = ActivationEntry(
            key=key,
            fingerprint=fingerprint,
            token_ids=tuple(int(t) for t in token_ids),
            created_at=time.time(),
            covers=tuple(covers),
            label=label,
            nbytes=nbytes,
        )
        self._write(entry, tensors)
        with self._lock:
            if key not in self._entries:
                self._add_entry(entry)
                self._remember(key, tensors)
        return key

    def evict(self, key: str) -> bool:
        """Drop an entry from RAM only; it stays on disk. Returns whether it was in RAM."""
        with self._lock:
            tensors = self._ram.pop(key, None)
            if tensors is None:
                return False
            self._ram_bytes -= _nbytes(tensors)
            return True

    def drop(self, key: str) -> bool:
        """Forget an entry everywhere (RAM, index, disk). Returns whether it existed."""
        with self._lock:
            entry = self._entries.pop(key, None)
            tensors = self._ram.pop(key, None)
            if tensors is not None:
                self._ram_bytes -= _nbytes(tensors)
            if entry is not None:
                index = self._index[entry.fingerprint]
                keys = index.by_length[entry.token_count]
                keys.discard(key)
                if not keys:
                    del index.by_length[entry.token_count]
                if not index.by_length:
                    del self._index[entry.fingerprint]
        for path in (self._json_path(key), self._tensor_path(key)):
            path.unlink(missing_ok=True)
        return entry is not None

    # -- internals -------------------------------------------------------------------------

    def _add_entry(self, entry: ActivationEntry) -> None:
        self._entries[entry.key] = entry
        index = self._index.setdefault(entry.fingerprint, _FingerprintIndex())
        index.by_length.setdefault(entry.token_count, set()).add(entry.key)

    def _remember(self, key: str, tensors: _LayerTensors) -> None:
        """Put tensors in the RAM LRU (caller holds the lock) and evict down to the budget."""
        if key in self._ram:
            self._ram.move_to_end(key)
            return
        size = _nbytes(tensors)
        if size > self._ram_budget:
            return
        self._ram[key] = tensors
        self._ram_bytes += size
        while self._ram_bytes > self._ram_budget:
            _, old = self._ram.popitem(last=False)
            self._ram_bytes -= _nbytes(old)

    def _tensors(self, entry: ActivationEntry) -> _LayerTensors | None:
        with self._lock:
            tensors = self._ram.get(entry.key)
            if tensors is not None:
                self._ram.move_to_end(entry.key)
                return tensors
        try:
            tensors = self._read(entry)
        except ActivationFileError as exc:
            logger.warning("activation cache %s unreadable, dropping it: %s", entry.key, exc)
            self.drop(entry.key)
            return None
        with self._lock:
            if entry.key in self._entries:
                self._remember(entry.key, tensors)
        return tensors

    def _tensor_path(self, key: str) -> Path:
        return self._directory / f"{key}.safetensors"

    def _json_path(self, key: str) -> Path:
        return self._directory / f"{key}.json"

    def _write(self, entry: ActivationEntry, tensors: _LayerTensors) -> None:
        named: dict[str, torch.Tensor] = {}
        for i, (keys, values) in enumerate(tensors):
            named[f"layers.{i}.keys"] = keys
            named[f"layers.{i}.values"] = values
        metadata = {
            "format": _FORMAT,
            "key": entry.key,
            "fingerprint": entry.fingerprint,
            "token_ids": list(entry.token_ids),
            "token_count": entry.token_count,
            "created_at": entry.created_at,
            "covers": list(entry.covers),
            "label": entry.label,
            "layers": len(tensors),
            "nbytes": entry.nbytes,
        }
        # Unique temp names, then atomic renames; the JSON goes last and marks the entry complete.
        suffix = f".{os.getpid()}.{threading.get_ident()}.tmp"
        tensor_tmp = self._directory / f"{entry.key}.safetensors{suffix}"
        json_tmp = self._directory / f"{entry.key}.json{suffix}"
        save_file(named, str(tensor_tmp), metadata={"format": _FORMAT, "key": entry.key})
        os.replace(tensor_tmp, self._tensor_path(entry.key))
        json_tmp.write_text(json.dumps(metadata), encoding="utf-8")
        os.replace(json_tmp, self._json_path(entry.key))

    def _read(self, entry: ActivationEntry) -> _LayerTensors:
        path = self._tensor_path(entry.key)
        try:
            named = load_file(str(path))
        except (OSError, SafetensorError) as exc:
            raise ActivationFileError(f"cannot read {path}: {exc}") from exc
        layers = len(named) // 2
        try:
            tensors = tuple((named[f"layers.{i}.keys"], named[f"layers.{i}.values"]) for i in range(layers))
        except KeyError as exc:
            raise ActivationFileError(f"{path} lacks tensor {exc}") from exc
        if any(k.shape[-2] != entry.token_count for k, _ in tensors):
            raise ActivationFileError(f"{path} does not hold {entry.token_count} tokens")
        return tensors

    def _scan(self) -> None:
        for json_path in sorted(self._directory.glob("*.json")):
            try:
                meta = json.loads(json_path.read_text(encoding="utf-8"))
                if meta.get("format") != _FORMAT:
                    continue
                entry = ActivationEntry(
                    key=str(meta["key"]),
                    fingerprint=str(meta["fingerprint"]),
                    token_ids=tuple(int(t) for t in meta["token_ids"]),
                    created_at=float(meta["created_at"]),
                    covers=tuple(str(c) for c in meta.get("covers", ())),
                    label=meta.get("label"),
                    nbytes=int(meta.get("nbytes", 0)),
                )
            except (OSError, ValueError, KeyError, TypeError) as exc:
                logger.warning("skipping unreadable activation metadata %s: %s", json_path, exc)
                continue
            if entry.key != activation_key(entry.fingerprint, entry.token_ids):
                logger.warning("skipping activation metadata %s: key does not match its tokens", json_path)
                continue
            if not self._tensor_path(entry.key).is_file():
                logger.warning("skipping activation metadata %s: tensor file missing", json_path)
                continue
            self._add_entry(entry)


def _nbytes(tensors: _LayerTensors) -> int:
    return sum(k.nbytes + v.nbytes for k, v in tensors)


def _snapshot(cache: DynamicCache, token_count: int) -> _LayerTensors:
    """Detached, contiguous CPU copies of every layer's keys and values."""
    layers: list[tuple[torch.Tensor, torch.Tensor]] = []
    for i, layer in enumerate(cache.layers):
        if not isinstance(layer, DynamicLayer) or type(layer) not in (DynamicLayer, PrivateLayer):
            raise UnsupportedCache(f"layer {i} is a {type(layer).__name__}; only full-attention caches are stored")
        keys, values = layer.keys, layer.values
        if keys is None or values is None or keys.ndim != 4:
            raise UnsupportedCache(f"layer {i} holds no key/value tensors")
        if keys.shape[0] != 1:
            raise UnsupportedCache(f"batch size {keys.shape[0]}; only single sequences are stored")
        if keys.shape[-2] != token_count:
            raise UnsupportedCache(f"layer {i} holds {keys.shape[-2]} tokens, expected {token_count}")
        layers.append(
            (
                keys.detach().to("cpu", copy=True).contiguous(),
                values.detach().to("cpu", copy=True).contiguous(),
            )
        )
    if not layers:
        raise UnsupportedCache("the cache has no layers")
    return tuple(layers)


class PrivateLayer(DynamicLayer):  # type: ignore[no-untyped-call]  # transformers' __init_subclass__
    """One layer of a cache read from the store: a private copy in a buffer with room to grow.

    ``DynamicLayer.update`` concatenates, so every forward pass copies the whole layer again: the
    2048-token prefix of the bench model is 64 MB, copied once more for the turn and once per
    generated token. This layer owns its buffer (copied on read, never shared with the store), so
    it appends in place and exposes views of the filled part; when the room runs out the buffer
    doubles. ``crop`` keeps working (the engine's and transformers' only other use of a layer).
    """

    def __init__(
        self, keys: torch.Tensor, values: torch.Tensor, *, room: int, device: torch.device | str | None = None
    ) -> None:
        super().__init__()  # type: ignore[no-untyped-call]
        self._length = keys.shape[-2]
        self._keys = _with_room(keys, self._length, room, device)
        self._values = _with_room(values, self._length, room, device)
        self.device = self._keys.device
        self.is_initialized = True
        self._expose()

    def _expose(self) -> tuple[torch.Tensor, torch.Tensor]:
        keys, values = self._keys[..., : self._length, :], self._values[..., : self._length, :]
        self.keys, self.values = keys, values
        return keys, values

    def update(
        self, key_states: torch.Tensor, value_states: torch.Tensor, *args: Any, **kwargs: Any
    ) -> tuple[torch.Tensor, torch.Tensor]:
        end = self._length + key_states.shape[-2]
        if end > self._keys.shape[-2]:
            room = max(end, 2 * self._keys.shape[-2]) - self._length
            self._keys = _with_room(self._keys, self._length, room)
            self._values = _with_room(self._values, self._length, room)
        self._keys[..., self._length : end, :] = key_states
        self._values[..., self._length : end, :] = value_states
        self._length = end
        return self._expose()

    def crop(self, tokens_to_remove: int) -> None:
        super().crop(tokens_to_remove)
        if self.keys is not None:
            self._length = self.keys.shape[-2]


def _with_room(tensor: torch.Tensor, length: int, room: int, device: torch.device | str | None = None) -> torch.Tensor:
    """A new tensor (on ``device``, default ``tensor``'s) holding the first ``length`` positions
    of ``tensor`` and ``room`` free ones: one copy, also across devices."""
    shape = (*tensor.shape[:-2], length + room, tensor.shape[-1])
    grown = torch.empty(shape, dtype=tensor.dtype, device=device or tensor.device)
    grown[..., :length, :] = tensor[..., :length, :]
    return grown


def _private_cache(tensors: _LayerTensors, tokens: int, room: int, device: torch.device | str | None) -> DynamicCache:
    """A fresh cache holding a copy of the first ``tokens`` positions of ``tensors`` (copy on
    read: the stored tensors are never handed out), with ``room`` positions to grow into."""
    cache = DynamicCache()
    cache.layers = [
        PrivateLayer(keys[..., :tokens, :], values[..., :tokens, :], room=room, device=device)
        for keys, values in tensors
    ]
    return cache
