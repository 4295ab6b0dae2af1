"""A store in one LMDB environment: durable, crash-safe, cheap per-node commits.

Design
------
One environment per store directory, with five named sub-databases::

    runs     run_id                     -> header blob
    nodes    run_id 0x00                -> the run's marker (layout, next number, nonce)
    nodes    run_id 0x00 0x01 number    -> msgpack [name, meta blob, crc32(name)]
    outputs  run_id 0x00 0x01 number    -> msgpack [name, output blob, crc32(name)]
    data     run_id 0x00 0x01 number    -> msgpack [key, value blob, crc32(key)]
    tables   table 0x00 key             -> the store-wide tables (``_lmdb_tables.py``)

A run's entries sit next to each other (a prefix scan on ``run_id 0x00`` finds
them; run ids contain no NUL, so no run's prefix is another's). Each node name
and ``ctx.data`` key gets the run's next number when first written, so the
entries a group commit adds are appended side by side whatever the names, and
one commit writes a few neighbouring B-tree pages, not one page per node. Each
value carries its name and a CRC32 of it, checked on load, so a damaged entry
raises `CorruptStateError` instead of showing up under the wrong name. The
keys, values and marker are in ``_lmdb_keys.py`` (runs of a previous release
keyed entries by a hash of the name: layout 1, still read, and moved to layout
2 by their first write); reading and writing a run's entries, and keeping each
run's numbers in memory, in ``_lmdb_runs.py``.

`commit` writes only the committed nodes' and data keys in one write
transaction, so its cost does not grow with the run. The environment is opened
with ``sync=True``: a commit returns only once LMDB has fsynced it, and a crash
at any moment leaves the last committed transaction intact.

The map grows by itself: a write that hits ``MapFullError`` is aborted, the
map doubled and the write retried; a ``MapResizedError`` (another process grew
the map) adopts the new size and retries. One ``threading.Lock`` per
environment serializes every use of it, since ``set_mapsize`` requires that no
transaction is open in this process; transactions never outlive one call.

LMDB forbids opening one environment twice in a process, so stores on the
same directory share one environment (reference counted).

With a key, every value is sealed with AES-256-GCM (``_crypto.py``), its
associated data naming the sub-database and the key (which starts with the run
id); keys stay plain, so run ids are visible.

A commit checks afterwards that ``data.mdb`` is still the file the environment
opened: LMDB would go on writing to a replaced file, and such a commit must
fail, not count as done. The check is one ``fstat`` of a descriptor the store
holds on ``data.mdb`` (a file replaced by a rename or deleted has no links
left), not a ``stat`` of the path.
"""

from __future__ import annotations

import os
import threading
import time
from collections.abc import Callable, Iterator, Mapping
from contextlib import nullcontext
from pathlib import Path
from typing import TYPE_CHECKING, TypeVar, Unpack

import lmdb

from flowdag.errors import CorruptStateError, StoreError
from flowdag.stores._compaction import Compaction, compact_lmdb
from flowdag.stores._decoding import RunDecoder
from flowdag.stores._directory import DirectoryStore, StoreOptions
from flowdag.stores._files import check_files
from flowdag.stores._lmdb_env import (
    CORRUPT,
    MAX_RETRIES,
    Env,
    acquire_env,
    check_data_file,
    release_env,
)
from flowdag.stores._lmdb_keys import delete_range, entry_key, run_prefix
from flowdag.stores._lmdb_runs import RunEntries
from flowdag.stores._lmdb_tables import LMDBTables, delete_entry, put_entry
from flowdag.stores._tables import StagedTables, TableReader, TableTxn
from flowdag.stores.base import StoredNode, StoredRun

if TYPE_CHECKING:
    from flowdag.state import NodeState

__all__ = ["LMDBStore"]

_T = TypeVar("_T")

#: Initial map size. Virtual address space only (the file grows as data is
#: written), and doubled automatically whenever a write needs more.
DEFAULT_MAP_SIZE = 1 << 30
_REOPEN_TRIES = 5
_FULL_DISK_BYTES = 1 << 20  # less free space than this on a failed write: say the disk is full
if TYPE_CHECKING:
    _Txn = lmdb.Transaction[bytes]  # the stubs' generic; not subscriptable at runtime


