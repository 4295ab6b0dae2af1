"""The blob area: content-addressed payloads that node records point at with a `Ref`.

Design
------
One small interface, `BlobArea`, with two homes: `DirectoryBlobs` (files
beside a directory store, never inside LMDB's map) and `MemoryBlobs` (a dict,
for `MemoryStore`). A blob is addressed by the sha256 of its bytes before
compression (`put` or a streaming `BlobWriter`); a blob that exists is not
written again (its mtime is refreshed instead, see "Collection" below). Reads
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

import contextlib
import hashlib
import hmac
import io
import os
import secrets
import stat
import threading
import time
from abc import ABC, abstractmethod
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any, BinaryIO

import zstandard

from flowdag.errors import BlobMissingError, CorruptStateError, StoreError
from flowdag.refs import RAW, Ref, sha256_of_uri
from flowdag.stores._blobio import CheckedReader, FileSink, Sealer, header, open_payload
from flowdag.stores._crypto import Cipher
from flowdag.stores._files import make_private_dir, open_dir, open_file, open_private

__all__ = [
    "BlobArea",
    "BlobEntry",
    "BlobInfo",
    "BlobWriter",
    "DirectoryBlobs",
    "MemoryBlobs",
    "RefSource",
]

_ZSTD_LEVEL = 3
_TEMP = "tmp"


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


def _uri(sha256: str) -> str:
    return "blob:sha256:" + sha256


class BlobArea(ABC):
    """A store's content-addressed blob area (see the module docstring)."""

    #: Whether the area reopens by path in another process (no key, no memory).
    portable: bool = False

    def __init__(self, *, cipher: Cipher | None = None, compression: str | None = "zstd") -> None:
        if compression not in (None, "zstd"):
            raise StoreError(f"blob compression must be 'zstd' or None, not {compression!r}")
        self.compression = compression
        self._name_key = cipher.derive_key(b"flowdag blob names v1") if cipher else None
        self._aead = _aead(cipher.derive_key(b"flowdag blob data v1")) if cipher else None

    @property
    def encrypted(self) -> bool:
        """Whether blob names are keyed and contents encrypted."""
        return self._aead is not None

    def name_of(self, sha256: str) -> str:
        """The blob's name in this area: its hash, or a keyed hash of it (64 hex digits)."""
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
    def delete(self, name: str, *, older_than: float | None = None) -> int:
        """Remove blob ``name`` (only if its mtime is before ``older_than``); bytes freed."""

    @abstractmethod
    def temp_entries(self) -> list[BlobEntry]:
        """Files a writer left in the temp area (a crash, or a writer still running)."""

    @abstractmethod
    def remove_temp(self, name: str) -> int:
        """Remove temp file ``name``; bytes freed."""

    @abstractmethod
    def locate(self, name: str) -> str:
        """Where blob ``name`` is, for messages (a path, or ``memory://``...)."""

    @abstractmethod
    def _stat(self, name: str) -> BlobEntry | None: ...

    @abstractmethod
    def _freshen(self, sha256: str, size: int) -> BlobInfo | None:
        """The info of an existing blob, its mtime refreshed; None if it is missing."""


def _aead(key: bytes) -> Any:
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
        self._sink: FileSink | Sealer = sink
        if area._aead is not None:
            self._sink = Sealer(area._aead, sink, header(area.compression, True))
        elif framed:
            sink.write(header(area.compression, False))
        self._zstd = (
            zstandard.ZstdCompressor(level=_ZSTD_LEVEL).compressobj()
            if area.compression == "zstd"
            else None
        )
        self.info: BlobInfo | None = None

    def writable(self) -> bool:
        return True

    def write(self, data: Any) -> int:
        if self.closed:
            raise ValueError("write to a closed blob writer")
        view = memoryview(data).cast("B")
        self._hash.update(view)
        self._size += len(view)
        self._sink.write(self._zstd.compress(view) if self._zstd is not None else view)
        return len(view)

    def tell(self) -> int:
        return self._size

    def commit(self) -> BlobInfo:
        """Make the blob durable under its name and return its info."""
        if self.info is not None:
            return self.info
        if self.closed:
            raise ValueError("commit of a discarded blob writer")
        if self._zstd is not None:
            self._sink.write(self._zstd.flush())
        self._sink.finish()
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

    def _publish(self, sha256: str, size: int) -> BlobInfo:
        raise NotImplementedError

    def _discard(self) -> None:
        raise NotImplementedError


