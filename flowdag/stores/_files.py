"""Private filesystem helpers for stores: private dirs and files, atomic writes, run locks.

Everything a store creates is private to its user: directories 0700, files 0600,
whatever the umask (modes are set explicitly after creation).

Run locks are ``flock`` locks on one file per run id. The OS drops an ``flock``
when its process dies, even by ``kill -9``, so a stale lock never blocks a
later run. Lock files are never deleted: unlinking a lock file races with a
process that has just opened it and would let two processes "hold" one run.
"""

from __future__ import annotations

import contextlib
import fcntl
import os
import tempfile
import weakref
from collections.abc import Callable
from pathlib import Path

from flowdag.errors import RunLockedError, StoreError

__all__ = [
    "FileRunLock",
    "atomic_write",
    "lock_run_file",
    "make_private_dir",
    "no_store_error",
    "open_private",
    "read_all",
    "remove_temp_files",
]

_DIR_MODE = 0o700
_FILE_MODE = 0o600


def make_private_dir(path: str | os.PathLike[str]) -> Path:
    """Create ``path`` and missing parents (like ``mkdir -p``); created dirs get 0700.

    Existing directories keep their mode. Raises `NotADirectoryError` (or
    `FileExistsError`) when ``path`` or a parent is a file.
    """
    target = Path(path)
    missing: list[Path] = []
    for candidate in (target, *target.parents):
        if candidate.is_dir():
            break
        missing.append(candidate)
    for directory in reversed(missing):
        try:
            os.mkdir(directory, _DIR_MODE)
        except FileExistsError:
            if not directory.is_dir():
                raise NotADirectoryError(f"{directory} exists and is not a directory") from None
            continue  # another process created it meanwhile: keep its mode
        os.chmod(directory, _DIR_MODE)  # mkdir's mode is filtered by the umask
    return target


def no_store_error(path: Path, kind: str) -> StoreError:
    """What a store opened with ``create=False`` raises on a directory without one."""
    return StoreError(
        f"no store at {path}: it holds no {kind} store; "
        "run a workflow first, or pass the right store URL"
    )


def open_private(path: str | os.PathLike[str], flags: int = os.O_RDWR) -> int:
    """Open ``path`` with ``flags``, creating it with mode 0600 if missing; return the fd."""
    flags |= os.O_CLOEXEC
    while True:
        try:
            fd = os.open(path, flags | os.O_CREAT | os.O_EXCL, _FILE_MODE)
        except FileExistsError:
            pass
        else:
            try:
                os.fchmod(fd, _FILE_MODE)  # os.open's mode is filtered by the umask
            except BaseException:
                os.close(fd)
                raise
            return fd
        try:
            return os.open(path, flags & ~(os.O_CREAT | os.O_EXCL))
        except FileNotFoundError:
            continue  # removed between the two opens: create it after all


def atomic_write(
    path: str | os.PathLike[str],
    data: bytes,
    *,
    verify: Callable[[bytes], None] | None = None,
    replace: bool = True,
) -> bool:
    """Replace ``path`` with ``data`` (mode 0600) so that a crash leaves old or new, never half.

    Writes a temporary file in the same directory, fsyncs it, renames it over
    ``path`` and fsyncs the directory so the rename itself is durable. With
    ``verify``, the temporary file is read back after its fsync and passed to
    it before the rename: if it raises, ``path`` is left as it was. With
    ``replace=False`` an existing ``path`` is kept (the file is hard-linked
    into place, which never replaces) and False returned.
    """
    target = Path(path)
    # mkstemp creates the file 0600 regardless of the umask.
    fd, tmp = tempfile.mkstemp(prefix=f".{target.name}.", suffix=".tmp", dir=target.parent)
    written = True
    try:
        with os.fdopen(fd, "w+b") as file:
            file.write(data)
            file.flush()
            os.fsync(file.fileno())
            if verify is not None:
                file.seek(0)
                verify(file.read())
        if replace:
            os.replace(tmp, target)
        else:
            try:
                os.link(tmp, target)
            except FileExistsError:
                written = False
            os.unlink(tmp)
    except BaseException:
        with contextlib.suppress(OSError):
            os.unlink(tmp)
        raise
    _fsync_dir(target.parent)
    return written


def read_all(fd: int) -> bytes:
    """The whole file behind ``fd``, from its start, whatever its offset."""
    size = os.fstat(fd).st_size
    content = os.pread(fd, size, 0)
    while len(content) < size:  # pread may return less (a file grown meanwhile: fine)
        more = os.pread(fd, size - len(content), len(content))
        if not more:
            break
        content += more
    return content


def remove_temp_files(directory: Path) -> None:
    """Temp files `atomic_write` left in ``directory`` when a crash cut it short.

    Call it only under the lock of whatever writes there.
    """
    with contextlib.suppress(FileNotFoundError):
        for entry in os.scandir(directory):
            if entry.name.startswith(".") and entry.name.endswith(".tmp"):
                os.unlink(entry.path)


def _fsync_dir(directory: Path) -> None:
    fd = os.open(directory, os.O_RDONLY | os.O_DIRECTORY | os.O_CLOEXEC)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


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


def lock_run_file(path: str | os.PathLike[str], run_id: str) -> FileRunLock:
    """Take the exclusive lock on ``path`` for ``run_id`` without waiting.

    ``flock`` locks belong to an open file, so a second acquire conflicts even
    from the same process: one run id never runs twice at once.

    Raises:
        RunLockedError: someone holds it; the message names the holder's pid.
        OSError: the lock file cannot be created or opened.
    """
    lock_path = Path(path)
    fd = open_private(lock_path, os.O_RDWR)
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
