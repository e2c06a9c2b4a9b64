"""Untrusted zip archives (uploaded bundles and MemOS dumps), read within hard limits.

A 2 MB zip can declare a member that inflates to gigabytes (a zip bomb): read whole, one such
upload took the proxy from 0.45 to 4.6 GB of RAM. So before anything is inflated every member's
declared size, its compression ratio and the archive's total are checked, and members are then
inflated in chunks, counting what actually comes out against the same limits (a declared size
cannot be trusted: zipfile stops at it, and a lie then fails its CRC).
"""

from __future__ import annotations

import io
import zipfile
import zlib
from types import TracebackType

from memcubes.errors import BundleError

MAX_RATIO = 200  # inflated / compressed; text compresses ~5-20x, a bomb ~1000x
_RATIO_FROM = 1024 * 1024  # members smaller than this may have any ratio
_MAX_MEMBERS = 10_000
_CHUNK = 1024 * 1024


class SafeArchive:
    """A zip archive whose members together inflate to at most ``max_bytes``."""

    def __init__(self, data: bytes, *, max_bytes: int) -> None:
        try:
            self._zip = zipfile.ZipFile(io.BytesIO(data))
        except (zipfile.BadZipFile, zlib.error, EOFError, ValueError) as exc:
            raise BundleError(f"not a readable zip archive: {exc}") from None
        members = [info for info in self._zip.infolist() if not info.is_dir()]
        if len(members) > _MAX_MEMBERS:
            raise BundleError(f"the archive holds {len(members)} members; at most {_MAX_MEMBERS} are read")
        for info in members:
            ratio = info.file_size / max(info.compress_size, 1)
            if info.file_size > _RATIO_FROM and ratio > MAX_RATIO:
                raise BundleError(
                    f"member {info.filename} would inflate {ratio:.0f}-fold (at most {MAX_RATIO}): a zip bomb?"
                )
        declared = sum(info.file_size for info in members)
        if declared > max_bytes:
            raise BundleError(f"the archive's members inflate to {declared} bytes; at most {max_bytes} are read")
        self._left = max_bytes

    def namelist(self) -> list[str]:
        return self._zip.namelist()

    def infolist(self) -> list[zipfile.ZipInfo]:
        return self._zip.infolist()

    def read(self, name: str) -> bytes:
        """One member, inflated chunk by chunk within the archive's remaining budget. Raises
        ``KeyError`` when there is no such member."""
        info = self._zip.getinfo(name)
        content = bytearray()
        try:
            with self._zip.open(info) as stream:
                while chunk := stream.read(_CHUNK):
                    content += chunk
                    if len(content) > min(info.file_size, self._left):
                        raise BundleError(f"member {name} inflates past its declared size or the archive's limit")
        except (zipfile.BadZipFile, zlib.error, EOFError, NotImplementedError) as exc:
            raise BundleError(f"member {name} cannot be read: {exc}") from None
        self._left -= len(content)
        return bytes(content)

    def close(self) -> None:
        self._zip.close()

    def __enter__(self) -> SafeArchive:
        return self

    def __exit__(
        self, kind: type[BaseException] | None, value: BaseException | None, traceback: TracebackType | None
    ) -> None:
        self.close()
