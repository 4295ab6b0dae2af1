"""The store-wide tables of a journaled store (see ``_tables.py``): one append-only log.

Files
-----
``<store>/tables/tables<suffix>.log`` (the format in the name: a JSON and a
FlatBuffers store sharing a directory keep their own) opens with a header
``b"FDT1" log_id(16) crc32(previous 20 bytes)(u32)`` and then holds records
framed as run journals frame theirs (``_framing.py``, checksums seeded with
the log id), each payload a msgpack array, sealed with a key (bound to the
store kind, the log id and the record's offset: a record cannot move)::

    [0, [[table, key, value], ...]]             a snapshot: every entry (first record)
    [1, txid, [[table, key, value|nil], ...]]   a whole transaction (no run commit)
    [2, txid, run_id, writes]                   begin: a transaction with a run commit
    [3, txid]                                   the begun transaction committed
    [4, txid]                                   the begun transaction aborted

Keys are values inside records, never paths. ``tables<suffix>.lock`` is
``flock``-ed for a whole transaction: one writer at a time across threads and
processes, and the OS drops the lock of a process killed by ``kill -9``.

A transaction
-------------
Under the lock, the writer reads what it has not read yet (the log grows only
under the lock; a torn tail, left by a killed writer, is cut), resolves every
begun transaction (below), runs the work on the committed entries, then:

- without a run commit: appends record 1 and fsyncs. Done.
- with one: appends record 2 (the writes, the run id, a fresh txid) and fsyncs;
  appends the run's commit to the run's journal with the txid in it (``TX_MARK``
  + txid before the format's payload) and fsyncs: *that* is the commit point;
  appends record 3 and fsyncs it.

Recovery: a record 2 without its 3 or 4 is resolved by looking for its txid in
the run's journal files: there, the transaction committed (record 3 is
appended); not there, it did not (record 4). Whoever takes the lock next does
it, on the disk; readers do it in memory only. A run lock holder does it
before anything can fold or remove the run's journal (`settle`), so the
evidence is never gone while the question is open.

Readers take no lock: they read the records appended since their last read
(whole records only: a record being appended is not one yet) and keep the
entries in memory. When the log is over four times the size of its live
entries (and `compact_min_bytes`), the writer rewrites it as one snapshot
record (temp file, fsync, rename, directory fsync); readers see a new file and
read it whole. A damaged log raises `CorruptStateError` naming it.
"""

from __future__ import annotations

import contextlib
import fcntl
import os
import struct
import threading
import zlib
from collections.abc import Callable, Iterator, Mapping
from pathlib import Path
from typing import Any

import msgpack

from flowdag.errors import CorruptStateError, StoreError
from flowdag.stores._files import (
    atomic_write,
    make_private_dir,
    open_file,
    open_private,
    remove_temp_files,
)
from flowdag.stores._framing import OVERHEAD, frame, replay
from flowdag.stores._tables import TABLES, DictTables, StagedTables, TableReader, TableTxn
from flowdag.stores.base import StoredNode

__all__ = ["TX_MARK", "TableLog", "split_txid"]

#: What starts a run journal record made by a transaction: then its 16-byte txid.
TX_MARK = b"FDTX"
_TXID_SIZE = 16
_MAGIC = b"FDT1"
_HEADER = struct.Struct("<4s16sI")
_SNAPSHOT, _WHOLE, _BEGIN, _COMMIT, _ABORT = range(5)
_GROWTH = 4  # compact once the log is this many times its live entries

Work = Callable[[TableTxn], tuple[Mapping[str, StoredNode], Mapping[str, bytes | None]]]
Writes = list[tuple[str, str, bytes | None]]


def split_txid(plain: bytes) -> tuple[bytes, bytes]:
    """(txid or b"", the format's payload) of a run journal record."""
    if plain[:4] == TX_MARK:
        return plain[4 : 4 + _TXID_SIZE], plain[4 + _TXID_SIZE :]
    return b"", plain


