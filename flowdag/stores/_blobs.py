"""The blob area: content-addressed payloads that node records point at with a `Ref`.

Design
------
One small interface, `BlobArea`, with two homes: `DirectoryBlobs` (files
beside a directory store, never inside LMDB's map; in ``_blobdir.py``) and
`MemoryBlobs` (a dict, for `MemoryStore`; in ``_blobmem.py``). A blob is
addressed by the sha256 of its bytes before compression (`put` or a
streaming `BlobWriter`); a blob that exists is not written again (its mtime
is refreshed instead, see "Collection" below). A blob is compressed (zstd)
when that takes at least a twentieth off its first MiB, else stored as it
is; its file's header says which. Reads
(`open`, `read`) check the bytes against the address as they stream:
`CorruptStateError` naming the blob's path on a mismatch, `BlobMissingError`
when it is not there. The file layout is in ``_blobio.py``.

Files and write order (directory stores)::

    <store>/blobs/ab/abcdef...   one file per blob; the name is 64 hex digits,
                                 sharded by its first two
    <store>/blobs/tmp/*.tmp      blobs being written

A blob is written as git writes an object: a temp file (0600, reached without
following links, ``_files.py``), write, fsync, rename into its shard, fsync
the shard directory. Only then does the writer return the blob's `BlobInfo`,
and only then may the caller commit a record that points at it: a crash at
any moment leaves complete blobs under final names, plus at most a temp file
or an unreferenced (orphan) blob.

A blob found already in place is not written again, but its directory is
synced before an area object first uses it: its writer may have been killed
between the rename and that sync (a kill loses nothing, a power loss after it
could). For the same reason an area object syncs blobs/ and each shard's
entry once, whichever process made them.

A write that fails (disk full, EIO) raises `StoreError` naming the file and
removes it; the writer then refuses every further write and its commit, so
bytes that are not what the hash covers never get a name, even when the
caller ignored the error.

Names: the file name is the content hash itself, or, on a store opened with
a key, HMAC-SHA256 of it under a key derived from the store's key (so names
reveal nothing about the content), and the content is encrypted in chunks.
A name is only ever made by `name_of` from a checked hash, and a ref's uri is
checked by `flowdag.refs.sha256_of_uri`: no input names a path outside.

Collection (for ``gc``): `entries` lists the blobs with their stored sizes
and mtimes, `temp_entries` the temp area's leftovers. The collector marks the
names (`name_of`) of every ref a live record holds, then deletes unmarked
blobs older than a grace period with ``delete(name, older_than=cutoff)``. A
writer that finds its blob present refreshes the blob's mtime before
returning, and `delete` moves the blob aside before checking its mtime, so a
blob reused by a run committing during the sweep is either fresh (kept, put
back) or already gone (the writer then writes it again): never a committed
ref to a deleted blob.
"""

from __future__ import annotations

import hashlib
import hmac
import io
import re
from abc import ABC, abstractmethod
from dataclasses import dataclass
from typing import Any, BinaryIO

import zstandard

from flowdag.errors import CorruptStateError, StoreError
from flowdag.refs import RAW, Ref, binding, sha256_of_uri
from flowdag.stores._blobio import CHUNK, FileSink, Sealer, header
from flowdag.stores._crypto import Cipher

__all__ = [
    "BlobArea",
    "BlobEntry",
    "BlobInfo",
    "BlobWriter",
    "RefSource",
    "blob_uri",
    "check_name",
]

# Level 1: on this project's benchmark data (CSV-like text, JSON records, Python
# source) it compresses 1.7-2.7x faster than level 3 for about the same ratio
# (4.4x vs 4.4x, 5.1x vs 4.4x, 4.2x vs 4.6x), and a streamed output is bound by
# compression, not by the disk (benchmarks/stream_1gib.py, RESULTS.md).
_ZSTD_LEVEL = 1
# A blob is compressed when zstd takes at least this much off its first CHUNK.
_WORTH = 0.95


