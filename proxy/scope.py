"""Whose memory a request reads and writes, and how: resolved once per request from its headers.

The owner is the standard OpenAI ``user`` field of the body or the ``X-Memory-User`` header (the
header wins, so a gateway can set it without touching bodies). ``X-Memory-Mode`` is ``on``
(read and write, the default), ``off``, ``read`` or ``write``; ``X-Memory-Session`` names the
conversation; ``X-Memory-KV: off`` disables activation-cache reuse for one request.

User ids and session names follow ``memcubes.names`` wherever they come from (body, header or
query): NFKC-normalised, stripped, 1-256 characters, no control or invisible format characters,
so one owner always maps to one space. The API key decides which users a request may name and
which shared spaces it also reads (``proxy.principal``). Header values are read as UTF-8
(falling back to Latin-1, what HTTP servers decode them as), so ``X-Memory-User: José`` and
``"user": "José"`` are the same owner.
"""

from __future__ import annotations

from dataclasses import dataclass
from enum import StrEnum

from starlette.datastructures import Headers

from memcubes.names import MAX_USER, clean_name
from proxy.errors import InvalidRequest
from proxy.principal import Principal
from proxy.principal import user_space as user_space  # re-exported: callers name a user's space from here

_MAX_ID = MAX_USER


class MemoryMode(StrEnum):
    ON = "on"
    OFF = "off"
    READ = "read"
    WRITE = "write"


@dataclass(frozen=True)
class Scope:
    user: str | None
    session: str | None = None
    mode: MemoryMode = MemoryMode.ON
    kv_reuse: bool = True
    shared_spaces: tuple[str, ...] = ()
    key_id: str | None = None  # the API key whose memory work this is (None: the master key)

    @property
    def space(self) -> str | None:
        """The one space chat writes to: the user's own."""
        return user_space(self.user) if self.user else None

    @property
    def readable_spaces(self) -> list[str]:
        """The user's space, then the shared spaces the key reads."""
        return [self.space, *self.shared_spaces] if self.space else []

    @property
    def reads(self) -> bool:
        return self.space is not None and self.mode in (MemoryMode.ON, MemoryMode.READ)

    @property
    def writes(self) -> bool:
        return self.space is not None and self.mode in (MemoryMode.ON, MemoryMode.WRITE)


def clean_identifier(value: str, *, max_length: int = _MAX_ID) -> str | None:
    """``value`` normalised (``None`` when nothing is left); ``ValueError`` when it cannot name an owner."""
    return clean_name(value, max_length=max_length)


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


def resolve_scope(headers: Headers, body_user: str | None, principal: Principal) -> Scope:
    """The request's scope; 403 when it names a user the key may not act for."""
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
    user = principal.acting_user(memory_user_header(headers), identifier(body_user, param="user"))
    return Scope(
        user=user,
        shared_spaces=tuple(principal.chat_spaces(user)[1:]) if user else (),
        session=identifier(header_text(headers, "x-memory-session"), param="X-Memory-Session"),
        mode=mode,
        kv_reuse=kv == "on",
        key_id=principal.key_id,
    )
