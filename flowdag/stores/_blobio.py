"""The byte layout of one blob file, streamed both ways: zstd, chunked encryption, checks.

Layout
------
A plain blob file::

    offset  size  field
    0       4     magic b"FDB1" (flowdag blob, version 1)
    4       1     compression: 0 none, 1 zstd
    5       ...   the payload: the bytes as they are, or one zstd frame of them

An encrypted blob file (a store opened with a key)::

    0       4     magic b"FDB2" (flowdag sealed blob, version 1)
    4       1     compression, as above (applied before encryption)
    5       16    file id: random, binds every chunk to this file
    21      ...   chunks, each: final flag (1 byte), length n (u32), nonce (12),
                  AES-256-GCM ciphertext of n payload bytes + 16-byte tag

Every chunk but the last holds `CHUNK` payload bytes and has flag 0; the last
(possibly empty) has flag 1. Each chunk's associated data is the file header,
the chunk's index (u64) and its own flag and length, so chunks cannot be
reordered, dropped, cut short or moved from another file without failing the
tag (`DecryptionError`), and a file cut at a chunk boundary has no final chunk
(refused too). Nonces are random per chunk, as in ``_crypto.py``.

The content hash (sha256 of the bytes before compression) is computed as they
are written, and checked as they are read: `CheckedReader` raises
`CorruptStateError` on a size or hash mismatch no later than the end of the
stream. Neither direction holds more than a chunk or so in memory.
"""

from __future__ import annotations

import hashlib
import io
import os
import struct
from collections.abc import Callable
from typing import Any, BinaryIO

import zstandard

from flowdag.errors import CorruptStateError, DecryptionError, StoreError

__all__ = [
    "CHUNK",
    "HEADER_SIZE",
    "CheckedReader",
    "FileSink",
    "Sealer",
    "header",
    "open_payload",
]

MAGIC_PLAIN = b"FDB1"
MAGIC_SEALED = b"FDB2"
_COMPRESSIONS: dict[str | None, int] = {None: 0, "zstd": 1}
_NAMES = {code: name for name, code in _COMPRESSIONS.items()}
HEADER_SIZE = 5
_FILE_ID = 16
_CHUNK_HEAD = struct.Struct("<BI")  # final flag, payload length
_INDEX = struct.Struct("<Q")
_NONCE = 12
_TAG = 16
_SEALED_HEAD = _CHUNK_HEAD.size + _NONCE  # flag, length, nonce
#: Payload bytes per encrypted chunk.
CHUNK = 1 << 20
_READ = 1 << 20  # bytes asked of zstd or the file per read


def header(compression: str | None, sealed: bool) -> bytes:
    """The first bytes of a blob file (an encrypted file's random id follows them)."""
    return (MAGIC_SEALED if sealed else MAGIC_PLAIN) + bytes([_COMPRESSIONS[compression]])


class FileSink:
    """Writes to a file descriptor, whole (``os.write`` may write less)."""

    __slots__ = ("fd", "written")

    def __init__(self, fd: int) -> None:
        self.fd = fd
        self.written = 0

    def write(self, data: bytes | memoryview) -> None:
        view = memoryview(data)
        while view:
            n = os.write(self.fd, view)
            view = view[n:]
            self.written += n

    def finish(self) -> None:
        """Nothing buffered here."""


class Sealer:
    """Encrypts what is written in `CHUNK`-sized chunks onto a sink (see the module docstring).

    Fast path: the chunk being filled and its sealed form live in two buffers
    allocated once, so a gigabyte costs one copy in and one encryption, with no
    allocation per chunk (fresh megabyte buffers page-fault on every use).
    """

    __slots__ = ("_aead", "_chunk", "_filled", "_head", "_index", "_out", "_sink")

    def __init__(self, aead: Any, sink: FileSink, head: bytes) -> None:
        self._aead = aead
        self._sink = sink
        self._head = head + os.urandom(_FILE_ID)
        self._chunk = bytearray(CHUNK)  # the payload of the chunk being filled
        self._filled = 0
        self._out = bytearray(_SEALED_HEAD + CHUNK + _TAG)  # one sealed chunk
        self._index = 0
        sink.write(self._head)

    def write(self, data: bytes | memoryview) -> None:
        view = memoryview(data).cast("B")
        while view:
            if self._filled == CHUNK:  # full and more follows: not the final chunk
                self._seal(final=False)
            n = min(CHUNK - self._filled, len(view))
            self._chunk[self._filled : self._filled + n] = view[:n]
            self._filled += n
            view = view[n:]

    def finish(self) -> None:
        self._seal(final=True)

    def _seal(self, *, final: bool) -> None:
        n = self._filled
        out = memoryview(self._out)
        _CHUNK_HEAD.pack_into(out, 0, final, n)
        nonce = os.urandom(_NONCE)
        out[_CHUNK_HEAD.size : _SEALED_HEAD] = nonce
        aad = _aad(self._head, self._index, bytes(out[: _CHUNK_HEAD.size]))
        chunk = memoryview(self._chunk)[:n]
        self._aead.encrypt_into(nonce, chunk, aad, out[_SEALED_HEAD : _SEALED_HEAD + n + _TAG])
        self._sink.write(out[: _SEALED_HEAD + n + _TAG])
        self._filled = 0
        self._index += 1


def _aad(file_head: bytes, index: int, chunk_head: bytes) -> bytes:
    return b"".join((file_head, _INDEX.pack(index), chunk_head))