# -- directory stores --------------------------------------------------------------------


class DirectoryBlobs(BlobArea):
    """Blob files under ``<root>/blobs`` (see the module docstring).

    Args:
        root: the store directory; no link below it is followed.
        cipher: the store's cipher: keyed names and encrypted contents.
    """

    def __init__(
        self,
        root: str | os.PathLike[str],
        *,
        cipher: Cipher | None = None,
        compression: str | None = "zstd",
    ) -> None:
        super().__init__(cipher=cipher, compression=compression)
        self.root = Path(os.path.abspath(root))
        self.path = self.root / "blobs"
        self.portable = cipher is None

    def __reduce__(self) -> Any:
        if not self.portable:
            raise TypeError("an encrypted blob area holds a key and cannot be pickled")
        return (DirectoryBlobs, (self.root,), {"compression": self.compression})

    def __setstate__(self, state: dict[str, Any]) -> None:
        self.compression = state["compression"]

    def __repr__(self) -> str:
        return f"DirectoryBlobs({str(self.root)!r})"

    def locate(self, name: str) -> str:
        return str(self._path(name))

    def _path(self, name: str) -> Path:
        return self.path / name[:2] / name

    def writer(self) -> BlobWriter:
        temp = self.path / _TEMP
        tmp = f"{secrets.token_hex(8)}.tmp"
        with self._io("write a blob in", temp, wrap_missing=True):
            if not _exists_dir(self, self.path):
                make_private_dir(self.path, root=self.root)
                with open_dir(self.root) as top:
                    os.fsync(top)  # blobs/ itself is durable before any blob in it
            make_private_dir(temp, root=self.root)
            fd = open_private(temp / tmp, os.O_WRONLY, root=self.root)
        return _FileWriter(self, fd, tmp)

    def open(self, sha256: str, *, size: int | None = None, origin: str = "") -> BinaryIO:
        name = self.name_of(sha256)
        path = self._path(name)
        where = f"{path} ({origin})" if origin else str(path)
        try:
            fd = open_file(path, root=self.root)
        except (FileNotFoundError, NotADirectoryError):
            raise BlobMissingError(
                f"blob {_uri(sha256)}{' of ' + origin if origin else ''} is missing: no file "
                f"{path}; it was deleted (gc, expiry) or never copied with its run"
            ) from None
        except OSError as exc:
            raise StoreError(f"cannot read blob {where}: {exc}") from exc
        file = os.fdopen(fd, "rb", buffering=0)
        try:
            with self._io("read blob", where):
                source, _ = open_payload(file, self._aead, where)
        except BaseException:
            file.close()
            raise
        checked = CheckedReader(source, sha256, size, where, self._read_error(where), file.close)
        return io.BufferedReader(checked, 1 << 20)  # type: ignore[return-value]

    def _read_error(self, where: str) -> Any:
        def wrap(exc: Exception) -> Exception:
            if isinstance(exc, OSError):
                return StoreError(f"cannot read blob {where}: {exc}")
            return CorruptStateError(f"blob {where} cannot be read back ({exc}): damaged")

        return wrap

    def entries(self) -> list[BlobEntry]:
        found = []
        with self._io("list blobs in", self.path), contextlib.suppress(FileNotFoundError):
            with open_dir(self.path, root=self.root) as top:
                shards = [n for n in os.listdir(top) if len(n) == 2 and _is_hex(n)]
                for shard in shards:
                    with contextlib.suppress(FileNotFoundError):
                        found += self._list(self.path / shard, lambda n, s=shard: _is_name(n, s))
        return found

    def temp_entries(self) -> list[BlobEntry]:
        with self._io("list blobs in", self.path), contextlib.suppress(FileNotFoundError):
            return self._list(self.path / _TEMP, lambda name: name.endswith(".tmp"))
        return []

    def _list(self, directory: Path, wanted: Any) -> list[BlobEntry]:
        found = []
        with open_dir(directory, root=self.root) as fd:
            for name in os.listdir(fd):
                if wanted(name):
                    info = _lstat(fd, name)
                    if info is not None and stat.S_ISREG(info.st_mode):
                        found.append(BlobEntry(name, info.st_size, info.st_mtime))
        return found

    def delete(self, name: str, *, older_than: float | None = None) -> int:
        _check_name(name)
        with self._io("delete blob", self._path(name)), contextlib.suppress(FileNotFoundError):
            with open_dir(self.path / name[:2], root=self.root) as shard, open_dir(
                self.path / _TEMP, root=self.root, create=True
            ) as temp:
                # Move it aside first: a writer refreshing its mtime from now on finds
                # no file and writes the blob again (see "Collection").
                aside = f"{name}.{secrets.token_hex(4)}.gc.tmp"
                os.rename(name, aside, src_dir_fd=shard, dst_dir_fd=temp)
                info = os.stat(aside, dir_fd=temp, follow_symlinks=False)
                if older_than is not None and info.st_mtime >= older_than:
                    os.rename(aside, name, src_dir_fd=temp, dst_dir_fd=shard)  # fresh: keep
                    os.fsync(shard)
                    return 0
                os.unlink(aside, dir_fd=temp)
                os.fsync(shard)
                return info.st_size
        return 0

    def remove_temp(self, name: str) -> int:
        if "/" in name or not name.endswith(".tmp") or name.startswith("."):
            raise StoreError(f"{name!r} is not a temp file of the blob area")
        with self._io("remove", self.path / _TEMP), contextlib.suppress(FileNotFoundError):
            with open_dir(self.path / _TEMP, root=self.root) as temp:
                size = os.stat(name, dir_fd=temp, follow_symlinks=False).st_size
                blob = name.split(".")[0]
                if name.endswith(".gc.tmp") and _is_name(blob, blob[:2]):
                    # A delete cut short after moving the blob aside: put it back (never
                    # over a newer copy); the next sweep judges it by marks and mtime again.
                    with open_dir(self.path / blob[:2], root=self.root, create=True) as shard:
                        with contextlib.suppress(FileExistsError):
                            os.link(name, blob, src_dir_fd=temp, dst_dir_fd=shard,
                                    follow_symlinks=False)
                        os.fsync(shard)
                    size = 0
                os.unlink(name, dir_fd=temp)
                return size
        return 0

    def _stat(self, name: str) -> BlobEntry | None:
        with contextlib.suppress(FileNotFoundError, NotADirectoryError):
            with open_dir(self.path / name[:2], root=self.root) as shard:
                info = _lstat(shard, name)
                if info is not None:
                    return BlobEntry(name, info.st_size, info.st_mtime)
        return None

    def _freshen(self, sha256: str, size: int) -> BlobInfo | None:
        name = self.name_of(sha256)
        with self._io("refresh blob", self._path(name)):
            try:
                fd = open_file(self._path(name), root=self.root)  # a regular file, no link
                try:
                    os.utime(fd)  # see "Collection": a reused blob is fresh
                    stored = os.fstat(fd).st_size
                    head = os.pread(fd, 5, 0)
                finally:
                    os.close(fd)
            except (FileNotFoundError, NotADirectoryError):
                return None
        compression = "zstd" if head[4:5] == b"\x01" else None
        return BlobInfo(sha256, size, stored, compression, _uri(sha256))

    @contextlib.contextmanager
    def _io(self, action: str, where: object, *, wrap_missing: bool = False) -> Iterator[None]:
        """OSError -> StoreError; a missing file or directory passes unless ``wrap_missing``."""
        try:
            yield
        except OSError as exc:
            if not wrap_missing and isinstance(exc, FileNotFoundError | NotADirectoryError):
                raise
            raise StoreError(f"cannot {action} {where}: {exc}") from exc