class TableLog:
    """The tables of one journaled store directory in one format.

    Args:
        root: the store directory.
        suffix: the format's file suffix.
        scheme: the store's URL scheme, bound into every sealed record.
        seal, unseal: the store's encryption (identity without a key).
        committed: whether a run's journal holds a txid (the commit point).
        min_bytes: the log is never compacted below this size.
    """

    def __init__(
        self,
        root: Path,
        suffix: str,
        scheme: str,
        seal: Callable[[bytes, bytes], bytes],
        unseal: Callable[[bytes, bytes, str], bytes],
        committed: Callable[[str, bytes], bool],
        min_bytes: Callable[[], int],
    ) -> None:
        self.root = root
        self.directory = root / "tables"
        self.path = self.directory / f"tables{suffix}.log"
        self._lock_path = self.directory / f"tables{suffix}.lock"
        self._scheme = scheme.encode()
        self._seal, self._unseal = seal, unseal
        self._committed, self._min_bytes = committed, min_bytes
        self._guard = threading.RLock()  # the cache below
        self._writing = threading.Lock()  # one transaction of this process at a time
        self._reset()

    def _reset(self) -> None:
        self._file: tuple[int, int] | None = None  # (st_dev, st_ino) read
        self._end = 0  # where the whole records read end
        self._id = b""
        self._state = DictTables()
        self._live = 0  # bytes of the live entries, for compaction
        self._pending: dict[bytes, tuple[str, Writes]] = {}

    # -- reading ----------------------------------------------------------------

    def reader(self) -> TableReader:
        """The committed tables; each read reads what was appended since."""
        return _Reader(self)

    def view(self) -> DictTables:
        """The committed entries now, begun transactions resolved in memory."""
        with self._guard:
            self._refresh()
            if not self._pending:
                return self._state
            view = DictTables()
            view.tables = {name: dict(entries) for name, entries in self._state.tables.items()}
            for txid, (run_id, writes) in self._pending.items():
                if self._committed(run_id, txid):
                    _apply(view, writes)
            return view

    def _refresh(self) -> int:
        """Read what was appended (all of it if the file is new); the file's size."""
        try:
            fd = open_file(self.path, root=self.root)
        except FileNotFoundError:
            self._reset()
            return 0
        except OSError as exc:
            raise self._failed("read", exc) from exc
        try:
            stat = os.fstat(fd)
            if self._file != (stat.st_dev, stat.st_ino) or stat.st_size < self._end:
                self._reset()
                self._file = (stat.st_dev, stat.st_ino)
            if stat.st_size > self._end:
                self._read(_read_from(fd, self._end, stat.st_size))
            return stat.st_size
        except OSError as exc:
            raise self._failed("read", exc) from exc
        finally:
            os.close(fd)

    def _read(self, content: bytes) -> None:
        """Apply the whole records of ``content``, which starts at ``self._end``."""
        base = self._end
        try:
            if base == 0:
                if len(content) < _HEADER.size:  # written aside, renamed in: never torn
                    raise ValueError(f"header cut short ({len(content)} bytes)")
                magic, log_id, crc = _HEADER.unpack_from(content)
                if magic != _MAGIC or zlib.crc32(content[: _HEADER.size - 4]) != crc:
                    raise ValueError("damaged header")
                self._id, pos = log_id, _HEADER.size
            else:
                pos = 0
            payloads, end = replay(content, pos, zlib.crc32(self._id))
            for payload in payloads:
                offset = base + pos
                where = f"{self.path} (record at byte {offset})"
                self._apply_record(msgpack.unpackb(self._open(payload, offset, where)))
                pos += OVERHEAD + len(payload)
        except (ValueError, TypeError, KeyError, msgpack.UnpackException) as exc:
            self._reset()
            raise self.damaged(exc) from exc
        self._end = base + end

    def _apply_record(self, record: Any) -> None:
        kind = record[0]
        if kind == _SNAPSHOT:
            self._state, self._live = DictTables(), 0
            self._put(_writes(record[1]))
        elif kind == _WHOLE:
            self._put(_writes(record[2]))
        elif kind == _BEGIN:
            self._pending[bytes(record[1])] = (str(record[2]), _writes(record[3]))
        elif kind in (_COMMIT, _ABORT):
            _, writes = self._pending.pop(bytes(record[1]))
            if kind == _COMMIT:
                self._put(writes)
        else:
            raise ValueError(f"unknown record kind {kind!r}")

    def _put(self, writes: Writes) -> None:
        tables = self._state.tables
        for table, key, value in writes:
            old = tables[table].pop(key, None)
            if old is not None:
                self._live -= len(key) + len(old)
            if value is not None:
                tables[table][key] = value
                self._live += len(key) + len(value)

    def _failed(self, action: str, exc: OSError) -> StoreError:
        return StoreError(f"cannot {action} the table log {self.path}: {exc}")

    def damaged(self, why: object) -> CorruptStateError:
        return CorruptStateError(
            f"table log {self.path} is damaged ({why}); restore it from a backup, "
            "or move it away to start with empty tables (kv and cache)"
        )

    # -- sealing --------------------------------------------------------------

    def _aad(self, offset: int) -> bytes:
        return b"\0".join(
            (b"flowdag", self._scheme, b"tables %s %d" % (self._id.hex().encode(), offset))
        )

    def _open(self, payload: bytes, offset: int, where: str) -> bytes:
        return self._unseal(payload, self._aad(offset), where)

    # -- writing ----------------------------------------------------------------

    @contextlib.contextmanager
    def _locked(self) -> Iterator[int]:
        """Hold the log's lock; yield an fd open for appending, the cache read up to date."""
        with self._writing:
            try:
                make_private_dir(self.directory, root=self.root)
                lock = open_private(self._lock_path, os.O_RDWR, root=self.root)
            except OSError as exc:
                raise self._failed("lock", exc) from exc
            try:
                fcntl.flock(lock, fcntl.LOCK_EX)
                with self._guard:
                    try:
                        if not os.path.lexists(self.path):
                            remove_temp_files(self.directory, root=self.root)  # killed creator's
                            atomic_write(self.path, _header(os.urandom(16)), root=self.root)
                        size = self._refresh()
                        fd = open_private(self.path, os.O_RDWR, root=self.root)
                    except OSError as exc:
                        raise self._failed("open", exc) from exc
                try:
                    if size != self._end:  # a torn tail: never acknowledged, cut it
                        os.ftruncate(fd, self._end)
                        os.fsync(fd)
                except OSError as exc:
                    os.close(fd)
                    raise self._failed("repair", exc) from exc
                try:
                    yield fd
                finally:
                    os.close(fd)
            finally:
                os.close(lock)  # drops the flock

    def _append(self, fd: int, record: list[Any], *, sync: bool = True) -> None:
        if self._file is None:  # a failed append reset the cache: where the end is is unknown
            raise StoreError(f"table log {self.path} could not be written; try again")
        offset = self._end
        payload = msgpack.packb(record, use_bin_type=True)
        payload = self._seal(payload, self._aad(offset))
        data = frame(payload, zlib.crc32(self._id))
        try:
            view = memoryview(data)
            while view:
                view = view[os.pwrite(fd, view, offset + len(data) - len(view)) :]
            if sync:
                os.fdatasync(fd)
        except BaseException as exc:
            with contextlib.suppress(OSError):
                os.ftruncate(fd, offset)  # never acknowledged: take it back
            self._reset()  # read afresh next time
            if isinstance(exc, OSError):
                raise self._failed("append to", exc) from exc
            raise
        with self._guard:
            self._end = offset + len(data)
            self._apply_record(record)

    def _recover(self, fd: int) -> None:
        """Resolve every begun transaction by its run's journal (the lock is held)."""
        for txid, (run_id, _) in list(self._pending.items()):
            done = self._committed(run_id, txid)
            self._append(fd, [_COMMIT if done else _ABORT, txid])

    def settle(self, run_id: str) -> None:
        """Before a run's journal may be folded or removed: resolve its begun transactions.

        Every record is synced when appended, so a decision made stays made.
        Damage is left for the table readers to report.
        """
        try:
            with self._guard:
                self._refresh()
                open_question = any(run == run_id for run, _ in self._pending.values())
            if open_question:
                with self._locked() as fd:
                    self._recover(fd)
        except CorruptStateError:
            pass

    def transact(
        self,
        run_id: str | None,
        work: Work,
        check_run: Callable[[str], None],
        commit_run: Callable[
            [str, Mapping[str, StoredNode], Mapping[str, bytes | None], bytes], None
        ],
    ) -> None:
        """One transaction (see the module docstring)."""
        with self._locked() as fd:
            self._recover(fd)
            if run_id is not None:
                check_run(run_id)  # RunNotFoundError: nothing written
            staged = StagedTables(self._state)
            nodes, data = work(staged)
            writes = [(table, key, value) for (table, key), value in staged.writes.items()]
            txid = os.urandom(_TXID_SIZE)
            if run_id is None or not (nodes or data):
                if writes:
                    self._append(fd, [_WHOLE, txid, writes])
            else:
                self._append(fd, [_BEGIN, txid, run_id, writes])
                try:
                    commit_run(run_id, nodes, data, txid)
                except BaseException:
                    with contextlib.suppress(OSError, StoreError):
                        self._recover(fd)  # the journal says whether it landed
                    raise
                with contextlib.suppress(
                    OSError, StoreError
                ):  # the commit stands: recovery ends it
                    self._append(fd, [_COMMIT, txid])
            if self._end > max(_GROWTH * (self._live + 64), self._min_bytes()):
                with contextlib.suppress(OSError, StoreError):
                    self._compact()

    def compact(self) -> None:
        """Rewrite the log as one snapshot of its live entries (``store compact``)."""
        if not os.path.lexists(self.path):
            return
        with self._locked() as fd:
            self._recover(fd)
            self._compact()

    def _compact(self) -> None:
        log_id = os.urandom(16)
        entries = [
            (table, key, value)
            for table, found in self._state.tables.items()
            for key, value in found.items()
        ]
        self._id, self._end = log_id, _HEADER.size  # what _aad binds the record to
        payload = self._seal(
            msgpack.packb([_SNAPSHOT, entries], use_bin_type=True), self._aad(_HEADER.size)
        )
        content = _header(log_id) + frame(payload, zlib.crc32(log_id))
        self._reset()
        remove_temp_files(self.directory, root=self.root)  # a killed compactor's
        atomic_write(self.path, content, root=self.root)