class _Unsealer(io.RawIOBase):
    """The payload of an encrypted blob file, decrypted a chunk at a time."""

    def __init__(self, file: BinaryIO, aead: Any, head: bytes, where: str) -> None:
        self._file = file
        self._aead = aead
        self._head = head
        self._where = where
        self._index = 0
        self._pending = b""
        self._done = False

    def readable(self) -> bool:
        return True

    def readinto(self, buffer: Any) -> int:
        while not self._pending and not self._done:
            self._pending = self._next_chunk()
        n = min(len(buffer), len(self._pending))
        buffer[:n] = self._pending[:n]
        self._pending = self._pending[n:]
        return n

    def _next_chunk(self) -> bytes:
        from cryptography.exceptions import InvalidTag

        head = self._file.read(_CHUNK_HEAD.size)
        if len(head) < _CHUNK_HEAD.size:
            raise DecryptionError(f"encrypted blob {self._where} is truncated: no final chunk")
        final, length = _CHUNK_HEAD.unpack(head)
        if final > 1 or length > CHUNK:
            raise DecryptionError(f"encrypted blob {self._where} has a damaged chunk header")
        body = self._file.read(_NONCE + length + _TAG)
        if len(body) < _NONCE + length + _TAG:
            raise DecryptionError(f"encrypted blob {self._where} is truncated")
        try:
            plain: bytes = self._aead.decrypt(
                body[:_NONCE], body[_NONCE:], _aad(self._head, self._index, head)
            )
        except InvalidTag:
            raise DecryptionError(
                f"cannot decrypt blob {self._where}: wrong key, or the file was changed "
                "(AES-GCM authentication failed)"
            ) from None
        self._index += 1
        if final:
            self._done = True
            if self._file.read(1):
                raise DecryptionError(f"encrypted blob {self._where} has bytes after its end")
        return plain


def open_payload(file: BinaryIO, aead: Any | None, where: str) -> tuple[BinaryIO, str | None]:
    """The payload of blob file ``file`` (at offset 0), decompressed, and its compression.

    Raises:
        CorruptStateError: not a blob file, or one of the other kind (plain/encrypted).
        DecryptionError: an encrypted file met without a key.
    """
    head = file.read(HEADER_SIZE)
    magic = head[:4]
    code = head[4] if len(head) == HEADER_SIZE else -1
    if magic not in (MAGIC_PLAIN, MAGIC_SEALED) or code not in _NAMES:
        raise CorruptStateError(f"blob {where} does not start with a blob header: damaged")
    if magic == MAGIC_SEALED:
        if aead is None:
            raise DecryptionError(f"blob {where} is encrypted; open the store with its key")
        file_id = file.read(_FILE_ID)
        if len(file_id) != _FILE_ID:
            raise DecryptionError(f"encrypted blob {where} is truncated")
        source: BinaryIO = io.BufferedReader(_Unsealer(file, aead, head + file_id, where), _READ)
    else:
        if aead is not None:
            raise DecryptionError(
                f"blob {where} is not encrypted, but this store was opened with a key"
            )
        source = file
    compression = _NAMES[code]
    if compression == "zstd":
        # stream_reader bounds each read's output: a small bomb cannot fill memory.
        source = zstandard.ZstdDecompressor().stream_reader(source, read_size=_READ)
    return source, compression


class CheckedReader(io.RawIOBase):
    """Passes a blob's bytes through, checking their length and sha256 as they go.

    ``on_error`` turns a read error (OSError, zstd, decryption) into the store's error.
    """

    def __init__(
        self,
        source: BinaryIO,
        sha256: str,
        size: int | None,
        where: str,
        on_error: Callable[[Exception], Exception],
        close: Callable[[], None],
    ) -> None:
        self._source = source
        self._sha256 = sha256
        self._size = size
        self._where = where
        self._on_error = on_error
        self._close = close
        self._hash = hashlib.sha256()
        self._seen = 0
        self._checked = False

    def readable(self) -> bool:
        return True

    def readinto(self, buffer: Any) -> int:
        if self.closed:
            raise ValueError("read from a closed blob")
        want = len(buffer)
        if self._size is not None:
            # Ask for one byte past the end: a longer blob is refused, not cut short.
            want = min(want, self._size - self._seen + 1) or 1
        try:
            data = self._source.read(want)
        except (CorruptStateError, StoreError):
            raise
        except Exception as exc:
            raise self._on_error(exc) from exc
        if not data:
            self._finish()
            return 0
        self._seen += len(data)
        if self._size is not None and self._seen > self._size:
            raise CorruptStateError(
                f"blob {self._where} holds more than the {self._size} bytes its ref says: damaged"
            )
        self._hash.update(data)
        buffer[: len(data)] = data
        return len(data)

    def readall(self) -> bytes:
        parts = []
        while chunk := self.read(_READ):
            parts.append(chunk)
        return b"".join(parts)

    def _finish(self) -> None:
        if self._checked:
            return
        if self._size is not None and self._seen != self._size:
            raise CorruptStateError(
                f"blob {self._where} holds {self._seen} bytes, not the {self._size} its ref "
                "says: damaged or truncated"
            )
        if self._hash.hexdigest() != self._sha256:
            raise CorruptStateError(
                f"blob {self._where} does not match its sha256 {self._sha256}: damaged"
            )
        self._checked = True

    def close(self) -> None:
        if not self.closed:
            try:
                self._close()
            finally:
                super().close()
