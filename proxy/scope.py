"""Whose memory a request reads and writes, and how: resolved once per request from its headers.

The owner is the standard OpenAI ``user`` field of the body or the ``X-Memory-User`` header (the
header wins, so a gateway can set it without touching bodies). ``X-Memory-Mode`` is ``on``
(read and write, the default), ``off``, ``read`` or ``write``; ``X-Memory-Session`` names the
conversation; ``X-Memory-KV: off`` disables activation-cache reuse for one request.
"""

from __future__ import annotations

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


def _identifier(value: str | None, header: str) -> str | None:
    if value is None:
        return None
    value = value.strip()
    if not value:
        return None
    if len(value) > _MAX_ID or any(ord(ch) < 32 for ch in value):
        raise InvalidRequest(f"{header} must be 1-{_MAX_ID} printable characters", param=header)
    return value


def resolve_scope(headers: Headers, body_user: str | None) -> Scope:
    mode_value = headers.get("x-memory-mode", MemoryMode.ON.value).strip().lower()
    try:
        mode = MemoryMode(mode_value)
    except ValueError:
        raise InvalidRequest(
            f"X-Memory-Mode must be one of on, off, read, write (got {mode_value!r})", param="X-Memory-Mode"
        ) from None
    kv = headers.get("x-memory-kv", "on").strip().lower()
    if kv not in ("on", "off"):
        raise InvalidRequest(f"X-Memory-KV must be on or off (got {kv!r})", param="X-Memory-KV")
    user = _identifier(headers.get("x-memory-user"), "X-Memory-User") or _identifier(body_user, "user")
    return Scope(
        user=user,
        session=_identifier(headers.get("x-memory-session"), "X-Memory-Session"),
        mode=mode,
        kv_reuse=kv == "on",
    )
