"""The serving process's garbage collector, kept off the tail of request latency.

Profiled at concurrency 1 (``python -m bench overhead``, memory on, a 1,000-memory space): the
slowest requests coincided with full (generation 2) collections of 100-670 ms on this loaded
2-core machine, one every ~40 requests. A full collection walks every container object the
process holds, and most of them are built once at start-up and live as long as the process:
the embedder's and tokenizer's tables (tiktoken's 100k-entry vocabulary), the ASGI app, litellm's
model map, the language identifier. ``settle()``, run once the app has started, collects once and
then freezes what is left (``gc.freeze``: moved to a permanent generation that collections skip;
it is still freed by reference counting), so later collections walk only what requests and caches
made since.
"""

from __future__ import annotations

import gc
import logging
import time

log = logging.getLogger(__name__)


def settle() -> None:
    """Collect, then exempt every object alive now from future collections."""
    started = time.perf_counter()
    gc.collect()
    gc.freeze()
    log.debug("froze %d objects in %.0f ms", gc.get_freeze_count(), (time.perf_counter() - started) * 1e3)
