"""Private filesystem helpers for stores: private dirs and files, atomic writes, no links.

Everything a store creates is private to its user: directories 0700, files 0600,
whatever the umask (modes are set explicitly after creation).

No link is followed inside a store
----------------------------------
Whoever can write a store's directory must not be able to make flowdag write,
chmod or read anything outside it by planting a symbolic link (``locks/r1.lock``
-> ``~/.bashrc``, ``runs/r1`` -> another directory). So every helper here takes
the store's directory as ``root`` and reaches a path below it one component at
a time: each directory is opened with ``O_DIRECTORY | O_NOFOLLOW`` relative to
the descriptor of its parent (``dir_fd``), and the file itself with
``O_NOFOLLOW``. There is no window between a check and a use: the kernel
refuses the link at the open. ``root`` itself is followed, like any path the user
names (``lmdb://state`` with ``state -> /data/state`` is the user's choice);
without ``root``, the directory holding the path is trusted and only a file at
the path itself is refused when it is a link. A link
is refused with a `StoreError` naming it; so is a file that is not a regular
file (a FIFO would hang a read), which ``O_NONBLOCK`` lets us see before any
read or write. A rename replaces a planted link itself, never its target.

Run locks are in ``_locks.py``.
"""

from __future__ import annotations

import contextlib
import errno
import os
import secrets
import shutil
import stat
from collections.abc import Callable, Iterable, Iterator
from pathlib import Path

from flowdag.errors import StoreError

__all__ = [
    "atomic_write",
    "check_files",
    "fsync_dir",
    "list_names",
    "make_private",
    "make_private_dir",
    "no_store_error",
    "open_dir",
    "open_file",
    "open_private",
    "read_all",
    "read_file",
    "remove_files",
    "remove_temp_files",
    "remove_tree",
    "rename_in",
]

_DIR_MODE = 0o700
_FILE_MODE = 0o600
_DIR_FLAGS = os.O_RDONLY | os.O_DIRECTORY | os.O_NOFOLLOW | os.O_CLOEXEC
# O_NONBLOCK: a FIFO planted in place of a file opens at once (to be refused)
# instead of blocking; on a regular file it changes nothing.
_FILE_FLAGS = os.O_NOFOLLOW | os.O_NONBLOCK | os.O_CLOEXEC

Where = str | os.PathLike[str]


def link_error(path: Where) -> StoreError:
    """What a store raises on a symbolic link inside it."""
    return StoreError(
        f"{path} is a symbolic link: flowdag follows no link inside a store, so that "
        "nothing is written or read outside it; remove the link (a store's own files "
        "and directories are never links)"
    )


def _not_regular_error(path: Where) -> StoreError:
    return StoreError(
        f"{path} is not a regular file (a FIFO, socket or device planted in the store?); "
        "remove it: flowdag reads and writes only regular files"
    )


def _split(path: Where, root: Where | None) -> tuple[str, list[str]]:
    """``path`` as a trusted base directory plus the names below it, none followed."""
    # Plain strings, not pathlib: this runs on every open of a store's file.
    target = os.fspath(path)
    if root is None:
        base, name = os.path.split(target)
        return base or ".", [name]
    base = os.fspath(root)
    prefix = base if base.endswith("/") else base + "/"
    parts = target[len(prefix) :].split("/")
    if not target.startswith(prefix) or {"", ".", ".."} & set(parts):
        raise ValueError(f"{target} is not below {base}")  # a bug, never a user's input
    return base, parts


def _inside(directory: Where) -> str:
    """A name inside ``directory``: `_parent` of it opens ``directory`` itself."""
    return os.path.join(directory, "-")


class _LinkFound(Exception):
    """A directory on the way is a link (turned into `link_error` naming it)."""


def _step(parent: int, name: str, *, create: bool) -> int:
    """The descriptor of directory ``name`` in ``parent``; a link raises `_LinkFound`."""
    try:
        return os.open(name, _DIR_FLAGS, dir_fd=parent)
    except FileNotFoundError:
        if not create:
            raise
    except OSError as exc:
        _raise_if_link(exc, parent, name)
        raise
    try:
        os.mkdir(name, _DIR_MODE, dir_fd=parent)
        created = True
    except FileExistsError:
        created = False  # another process created it meanwhile: keep its mode
    try:
        fd = os.open(name, _DIR_FLAGS, dir_fd=parent)
    except OSError as exc:
        _raise_if_link(exc, parent, name)
        raise
    if created:
        try:
            os.fchmod(fd, _DIR_MODE)  # mkdir's mode is filtered by the umask
        except BaseException:
            os.close(fd)
            raise
    return fd


