"""The deadline of the memory work a request is waiting for, carried to the threads doing it.

A chat request gives up on memory after ``retrieval.timeout_ms`` (``asyncio.wait_for``), but that
cancels only the coroutine: a SQLite query already running in a worker thread went on to its end
(one abandoned lookup once kept a core busy for two minutes). So the request sets a deadline
(``within``) in a context variable, which ``asyncio.to_thread`` and the tasks it starts carry
along; ``memcubes.store`` aborts a read whose deadline passed (SQLite's progress handler), and
retrieval checks it between its steps (``check``). Work outside a deadline (write-back, the
memory API, the CLI) is never cut short.

    with deadline.within(2.0):
        plan = await asyncio.wait_for(memory.plan(...), 2.0)   # threads stop soon after 2 s too
"""

from __future__ import annotations

import time
from collections.abc import Iterator
from contextlib import contextmanager
from contextvars import Context, ContextVar, copy_context

from memcubes.errors import DeadlineExceeded

_DEADLINE: ContextVar[float | None] = ContextVar("memory_deadline", default=None)


@contextmanager
def within(seconds: float) -> Iterator[None]:
    """Memory work started inside (directly, in tasks or in threads) ends ``seconds`` from now,
    or at the deadline already set if that is sooner."""
    at = time.monotonic() + seconds
    current = _DEADLINE.get()
    token = _DEADLINE.set(at if current is None else min(at, current))
    try:
        yield
    finally:
        _DEADLINE.reset(token)


def detached() -> Context:
    """A copy of the current context without a deadline, to start background work a request
    sets off but does not own (loading a space's vectors, which later requests share)."""
    context = copy_context()
    context.run(_DEADLINE.set, None)
    return context


def current() -> float | None:
    """The deadline (``time.monotonic()`` seconds) of the work under way, if it has one."""
    return _DEADLINE.get()


def passed(at: float | None = None) -> bool:
    """True when the work under way (or the deadline ``at``) is past its deadline."""
    deadline = _DEADLINE.get() if at is None else at
    return deadline is not None and time.monotonic() >= deadline


def check(step: str) -> None:
    """Raise ``DeadlineExceeded`` before ``step`` when the work's deadline has passed."""
    if passed():
        raise DeadlineExceeded(f"memory work abandoned before {step}: its deadline passed")