@dataclass(frozen=True, slots=True)
class BlobInfo:
    """What a written blob is: enough to build its `Ref` (see `BlobInfo.ref`)."""

    sha256: str
    size: int  # bytes before compression
    stored_size: int  # bytes the blob takes in the store
    compression: str | None
    uri: str

    def ref(self, **more: Any) -> Ref:
        """A `Ref` to this blob; ``more``: expires_at, extracted, preview, encoding..."""
        return Ref(self.uri, self.sha256, self.size, self.stored_size, self.compression, **more)


@dataclass(frozen=True, slots=True)
class BlobEntry:
    """One blob (or temp file) as the collector sees it."""

    name: str
    stored_size: int
    mtime: float  # seconds since the epoch


def blob_uri(sha256: str) -> str:
    return "blob:sha256:" + sha256


_HEX64 = re.compile(r"[0-9a-f]{64}")


def check_name(name: object, what: str = "blob name") -> str:
    """``name`` if it is 64 lowercase hex digits (a hash or a blob name): nothing else is a path."""
    if type(name) is not str or not _HEX64.fullmatch(name):
        raise StoreError(f"{str(name)[:100]!r} is not a {what} (64 lowercase hex digits)")
    return name


class BlobArea(ABC):
    """A store's content-addressed blob area (see the module docstring)."""

    #: Whether the area reopens by path in another process (no key, no memory).
    portable: bool = False

    def __init__(self, *, cipher: Cipher | None = None, compression: str | None = "zstd") -> None:
        if compression not in (None, "zstd"):
            raise StoreError(f"blob compression must be 'zstd' or None, not {compression!r}")
        self.compression = compression
        self._name_key = cipher.derive_key(b"flowdag blob names v1") if cipher else None
        self._aead = _aead_of(cipher.derive_key(b"flowdag blob data v1")) if cipher else None

    @property
    def encrypted(self) -> bool:
        """Whether blob names are keyed and contents encrypted."""
        return self._aead is not None

    def name_of(self, sha256: str) -> str:
        """The blob's name in this area: its hash, or a keyed hash of it (64 hex digits).

        Raises:
            StoreError: ``sha256`` is not 64 lowercase hex digits.
        """
        check_name(sha256, "sha256")
        if self._name_key is None:
            return sha256
        return hmac.new(self._name_key, sha256.encode("ascii"), hashlib.sha256).hexdigest()

    def put(self, data: bytes | bytearray | memoryview) -> BlobInfo:
        """Store ``data`` (unless a blob of the same bytes is there) and return its info."""
        sha256 = hashlib.sha256(data).hexdigest()
        info = self._freshen(sha256, len(data))
        if info is not None:
            return info  # dedup: the same bytes are never written twice
        with self.writer() as writer:
            writer.write(data)
        assert writer.info is not None
        return writer.info

    def read(self, sha256: str, *, size: int | None = None, origin: str = "") -> bytes:
        """The blob's bytes, checked (see `open`)."""
        with self.open(sha256, size=size, origin=origin) as stream:
            return stream.read()

    def check(self, sha256: str, *, size: int | None = None, origin: str = "") -> None:
        """Read the blob through and check it, holding a chunk at a time (``store verify``).

        Raises:
            BlobMissingError: no such blob.
            CorruptStateError: its bytes do not match ``sha256`` (or ``size``).
        """
        with self.open(sha256, size=size, origin=origin) as stream:
            while stream.read(CHUNK):
                pass

    def copy_from(self, source: BlobArea, sha256: str, *, size: int | None = None) -> BlobInfo:
        """Copy a blob of ``source`` here (``store convert``), streamed and checked both ends.

        A blob already here is not copied again. The copy is re-encrypted (or
        decrypted) and re-compressed for this area.

        Raises:
            BlobMissingError: ``source`` has no such blob.
            CorruptStateError: the source blob does not match its hash.
        """
        info = self._freshen(sha256, size) if size is not None else None
        if info is not None:
            return info
        with source.open(sha256, size=size) as stream, self.writer() as writer:
            while chunk := stream.read(CHUNK):
                writer.write(chunk)
        # The source was checked as it was read, so the copy has the same address.
        assert writer.info is not None and writer.info.sha256 == sha256
        return writer.info

    def exists(self, sha256: str) -> bool:
        """Whether the blob of ``sha256`` is in the area (its bytes are not checked)."""
        return self._stat(self.name_of(sha256)) is not None

    @abstractmethod
    def writer(self) -> BlobWriter:
        """A binary file whose bytes become one blob when it is committed."""

    @abstractmethod
    def open(self, sha256: str, *, size: int | None = None, origin: str = "") -> BinaryIO:
        """A binary stream of the blob's bytes, checked against ``sha256`` (and ``size``).

        Args:
            origin: names what points at the blob in errors, e.g. ``run 'r1', node 'a'``.

        Raises:
            BlobMissingError: no such blob.
            CorruptStateError: the bytes do not match (raised by the end of the stream).
        """

    @abstractmethod
    def entries(self) -> list[BlobEntry]:
        """Every blob: name, stored size, mtime."""

    @abstractmethod
    def delete(self, name: str, *, older_than: float | None = None, sync: bool = True) -> int:
        """Remove blob ``name`` (only if its mtime is before ``older_than``); bytes freed.

        ``sync=False`` leaves the removal itself to the file system's next flush
        (gc: a crash then brings back an orphan, which the next gc removes); a
        blob put back because it was fresh is synced either way.
        """

    @abstractmethod
    def temp_entries(self) -> list[BlobEntry]:
        """Files in the temp area: left by a crash, or a writer still running.

        A writer's file gets a new mtime with every write: sweep only entries
        older than the grace period, or a slow writer loses its blob.
        """

    @abstractmethod
    def remove_temp(self, name: str) -> int:
        """Remove temp file ``name``; bytes freed (a blob a cut `delete` moved aside: put back)."""

    @abstractmethod
    def locate(self, name: str) -> str:
        """Where blob ``name`` is, for messages (a path, or ``memory://``...)."""

    @abstractmethod
    def _stat(self, name: str) -> BlobEntry | None: ...

    @abstractmethod
    def _freshen(self, sha256: str, size: int) -> BlobInfo | None:
        """The info of an existing blob, its mtime refreshed; None if it is missing."""