def _raise_if_link(exc: OSError, parent: int, name: str) -> None:
    # O_NOFOLLOW on a link fails with ELOOP (ENOTDIR with O_DIRECTORY on some systems).
    if exc.errno in (errno.ELOOP, errno.ENOTDIR, errno.EMLINK):
        with contextlib.suppress(OSError):
            if stat.S_ISLNK(os.stat(name, dir_fd=parent, follow_symlinks=False).st_mode):
                raise _LinkFound from None


@contextlib.contextmanager
def _parent(path: Where, root: Where | None, *, create: bool = False) -> Iterator[tuple[int, str]]:
    """The open directory holding ``path`` (reached without links below ``root``) and its name."""
    base, parts = _split(path, root)
    fd = os.open(base, os.O_RDONLY | os.O_DIRECTORY | os.O_CLOEXEC)  # root: followed
    try:
        for depth, name in enumerate(parts[:-1], 1):
            try:
                child = _step(fd, name, create=create)
            except _LinkFound:
                raise link_error(os.path.join(base, *parts[:depth])) from None
            os.close(fd)
            fd = child
        yield fd, parts[-1]
    finally:
        os.close(fd)


def make_private_dir(path: Where, *, root: Where | None = None) -> Path:
    """Create ``path`` and missing parents (like ``mkdir -p``); created dirs get 0700.

    Existing directories keep their mode. Raises `NotADirectoryError` (or
    `FileExistsError`) when ``path`` or a parent is a file. With ``root``,
    ``root`` is made as without it, and no directory below it may be a link
    (`StoreError`).
    """
    target = Path(path)
    if root is not None:
        make_private_dir(root)
        with _parent(_inside(target), root, create=True):
            pass  # walked to and made ``target`` itself
        return target
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


def _checked(fd: int, path: Where) -> int:
    """``fd`` if it is a regular file (closed and refused otherwise)."""
    try:
        mode = os.fstat(fd).st_mode
    except BaseException:
        os.close(fd)
        raise
    if not stat.S_ISREG(mode):
        os.close(fd)
        raise _not_regular_error(path)
    return fd


def _open_at(parent: int, name: str, flags: int, path: Where, mode: int = _FILE_MODE) -> int:
    try:
        fd = os.open(name, flags | _FILE_FLAGS, mode, dir_fd=parent)
    except OSError as exc:
        if exc.errno == errno.ELOOP:
            raise link_error(path) from None
        raise
    return _checked(fd, path)


def open_private(path: Where, flags: int = os.O_RDWR, *, root: Where | None = None) -> int:
    """Open ``path`` with ``flags``, creating it with mode 0600 if missing; return the fd.

    Links are refused (see the module docstring); an existing file of ours
    that is not 0600 is made 0600.
    """
    with _parent(path, root) as (parent, name):
        while True:
            try:
                fd = _open_at(parent, name, flags | os.O_CREAT | os.O_EXCL, path)
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
                fd = _open_at(parent, name, flags & ~(os.O_CREAT | os.O_EXCL), path)
            except FileNotFoundError:
                continue  # removed between the two opens: create it after all
            try:
                make_private(fd)
            except BaseException:
                os.close(fd)
                raise
            return fd


def make_private(fd: int) -> None:
    """Make the file behind ``fd`` 0600 if it is ours and not 0600 already.

    Only our own files: a store shared through group permissions keeps its owner's choice.
    """
    info = os.fstat(fd)
    if info.st_mode & 0o777 != _FILE_MODE and info.st_uid == os.geteuid():
        os.fchmod(fd, _FILE_MODE)


def open_file(path: Where, flags: int = os.O_RDONLY, *, root: Where | None = None) -> int:
    """Open the existing regular file ``path``; links are refused. Return the fd."""
    with _parent(path, root) as (parent, name):
        return _open_at(parent, name, flags, path)


def read_file(path: Where, *, root: Where | None = None) -> bytes:
    """The whole regular file ``path``; links are refused."""
    fd = open_file(path, root=root)
    try:
        return read_all(fd)
    finally:
        os.close(fd)


def check_files(directory: Where, names: Iterable[str]) -> None:
    """Refuse ``directory/name`` entries that are links or not regular files; missing is fine.

    For files a library opens by path itself (LMDB's ``data.mdb`` and
    ``lock.mdb``). An ``lstat`` of each, relative to the directory's
    descriptor: it opens no file, since closing a descriptor of a file drops
    every POSIX (``fcntl``) lock this process holds on it, and LMDB keeps its
    readers' locks on ``lock.mdb`` that way.
    """
    with contextlib.ExitStack() as stack:
        try:
            parent, _ = stack.enter_context(_parent(_inside(directory), None))
        except (FileNotFoundError, NotADirectoryError):
            return  # no directory: nothing in it (what opens it next says why)
        for name in names:
            try:
                mode = os.stat(name, dir_fd=parent, follow_symlinks=False).st_mode
            except FileNotFoundError:
                continue
            if stat.S_ISLNK(mode):
                raise link_error(os.path.join(directory, name))
            if not stat.S_ISREG(mode):
                raise _not_regular_error(os.path.join(directory, name))