class _FileWriter(BlobWriter):
    """A blob written to a temp file, then renamed into place (see the module docstring)."""

    def __init__(self, area: DirectoryBlobs, fd: int, tmp: str) -> None:
        self._fd = fd
        self._tmp = tmp
        self._dir_area = area
        try:
            super().__init__(area, FileSink(fd))
        except BaseException:
            self._discard()
            raise

    def _publish(self, sha256: str, size: int) -> BlobInfo:
        area = self._dir_area
        name = area.name_of(sha256)
        try:
            with area._io("write blob", area.locate(name)):
                os.fsync(self._fd)
                stored = os.fstat(self._fd).st_size
                os.close(self._fd)
                self._fd = -1
                info = area._freshen(sha256, size)
                if info is not None:  # written meanwhile (another writer, or dedup)
                    self._discard()
                    return info
                shard_path = area.path / name[:2]
                new_shard = not _exists_dir(area, shard_path)
                with open_dir(area.path / _TEMP, root=area.root) as temp, open_dir(
                    shard_path, root=area.root, create=True
                ) as shard:
                    os.rename(self._tmp, name, src_dir_fd=temp, dst_dir_fd=shard)
                    os.fsync(shard)  # the rename is durable before the caller commits a ref
                if new_shard:
                    with open_dir(area.path, root=area.root) as top:
                        os.fsync(top)
        except BaseException:
            self._discard()
            raise
        return BlobInfo(sha256, size, stored, area.compression, _uri(sha256))

    def _discard(self) -> None:
        if self._fd >= 0:
            os.close(self._fd)
            self._fd = -1
        area = self._dir_area
        with contextlib.suppress(OSError), open_dir(area.path / _TEMP, root=area.root) as temp:
            os.unlink(self._tmp, dir_fd=temp)


