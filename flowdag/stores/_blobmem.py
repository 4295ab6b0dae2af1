"""`MemoryBlobs`: the blob area of a `MemoryStore`, a dict of this process."""

from __future__ import annotations

import io
import threading
import time
from typing import Any, BinaryIO

from flowdag.errors import BlobMissingError, CorruptStateError
from flowdag.stores._blobio import CheckedReader, FileSink
from flowdag.stores._blobs import BlobArea, BlobEntry, BlobInfo, BlobWriter, blob_uri

__all__ = ["MemoryBlobs"]


class MemoryBlobs(BlobArea):
    """Blobs in a dict of this process (for `MemoryStore`); stored uncompressed."""

    def __init__(self) -> None:
        super().__init__(compression=None)
        self._guard = threading.Lock()
        self._blobs: dict[str, tuple[bytes, float]] = {}

    def __reduce__(self) -> Any:
        raise TypeError("a memory blob area lives in one process and cannot be pickled")

    def locate(self, name: str) -> str:
        return f"memory://blobs/{name}"

    def writer(self) -> BlobWriter:
        return _MemoryWriter(self)

    def open(self, sha256: str, *, size: int | None = None, origin: str = "") -> BinaryIO:
        name = self.name_of(sha256)
        with self._guard:
            found = self._blobs.get(name)
        where = f"{self.locate(name)} ({origin})" if origin else self.locate(name)
        if found is None:
            raise BlobMissingError(
                f"blob {blob_uri(sha256)}{' of ' + origin if origin else ''} is missing from "
                "the memory store; it was deleted (gc, expiry)"
            )
        source = io.BytesIO(found[0])
        checked = CheckedReader(source, sha256, size, where, CorruptStateError, source.close)
        return io.BufferedReader(checked)

    def entries(self) -> list[BlobEntry]:
        with self._guard:
            return [BlobEntry(n, len(data), mtime) for n, (data, mtime) in self._blobs.items()]

    def delete(self, name: str, *, older_than: float | None = None, sync: bool = True) -> int:
        with self._guard:
            found = self._blobs.get(name)
            if found is None or (older_than is not None and found[1] >= older_than):
                return 0
            del self._blobs[name]
            return len(found[0])

    def temp_entries(self) -> list[BlobEntry]:
        return []

    def remove_temp(self, name: str) -> int:
        return 0

    def _stat(self, name: str) -> BlobEntry | None:
        with self._guard:
            found = self._blobs.get(name)
        return None if found is None else BlobEntry(name, len(found[0]), found[1])

    def _freshen(self, sha256: str, size: int) -> BlobInfo | None:
        with self._guard:
            found = self._blobs.get(sha256)
            if found is None:
                return None
            self._blobs[sha256] = (found[0], time.time())
        return BlobInfo(sha256, size, len(found[0]), None, blob_uri(sha256))

    def _store(self, sha256: str, data: bytes) -> BlobInfo:
        with self._guard:
            self._blobs.setdefault(sha256, (data, time.time()))
        return self._freshen(sha256, len(data)) or BlobInfo(
            sha256, len(data), len(data), None, blob_uri(sha256)
        )


class _MemorySink(FileSink):
    __slots__ = ("data",)

    def __init__(self) -> None:
        super().__init__(-1)
        self.data = bytearray()

    def write(self, data: bytes | memoryview) -> None:
        self.data += data


class _MemoryWriter(BlobWriter):
    def __init__(self, area: MemoryBlobs) -> None:
        self._memory = area
        self._buffer = _MemorySink()
        super().__init__(area, self._buffer, framed=False)

    def _publish(self, sha256: str, size: int) -> BlobInfo:
        return self._memory._store(sha256, bytes(self._buffer.data))

    def _discard(self) -> None:
        self._buffer.data = bytearray()
