"""``Principal``: who a request acts as, and every decision about whose memory it may touch.

Every route gets one from the ``proxy.auth.principal`` dependency and asks it, never the raw
headers or settings, so the rules below live here only:

- ``admin`` (the master key; or no master key configured, on a loopback-only server): acts for
  any user, reads and writes any space, manages keys and reads the audit trail;
- a key with ``user``: acts for exactly that user. A request may leave its user out (the key's
  is used) or name that same user; naming anyone else is refused (403);
- a key with ``user_prefix``: acts for any user whose id starts with the prefix (``""``: any
  user), and a request must name one; a key with neither acts for no user, only its spaces;
- ``read_spaces`` are shared spaces the key also reads (chat retrieves from them too);
  ``write_spaces`` are shared spaces it may also write through the memory API (and read). Chat
  writes only ever go to the user's own space;
- ``memory_api`` (``none`` | ``read`` | ``write``) is what the key may do on ``/v1/memories*``
  and ``/v1/spaces*``, within its users and spaces; ``models`` (``None``: all) the models it may call.

Use it as::

    user = principal.acting_user(requested)          # 403 when the key may not act for them
    principal.authorize(space, write=True)           # 403 outside the key's spaces
    principal.can_read(cube.space)                   # by-id routes: 404 when False
    principal.chat_spaces(user)                      # the user's space first, then shared ones
"""

from __future__ import annotations

from dataclasses import dataclass

from memcubes.keystore import KeySettings, MemoryAPI
from proxy.errors import PermissionDenied

USER_SPACE_PREFIX = "user:"


def user_space(user: str) -> str:
    return f"{USER_SPACE_PREFIX}{user}"


@dataclass(frozen=True)
class Principal:
    key_id: str | None
    admin: bool = False
    user: str | None = None
    user_prefix: str | None = None
    read_spaces: frozenset[str] = frozenset()
    write_spaces: frozenset[str] = frozenset()
    memory_api: MemoryAPI = "write"
    models: frozenset[str] | None = None

    @classmethod
    def master(cls) -> Principal:
        return cls(key_id=None, admin=True)

    @classmethod
    def of_key(cls, key_id: str, settings: KeySettings) -> Principal:
        return cls(
            key_id=key_id,
            user=settings.user,
            user_prefix=settings.user_prefix,
            read_spaces=frozenset(settings.read_spaces),
            write_spaces=frozenset(settings.write_spaces),
            memory_api=settings.memory_api,
            models=None if settings.models is None else frozenset(settings.models),
        )

    # -- users ----------------------------------------------------------------------------------

    def may_act_for(self, user: str) -> bool:
        if self.admin:
            return True
        if self.user is not None:
            return user == self.user
        return self.user_prefix is not None and user.startswith(self.user_prefix)

    def acting_user(self, *named: str | None) -> str | None:
        """The user a request acts for, given the users it names (header, body; first wins).
        Every named user must be one the key may act for, else 403; a ``user`` key fills in its
        own user when none is named; a ``user_prefix`` key needs one named."""
        names = [name for name in named if name is not None]
        for name in names:
            if not self.may_act_for(name):
                raise PermissionDenied(f"this API key may not act for user {name[:64]!r}", param="user")
        if names:
            return names[0]
        if self.admin:
            return None
        if self.user is not None:
            return self.user
        if self.user_prefix is None:
            raise PermissionDenied("this API key acts for no user, only for its shared spaces: name one with `space`")
        raise PermissionDenied(
            f"this API key acts for users whose id starts with {self.user_prefix!r}: name one with `user` "
            "or the X-Memory-User header",
            param="user",
        )

    # -- spaces ---------------------------------------------------------------------------------

    def _owns(self, space: str) -> bool:
        return space.startswith(USER_SPACE_PREFIX) and self.may_act_for(space[len(USER_SPACE_PREFIX) :])

    def can_read(self, space: str) -> bool:
        return self.admin or self._owns(space) or space in self.read_spaces or space in self.write_spaces

    def can_write(self, space: str) -> bool:
        return self.admin or self._owns(space) or space in self.write_spaces

    def authorize(self, space: str, *, write: bool) -> None:
        """403 unless the key may read (``write=False``) or write ``space``, memory API rights included."""
        self.require_memory_api(write=write)
        if not (self.can_write(space) if write else self.can_read(space)):
            verb = "write" if write else "read"
            raise PermissionDenied(f"this API key may not {verb} space {space[:80]!r}", param="space")

    def require_memory_api(self, *, write: bool) -> None:
        allowed = self.admin or self.memory_api == "write" or (self.memory_api == "read" and not write)
        if not allowed:
            need = "write" if write else "read"
            raise PermissionDenied(f"this API key's memory_api is {self.memory_api!r}; this needs {need!r}")

    def chat_spaces(self, user: str) -> list[str]:
        """What chat reads for ``user``: their space, then the key's shared spaces (sorted, so the
        order, and with it the prompt, is the same on every request)."""
        return [user_space(user), *sorted((self.read_spaces | self.write_spaces) - {user_space(user)})]

    # -- the rest -------------------------------------------------------------------------------

    def require_admin(self) -> None:
        if not self.admin:
            raise PermissionDenied("only the master key may do this")

    def check_model(self, model: str) -> None:
        if self.models is not None and model not in self.models:
            raise PermissionDenied(f"this API key may not use model {model[:80]!r}", param="model")

    def may_use(self, model: str) -> bool:
        return self.models is None or model in self.models
