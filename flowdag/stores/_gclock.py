"""The store-level lock of ``gc`` (and ``store compact``): one collector per store at a time.

Directory stores lock ``<dir>/locks/.gc.lock`` with an ``flock``, as run locks
are taken (``_locks.py``): the OS drops it when its holder dies, even by
``kill -9``, so a collector killed midway never blocks the next one. Its name
starts with a dot, which no run id does, so it is never a run's lock file, and
JSON and FlatBuffers stores sharing one directory (and one blob area) share it
too. A store without a directory (`MemoryStore`) gets a lock of this process,
one per store object.

A second collector does not wait: `try_gc_lock` answers None and the caller
reports that it skipped.
"""

from __future__ import annotations

import os
import threading
import weakref
from dataclasses import dataclass
from pathlib import Path

from flowdag.errors import RunLockedError, StoreError
from flowdag.stores._files import make_private_dir
from flowdag.stores._locks import FileRunLock, lock_holder, lock_run_file
from flowdag.stores.base import Store

__all__ = ["GC_LOCK", "GCLock", "gc_lock_holder", "try_gc_lock"]

#: The lock file's name under ``<dir>/locks``: not a run id (run ids never start with a dot).
GC_LOCK = ".gc.lock"

_MEMORY: weakref.WeakKeyDictionary[Store, threading.Lock] = weakref.WeakKeyDictionary()
_MEMORY_GUARD = threading.Lock()


@dataclass(slots=True)
class GCLock:
    """A held gc lock; `release` (or the holder's death) frees it."""

    _file: FileRunLock | None = None
    _thread: threading.Lock | None = None

    def release(self) -> None:
        """Release the lock; calling it again does nothing."""
        file, self._file = self._file, None
        thread, self._thread = self._thread, None
        if file is not None:
            file.release()
        if thread is not None:
            thread.release()

    def __enter__(self) -> GCLock:
        return self

    def __exit__(self, *exc_info: object) -> None:
        self.release()


def try_gc_lock(store: Store) -> GCLock | None:
    """Take ``store``'s gc lock without waiting; None if another collector holds it.

    Raises:
        StoreError: the lock file cannot be created (a read-only directory...).
    """
    path = _lock_path(store)
    if path is None:
        with _MEMORY_GUARD:
            lock = _MEMORY.setdefault(store, threading.Lock())
        return GCLock(_thread=lock) if lock.acquire(blocking=False) else None
    root = path.parent.parent
    try:
        make_private_dir(path.parent, root=root)
        return GCLock(_file=lock_run_file(path, "gc", root=root))
    except RunLockedError:
        return None
    except OSError as exc:
        raise StoreError(f"cannot take the gc lock {path}: {exc}") from exc


def gc_lock_holder(store: Store) -> int | None:
    """The pid of the live process collecting ``store`` (0: not named), None if none.

    A store without a directory is collected by this process, if at all.
    """
    path = _lock_path(store)
    if path is None:
        lock = _MEMORY.get(store)
        return None if lock is None or not lock.locked() else os.getpid()  # held here
    return lock_holder(path)


def _lock_path(store: Store) -> Path | None:
    directory = getattr(store, "path", None)
    return directory / "locks" / GC_LOCK if isinstance(directory, Path) else None
