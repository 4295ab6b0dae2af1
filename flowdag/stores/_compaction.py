"""``store compact``: give disk space back where deleting runs does not.

`Store.compact` returns a `Compaction`; each store kind does its own:

- **LMDB** never shrinks ``data.mdb``: pages freed by deleted runs are reused,
  not returned. `compact_lmdb` copies the environment with LMDB's compacting
  copy (``mdb_env_copy2(MDB_CP_COMPACT)``) and swaps the copy in, but only
  when nothing else uses the environment (see "LMDB swap" below).
- **JSON and FlatBuffers** stores keep a snapshot plus a journal per run:
  `compact_runs` folds every journal into a new snapshot (the journal engine's
  own compaction, crash-safe as it is for a commit), each run under its lock;
  a run that is running is skipped and reported, as is a damaged one.
- **memory**: nothing to give back.

LMDB swap
---------
Every process with the environment open holds a shared ``fcntl`` lock on
byte 0 of ``lock.mdb`` for as long as it has it open (LMDB's "first opener"
lock). The compactor closes its own environment, then takes that byte
exclusively without waiting: it fails while any other process has the store
open, and the compaction is refused (so it is too while a run is running: its
runner has the store open). Held, it keeps every new opener waiting in LMDB's
open. Then, in order:

1. ``lock.mdb`` is emptied. Its reader table and transaction id describe the
   old file; an opener waiting on the lock would otherwise attach to them as a
   second user and read the new file through a stale transaction id. Empty,
   such an opener fails cleanly (it may open again), and the first opener
   after the compaction sets the lock file up anew for the new file.
2. The environment is opened without LMDB's lock file (``lock=False``, read
   only: no one else has it) and copied, compacted, into ``<dir>/.compact-*.tmp``.
3. The copy is fsynced, opened and checked (same entry count in every
   sub-database), renamed over ``data.mdb``, and the directory fsynced.

A ``kill -9`` at any moment leaves the old ``data.mdb`` or the new one, both
whole, and at most a ``.compact-*.tmp`` directory, removed by the next
compaction. The lock goes with the process.
"""

from __future__ import annotations

import contextlib
import fcntl
import os
import secrets
import struct
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING

from flowdag.errors import CorruptStateError, RunLockedError, RunNotFoundError, StoreError
from flowdag.stores._files import (
    fsync_dir,
    list_names,
    make_private,
    make_private_dir,
    open_file,
    open_private,
    remove_files,
)
from flowdag.stores._locks import lock_holder

if TYPE_CHECKING:
    import lmdb

    from flowdag.stores._journal import JournaledStore
    from flowdag.stores.lmdb_store import LMDBStore

__all__ = ["Compaction", "compact_lmdb", "compact_runs"]

_DATABASES = (b"runs", b"nodes", b"outputs", b"data", b"tables")
_TEMP_PREFIX = ".compact-"


@dataclass(slots=True)
class Compaction:
    """What `Store.compact` did.

    Attributes:
        bytes_before: bytes of the store's files before (LMDB: ``data.mdb``;
            journaled stores: every file under ``runs/``; blobs are not counted).
        bytes_after: the same, after.
        runs: runs whose journal was folded into a new snapshot (journaled stores).
        skipped: runs left as they were, with the reason (running, damaged).
    """

    bytes_before: int = 0
    bytes_after: int = 0
    runs: int = 0
    skipped: dict[str, str] = field(default_factory=dict)


# -- JSON and FlatBuffers ------------------------------------------------------------------


def compact_runs(store: JournaledStore, fold: Callable[[str], bool]) -> Compaction:
    """Fold each run's journal into its snapshot with ``fold`` (True: it had one), run locked."""
    report = Compaction(bytes_before=_tree_size(store.path / "runs"))
    for run_id in store.list_runs():
        try:
            with store.lock(run_id):
                report.runs += fold(run_id)
        except RunNotFoundError:
            continue  # deleted meanwhile
        except (RunLockedError, CorruptStateError) as exc:
            report.skipped[run_id] = str(exc)
    report.bytes_after = _tree_size(store.path / "runs")
    return report


def _tree_size(path: Path) -> int:
    total = 0
    for directory, _, files in os.walk(path):
        for name in files:
            with contextlib.suppress(OSError):
                total += os.lstat(os.path.join(directory, name)).st_size
    return total


# -- LMDB -------------------------------------------------------------------------------------


