"""Whose memory a request reads and writes, and how: resolved once per request from its headers.

The owner is the standard OpenAI ``user`` field of the body or the ``X-Memory-User`` header (the
header wins, so a gateway can set it without touching bodies). ``X-Memory-Mode`` is ``on``
(read and write, the default), ``off``, ``read`` or ``write``; ``X-Memory-Session`` names the
conversation; ``X-Memory-KV: off`` disables activation-cache reuse for one request.

User ids and session names are stripped and must be 1-256 characters with no control characters,
surrogates or line separators, wherever they come from (body, header or query), so one owner
always maps to one space. Header values are read as UTF-8 (falling back to Latin-1, what HTTP
servers decode them as), so ``X-Memory-User: José`` and ``"user": "José"`` are the same owner.
"""

from __future__ import annotations

import unicodedata
from dataclasses import dataclass
from enum import StrEnum

from starlette.datastructures import Headers

from proxy.errors import InvalidRequest

_MAX_ID = 256


class MemoryMode(StrEnum):
    ON = "on"
    OFF = "off"
    READ = "read"
    WRITE = "write"


def user_space(user: str) -> str:
    return f"user:{user}"


@dataclass(frozen=True)
class Scope:
    user: str | None
    session: str | None = None
    mode: MemoryMode = MemoryMode.ON
    kv_reuse: bool = True

    @property
    def space(self) -> str | None:
        return user_space(self.user) if self.user else None

    @property
    def readable_spaces(self) -> list[str]:
        return [self.space] if self.space else []

    @property
    def reads(self) -> bool:
        return self.space is not None and self.mode in (MemoryMode.ON, MemoryMode.READ)

    @property
    def writes(self) -> bool:
        return self.space is not None and self.mode in (MemoryMode.ON, MemoryMode.WRITE)


# Control characters, surrogates, line and paragraph separators: never part of a name.
_FORBIDDEN_CATEGORIES = frozenset({"Cc", "Cs", "Zl", "Zp"})


def clean_identifier(value: str, *, max_length: int = _MAX_ID) -> str | None:
    """``value`` stripped (``None`` when nothing is left); ``ValueError`` when it cannot name an owner."""
    value = value.strip()
    if not value:
        return None
    if len(value) > max_length or any(unicodedata.category(ch) in _FORBIDDEN_CATEGORIES for ch in value):
        raise ValueError(f"must be 1-{max_length} characters without control characters")
    return value


def identifier(value: str | None, *, param: str, max_length: int = _MAX_ID) -> str | None:
    """``clean_identifier`` for a request value; a bad one is a 400 naming ``param``."""
    if value is None:
        return None
    try:
        return clean_identifier(value, max_length=max_length)
    except ValueError as exc:
        raise InvalidRequest(f"{param} {exc}", param=param) from None


def header_text(headers: Headers, name: str) -> str | None:
    """A header's value as UTF-8 text; servers decode header bytes as Latin-1, so re-read them."""
    value = headers.get(name)
    if value is None:
        return None
    try:
        return value.encode("latin-1").decode("utf-8")
    except UnicodeError:  # not UTF-8 (or not from Latin-1 bytes): keep the server's reading
        return value


def memory_user_header(headers: Headers) -> str | None:
    return identifier(header_text(headers, "x-memory-user"), param="X-Memory-User")


def _choice(headers: Headers, name: str, default: str) -> str:
    return headers.get(name, default).strip().lower()


def resolve_scope(headers: Headers, body_user: str | None) -> Scope:
    mode_value = _choice(headers, "x-memory-mode", MemoryMode.ON.value)
    try:
        mode = MemoryMode(mode_value)
    except ValueError:
        raise InvalidRequest(
            f"X-Memory-Mode must be one of on, off, read, write (got {mode_value[:64]!r})", param="X-Memory-Mode"
        ) from None
    kv = _choice(headers, "x-memory-kv", "on")
    if kv not in ("on", "off"):
        raise InvalidRequest(f"X-Memory-KV must be on or off (got {kv[:64]!r})", param="X-Memory-KV")
    user = memory_user_header(headers) or identifier(body_user, param="user")
    return Scope(
        user=user,
        session=identifier(header_text(headers, "x-memory-session"), param="X-Memory-Session"),
        mode=mode,
        kv_reuse=kv == "on",
    )
