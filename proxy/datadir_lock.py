"""Who may use a data dir at once, told with ``flock`` (the kernel lets go of a killed process's
locks, so nothing stale is ever left to take over).

- ``serve`` processes share it: SQLite (WAL) is shared safely across processes, the write-back
  journal is claimed with leases, and caches notice the others' writes. Each takes
  ``<data_dir>/memproxy.lock`` shared.
- ``reindex`` drops and rebuilds every space's vector index: it takes that lock exclusively, so it
  is refused while anything serves the data dir, and a ``serve`` is refused while it runs.
- An embedded Chroma (no ``vector_index.host``) is a file store one process may open: a process
  using it takes ``<data_dir>/chroma.lock`` exclusively, so a second one is refused with what to
  run instead (a ``chroma run`` server every process talks to).
"""

from __future__ import annotations

import contextlib
import fcntl
import os
from pathlib import Path
from types import TracebackType

LOCK_NAME = "memproxy.lock"
CHROMA_LOCK_NAME = "chroma.lock"


class DataDirBusy(Exception):
    """The data dir cannot be used this way now; ``str()`` says why and what to do."""


def embedded_chroma_refusal(data_dir: Path) -> str:
    """What to do instead of a second process opening the embedded Chroma of ``data_dir``."""
    chroma = Path(data_dir) / "chroma"
    return (
        f"the embedded vector index ({chroma}) cannot be shared between processes: run a Chroma server on it "
        f"(`chroma run --path {chroma} --port 8000`) and set memory.vector_index.host (and port) so that every "
        "process uses it, or serve with one process"
    )


class DataDirLock:
    """``with DataDirLock(data_dir, command="serve"):`` or ``acquire()`` / ``release()``.
    ``embedded_index``: this process opens the data dir's embedded Chroma."""

    def __init__(self, data_dir: Path, *, command: str, embedded_index: bool = False) -> None:
        self.path = Path(data_dir) / LOCK_NAME
        self.command = command
        self._embedded_index = embedded_index
        self._fds: list[int] = []

    @property
    def exclusive(self) -> bool:
        return self.command != "serve"

    def acquire(self) -> None:
        self.path.parent.mkdir(parents=True, exist_ok=True)
        try:
            fd = self._take(self.path, exclusive=self.exclusive)
            if self.exclusive:
                os.ftruncate(fd, 0)
                os.write(fd, f"{os.getpid()} {self.command}\n".encode())
            if self._embedded_index:
                self._take(self.path.parent / CHROMA_LOCK_NAME, exclusive=True)
        except BlockingIOError:
            why = self._why_busy()
            self.release()
            raise DataDirBusy(why) from None

    def _take(self, path: Path, *, exclusive: bool) -> int:
        fd = os.open(path, os.O_CREAT | os.O_RDWR, 0o644)
        try:
            fcntl.flock(fd, (fcntl.LOCK_EX if exclusive else fcntl.LOCK_SH) | fcntl.LOCK_NB)
        except BlockingIOError:
            os.close(fd)
            raise
        self._fds.append(fd)
        return fd

    def _why_busy(self) -> str:
        if self._fds:  # the data dir was ours to share; its embedded index was not
            return f"another memproxy process has the data dir open; {embedded_chroma_refusal(self.path.parent)}"
        if self.exclusive:
            return (
                f"{self.path.parent} is in use by `memproxy serve`: stop every process serving it first "
                f"(`memproxy {self.command}` needs it alone; the lock is {self.path})"
            )
        holder = "another memproxy command"
        with contextlib.suppress(OSError, ValueError):
            pid, _, command = self.path.read_text(encoding="utf-8").partition(" ")
            holder = f"`memproxy {command.strip()}` (pid {int(pid)})"
        return f"{self.path.parent} is in use by {holder}: wait for it to finish (the lock is {self.path})"

    def release(self) -> None:
        for fd in self._fds:
            os.close(fd)  # closing the file lets go of its lock
        self._fds.clear()

    def __enter__(self) -> DataDirLock:
        self.acquire()
        return self

    def __exit__(
        self, exc_type: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        self.release()
