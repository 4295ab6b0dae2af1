"""Run locks: an ``flock`` on one file per run id, under the store's ``locks/``.

The OS drops an ``flock`` when its process dies, even by ``kill -9``, so a
stale lock never blocks a later run. Lock files are never deleted: unlinking a
lock file races with a process that has just opened it and would let two
processes "hold" one run. A lock file is opened like every file of a store
(`open_private`: 0600, no link followed), so a lock file planted as a link to a
file outside the store is refused, never truncated.
"""

from __future__ import annotations

import contextlib
import fcntl
import os
import weakref
from pathlib import Path

from flowdag.errors import RunLockedError
from flowdag.stores._files import Where, open_private

__all__ = ["FileRunLock", "lock_holder", "lock_run_file"]


class FileRunLock:
    """A held ``flock`` on a run's lock file; `release` (or process death) frees it."""

    __slots__ = ("__weakref__", "_fd", "path", "run_id")

    def __init__(self, fd: int, path: Path, run_id: str) -> None:
        self._fd: int | None = fd
        self.path = path
        self.run_id = run_id
        _HELD.add(self)

    @property
    def held(self) -> bool:
        """True until `release` is called."""
        return self._fd is not None

    def release(self) -> None:
        """Release the lock; calling it again does nothing."""
        fd, self._fd = self._fd, None
        if fd is None:
            return
        _HELD.discard(self)
        try:
            # Clear our pid while still holding the lock, so a later holder that
            # has not written its own pid yet is never named as us.
            with contextlib.suppress(OSError):
                os.ftruncate(fd, 0)
        finally:
            os.close(fd)  # closing the last fd of the open file drops the flock

    def __enter__(self) -> FileRunLock:
        return self

    def __exit__(self, *exc_info: object) -> None:
        self.release()

    def __repr__(self) -> str:
        state = "held" if self.held else "released"
        return f"<FileRunLock {self.run_id!r} {self.path} {state}>"

    def _forget(self) -> None:
        # In a forked child: drop the inherited fd without unlocking (the flock
        # belongs to the parent's open file, which stays open and locked).
        fd, self._fd = self._fd, None
        if fd is not None:
            with contextlib.suppress(OSError):
                os.close(fd)


# Locks held by this process. A forked child (a process-pool worker) must not keep
# them: an inherited fd would hold the run's lock after the parent died.
_HELD: weakref.WeakSet[FileRunLock] = weakref.WeakSet()


def _forget_held_locks() -> None:
    for lock in list(_HELD):
        lock._forget()
    _HELD.clear()


os.register_at_fork(after_in_child=_forget_held_locks)


def lock_run_file(path: Where, run_id: str, *, root: Where | None = None) -> FileRunLock:
    """Take the exclusive lock on ``path`` for ``run_id`` without waiting.

    ``flock`` locks belong to an open file, so a second acquire conflicts even
    from the same process: one run id never runs twice at once.

    Raises:
        RunLockedError: someone holds it; the message names the holder's pid.
        StoreError: the lock file is a link (see `open_private`).
        OSError: the lock file cannot be created or opened.
    """
    lock_path = Path(path)
    fd = open_private(lock_path, os.O_RDWR, root=root)
    try:
        fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
    except BlockingIOError:
        holder = _read_pid(fd)
        os.close(fd)
        raise RunLockedError(_locked_message(run_id, holder, lock_path)) from None
    except BaseException:
        os.close(fd)
        raise
    try:
        # Name ourselves as the holder: a pid fits in one small write.
        os.ftruncate(fd, 0)
        os.pwrite(fd, f"{os.getpid()}\n".encode(), 0)
    except OSError:
        pass  # the lock is held all the same; only the holder's name is lost
    return FileRunLock(fd, lock_path, run_id)


def lock_holder(path: Where) -> int | None:
    """The pid of the live process holding the lock on ``path``; 0 if held by an unnamed
    one; None if no one holds it. Never creates the file, never blocks a locker.

    A pid recorded by a process that died (``kill -9`` leaves it in the file) is
    answered without touching the lock. Only a recorded pid that is alive (or none)
    is confirmed with a shared ``flock`` tried without waiting and dropped at once:
    it fails while the holder has its exclusive lock, and a pid reused by an
    unrelated process does not make a dead run look live.
    """
    try:
        fd = os.open(path, os.O_RDONLY | os.O_NOFOLLOW | os.O_CLOEXEC)
    except OSError:
        return None  # no lock file (never run here), or a planted link: no holder to name
    try:
        pid = _read_pid(fd)
        if pid is not None and not _alive(pid):
            return None  # the OS dropped the dead holder's flock with its process
        try:
            fcntl.flock(fd, fcntl.LOCK_SH | fcntl.LOCK_NB)
        except BlockingIOError:
            return pid or 0
        fcntl.flock(fd, fcntl.LOCK_UN)
        return None
    finally:
        os.close(fd)


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True  # alive, owned by another user
    return True


def _read_pid(fd: int) -> int | None:
    try:
        text = os.pread(fd, 32, 0)
    except OSError:
        return None
    try:
        pid = int(text.strip() or b"0")
    except ValueError:
        return None
    return pid if pid > 0 else None


def _locked_message(run_id: str, pid: int | None, path: Path) -> str:
    if pid is None:
        holder = "another process"
    elif pid == os.getpid():
        holder = f"pid {pid} (this process)"
    else:
        holder = f"pid {pid}"
    return (
        f"run '{run_id}' is locked by {holder} ({path}); "
        "wait for it to finish or use another run id"
    )
