"""LMDB environments shared by every `LMDBStore` on one directory, opened privately.

LMDB forbids opening one environment twice in a process, so stores on the
same directory share one `Env` (reference counted, keyed by the directory's
device and inode). One ``threading.Lock`` per environment serializes every use
of it, since ``set_mapsize`` requires that no transaction is open in this
process. The environment's files are made 0600; the store keeps a read-only
descriptor on ``data.mdb`` to notice a file replaced under it.
"""

from __future__ import annotations

import os
import threading
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

__all__ = ["CORRUPT", "Env", "acquire_env", "release_env"]

_FILES = ("data.mdb", "lock.mdb")
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
    guard: threading.Lock  # held for every use of env
    key: tuple[int, int]
    data_file: int  # fd on data.mdb as opened: a replaced file is detected by commits
    users: int = 1


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
    try:
        if not os.access(path, os.R_OK | os.W_OK | os.X_OK):
            raise StoreError(
                f"cannot open LMDB store at {path}: permission denied; "
                "check the directory's owner and mode"
            )
        # LMDB opens (and creates) its files by path itself: refuse links first,
        # and make its lock file here (0600, never through a link). Our descriptor
        # is closed before LMDB takes its fcntl locks on the file.
        check_files(path, _FILES)
        os.close(open_private(path / "lock.mdb"))
        env = lmdb.open(
            str(path),
            map_size=map_size,
            subdir=True,
            create=False,  # the directory exists (made 0700 above)
            mode=0o700,  # data.mdb and lock.mdb get this minus execute bits: 0600
            max_dbs=4,
            sync=True,  # durable: a commit returns after fsync
            metasync=True,
            max_spare_txns=0,
        )
    except lmdb.Error as exc:
        data_path = path / "data.mdb"
        if isinstance(exc, CORRUPT):
            raise CorruptStateError(
                f"LMDB store {data_path} is damaged or not an LMDB file ({exc}); "
                "restore it from a backup or move it away"
            ) from exc
        raise StoreError(f"cannot open LMDB store at {path}: {exc}") from exc
    try:
        dbs = [env.open_db(name) for name in (b"runs", b"nodes", b"outputs", b"data")]
        check_files(path, _FILES)  # again: no link swapped in meanwhile
    except lmdb.Error as exc:
        env.close()
        if isinstance(exc, CORRUPT):
            raise CorruptStateError(f"LMDB store {path / 'data.mdb'} is damaged ({exc})") from exc
        raise StoreError(f"cannot open LMDB store at {path}: {exc}") from exc
    except OSError as exc:
        env.close()
        raise StoreError(f"cannot open LMDB store at {path}: {exc}") from exc
    except StoreError:  # a link planted meanwhile
        env.close()
        raise
    runs, nodes, outputs, data = dbs
    try:
        data_file = open_file(path / "data.mdb")
    except (OSError, StoreError) as exc:
        env.close()
        raise StoreError(f"cannot open LMDB store at {path}: {exc}") from exc
    try:
        make_private(data_file)  # LMDB's mode is filtered by the umask
    except OSError as exc:
        env.close()
        os.close(data_file)
        raise StoreError(f"cannot open LMDB store at {path}: {exc}") from exc
    return Env(
        env, runs, nodes, outputs, data, guard=threading.Lock(), key=key, data_file=data_file
    )


def release_env(shared: Env) -> None:
    with _OPEN_GUARD:
        shared.users -= 1
        if shared.users > 0:
            return
        # Close before another store can open the directory again: LMDB refuses
        # a second open environment on the same files.
        del _OPEN[shared.key]
        with shared.guard:  # waits for a call in progress
            shared.env.close()
            os.close(shared.data_file)
