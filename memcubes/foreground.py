"""Requests retrieving right now, so that background work can wait for a quiet moment.

On a small machine write-back (extraction, embedding, SQLite, the vector index) competes for the
same cores with the retrieval of the next request, which a client is waiting on. A request spends
most of its life waiting for its model, and that is when write-back costs nobody anything: so the
write-back worker starts a batch only once no request is retrieving, or after a bounded wait
(under steady load there is never a quiet moment, and write-back must still keep up).
"""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import AsyncIterator


class Foreground:
    def __init__(self) -> None:
        self._busy = 0
        self._quiet = asyncio.Event()
        self._quiet.set()

    @contextlib.asynccontextmanager
    async def busy(self) -> AsyncIterator[None]:
        """Mark a request's retrieval for its duration."""
        self._busy += 1
        self._quiet.clear()
        try:
            yield
        finally:
            self._busy -= 1
            if not self._busy:
                self._quiet.set()

    async def quiet(self, *, settle: float, at_most: float) -> None:
        """Return after ``settle`` seconds (time for the client's next request to arrive) once no
        request is retrieving, or after ``at_most`` seconds whatever happens."""
        await asyncio.sleep(settle)
        with contextlib.suppress(TimeoutError):
            await asyncio.wait_for(self._quiet.wait(), max(0.0, at_most - settle))
