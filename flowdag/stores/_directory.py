"""The directory-store base: what every store that lives in one directory shares.

`DirectoryStore` holds what the LMDB and the journaled stores used to each do
by hand: the directory (absolute, refused when it is a file), ``create=False``
for read-only tools, the per-run ``flock`` files under ``locks/``, sealing and
opening bytes with the store's `Cipher` (each backend names its own associated
data), turning an `OSError` into a `StoreError` that names the run and the
cause, ``describe``/``repr``, and the record of which codec wrote the store.

Links
-----
Every file and directory below ``path`` is reached through the ``root=``
helpers of ``_files.py``, with ``path`` as the root: no symbolic link inside the
store is followed (a planted one is refused with a `StoreError` naming it),
while ``path`` itself, which the user named, may be a link. Opened with
``create=False`` (read-only tools), a store removes nothing on open.

Codec record
------------
A store records the name of its codec (``codec.name``: "msgpack", "json", or a
user codec's class name) in ``<dir>/<scheme>-store.json`` when it is created::

    {"flowdag": "lmdb-store", "codec": "msgpack"}

and every later open compares it with its own codec: a store read with another
codec would fail on the first value, or worse, so it is refused up front with
`CodecMismatchError`. The record is a file beside the data rather than an entry
in it, so it is written once, here, for every kind (JSON and FlatBuffers stores
may share a directory; each has its own record), stays plain under encryption
(a codec name is no secret), and leaves the data files in the previous
release's format. A store written before stores recorded their codec has runs
but no record: it opens with any codec, as it always did, and is not stamped
(its codec is not known). The record is created without replacing (a temp
file hard-linked into place), so two processes creating one store agree on it.
Opened with ``create=False``, a store is never stamped (read-only tools write nothing).
"""

from __future__ import annotations

import contextlib
import json
import os
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import ClassVar, TypedDict

from flowdag.codec import ValueCodec
from flowdag.errors import CodecMismatchError, CorruptStateError, StoreError
from flowdag.stores._blobs import BlobArea
from flowdag.stores._crypto import Cipher, is_sealed, make_cipher, not_encrypted_error
from flowdag.stores._files import atomic_write, make_private_dir, no_store_error, read_file
from flowdag.stores._locks import FileRunLock, lock_holder, lock_run_file
from flowdag.stores.base import RunLock, Store, StoredRun

__all__ = ["DirectoryStore", "StoreOptions", "codec_name"]


class StoreOptions(TypedDict, total=False):
    """The keyword arguments every directory store takes (see `DirectoryStore`)."""

    codec: ValueCodec | None
    key: bytes | str | Cipher | None
    create: bool


def codec_name(codec: object) -> str:
    """The name a store records for ``codec``: its ``name``, else its class's name."""
    name = getattr(codec, "name", None)
    return name if isinstance(name, str) and name else type(codec).__qualname__


