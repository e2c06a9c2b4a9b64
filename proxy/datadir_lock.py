"""One memproxy process per data dir, until several processes can share one safely: ``serve``
and ``reindex`` take ``<data_dir>/memproxy.lock`` (holding their pid and command), and a second
one is refused with a message that names the holder. A lock whose pid is no longer running (a
killed server) is taken over."""

from __future__ import annotations

import contextlib
import os
from pathlib import Path
from types import TracebackType

LOCK_NAME = "memproxy.lock"


class DataDirBusy(Exception):
    """Another live process holds the data dir; ``str()`` says which and what to do."""


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:  # alive, another user's
        return True
    return True


def _holder(path: Path) -> tuple[int, str] | None:
    """The pid and command written in a lock file; ``None`` when it is unreadable or half written."""
    try:
        pid, _, command = path.read_text(encoding="utf-8").partition(" ")
        return int(pid), command.strip()
    except (OSError, ValueError):
        return None


class DataDirLock:
    """``with DataDirLock(data_dir, command="serve"):`` or ``acquire()`` / ``release()``."""

    def __init__(self, data_dir: Path, *, command: str) -> None:
        self.path = Path(data_dir) / LOCK_NAME
        self.command = command
        self._held = False

    def acquire(self) -> None:
        self.path.parent.mkdir(parents=True, exist_ok=True)
        for _ in range(3):  # a stale lock is removed, then taken; a racing process may win once
            try:
                fd = os.open(self.path, os.O_CREAT | os.O_EXCL | os.O_WRONLY, 0o644)
            except FileExistsError:
                holder = _holder(self.path)
                if holder is not None and holder[0] != os.getpid() and _alive(holder[0]):
                    pid, command = holder
                    raise DataDirBusy(
                        f"{self.path.parent} is in use by `memproxy {command or '?'}` (pid {pid}): stop it first "
                        f"(one memproxy process per data_dir; the lock is {self.path})"
                    ) from None
                with contextlib.suppress(FileNotFoundError):
                    self.path.unlink()
                continue
            with os.fdopen(fd, "w", encoding="utf-8") as file:
                file.write(f"{os.getpid()} {self.command}\n")
            self._held = True
            return
        raise DataDirBusy(f"could not take {self.path}: another process keeps taking it")

    def release(self) -> None:
        if self._held:
            holder = _holder(self.path)
            if holder is not None and holder[0] == os.getpid():
                with contextlib.suppress(FileNotFoundError):
                    self.path.unlink()
            self._held = False

    def __enter__(self) -> DataDirLock:
        self.acquire()
        return self

    def __exit__(
        self, exc_type: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        self.release()