class LMDBStore(DirectoryStore, RunEntries):
    """Runs in an LMDB environment under ``path`` (created 0700, files 0600).

    Args:
        path: the store directory; created with its parents if missing.
        map_size: initial LMDB map size in bytes; it grows automatically.
        options: ``codec`` (default `Codec()`), ``key`` and ``create``, as
            `DirectoryStore` takes them. With a key every value (headers,
            metas, outputs, data) is encrypted, each bound to its run and
            entry; run ids and the number and sizes of entries stay visible.

    Raises:
        StoreError: ``path`` is a file, or cannot be created or opened, or
            ``create`` is False and there is no store there.
        CorruptStateError: the files under ``path`` are not a valid LMDB store:
            ``data.mdb`` is damaged, cut short, or gone from a directory that
            held a store (see ``_lmdb_env.py``).
        CodecMismatchError: the store was written with another codec.
    """

    scheme = "lmdb"
    kind = "LMDB"
    codec_kind = "binary"

    def __init__(
        self,
        path: str | os.PathLike[str],
        *,
        map_size: int = DEFAULT_MAP_SIZE,
        **options: Unpack[StoreOptions],
    ) -> None:
        self._data_path = Path(os.path.abspath(path)) / "data.mdb"
        self._map_size = map_size
        self._shared: Env | None = None
        self._numbers = {}
        self._numbers_lock = threading.Lock()
        super().__init__(path, **options)

    def describe(self, run_id: str) -> str:
        """The LMDB data file that holds the run."""
        return str(self._data_path)

    # -- hooks ----------------------------------------------------------------

    def _holds_store(self) -> bool:
        check_files(self.path, ("data.mdb", "lock.mdb"))  # a planted link is refused
        if self._data_path.is_file():
            return True
        # No data.mdb where a store was is damage, not "no store": say so.
        check_data_file(self.path)
        return False

    def _open(self) -> None:
        self._shared = acquire_env(self.path, self._map_size)

    def _save_checked(
        self,
        run_id: str,
        run: StoredRun,
        check: Callable[[Callable[[], StoredRun]], None] | None,
    ) -> None:
        # One write transaction: the check reads the run back in it, before the
        # commit, and an exception aborts it, so nothing unchecked is published.
        prefix = run_prefix(run_id)

        def write(txn: _Txn, env: Env) -> None:
            delete_range(txn, env.nodes, prefix)  # either layout: both keys start so
            delete_range(txn, env.outputs, prefix)
            delete_range(txn, env.data, prefix)
            txn.put(
                run_id.encode(), self._seal_entry(b"run", run_id.encode(), run.header), db=env.runs
            )
            self._put_entries(txn, env, run_id, prefix, run.nodes, run.data)
            if check is not None:  # reads the run back inside the transaction
                check(lambda: self._read_run(txn, env, run_id))

        self._transact(run_id, write, write=True)

    def _load(self, run_id: str) -> StoredRun:
        return self._transact(run_id, lambda txn, env: self._read_run(txn, env, run_id))

    def _load_into(self, run_id: str, decoder: RunDecoder) -> None:
        # Each entry decoded as it is read, in the read transaction (a retry feeds anew).
        self._transact(run_id, lambda txn, env: self._feed_run(txn, env, run_id, decoder))

    def _load_metas(self, run_id: str) -> tuple[bytes, dict[str, bytes]]:
        return self._transact(run_id, lambda txn, env: self._read_metas(txn, env, run_id))

    def _commit(
        self, run_id: str, nodes: Mapping[str, StoredNode], data: Mapping[str, bytes | None]
    ) -> None:
        def write(txn: _Txn, env: Env) -> None:
            self._header(txn, env, run_id)  # RunNotFoundError aborts the transaction
            self._put_commit(txn, env, run_id, nodes, data)

        self._transact(run_id, write, write=True)
        self._check_same_file(run_id)

    def _sealed_node(
        self, run_id: str, name: str, token: bytes, deps: tuple[str, ...]
    ) -> NodeState | None:
        """Node ``name`` (with ``deps``) of a sealed run, read alone while the run's
        marker is still ``token`` (`flowdag._seal.SealedRun.node`); None when it is
        not, or when the node's entry is not known without a scan: read it whole then."""

        def read(txn: _Txn, env: Env) -> tuple[bytes, bytes | None] | None:
            prefix = run_prefix(run_id)
            numbers = self._numbers.get(run_id)
            number = None if numbers is None or numbers.token != token else numbers.nodes.get(name)
            if number is None or txn.get(prefix, db=env.nodes) != token:
                return None
            key = entry_key(prefix, number)
            meta, output = self._named(run_id, key, name, "node", txn.get(key, db=env.nodes))
            if output is None and (apart := txn.get(key, db=env.outputs)) is not None:
                output = self._named(run_id, key, name, "output", apart)[0]
            return meta, output

        found = self._transact(run_id, read)
        if found is None:
            return None
        with self._decoder(run_id) as decoder:
            return decoder.alone(name, deps, *found)

    def _named(
        self, run_id: str, key: bytes, name: str, kind: str, value: bytes | None
    ) -> tuple[bytes, bytes | None]:
        """(blob, output in it) of ``name``'s layout 2 ``kind`` entry ``key``, checked."""
        if value is None:
            raise self._damaged(run_id, f"the {kind} entry of node {name!r} is gone")
        found, blob, output = self._unpacked(run_id, kind.encode(), key, value, kind)
        if found != name:
            raise self._damaged(run_id, f"the {kind} entry of node {name!r} names {found!r}")
        return blob, output

    def _sealed(self, run_id: str) -> tuple[bytes, bytes] | None:
        return self._transact(run_id, lambda txn, env: self._read_seal(txn, env, run_id))

    def _put_seal(self, run_id: str, seal: bytes) -> bytes:
        return self._transact(
            run_id, lambda txn, env: self._write_seal(txn, env, run_id, seal), write=True
        )

    def _table_reader(self) -> TableReader:
        return _Reader(self)

    def _transact_tables(
        self,
        run_id: str | None,
        work: Callable[[TableTxn], tuple[Mapping[str, StoredNode], Mapping[str, bytes | None]]],
    ) -> None:
        # One LMDB write transaction: exclusive across processes, and the run's
        # commit and the table writes are fsynced together. A write that needs a
        # bigger map is aborted and done again from the start, ``work`` included.
        def write(txn: _Txn, env: Env) -> None:
            if run_id is not None:
                self._header(txn, env, run_id)  # RunNotFoundError aborts the transaction
            staged = StagedTables(self._tables_in(txn, env))
            nodes, data = work(staged)
            if run_id is not None and (nodes or data):
                self._put_commit(txn, env, run_id, nodes, data)
            for (table, key), value in staged.writes.items():
                if value is None:
                    delete_entry(txn, env.tables, table, key)
                else:
                    put_entry(txn, env.tables, self._seal_table, table, key, value)

        self._transact(run_id, write, write=True)
        if run_id is not None:
            self._check_same_file(run_id)

    def _table_keys(self, table: str, prefix: str) -> list[str]:
        return self._transact(None, lambda txn, env: self._tables_in(txn, env).keys(table, prefix))

    def _tables_in(self, txn: _Txn, env: Env) -> LMDBTables:
        return LMDBTables(txn, env.tables, self._open_table, str(self._data_path))

    def _list_runs(self) -> list[str]:
        def read(txn: _Txn, env: Env) -> list[str]:
            keys = txn.cursor(env.runs).iternext(values=False)
            try:
                return [key.decode() for key in keys]
            except UnicodeDecodeError as exc:
                raise CorruptStateError(
                    f"LMDB store {self._data_path} is damaged (bad run id key); "
                    "restore it from a backup"
                ) from exc

        return self._transact(None, read)

    def _delete(self, run_id: str) -> bool:
        prefix = run_prefix(run_id)

        def write(txn: _Txn, env: Env) -> bool:
            if not txn.delete(run_id.encode(), db=env.runs):
                return False
            delete_range(txn, env.nodes, prefix)
            delete_range(txn, env.outputs, prefix)
            delete_range(txn, env.data, prefix)
            self._numbers.pop(run_id, None)
            return True

        return self._transact(run_id, write, write=True)

    def _close(self) -> None:
        shared, self._shared = self._shared, None
        if shared is not None:
            release_env(shared)

    def _compact_store(self) -> Compaction:
        shared = self._shared
        if shared is not None and shared.users > 1:
            raise StoreError(
                f"cannot compact {self.path}: {shared.users - 1} other store(s) of this process "
                "have it open; close them and compact again"
            )

        def reopen() -> None:
            # An opener that waited on the compaction fails once on the emptied lock
            # file (see _compaction.py) and may hold it a moment: try again.
            for attempt in range(_REOPEN_TRIES):
                try:
                    self._shared = acquire_env(self.path, self._map_size)
                    return
                except StoreError:
                    if attempt == _REOPEN_TRIES - 1:
                        raise
                    time.sleep(0.05 * (attempt + 1))

        try:
            return compact_lmdb(self, reopen, self._close)
        except lmdb.Error as exc:
            raise self._wrap(exc, None) from exc
        except OSError as exc:
            raise StoreError(f"cannot compact {self.path}: {exc}") from exc

    # -- helpers --------------------------------------------------------------

    def _transact(
        self, run_id: str | None, fn: Callable[[_Txn, Env], _T], *, write: bool = False
    ) -> _T:
        """Run ``fn`` in one transaction, growing the map and retrying as needed.

        Transactions share the environment (reads never wait for a commit's
        fsync); growing the map needs it alone, so that happens between tries.
        """
        for _ in range(MAX_RETRIES):
            shared = self._shared
            if shared is None:
                raise StoreError(f"{type(self).__name__} is closed; open a new store")
            with shared.guard.shared(), shared.guard.write_lock if write else nullcontext():
                if self._shared is None:  # closed while we waited
                    raise StoreError(f"{type(self).__name__} is closed; open a new store")
                env = shared.env
                try:
                    # Leaving the block commits (and, for writes, fsyncs) or,
                    # on an exception, aborts: nothing half-written is visible.
                    with env.begin(write=write) as txn:
                        return fn(txn, shared)
                except lmdb.MapFullError:
                    grow = True  # the aborted write needs more room: double the map
                except lmdb.MapResizedError:
                    grow = False  # another process grew it: adopt its size
                except lmdb.Error as exc:
                    raise self._wrap(exc, run_id) from exc
            try:
                with shared.guard.exclusive():
                    env.set_mapsize(env.info()["map_size"] * 2 if grow else 0)
            except lmdb.Error as exc:
                raise self._wrap(exc, run_id) from exc
        raise StoreError(
            f"LMDB store {self._data_path} could not grow its map enough for this write"
        )

    def _wrap(self, exc: lmdb.Error, run_id: str | None) -> StoreError:
        where = f"run '{run_id}' in {self._data_path}" if run_id else str(self._data_path)
        if isinstance(exc, CORRUPT):
            return CorruptStateError(
                f"{where} is damaged (LMDB: {exc}); restore it from a backup "
                "or delete the store and run again"
            )
        return StoreError(f"LMDB failed on {where}: {exc}{self._full_disk_hint()}")

    def _full_disk_hint(self) -> str:
        # LMDB reports a write cut short by a full disk as EIO: say what it was.
        try:
            stat = os.statvfs(self.path)
        except OSError:
            return ""
        free = stat.f_bavail * stat.f_frsize
        if free >= _FULL_DISK_BYTES:
            return ""
        return f" (No space left on device: {free} bytes free on its disk)"

    def _seal_table(self, value: bytes, lmdb_key: bytes) -> bytes:
        return self._seal(value, b"flowdag\0lmdb\0table\0" + lmdb_key)

    def _open_table(self, value: bytes, lmdb_key: bytes, where: str) -> bytes:
        return self._unseal(value, b"flowdag\0lmdb\0table\0" + lmdb_key, where)

    def _check_same_file(self, run_id: str) -> None:
        """Raise if ``data.mdb`` was replaced or removed since the store opened it.

        LMDB keeps writing to the file it opened: a commit made after someone
        replaced ``data.mdb`` lands in a file nobody will read again, so it must
        not be reported as done.
        """
        shared = self._shared
        try:
            replaced = os.fstat(shared.data_file).st_nlink == 0 if shared is not None else False
        except OSError:
            replaced = True
        if replaced:
            raise StoreError(
                f"cannot commit to run '{run_id}': {self._data_path} was replaced or removed "
                "while the store had it open; the commit went to the old file. Close the "
                "store and open it again, then resume the run"
            )


class _Reader:
    """The committed tables of an `LMDBStore`: each read is one read transaction."""

    __slots__ = ("_store",)

    def __init__(self, store: LMDBStore) -> None:
        self._store = store

    def get(self, table: str, key: str) -> bytes | None:
        store = self._store
        return store._transact(None, lambda txn, env: store._tables_in(txn, env).get(table, key))

    def scan(self, table: str, prefix: str = "") -> Iterator[tuple[str, bytes]]:
        store = self._store

        def read(txn: _Txn, env: Env) -> list[tuple[str, bytes]]:
            return list(store._tables_in(txn, env).scan(table, prefix))

        return iter(store._transact(None, read))