class DirectoryStore(Store):
    """Base of the stores that keep their runs under one directory.

    Subclasses set `kind`, implement `_open` (set up the backend in
    ``self.path``), `_holds_store` and the `Store` hooks, and name the
    associated data they seal bytes with.

    Args:
        path: the store directory; created (0700, with parents) if missing.
        codec: the value codec.
        key: encrypt what the store writes with AES-256-GCM under this key (32
            bytes, 64 hex digits or base64; or a `Cipher`, see ``_crypto.py``);
            None stores plain bytes. A store written with a key is read only
            with that key.
        create: False to refuse a directory that holds no store of this kind,
            creating nothing: what read-only tools want.

    Raises:
        StoreError: ``path`` is a file or cannot be opened, or ``create`` is
            False and there is no store there.
        CodecMismatchError: the store was written with another codec.
    """

    #: The store's name in messages, e.g. "LMDB".
    kind: ClassVar[str] = ""
    # A run's result reads back what no node of the run reads (`flowdag._ledger`):
    # it is on disk, and a store closed meanwhile is opened anew to read it.
    _reads_back = True

    def __init__(
        self,
        path: str | os.PathLike[str],
        *,
        codec: ValueCodec | None = None,
        key: bytes | str | Cipher | None = None,
        create: bool = True,
    ) -> None:
        super().__init__(codec=codec)
        self.path = Path(os.path.abspath(path))
        self._cipher = make_cipher(key)
        self._held: set[str] = set()  # run ids whose lock this store holds
        self._create = create  # False: a read-only tool; housekeeping removes nothing
        if not create and not self._holds_store():
            raise no_store_error(self.path, self.kind)
        if self.path.exists() and not self.path.is_dir():
            raise StoreError(
                f"cannot open {self.kind} store at {self.path}: it is a file, not a directory; "
                "pass a directory path"
            )
        with self._io("", "open"):
            # Checked before the backend opens: a refused store is not touched.
            recorded = self._read_codec_record()
            self._check_codec(recorded)
            self._open()
        if recorded is None and create:
            try:
                with self._io("", "open"):
                    self._stamp_codec()
            except BaseException:
                self.close()
                raise

    def __repr__(self) -> str:
        return f"{type(self).__name__}({str(self.path)!r})"

    def _reopened(self) -> DirectoryStore:
        return type(self)(self.path, codec=self.codec, key=self._cipher, create=False)

    def describe(self, run_id: str) -> str:
        """The store directory (backends name the file that holds the run)."""
        return str(self.path)

    # -- backend hooks ----------------------------------------------------------

    def _blob_area(self) -> BlobArea:
        """Blob files under ``<dir>/blobs``, encrypted with the store's key if it has one."""
        from flowdag.stores._blobdir import DirectoryBlobs

        return DirectoryBlobs(self.path, cipher=self._cipher)

    def _open(self) -> None:
        """Create or open the backend under ``self.path`` (an OSError is wrapped)."""

    def _holds_store(self) -> bool:
        """Whether ``self.path`` holds a store of this kind (for ``create=False``)."""
        raise NotImplementedError

    def _released(self, run_id: str) -> None:
        """Called as the run's lock is released (its writer may go)."""

    def _save(self, run_id: str, run: StoredRun) -> None:
        self._save_checked(run_id, run, None)

    def _save_checked(
        self,
        run_id: str,
        run: StoredRun,
        check: Callable[[Callable[[], StoredRun]], None] | None,
    ) -> None:
        """Save ``run``, published atomically; with ``check``, only once it passed as read back.

        Directory stores write a run where loads never look, so a crash in
        between leaves no unchecked run (see `Store._save_checked`).
        """
        raise NotImplementedError

    # -- locks ----------------------------------------------------------------------

    def _lock(self, run_id: str) -> RunLock:
        locks = self.path / "locks"
        with self._io(run_id, "lock"):
            make_private_dir(locks, root=self.path)
            held = lock_run_file(locks / f"{run_id}.lock", run_id, root=self.path)
        self._held.add(run_id)
        return _HeldRun(self, held)

    def _lock_holder(self, run_id: str) -> int | None:
        return lock_holder(self.path / "locks" / f"{run_id}.lock")

    def _unlock(self, run_id: str) -> None:
        self._held.discard(run_id)
        self._released(run_id)

    # -- encryption at rest (see _crypto.py) --------------------------------------------

    def _seal(self, content: bytes | memoryview, aad: bytes) -> bytes:
        """``content`` encrypted and bound to ``aad``; unchanged without a key."""
        if self._cipher is None:
            return bytes(content)
        return self._cipher.encrypt(content, aad)

    def _unseal(self, content: bytes, aad: bytes, where: str) -> bytes:
        """Open what `_seal` wrote with the same ``aad``; ``where`` names it in errors."""
        if self._cipher is None:
            if is_sealed(content):
                raise not_encrypted_error(where)
            return content
        return self._cipher.decrypt(content, aad, where)

    # -- errors -------------------------------------------------------------------

    @contextlib.contextmanager
    def _io(self, run_id: str, action: str) -> Iterator[None]:
        """Turn an OSError into a StoreError naming the run and the cause."""
        try:
            yield
        except OSError as exc:
            where = f"run '{run_id}' in {self.path}" if run_id else str(self.path)
            raise StoreError(f"cannot {action} {where}: {exc}") from exc

    # -- codec record (see the module docstring) ------------------------------------

    def _record_path(self) -> Path:
        return self.path / f"{self.scheme}-store.json"

    def _check_codec(self, recorded: str | None) -> None:
        mine = codec_name(self.codec)
        if recorded is not None and recorded != mine:
            raise CodecMismatchError(
                f"the {self.kind} store at {self.path} was written with the {recorded!r} codec, "
                f"not {mine!r}: open it with a {recorded!r} codec (codec=...), or copy its "
                "runs to a new store opened with that codec (flowdag.stores.transfer.copy_run)"
            )

    def _stamp_codec(self) -> None:
        """Record the codec of a store that has none yet, unless it has runs already."""
        if not self._list_runs():  # with runs, it was written before stores recorded codecs
            record = {"flowdag": f"{self.scheme}-store", "codec": codec_name(self.codec)}
            content = json.dumps(record).encode() + b"\n"
            atomic_write(self._record_path(), content, replace=False, root=self.path)
        # Read back either way: another process may have recorded its codec (and
        # saved runs) since this one looked.
        self._check_codec(self._read_codec_record())

    def _read_codec_record(self) -> str | None:
        path = self._record_path()
        try:
            content = read_file(path, root=self.path)
        except (FileNotFoundError, NotADirectoryError):
            return None  # no record, or no store at all (the backend says which)
        try:
            record = json.loads(content)
            name = record["codec"]
            if record["flowdag"] != f"{self.scheme}-store" or not isinstance(name, str):
                raise ValueError("not a codec record of this store")
        except (ValueError, TypeError, KeyError) as exc:
            raise CorruptStateError(
                f"{path} is damaged ({exc}); it records the codec that wrote the store: "
                f'restore it, e.g. {{"flowdag": "{self.scheme}-store", "codec": "msgpack"}}'
            ) from exc
        return name


@dataclass(slots=True)
class _HeldRun:
    """A run lock held through a `DirectoryStore`, which is told when it goes."""

    store: DirectoryStore
    lock: FileRunLock

    def release(self) -> None:
        if self.lock.held:
            try:
                self.store._unlock(self.lock.run_id)
            finally:
                self.lock.release()
