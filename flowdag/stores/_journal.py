"""Crash-safe file layout shared by the JSON and FlatBuffers stores.

Design
------
Per run, a directory ``<store>/runs/<run_id>/`` holds:

- ``snapshot<suffix>``: the whole run as of some *generation*, written atomically
  (temp file, fsync, rename, fsync of the directory);
- ``journal-<generation><suffix>.log``: an append-only log of the commits made since that
  snapshot. A commit appends one framed record (``_framing.py``) and fsyncs
  before it returns, so its cost is the size of the record, not of the run.

Every snapshot written gets a new random id (`Stamp`), and its journal is
bound to it (see ``_lineage.py``): loading is snapshot + replay of *its*
journal, and a journal that does not belong to the snapshot, or whose snapshot
is missing, is refused with `CorruptStateError`. When a journal outgrows its
snapshot (and a floor of `COMPACT_MIN_BYTES`), the run is *compacted*: a
snapshot of generation g+1 (whose parent is snapshot g) is written atomically,
journal g deleted and a fresh journal g+1 created. A crash at any point of that
leaves either snapshot g with journal g or snapshot g+1 (its journal empty or
missing, journal g folded): both load the same state. A save first sets aside
every journal that does not belong to the snapshot it writes over (no writer
deletes commits it cannot place), then writes the new snapshot and removes the
replaced one's journal. A run of the previous release (format 1, no ids) loads
as it did; its first commit compacts it first, into the current formats.

A commit whose write or sync fails is taken back (the journal is cut to
where it was) before the error is raised, so a record that was never
acknowledged never shows up later. A compaction that fails after the record is
durable does not fail the commit: it is logged and tried again later.

The writer
----------
Only the holder of a run's lock writes to it (the runner takes it); readers
need no lock and see a consistent state. The writer keeps the run's bytes in
memory with its journal and snapshot open. It is set up by the first use under
the lock: the runner's ``load`` (a resume: snapshot and journal read once, the
torn tail cut; the same bytes serve every later commit) or ``save`` (a new
run: no read). A commit costs an append, a sync and two ``fstat`` calls, no
path lookup: a file replaced by a rename or deleted shows ``st_nlink == 0`` on
the open file (a journal appended to by someone else, a size we did not
write), and the writer reloads from the disk. It goes with the lock.

With a key (``key=``, see ``_crypto.py``), each record's payload is sealed with
AES-256-GCM bound to the run, the id of the journal's snapshot (the generation
in format 1) and the record's byte offset, and each snapshot file is sealed
whole, bound to the run: the framing and the torn-tail rules are unchanged, and
a JSON snapshot is then no longer readable JSON.

A format (`RunFormat`) only turns runs and commits into bytes and back; where a
run's files are, how they are sealed, and the consistent read of a snapshot and
its journal are in ``_runfiles.py`` (`RunFiles`).
"""

from __future__ import annotations

import contextlib
import functools
import logging
import os
import threading
import uuid
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import ClassVar, Unpack

from flowdag.errors import StoreError
from flowdag.stores._compaction import Compaction, compact_runs
from flowdag.stores._directory import DirectoryStore, StoreOptions
from flowdag.stores._files import (
    atomic_write,
    fsync_dir,
    list_names,
    make_private_dir,
    open_file,
    read_all,
    remove_files,
    remove_temp_files,
    remove_tree,
)
from flowdag.stores._format import Commit, RunFormat, Stamp
from flowdag.stores._framing import frame, journal_header, seed
from flowdag.stores._journal_seals import JournalSeals
from flowdag.stores._lineage import (
    journal_generation,
    journal_names,
    next_stamp,
    open_journal,
    read_journals,
    refuse_foreign,
    tidy,
)
from flowdag.stores._runfiles import RunFiles
from flowdag.stores._tablelog import TX_MARK, TableLog
from flowdag.stores._tables import TableReader, TableTxn
from flowdag.stores.base import RunLock, StoredNode, StoredRun

