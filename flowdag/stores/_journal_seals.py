"""Seals of a journal store's runs (`flowdag._seal`): a file beside the run's files.

Every write of a run changes its files: a commit appends to the journal, a
save or a compaction writes a new snapshot file and journal. So the seal is
kept in the run's directory (``seal.json``, ``seal.fb``: the format's own, as
JSON and FlatBuffers stores may share a directory) together with the
*identity* of the run's files when it was written: each file's name, inode,
size and modification time. It holds while they are the same; a write of any
kind leaves it behind, stale and never wrong, and the next seal replaces it.
It is written atomically, so a crash leaves the old seal or the new one, and,
with a key, sealed like the snapshot, bound to the run.
"""

from __future__ import annotations

import hashlib
import os
from pathlib import Path
from typing import TYPE_CHECKING

import msgpack

from flowdag.errors import CorruptStateError
from flowdag.stores._files import atomic_write, list_names, read_file
from flowdag.stores._lineage import journal_generation
from flowdag.stores._runfiles import RunFiles

if TYPE_CHECKING:
    from contextlib import _GeneratorContextManager

__all__ = ["JournalSeals"]


class JournalSeals:
    """`Store._sealed` and `Store._put_seal` of `JournaledStore` (mixed into it)."""

    __slots__ = ()
    path: Path
    if TYPE_CHECKING:  # JournaledStore's and DirectoryStore's

        @property
        def _files(self) -> RunFiles: ...
        def _io(self, run_id: str, action: str) -> _GeneratorContextManager[None]: ...

    def _sealed(self, run_id: str) -> tuple[bytes, bytes] | None:
        path = self._seal_path(run_id)
        try:
            content = read_file(path, root=self.path)
            token, seal = msgpack.unpackb(self._files.open_seal(run_id, path, content), raw=False)
        except FileNotFoundError:
            return None
        except (ValueError, TypeError, msgpack.UnpackException, CorruptStateError):
            return None  # torn by a crash, or not ours: plan as usual
        if type(token) is not bytes or type(seal) is not bytes:
            return None
        return (token, seal) if token == self._identity(run_id) else None

    def _put_seal(self, run_id: str, seal: bytes) -> bytes:
        with self._io(run_id, "seal"):
            token = self._identity(run_id)
            content = msgpack.packb([token, seal], use_bin_type=True)
            atomic_write(
                self._seal_path(run_id), self._files.seal_seal(run_id, content), root=self.path
            )
        return token

    def _seal_path(self, run_id: str) -> Path:
        return self._files.run_dir(run_id) / f"seal{self._files.format.suffix}"

    def _identity(self, run_id: str) -> bytes:
        """The digest of the run's files as they are: any write changes it."""
        directory = self._files.run_dir(run_id)
        suffix = self._files.format.suffix
        files = []
        for name in sorted(list_names(directory, root=self.path)):
            if name == f"snapshot{suffix}" or journal_generation(name, suffix) is not None:
                found = os.stat(directory / name, follow_symlinks=False)
                files.append((name, found.st_ino, found.st_size, found.st_mtime_ns))
        return hashlib.sha256(msgpack.packb(files, use_bin_type=True)).digest()
