"""Errors raised by activation (KV) memory.

They hang under the memory OS root, so the proxy's one handler for ``MemoryOSError`` also
covers a local model that fails to load or a cache file that cannot be read.

    MemoryOSError                    memcubes.errors
    └── ActivationError
        ├── ModelLoadError           the local model or its tokenizer could not be loaded
        ├── UnsupportedCache         a cache this store cannot hold (sliding window, batch > 1 ...)
        └── ActivationFileError      a stored cache file is missing, corrupt or of another layout
"""

from __future__ import annotations

from memcubes.errors import MemoryOSError


class ActivationError(MemoryOSError):
    """Root of activation-memory errors."""


class ModelLoadError(ActivationError):
    pass


class UnsupportedCache(ActivationError):
    pass


class ActivationFileError(ActivationError):
    pass
