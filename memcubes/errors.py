"""Errors raised by the memory OS.

One root, so callers (the proxy, the CLI) can catch everything memory-related in one place and
keep serving chat when memory fails. Errors of the layer below (sqlite3, chromadb, torch) are
translated where they are called, with ``raise ... from exc``.

    MemoryOSError
    ├── StoreUnavailable      the system of record (SQLite) failed: locked, disk full, corrupt
    │   └── ImportAborted     an import's undo log was rolled back under it (it had stalled)
    ├── IndexUnavailable      the vector index (Chroma) failed; the outbox will replay writes
    ├── EmbedderUnavailable   the embedding model failed to load or run
    ├── CubeNotFound          no cube with that id in the spaces the caller may see
    ├── SpaceNotFound         no space of that name among those the caller may see
    ├── InvalidMemoryInput    a request the memory OS cannot act on (bad time, empty text, data the
    │                         store refuses: a NUL byte ...); write-back counts it as a failed attempt
    ├── ExtractionFailed      the reader could not distil an exchange (the LLM answer was unusable)
    ├── AlreadyApplied        another worker committed that exchange first (nothing was written)
    ├── DeadlineExceeded      the request waiting for this work gave up on it (``memcubes.deadline``)
    └── BundleError           a bundle is corrupt, tampered with or of an unknown format
"""

from __future__ import annotations


class MemoryOSError(Exception):
    """Root of every error the memory OS raises on purpose."""


class StoreUnavailable(MemoryOSError):
    pass


class ImportAborted(StoreUnavailable):
    pass


class IndexUnavailable(MemoryOSError):
    pass


class EmbedderUnavailable(MemoryOSError):
    pass


class CubeNotFound(MemoryOSError):
    pass


class SpaceNotFound(MemoryOSError):
    pass


class InvalidMemoryInput(MemoryOSError):
    pass


class ExtractionFailed(MemoryOSError):
    pass


class AlreadyApplied(MemoryOSError):
    pass


class DeadlineExceeded(MemoryOSError):
    pass


class BundleError(MemoryOSError):
    pass