def compact_lmdb(
    store: LMDBStore, reopen: Callable[[], None], close: Callable[[], None]
) -> Compaction:
    """Copy ``store``'s environment with compaction and swap it in (module docstring).

    ``close`` closes the store's environment in this process and ``reopen``
    opens it again (also when the compaction is refused).

    Raises:
        StoreError: the store is in use: a run is running, another process has
            it open, or another store of this process shares its environment.
        CorruptStateError: the copy does not hold what the store holds (the
            store is left as it was).
    """
    path = store.path
    data = path / "data.mdb"
    _check_unused(store)
    before = os.stat(data).st_size
    close()
    try:
        with _exclusive(path) as lock_fd:
            os.ftruncate(lock_fd, 0)  # step 1: see the module docstring
            os.fsync(lock_fd)
            remove_files(path, lambda name: name.startswith(_TEMP_PREFIX), root=path)
            temp = path / f"{_TEMP_PREFIX}{secrets.token_hex(4)}.tmp"
            make_private_dir(temp, root=path)
            counts = _copy(path, temp, store)
            fd = open_file(temp / "data.mdb", os.O_RDWR, root=path)
            try:
                make_private(fd)  # LMDB's mode is filtered by the umask
                os.fsync(fd)
            finally:
                os.close(fd)
            copied = _counts(temp, store)
            if copied != counts:
                raise CorruptStateError(
                    f"the compacted copy of {data} holds {copied} entries, not {counts}; "
                    "the store was left as it was"
                )
            os.rename(temp / "data.mdb", data)  # step 3: the swap
            fsync_dir(path, root=path)
            remove_files(path, lambda name: name == temp.name, root=path)
    finally:
        reopen()
    return Compaction(bytes_before=before, bytes_after=os.stat(data).st_size)


def _check_unused(store: LMDBStore) -> None:
    """Refuse while a run of this process or of another one is running, with its name."""
    if store._held:
        run_id = sorted(store._held)[0]
        raise StoreError(
            f"cannot compact {store.path}: this process is running run '{run_id}' in it; "
            "compact when no run is running"
        )
    for name in list_names(store.path / "locks", root=store.path):
        if name.startswith(".") or not name.endswith(".lock"):
            continue  # the gc lock, or not a lock
        pid = lock_holder(store.path / "locks" / name)
        if pid is not None:
            holder = f"pid {pid}" if pid else "another process"
            raise StoreError(
                f"cannot compact {store.path}: run '{name[: -len('.lock')]}' is running "
                f"({holder}); compact when no run is running"
            )


@contextlib.contextmanager
def _exclusive(path: Path) -> Iterator[int]:
    """Hold byte 0 of ``lock.mdb`` exclusively: no other process has the environment open."""
    fd = open_private(path / "lock.mdb", root=path)
    try:
        try:
            _lock_byte(fd)
        except OSError as exc:
            raise StoreError(
                f"cannot compact {path}: another process has the store open "
                f"({exc.strerror or exc}); close it (or wait for its run to finish) and "
                "compact again"
            ) from None
        yield fd
    finally:
        os.close(fd)  # drops the lock


def _lock_byte(fd: int) -> None:
    # An open-file-description lock where there is one (Linux): unlike a process's
    # record lock, closing another descriptor of lock.mdb in this process keeps it.
    command = getattr(fcntl, "F_OFD_SETLK", None)
    if command is None:
        fcntl.lockf(fd, fcntl.LOCK_EX | fcntl.LOCK_NB, 1, 0)
        return
    # Linux's struct flock: type, whence, start, length, pid (0, as OFD locks require).
    fcntl.fcntl(fd, command, struct.pack("hhqqi", fcntl.F_WRLCK, os.SEEK_SET, 0, 1, 0))


def _open_env(path: Path, store: LMDBStore) -> lmdb.Environment:
    import lmdb  # only here: importing flowdag loads no database library it does not use

    return lmdb.open(
        str(path),
        subdir=True,
        readonly=True,
        lock=False,  # no other process has it: we hold lock.mdb (see _exclusive)
        create=False,
        max_dbs=len(_DATABASES),
        map_size=store._map_size,
    )


def _copy(path: Path, temp: Path, store: LMDBStore) -> dict[bytes, int]:
    """Copy the environment at ``path`` into ``temp``, compacted; its entry counts."""
    env = _open_env(path, store)
    try:
        counts = _entries(env)
        env.copy(str(temp), compact=True)
    finally:
        env.close()
    return counts


def _counts(path: Path, store: LMDBStore) -> dict[bytes, int]:
    env = _open_env(path, store)
    try:
        return _entries(env)
    finally:
        env.close()


def _entries(env: lmdb.Environment) -> dict[bytes, int]:
    import lmdb

    counts = {}
    with env.begin() as txn:
        for name in _DATABASES:
            try:
                db = env.open_db(name, txn=txn, create=False)
            except lmdb.NotFoundError:
                counts[name] = 0
                continue
            counts[name] = txn.stat(db)["entries"]
    return counts
