"""`DirectoryBlobs`: the blob area of a directory store, as files (see ``_blobs.py``)."""

from __future__ import annotations

import contextlib
import io
import os
import secrets
import stat
from collections.abc import Iterator
from pathlib import Path
from typing import Any, BinaryIO

from flowdag.errors import BlobMissingError, CorruptStateError, StoreError
from flowdag.stores._blobio import CheckedReader, FileSink, open_payload
from flowdag.stores._blobs import (
    BlobArea,
    BlobEntry,
    BlobInfo,
    BlobWriter,
    blob_uri,
    check_name,
)
from flowdag.stores._crypto import Cipher
from flowdag.stores._files import make_private_dir, open_dir, open_file, open_private

__all__ = ["DirectoryBlobs"]

_TEMP = "tmp"
_DURABLE_NAMES = 65536  # blob names an area object remembers as synced


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
        self._synced: set[str] = set()  # entries made durable here: "" (blobs/), shards
        self._durable: set[str] = set()  # blobs whose rename this object synced (bounded)

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
            make_private_dir(temp, root=self.root)
            self._sync_entries()  # blobs/ itself is durable before any blob in it
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
                f"blob {blob_uri(sha256)}{' of ' + origin if origin else ''} is missing: no file "
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
        return io.BufferedReader(checked, 1 << 20)

    def _read_error(self, where: str) -> Any:
        def wrap(exc: Exception) -> Exception:
            if isinstance(exc, OSError):
                return StoreError(f"cannot read blob {where}: {exc}")
            return CorruptStateError(f"blob {where} cannot be read back ({exc}): damaged")

        return wrap

    def entries(self) -> list[BlobEntry]:
        found = []
        with (
            self._io("list blobs in", self.path),
            contextlib.suppress(FileNotFoundError),
            open_dir(self.path, root=self.root) as top,
        ):
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

    def delete(self, name: str, *, older_than: float | None = None, sync: bool = True) -> int:
        check_name(name, "blob name")
        with (
            self._io("delete blob", self._path(name)),
            contextlib.suppress(FileNotFoundError),
            open_dir(self.path / name[:2], root=self.root) as shard,
            open_dir(self.path / _TEMP, root=self.root, create=True) as temp,
        ):
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
            if sync:
                os.fsync(shard)
            self._durable.discard(name)
            return info.st_size
        return 0

    def remove_temp(self, name: str) -> int:
        if "/" in name or not name.endswith(".tmp") or name.startswith("."):
            raise StoreError(f"{name!r} is not a temp file of the blob area")
        with (
            self._io("remove", self.path / _TEMP),
            contextlib.suppress(FileNotFoundError),
            open_dir(self.path / _TEMP, root=self.root) as temp,
        ):
            size = os.stat(name, dir_fd=temp, follow_symlinks=False).st_size
            blob = name.split(".")[0]
            if name.endswith(".gc.tmp") and _is_name(blob, blob[:2]):
                # A delete cut short after moving the blob aside: put it back (never
                # over a newer copy); the next sweep judges it by marks and mtime again.
                with (
                    open_dir(self.path / blob[:2], root=self.root, create=True) as shard,
                    contextlib.suppress(FileExistsError),
                ):
                    os.link(name, blob, src_dir_fd=temp, dst_dir_fd=shard, follow_symlinks=False)
                    os.fsync(shard)
                size = 0
            os.unlink(name, dir_fd=temp)
            return size
        return 0

    def _stat(self, name: str) -> BlobEntry | None:
        with (
            contextlib.suppress(FileNotFoundError, NotADirectoryError),
            open_dir(self.path / name[:2], root=self.root) as shard,
        ):
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
                if name not in self._durable:
                    # Its writer may have been killed before it synced the rename: a
                    # record about to rely on it must not outlive it in a power loss.
                    with open_dir(self.path / name[:2], root=self.root) as shard:
                        os.fsync(shard)
            except (FileNotFoundError, NotADirectoryError):
                return None
            self._sync_entries(name[:2])
            self._synced_blob(name)
        compression = "zstd" if head[4:5] == b"\x01" else None
        return BlobInfo(sha256, size, stored, compression, blob_uri(sha256))

    def _sync_entries(self, shard: str | None = None, *, created: bool = False) -> None:
        """Make blobs/ (and blobs/<shard>) durable directory entries, once per area object.

        Whoever made a directory synced its entry, unless it was killed first, and
        an existing directory does not tell which: a blob renamed into (or reused
        from) a directory another process made is only as durable as that entry.
        ``created``: this writer just made the shard, so its entry is synced again.
        """
        if "" not in self._synced:
            with open_dir(self.root) as top:
                os.fsync(top)
            self._synced.add("")
        if shard is not None and (created or shard not in self._synced):
            with open_dir(self.path, root=self.root) as top:
                os.fsync(top)
            self._synced.add(shard)

    def _synced_blob(self, name: str) -> None:
        """Note that blob ``name``'s rename is synced: reusing it needs no sync again."""
        if len(self._durable) >= _DURABLE_NAMES:
            self._durable.clear()  # a bound on memory; forgetting only costs a sync
        self._durable.add(name)

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

    def _where(self) -> str:
        return str(self._dir_area.path / _TEMP / self._tmp)

    def _publish(self, sha256: str, size: int) -> BlobInfo:
        area = self._dir_area
        name = area.name_of(sha256)
        try:
            with area._io("write blob", area.locate(name), wrap_missing=True):
                os.fsync(self._fd)
                stored = os.fstat(self._fd).st_size
                fd, self._fd = self._fd, -1  # closed even if close reports an error
                os.close(fd)
                info = area._freshen(sha256, size)
                if info is not None:  # written meanwhile (another writer, or dedup)
                    self._discard()
                    return info
                shard_path = area.path / name[:2]
                new_shard = not _exists_dir(area, shard_path)
                with (
                    open_dir(area.path / _TEMP, root=area.root) as temp,
                    open_dir(shard_path, root=area.root, create=True) as shard,
                ):
                    os.rename(self._tmp, name, src_dir_fd=temp, dst_dir_fd=shard)
                    os.fsync(shard)  # the rename is durable before the caller commits a ref
                area._sync_entries(name[:2], created=new_shard)
                area._synced_blob(name)
        except BaseException:
            self._discard()
            raise
        return BlobInfo(sha256, size, stored, self.compression, blob_uri(sha256))

    def _discard(self) -> None:
        if self._fd >= 0:
            fd, self._fd = self._fd, -1
            with contextlib.suppress(OSError):  # discarded anyway
                os.close(fd)
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