def _aead_of(key: bytes) -> Any:
    from cryptography.hazmat.primitives.ciphers.aead import AESGCM

    return AESGCM(key)


class BlobWriter(io.RawIOBase):
    """A binary file that becomes one blob: the hash is computed as bytes are written.

    Used as a context manager, a clean exit commits (``info`` is then set) and
    an exception discards everything written. `close` without `commit` discards.
    """

    def __init__(self, area: BlobArea, sink: FileSink, *, framed: bool = True) -> None:
        # framed: a file starts with the blob header (``_blobio.py``); memory needs none.
        self._area = area
        self._hash = hashlib.sha256()
        self._size = 0
        self._failure: str | None = None  # why a write failed: nothing of the blob is kept
        self._file = sink
        self._framed = framed
        self._sink: FileSink | Sealer = sink
        self._zstd: Any = None
        #: What the blob is stored with: the area's compression, unless the first
        #: bytes showed it is not worth it (see `_probe`).
        self.compression: str | None = None
        # The first `CHUNK` bytes, held until they show whether zstd shrinks them.
        self._probe: bytearray | None = None
        if area.compression == "zstd":
            self._probe = bytearray()
        else:
            try:
                self._start(None, None)
            except OSError as exc:
                raise StoreError(f"cannot write blob {self._where()}: {exc}") from exc
        self.info: BlobInfo | None = None

    def _start(self, compression: str | None, zstd: Any) -> None:
        """Write the header: from here on, bytes go out compressed with ``zstd`` or as they are."""
        area = self._area
        self.compression = compression
        self._zstd = zstd
        if area._aead is not None:
            self._sink = Sealer(area._aead, self._file, header(compression, True))
        elif self._framed:
            self._file.write(header(compression, False))

    def _decide(self) -> None:
        """Compress the blob if zstd takes at least 1/20 off its first bytes; else store them."""
        probe = self._probe
        assert probe is not None
        self._probe = None
        zstd = zstandard.ZstdCompressor(level=_ZSTD_LEVEL).compressobj()
        packed = zstd.compress(probe) + zstd.flush(zstandard.COMPRESSOBJ_FLUSH_BLOCK)
        if len(packed) <= len(probe) * _WORTH:
            self._start("zstd", zstd)
            self._sink.write(packed)
        else:
            # Incompressible (media, archives, random): zstd would cost a third of
            # the CPU of streaming it and save nothing (benchmarks/stream_1gib.py).
            self._start(None, None)
            self._sink.write(memoryview(probe))

    def writable(self) -> bool:
        return True

    def write(self, data: Any) -> int:
        self._check_usable("write to a closed blob writer")
        view = memoryview(data).cast("B")
        try:
            # A slice at a time: one large write (a put) holds one slice's output, not a copy.
            for start in range(0, len(view), CHUNK):
                piece = view[start : start + CHUNK]
                self._hash.update(piece)
                if self._probe is not None:
                    taken = CHUNK - len(self._probe)
                    self._probe += piece[:taken]
                    if len(self._probe) < CHUNK:
                        continue
                    self._decide()
                    piece = piece[taken:]
                self._sink.write(self._zstd.compress(piece) if self._zstd is not None else piece)
        except BaseException as exc:  # the hash may now cover bytes the file lacks
            self._fail(exc)
            raise
        self._size += len(view)
        return len(view)

    def tell(self) -> int:
        return self._size

    def commit(self) -> BlobInfo:
        """Make the blob durable under its name and return its info."""
        if self.info is not None:
            return self.info
        self._check_usable("commit of a discarded blob writer")
        try:
            if self._probe is not None:
                self._decide()
            if self._zstd is not None:
                self._sink.write(self._zstd.flush())
            self._sink.finish()
        except BaseException as exc:
            self._fail(exc)
            raise
        self.info = self._publish(self._hash.hexdigest(), self._size)
        super().close()
        return self.info

    def close(self) -> None:
        if not self.closed and self.info is None:
            self._discard()
        super().close()

    def __exit__(self, kind: Any, exc: Any, tb: Any) -> None:
        if kind is None:
            self.commit()
        else:
            self.close()

    def _check_usable(self, closed: str) -> None:
        if self._failure is not None:
            # A write failed part way: the bytes on disk are not the bytes hashed,
            # so this blob must never get a name, even if the caller ignored the error.
            raise StoreError(f"{self._failure}; nothing of this blob was kept: write it again")
        if self.closed:
            raise ValueError(closed)

    def _fail(self, exc: BaseException) -> None:
        """Discard the blob after a write that failed part way; an OSError becomes StoreError."""
        cause = str(exc) if isinstance(exc, OSError) else f"{type(exc).__name__}: {exc}"
        self._failure = f"cannot write blob {self._where()}: {cause}"
        self._discard()
        super().close()
        if isinstance(exc, OSError):
            raise StoreError(self._failure) from exc

    def _where(self) -> str:
        """The file being written, for messages."""
        return f"in {self._area.locate('tmp')}"

    def _publish(self, sha256: str, size: int) -> BlobInfo:
        raise NotImplementedError

    def _discard(self) -> None:
        raise NotImplementedError


# -- binding refs to an area --------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class RefSource:
    """A store's blob area and codec, as a `Ref` reads through them (`flowdag.refs.BlobReader`)."""

    area: BlobArea
    codec: Any = None  # the store's ValueCodec; None reads "raw" refs only

    @property
    def portable(self) -> bool:
        return self.area.portable

    def open_ref(self, ref: Ref) -> BinaryIO:
        return self.area.open(sha256_of_uri(ref.uri), size=ref.size, origin=ref._origin)

    def decode_ref(self, ref: Ref, data: bytes) -> Any:
        if ref.encoding == RAW:
            return data
        name = getattr(self.codec, "name", None)
        if self.codec is None or name != ref.encoding:
            raise CorruptStateError(
                f"ref {ref.uri} holds a value encoded with {ref.encoding!r}, but the store "
                f"reads with {name!r}: open the store with the codec that wrote it"
            )
        # Refs inside (a list of outputs kept by reference, itself by reference)
        # point into this same area: bound to it, they load too.
        with binding(self, f"inside {ref.uri}"):
            return self.codec.decode(data)