__all__ = ["COMPACT_MIN_BYTES", "Commit", "JournaledStore", "RunFormat"]

#: A journal is compacted once it is larger than its snapshot and than this.
COMPACT_MIN_BYTES = 256 * 1024

_logger = logging.getLogger("flowdag")


@dataclass(slots=True)
class _Writer:
    """A run this process commits to: its bytes in memory and its open files."""

    run: StoredRun
    stamp: Stamp  # of the snapshot the journal extends
    journal: int  # fd, opened for appending
    journal_size: int
    snapshot: int  # fd of the snapshot the run was read from (read only, for fstat)
    snapshot_size: int


class JournaledStore(JournalSeals, DirectoryStore):
    """A store of one directory per run: an atomic snapshot plus a journal.

    Subclasses name a `RunFormat`; everything else (framing, fsync, compaction,
    torn tails, temp files, the writer) is here, and what every directory
    store shares (locks, errors, encryption, codec record) in `DirectoryStore`.

    Args:
        path: the store directory; created (0700) if missing.
        compact_min_bytes: fold a journal into a new snapshot only once it is
            larger than this and than the snapshot.
        options: ``codec``, ``key`` and ``create``, as `DirectoryStore` takes
            them. With a key, snapshots and journal records are encrypted.
    """

    format: ClassVar[RunFormat]
    kind = "journaled"

    def __init__(
        self,
        path: str | os.PathLike[str],
        *,
        compact_min_bytes: int = COMPACT_MIN_BYTES,
        **options: Unpack[StoreOptions],
    ) -> None:
        self.compact_min_bytes = compact_min_bytes
        self._guard = threading.RLock()
        self._writers: dict[str, _Writer] = {}
        super().__init__(path, **options)

    @functools.cached_property
    def _files(self) -> RunFiles:
        # Made on first use: DirectoryStore's constructor already lists runs.
        return RunFiles(self.path, self.format, self.scheme, self._seal, self._unseal)

    def describe(self, run_id: str) -> str:
        """The run's directory."""
        return str(self._files.run_dir(run_id))

    # -- hooks ----------------------------------------------------------------

    def _holds_store(self) -> bool:
        if os.path.lexists(self._record_path()):
            return True
        # A store of the previous release has no codec record; and JSON and
        # FlatBuffers stores may share runs/: a run with files of this format shows it.
        runs = self.path / "runs"
        snapshot = f"snapshot{self.format.suffix}"
        return any(
            name == snapshot or journal_generation(name, self.format.suffix) is not None
            for run in list_names(runs, root=self.path)
            for name in list_names(runs / run, root=self.path)
        )

    def _open(self) -> None:
        if self._create:  # read-only tools (create=False) create and remove nothing
            make_private_dir(self.path / "runs", root=self.path)
            self._remove_orphans()

    def _save_checked(
        self,
        run_id: str,
        run: StoredRun,
        check: Callable[[Callable[[], StoredRun]], None] | None,
    ) -> None:
        # The snapshot is written to a temp file and renamed into place: a
        # check runs on the temp file as read back, before anything is published.
        with self._guard, self._io(run_id, "save"):
            writer = self._writers.get(run_id)
            current = writer.stamp if writer is not None else self._files.current_stamp(run_id)
            self._drop_writer(run_id)
            directory = self._files.run_dir(run_id)
            created = not directory.is_dir()
            if created:
                make_private_dir(directory, root=self.path)
                fsync_dir(directory.parent, root=self.path)
            # Before the new snapshot: whatever does not belong to the one it
            # replaces is set aside, so the replaced one's journal alone is removed.
            tidy(self._files.run_dir(run_id), self.format.suffix, current, self.path)
            stamp = next_stamp(current)
            content = self._files.seal_snapshot(run_id, self.format.dump_snapshot(run, stamp))
            path = self._files.snapshot_path(run_id)
            verify = None
            if check is not None:

                def verify(written: bytes) -> None:
                    def read_back() -> StoredRun:
                        plain = self._files.open_snapshot(run_id, path, written)
                        return self._files.parse(run_id, path, self.format.load_snapshot, plain)[0]

                    check(read_back)

            try:
                atomic_write(path, content, verify=verify, root=self.path)
            except BaseException:
                if created:  # a refused first save leaves no empty run behind
                    with contextlib.suppress(OSError):
                        os.rmdir(directory)
                raise
            tidy(self._files.run_dir(run_id), self.format.suffix, stamp, self.path)
            if run_id in self._held:  # the runner saves a new run, then commits to it
                self._start_writer(run_id, run, stamp, len(content))

    def _load(self, run_id: str) -> StoredRun:
        if run_id in self._held:
            with self._guard, self._io(run_id, "read"):
                return self._writer(run_id).run.copy()
        with self._guard, self._io(run_id, "read"):
            return self._files.read(run_id, self.format.load_snapshot, StoredRun.apply)

    def _load_metas(self, run_id: str) -> tuple[bytes, dict[str, bytes]]:
        if run_id in self._held:
            with self._guard, self._io(run_id, "read"):
                run = self._writer(run_id).run
                return run.header, {name: node.meta for name, node in run.nodes.items()}

        def metas_only(content: bytes) -> tuple[tuple[bytes, dict[str, bytes]], Stamp]:
            header, metas, stamp = self.format.load_snapshot_metas(content)
            return (header, metas), stamp

        def apply_metas(
            run: tuple[bytes, dict[str, bytes]],
            nodes: Mapping[str, StoredNode],
            data: Mapping[str, bytes | None],
        ) -> None:
            run[1].update((name, node.meta) for name, node in nodes.items())

        with self._guard, self._io(run_id, "read"):
            return self._files.read(run_id, metas_only, apply_metas)

    def _commit(
        self,
        run_id: str,
        nodes: Mapping[str, StoredNode],
        data: Mapping[str, bytes | None],
        txid: bytes = b"",
    ) -> None:
        payload = self.format.dump_commit(nodes, data)
        if txid:  # the commit point of a table transaction (see _tablelog.py)
            payload = TX_MARK + txid + payload
        with self._guard, self._io(run_id, "commit to"):
            writer = self._writer(run_id)
            if not writer.stamp.id:  # the previous release's format: move the run on first
                self._compact(run_id, writer)
                writer = self._writers[run_id]
            start = writer.journal_size
            if self._cipher is not None:
                payload = self._seal(payload, self._files.record_aad(run_id, writer.stamp, start))
            record = frame(payload, seed(writer.stamp.id))
            try:
                _write_all(writer.journal, record)
                os.fdatasync(writer.journal)
            except BaseException:
                self._undo_append(run_id, writer, start)
                raise
            writer.journal_size += len(record)
            writer.run.apply(nodes, data)
            if not txid:
                self._maybe_compact(run_id)

    def _maybe_compact(self, run_id: str) -> None:
        """Fold the run's journal into a new snapshot if it has grown (caller holds the guard)."""
        writer = self._writers.get(run_id)
        if writer is None or writer.journal_size <= max(
            writer.snapshot_size, self.compact_min_bytes
        ):
            return
        try:
            self._compact(run_id, writer)
        except (OSError, ValueError, StoreError) as exc:
            # The record is durable in the journal, so the commit stands;
            # compaction only saves replay time and is tried again later.
            # The files may be half switched: the next commit reopens them.
            _logger.warning("run %s: compaction failed, will retry: %s", run_id, exc)
            self._drop_writer(run_id)

    # -- tables (see _tablelog.py) ----------------------------------------------

    @functools.cached_property
    def _tables(self) -> TableLog:
        return TableLog(
            self.path,
            self.format.suffix,
            self.scheme,
            self._seal,
            self._unseal,
            self._files.has_txid,
            lambda: self.compact_min_bytes,
        )

    def _table_reader(self) -> TableReader:
        return self._tables.reader()

    def _transact_tables(
        self,
        run_id: str | None,
        work: Callable[[TableTxn], tuple[Mapping[str, StoredNode], Mapping[str, bytes | None]]],
    ) -> None:
        def check_run(run_id: str) -> None:
            with self._guard, self._io(run_id, "commit to"):
                self._writer(run_id)  # RunNotFoundError if there is no such run

        commit = self._commit  # with the txid: the transaction's commit point
        self._tables.transact(run_id, work, check_run, commit)
        if run_id is not None:  # the transaction is settled: its journal may be folded
            with self._guard:
                self._maybe_compact(run_id)

    def _list_runs(self) -> list[str]:
        with self._guard, self._io("", "list runs of"):
            # A run whose snapshot is missing but whose journal remains is
            # listed: it is damaged (its load says so), not gone.
            return [
                entry.name
                for entry in os.scandir(self.path / "runs")
                if not entry.name.startswith(".")
                and (
                    os.path.exists(self._files.snapshot_path(entry.name))
                    or journal_names(self._files.run_dir(entry.name), self.format.suffix, self.path)
                )
            ]

    def _delete(self, run_id: str) -> bool:
        self._tables.settle(run_id)  # its table transactions, before its journals go
        with self._guard, self._io(run_id, "delete"):
            self._drop_writer(run_id)
            directory = self._files.run_dir(run_id)
            if not os.path.lexists(directory):
                return False
            # Rename first: a crash mid-delete leaves a hidden directory, not half a run.
            doomed = directory.with_name(f".deleted-{run_id}-{uuid.uuid4().hex[:8]}")
            os.replace(directory, doomed)
            remove_tree(doomed, root=self.path)  # a planted link: the link, not its target
            return True

    def _lock(self, run_id: str) -> RunLock:
        held = super()._lock(run_id)
        try:
            with self._io(run_id, "lock"):
                remove_temp_files(self._files.run_dir(run_id), root=self.path)
                self._tables.settle(run_id)  # before its journal may be folded
        except BaseException:
            held.release()
            raise
        return held

    def _released(self, run_id: str) -> None:
        with self._guard:
            self._drop_writer(run_id)

    def _close(self) -> None:
        with self._guard:
            for run_id in list(self._writers):
                self._drop_writer(run_id)

    def _compact_store(self) -> Compaction:
        report = compact_runs(self, self._fold)
        with self._io("", "compact the tables of"):
            self._tables.compact()
        return report

    def _fold(self, run_id: str) -> bool:
        """Fold the run's journal into a new snapshot (caller holds the run's lock)."""
        with self._guard, self._io(run_id, "compact"):
            writer = self._writer(run_id)
            if writer.stamp.id and writer.journal_size <= len(journal_header(writer.stamp.id)):
                return False  # no record to fold
            self._compact(run_id, writer)
            return True

    # -- writing --------------------------------------------------------------

    def _writer(self, run_id: str) -> _Writer:
        """The run's writer, (re)opened if its files were replaced, removed or appended to."""
        writer = self._writers.get(run_id)
        if writer is not None:
            # fstat, not stat: no path lookup on the hot path. A file replaced by
            # a rename or deleted has no links left; a journal someone else
            # appended to has grown. Either way our view may no longer be the
            # one loads read: reload from the disk.
            journal, snapshot = os.fstat(writer.journal), os.fstat(writer.snapshot)
            if journal.st_nlink and snapshot.st_nlink and journal.st_size == writer.journal_size:
                return writer
            self._drop_writer(run_id)
        return self._open_writer(run_id)

    def _open_writer(self, run_id: str) -> _Writer:
        """Read the run once from the disk, cut any torn tail, keep its files open."""
        path = self._files.snapshot_path(run_id)
        try:
            snapshot = open_file(path, root=self.path)
        except FileNotFoundError:
            raise self._files.missing(run_id) from None
        journal = -1
        try:
            content = read_all(snapshot)
            plain = self._files.open_snapshot(run_id, path, content)
            run, stamp = self._files.parse(run_id, path, self.format.load_snapshot, plain)
            others = read_journals(path.parent, self.format.suffix, self.path, stamp.generation)
            refuse_foreign(run_id, stamp, others, path)
            journal = self._open_journal(run_id, stamp)
            records = read_all(journal)
            end = self._files.replay(run_id, stamp, records, run.apply)
            if end != len(records):  # so the next record follows the last whole one
                os.ftruncate(journal, end)
                os.fsync(journal)
            tidy(self._files.run_dir(run_id), self.format.suffix, stamp, self.path)
        except BaseException:
            os.close(snapshot)
            if journal >= 0:
                os.close(journal)
            raise
        writer = _Writer(run, stamp, journal, end, snapshot, len(content))
        self._writers[run_id] = writer
        return writer

    def _start_writer(self, run_id: str, run: StoredRun, stamp: Stamp, size: int) -> None:
        """A writer for a snapshot just written: the run is known, the journal new."""
        snapshot = open_file(self._files.snapshot_path(run_id), root=self.path)
        try:
            journal = self._open_journal(run_id, stamp)
            journal_size = os.fstat(journal).st_size
        except BaseException:
            os.close(snapshot)
            raise
        self._writers[run_id] = _Writer(run, stamp, journal, journal_size, snapshot, size)

    def _open_journal(self, run_id: str, stamp: Stamp) -> int:
        path = self._files.journal_path(run_id, stamp.generation)
        return open_journal(run_id, path, stamp, self._files.snapshot_path(run_id), self.path)

    def _compact(self, run_id: str, writer: _Writer) -> None:
        """Fold the journal into a new snapshot; see the module docstring for crash safety."""
        stamp = next_stamp(writer.stamp)
        content = self._files.seal_snapshot(run_id, self.format.dump_snapshot(writer.run, stamp))
        atomic_write(self._files.snapshot_path(run_id), content, root=self.path)
        # The new snapshot is durable, and its parent is the old one: the old
        # journal is folded from here on.
        self._drop_writer(run_id)
        tidy(
            self._files.run_dir(run_id), self.format.suffix, stamp, self.path
        )  # before the new journal
        self._start_writer(run_id, writer.run, stamp, len(content))

    def _undo_append(self, run_id: str, writer: _Writer, size: int) -> None:
        """Take back a record whose write or sync failed: it was never acknowledged.

        Cut the journal back to ``size``, so that neither a load nor a later
        commit sees the record (after a failed sync its bytes may or may not be
        on disk), sync the cut (else a crash could bring the record back), and
        drop the writer: the next commit reopens the journal from the disk and
        cuts any torn tail that the truncation could not remove. Where the disk
        refuses even that (it failed the sync already), a crash before the next
        successful commit may still bring the record back.
        """
        with contextlib.suppress(OSError):
            os.ftruncate(writer.journal, size)
            os.fsync(writer.journal)
        self._drop_writer(run_id)

    def _drop_writer(self, run_id: str) -> None:
        writer = self._writers.pop(run_id, None)
        if writer is not None:
            os.close(writer.journal)
            os.close(writer.snapshot)

    # -- cleaning up ----------------------------------------------------------

    def _remove_orphans(self) -> None:
        """On a writable open: half-deleted runs (one listing of ``runs/``), nothing of any run.

        A run's own leftovers (temp files of a cut-short write) are removed when
        it is next locked (`_lock`): opening a store, even to read one run, must
        not lock and touch each of thousands of runs.
        """
        remove_files(self.path / "runs", lambda name: name.startswith(".deleted-"), root=self.path)


def _write_all(fd: int, data: bytes) -> None:
    view = memoryview(data)
    while view:
        view = view[os.write(fd, view) :]
