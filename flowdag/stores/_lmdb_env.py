"""LMDB environments shared by every `LMDBStore` on one directory, opened privately.

LMDB forbids opening one environment twice in a process, so stores on the
same directory share one `Env` (reference counted, keyed by the directory's
device and inode). One ``threading.RLock`` per environment serializes every use
of it, since ``set_mapsize`` requires that no transaction is open in this
process (reentrant: a read may nest in a write transaction of the same thread).
The environment's files are made 0600; the store keeps a read-only descriptor
on ``data.mdb`` to notice a file replaced under it.

Checked before mapping
----------------------
LMDB maps ``data.mdb`` and trusts it: a file cut short (a full disk, a bad
copy) kills the process with SIGBUS on the first page past its end, and a
missing or empty file is silently made a new, empty environment. So before
LMDB sees the directory, ``check_data_file`` reads the two meta pages at the start
of ``data.mdb`` with plain file I/O (``MDB_meta`` of LMDB 0.9: page size, last
used page and transaction id, native byte order) and refuses a file shorter
than the newest meta's last page with `CorruptStateError`. A directory that
held a store (its codec record, ``lock.mdb``, or run locks) but has no
``data.mdb`` is damage, not a new store. ``lock.mdb`` alone is no proof while
another process is creating the store (LMDB creates it first, then
``data.mdb``, under an exclusive ``fcntl`` lock on its first byte): that lock
is looked at, never taken, since taking it would change which opener LMDB
thinks is first.

``open_db`` is retried on ``MDB_MAP_RESIZED``, like transactions: another
process may grow the map between LMDB's open and ours.
"""

from __future__ import annotations

import fcntl
import os
import struct
import sys
import threading
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path

import lmdb

from flowdag.errors import CorruptStateError, StoreError
from flowdag.stores._files import (
    check_files,
    make_private,
    make_private_dir,
    open_file,
    open_private,
)

__all__ = ["CORRUPT", "MAX_RETRIES", "Env", "acquire_env", "check_data_file", "release_env"]

_FILES = ("data.mdb", "lock.mdb")
#: The named sub-databases of an environment.
_DATABASES = (b"runs", b"nodes", b"outputs", b"data", b"tables")
#: Resizes per open or write before giving up (2**64 bytes of doublings: never).
MAX_RETRIES = 64
#: What shows that a directory held an LMDB store: the codec record
#: (`DirectoryStore`), LMDB's lock file, the run locks (unless a journaled
#: store, with its runs/ directory, owns them).
_CODEC_RECORD = "lmdb-store.json"
#: An LMDB 0.9 meta page: ``MDB_page`` header, then ``MDB_meta`` (``mm_psize``
#: is the free list's ``md_pad``), in the machine's byte order and sizes.
_META = struct.Struct("@NHHHH" + "IIPN" + "IHHNNNNN" * 2 + "NN")
_MAGIC = 0xBEEFC0DE
_DATA_VERSION = 1
_P_META = 0x08
#: ``struct flock`` for F_GETLK: Linux puts type and whence first, the BSDs last.
_BSD = sys.platform == "darwin" or "bsd" in sys.platform
#: LMDB errors that mean damaged files, not a failed operation.
CORRUPT: tuple[type[lmdb.Error], ...] = (
    lmdb.CorruptedError,
    lmdb.InvalidError,
    lmdb.PageNotFoundError,
    lmdb.VersionMismatchError,
    # LMDB 1.0 engines only; absent when py-lmdb is built against a 0.9 liblmdb.
    getattr(lmdb, "BadChecksumError", lmdb.CorruptedError),
)


@dataclass(slots=True)
class Env:
    """One open environment, shared by every `LMDBStore` on its directory."""

    env: lmdb.Environment
    runs: lmdb._Database
    nodes: lmdb._Database
    outputs: lmdb._Database
    data: lmdb._Database
    tables: lmdb._Database  # store-wide tables (see lmdb_store.py)
    guard: EnvGuard  # shared by transactions; resizing and closing need it alone
    key: tuple[int, int]
    data_file: int  # fd on data.mdb as opened: a replaced file is detected by commits
    users: int = 1