class _Reader:
    """A `TableReader` of a `TableLog`: each read sees the latest committed entries."""

    __slots__ = ("_log",)

    def __init__(self, log: TableLog) -> None:
        self._log = log

    def get(self, table: str, key: str) -> bytes | None:
        with self._log._guard:  # no writer of this process changes the entries meanwhile
            return self._log.view().get(table, key)

    def scan(self, table: str, prefix: str = "") -> Iterator[tuple[str, bytes]]:
        with self._log._guard:
            return self._log.view().scan(table, prefix)


def _header(log_id: bytes) -> bytes:
    head = _MAGIC + log_id
    return _HEADER.pack(_MAGIC, log_id, zlib.crc32(head))


def _writes(items: Any) -> Writes:
    writes: Writes = []
    for table, key, value in items:
        if table not in TABLES or type(key) is not str:
            raise ValueError(f"bad entry {table!r} {key!r}")
        if value is not None and type(value) is not bytes:
            raise ValueError(f"bad value of {table!r} {key!r}")
        writes.append((table, key, value))
    return writes


def _apply(tables: DictTables, writes: Writes) -> None:
    tables.apply({(table, key): value for table, key, value in writes})


def _read_from(fd: int, start: int, size: int) -> bytes:
    parts = []
    while start < size:
        chunk = os.pread(fd, size - start, start)
        if not chunk:
            break
        parts.append(chunk)
        start += len(chunk)
    return b"".join(parts)