def _exists_dir(area: DirectoryBlobs, path: Path) -> bool:
    try:
        with open_dir(path, root=area.root):
            return True
    except (FileNotFoundError, NotADirectoryError):
        return False


def _lstat(directory: int, name: str) -> os.stat_result | None:
    try:
        return os.stat(name, dir_fd=directory, follow_symlinks=False)
    except FileNotFoundError:
        return None


def _is_hex(text: str) -> bool:
    return all(c in "0123456789abcdef" for c in text)


def _is_name(name: str, shard: str) -> bool:
    return len(name) == 64 and name.startswith(shard) and _is_hex(name)


def _check_name(name: str) -> None:
    if type(name) is not str or len(name) != 64 or not _is_hex(name):
        raise StoreError(f"{str(name)[:100]!r} is not a blob name (64 lowercase hex digits)")


# -- memory stores --------------------------------------------------------------------------


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
                f"blob {_uri(sha256)}{' of ' + origin if origin else ''} is missing from "
                "the memory store; it was deleted (gc, expiry)"
            )
        source = io.BytesIO(found[0])
        checked = CheckedReader(source, sha256, size, where, CorruptStateError, source.close)
        return io.BufferedReader(checked)  # type: ignore[return-value]

    def entries(self) -> list[BlobEntry]:
        with self._guard:
            return [BlobEntry(n, len(data), mtime) for n, (data, mtime) in self._blobs.items()]

    def delete(self, name: str, *, older_than: float | None = None) -> int:
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
        return BlobInfo(sha256, size, len(found[0]), None, _uri(sha256))

    def _store(self, sha256: str, data: bytes) -> BlobInfo:
        with self._guard:
            self._blobs.setdefault(sha256, (data, time.time()))
        return self._freshen(sha256, len(data)) or BlobInfo(
            sha256, len(data), len(data), None, _uri(sha256)
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
        return self.codec.decode(data)