class EnvGuard:
    """Who may use an environment now, among this process's threads.

    Transactions share it (`shared`): LMDB lets readers run beside a writer, so
    a read (a cache lookup, a ``ctx.kv`` get) never waits for a commit's fsync,
    and writers queue on `write_lock` (and on LMDB's own lock across
    processes). Resizing the map and closing need it alone (`exclusive`): LMDB
    allows them only with no transaction active in the process. New sharers
    wait behind a thread waiting to go alone, so it is not starved. Reentrant
    per thread: a thread already inside (a read nested in a write) enters again
    at once, and may not then ask to go alone.
    """

    __slots__ = ("_alone", "_changed", "_local", "_sharing", "_waiting", "write_lock")

    def __init__(self) -> None:
        self._changed = threading.Condition(threading.Lock())
        self._sharing = 0  # threads inside, sharing
        self._alone = False  # a thread inside alone
        self._waiting = 0  # threads waiting to go alone
        self._local = threading.local()
        self.write_lock = threading.RLock()  # one write transaction of this process at a time

    @contextmanager
    def shared(self) -> Iterator[None]:
        local = self._local
        if getattr(local, "depth", 0):
            local.depth += 1
            try:
                yield
            finally:
                local.depth -= 1
            return
        with self._changed:
            while self._alone or self._waiting:
                self._changed.wait()
            self._sharing += 1
        local.depth = 1
        try:
            yield
        finally:
            local.depth = 0
            with self._changed:
                self._sharing -= 1
                if not self._sharing:
                    self._changed.notify_all()

    @contextmanager
    def exclusive(self) -> Iterator[None]:
        local = self._local
        if getattr(local, "depth", 0):
            raise RuntimeError(
                "flowdag bug: an LMDB environment resized or closed inside a transaction"
            )
        with self._changed:
            self._waiting += 1
            try:
                while self._alone or self._sharing:
                    self._changed.wait()
            finally:
                self._waiting -= 1
            self._alone = True
        local.depth = 1  # what it calls may read (a nested shared entry)
        try:
            yield
        finally:
            local.depth = 0
            with self._changed:
                self._alone = False
                self._changed.notify_all()


_OPEN: dict[tuple[int, int], Env] = {}  # (st_dev, st_ino) of the directory -> env
_OPEN_GUARD = threading.Lock()


def acquire_env(path: Path, map_size: int) -> Env:
    try:
        make_private_dir(path)
        stat = os.stat(path)
    except (NotADirectoryError, FileExistsError) as exc:
        raise StoreError(
            f"cannot open LMDB store at {path}: it is a file, not a directory; "
            "pass a directory path"
        ) from exc
    except OSError as exc:
        raise StoreError(f"cannot open LMDB store at {path}: {exc.strerror or exc}") from exc
    key = (stat.st_dev, stat.st_ino)
    with _OPEN_GUARD:
        shared = _OPEN.get(key)
        if shared is not None:
            shared.users += 1
            return shared
        shared = _open_env(path, map_size, key)
        _OPEN[key] = shared
        return shared


def _open_env(path: Path, map_size: int, key: tuple[int, int]) -> Env:
    if not os.access(path, os.R_OK | os.W_OK | os.X_OK):
        raise StoreError(
            f"cannot open LMDB store at {path}: permission denied; "
            "check the directory's owner and mode"
        )
    # LMDB opens (and creates) its files by path itself: refuse links first (an
    # lstat, no open: see check_files), then check data.mdb before LMDB maps it
    # (no SIGBUS, no silent new store), and make its lock file here (0600, never
    # through a link). No environment of this directory is open in this process
    # yet (acquire_env shares it), so closing our descriptors drops no LMDB lock.
    check_files(path, _FILES)
    check_data_file(path)
    env: lmdb.Environment | None = None
    data_file: int | None = None
    try:
        os.close(open_private(path / "lock.mdb"))
        for _ in range(MAX_RETRIES):
            try:
                if env is None:
                    env = _open_lmdb(path, map_size)
                dbs = [env.open_db(name) for name in _DATABASES]
                break
            except lmdb.MapResizedError:
                # Another process grew the map past ours since LMDB read the file
                # size: adopt its size and open again, as transactions do.
                if env is not None:
                    env.set_mapsize(0)
        else:
            raise StoreError(f"cannot open LMDB store at {path}: its map kept being resized")
        check_files(path, _FILES)  # again: no link swapped in meanwhile
        data_file = open_file(path / "data.mdb")
        make_private(data_file)  # LMDB's mode is filtered by the umask
    except BaseException as exc:
        if env is not None:
            env.close()
        if data_file is not None:
            os.close(data_file)
        if isinstance(exc, CORRUPT):
            raise CorruptStateError(
                f"LMDB store {path / 'data.mdb'} is damaged or not an LMDB file ({exc}); "
                "restore it from a backup or move it away"
            ) from exc
        if isinstance(exc, lmdb.Error | OSError):
            raise StoreError(f"cannot open LMDB store at {path}: {exc}") from exc
        raise
    runs, nodes, outputs, data, tables = dbs
    return Env(
        env,
        runs,
        nodes,
        outputs,
        data,
        tables,
        guard=EnvGuard(),
        key=key,
        data_file=data_file,
    )


def _open_lmdb(path: Path, map_size: int) -> lmdb.Environment:
    return lmdb.open(
        str(path),
        map_size=map_size,
        subdir=True,
        create=False,  # the directory exists (made 0700 above)
        mode=0o700,  # data.mdb and lock.mdb get this minus execute bits: 0600
        max_dbs=len(_DATABASES),
        sync=True,  # durable: a commit returns after fsync
        metasync=True,
        max_spare_txns=0,
    )


# -- checked before mapping (see the module docstring) -------------------------------------