def atomic_write(
    path: Where,
    data: bytes,
    *,
    verify: Callable[[bytes], None] | None = None,
    replace: bool = True,
    root: Where | None = None,
) -> bool:
    """Replace ``path`` with ``data`` (mode 0600) so that a crash leaves old or new, never half.

    Writes a temporary file in the same directory, fsyncs it, renames it over
    ``path`` and fsyncs the directory so the rename itself is durable. With
    ``verify``, the temporary file is read back after its fsync and passed to
    it before the rename: if it raises, ``path`` is left as it was. With
    ``replace=False`` an existing ``path`` is kept (the file is hard-linked
    into place, which never replaces) and False returned. A link at ``path``
    is replaced, never written through; directories below ``root`` must not be links.
    """
    with _parent(path, root) as (parent, name):
        tmp, fd = _temp_file(parent, name, path)
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
                os.replace(tmp, name, src_dir_fd=parent, dst_dir_fd=parent)
            else:
                try:
                    os.link(tmp, name, src_dir_fd=parent, dst_dir_fd=parent, follow_symlinks=False)
                except FileExistsError:
                    written = False
                os.unlink(tmp, dir_fd=parent)
        except BaseException:
            with contextlib.suppress(OSError):
                os.unlink(tmp, dir_fd=parent)
            raise
        os.fsync(parent)
    return written


def _temp_file(parent: int, name: str, path: Where) -> tuple[str, int]:
    """A new temp file beside ``name`` (0600, named as `remove_temp_files` expects)."""
    while True:
        tmp = f".{name}.{secrets.token_hex(4)}.tmp"
        try:
            fd = _open_at(parent, tmp, os.O_RDWR | os.O_CREAT | os.O_EXCL, path)
        except FileExistsError:
            continue
        try:
            os.fchmod(fd, _FILE_MODE)  # os.open's mode is filtered by the umask
        except BaseException:
            os.close(fd)
            raise
        return tmp, fd


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


def remove_files(
    directory: Where, match: Callable[[str], bool], *, root: Where | None = None
) -> None:
    """Remove the entries of ``directory`` whose name ``match``es (a directory with its tree).

    Links are removed themselves, never followed; a missing ``directory`` has nothing.
    """
    try:
        with _parent(_inside(directory), root) as (parent, _):
            with os.scandir(parent) as entries:
                doomed = [entry.name for entry in entries if match(entry.name)]
            for name in doomed:
                _remove_entry(parent, name)
    except FileNotFoundError:
        pass


def remove_tree(path: Where, *, root: Where | None = None) -> None:
    """Remove ``path`` and all below it (a link: the link); best effort, like ``rm -rf``."""
    with contextlib.suppress(FileNotFoundError), _parent(path, root) as (parent, name):
        _remove_entry(parent, name)


def _remove_entry(parent: int, name: str) -> None:
    with contextlib.suppress(FileNotFoundError):
        if stat.S_ISDIR(os.stat(name, dir_fd=parent, follow_symlinks=False).st_mode):
            shutil.rmtree(name, dir_fd=parent, ignore_errors=True)  # fd-based: follows no link
        else:
            os.unlink(name, dir_fd=parent)


def _is_temp(name: str) -> bool:
    return name.startswith(".") and name.endswith(".tmp")


def remove_temp_files(directory: Where, *, root: Where | None = None) -> None:
    """Temp files `atomic_write` left in ``directory`` when a crash cut it short.

    Call it only under the lock of whatever writes there.
    """
    remove_files(directory, _is_temp, root=root)


def fsync_dir(directory: Where, *, root: Where | None = None) -> None:
    """Make the entries of ``directory`` (names created, renamed, removed) durable."""
    with _parent(_inside(directory), root) as (fd, _):
        os.fsync(fd)


@contextlib.contextmanager
def open_dir(directory: Where, *, root: Where | None = None, create: bool = False) -> Iterator[int]:
    """The descriptor of ``directory`` (made 0700 with ``create``), reached without links."""
    with _parent(_inside(directory), root, create=create) as (fd, _):
        yield fd


def list_names(directory: Where, *, root: Where | None = None) -> list[str]:
    """The names in ``directory`` (reached without links below ``root``); none if missing."""
    try:
        with _parent(_inside(directory), root) as (parent, _):
            return os.listdir(parent)
    except (FileNotFoundError, NotADirectoryError):
        return []


def rename_in(directory: Where, old: str, new: str, *, root: Where | None = None) -> None:
    """Rename entry ``old`` of ``directory`` to ``new`` (a link: the link itself), durably."""
    with _parent(_inside(directory), root) as (parent, _):
        os.rename(old, new, src_dir_fd=parent, dst_dir_fd=parent)
        os.fsync(parent)