def check_data_file(path: Path) -> None:
    """Refuse a store directory whose ``data.mdb`` is missing, empty or cut short.

    Raises:
        CorruptStateError: the directory held a store but ``data.mdb`` is gone or
            empty, or ``data.mdb`` is shorter than its own metadata says.
    """
    data_path = path / "data.mdb"
    try:
        with open(data_path, "rb") as file:
            head = file.read(_META.size)
            page_size = _page_size(head)
            second = os.pread(file.fileno(), _META.size, page_size) if page_size else b""
            # The size after the metas: a writer appends a transaction's pages before
            # its meta names them, so a live store is never shorter than what was read.
            size = os.fstat(file.fileno()).st_size
    except FileNotFoundError:
        size = 0
    except OSError:
        return  # unreadable: LMDB's open says why
    if size == 0:
        _check_new(path, data_path)
        return
    if not page_size:
        return  # not an LMDB 0.9 file: LMDB's open says what is wrong
    metas = [meta for meta in (_meta(head), _meta(second)) if meta is not None]
    # LMDB uses the meta page with the newest transaction; its last page must be in the file.
    last_page = max(metas)[1] if metas else 1
    needed = max(last_page + 1, 2) * page_size  # two meta pages at least
    if size < needed:
        raise CorruptStateError(
            f"LMDB store {data_path} is truncated: it has {size} bytes but its last "
            f"transaction uses {needed}; restore it from a backup or move it away"
        )


def _page_size(head: bytes) -> int:
    """The page size the first meta page records, or 0 if it is not an LMDB 0.9 meta page."""
    if len(head) < _META.size:
        return 0
    fields = _META.unpack(head)
    page_size: int = fields[9]
    valid = fields[2] & _P_META and fields[5] == _MAGIC and fields[6] == _DATA_VERSION
    # LMDB's pages are a power of two between 512 bytes and 64 KiB.
    if not valid or page_size & (page_size - 1) or not 512 <= page_size <= 65536:
        return 0
    return page_size


def _meta(page: bytes) -> tuple[int, int] | None:
    """(transaction id, last used page) of a meta page, or None if it is not one."""
    if len(page) < _META.size:
        return None
    fields = _META.unpack(page)
    if not (fields[2] & _P_META and fields[5] == _MAGIC and fields[6] == _DATA_VERSION):
        return None
    return fields[26], fields[25]


def _check_new(path: Path, data_path: Path) -> None:
    """Raise if a directory without ``data.mdb`` (or with an empty one) held a store."""
    hint = ""
    if (path / _CODEC_RECORD).exists():
        proof = f"its codec record {path / _CODEC_RECORD} is there"
    elif (path / "locks").is_dir() and not (path / "runs").is_dir():
        proof = f"its run locks {path / 'locks'} are there"
    elif _lock_file_left(path / "lock.mdb", data_path):
        proof = f"LMDB's lock file {path / 'lock.mdb'} is there"
        # Also what a process killed while creating the store leaves (a moment's window).
        hint = f" (if no run was ever stored there, remove {path / 'lock.mdb'})"
    else:
        return  # a new store
    state = "empty" if data_path.exists() else "missing"
    raise CorruptStateError(
        f"LMDB store {data_path} is {state} but {proof}: the store's data was lost; "
        f"restore {data_path} from a backup, or move {path} away to start an empty store" + hint
    )


def _lock_file_left(lock_path: Path, data_path: Path) -> bool:
    """Whether ``lock.mdb`` was left by a store, not made by an opener creating one now."""
    try:
        fd = os.open(lock_path, os.O_RDONLY | os.O_CLOEXEC)
    except OSError:
        return False
    try:
        if os.fstat(fd).st_size == 0:
            return False  # never set up: an opener is starting, or died at its start
        # An opener creating the store holds a write lock on byte 0 until data.mdb is set
        # up. F_GETLK only asks: our own lock would change LMDB's idea of who is first.
        query = _flock(fcntl.F_RDLCK)
        try:
            answer = fcntl.fcntl(fd, fcntl.F_GETLK, query)
        except OSError:
            return False  # cannot tell: do not call it damage
        if _lock_type(answer) != fcntl.F_UNLCK:
            return False  # being created right now
    finally:
        os.close(fd)
    try:
        return os.stat(data_path).st_size == 0  # still nothing: no creator was at work
    except FileNotFoundError:
        return True


def _flock(lock_type: int) -> bytes:
    """A ``struct flock`` for byte 0 of a file, the byte LMDB's openers lock."""
    if _BSD:
        return struct.pack("qqihh", 0, 1, 0, lock_type, os.SEEK_SET)
    return struct.pack("hhqqi", lock_type, os.SEEK_SET, 0, 1, 0)


def _lock_type(flock: bytes) -> int:
    layout = "qqihh" if _BSD else "hhqqi"
    fields = struct.unpack(layout, flock[: struct.calcsize(layout)])
    lock_type: int = fields[3] if _BSD else fields[0]
    return lock_type


def release_env(shared: Env) -> None:
    with _OPEN_GUARD:
        shared.users -= 1
        if shared.users > 0:
            return
        # Close before another store can open the directory again: LMDB refuses
        # a second open environment on the same files.
        del _OPEN[shared.key]
        with shared.guard.exclusive():  # waits for the transactions in progress
            shared.env.close()
            os.close(shared.data_file)
