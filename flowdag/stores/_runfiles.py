"""One journaled store's run files: where they are, how they are sealed, read and replayed.

`JournaledStore` (``_journal.py``) decides *when* files are written, replaced
and removed (the writer, commits, compaction, saves); this module knows what
they are: the paths of a run's snapshot and journals, the encryption bindings
of each (see ``_crypto.py``), and how a snapshot plus its live journal are read
into one consistent state, even while another process compacts the run.
Nothing here writes.
"""

from __future__ import annotations

import functools
import os
from collections.abc import Callable, Mapping
from pathlib import Path
from typing import TypeVar

from flowdag.errors import CorruptStateError, RunNotFoundError, StoreError
from flowdag.stores._files import list_names, read_file
from flowdag.stores._format import RunFormat, Stamp
from flowdag.stores._framing import OVERHEAD, read_header, replay, seed
from flowdag.stores._lineage import (
    JournalFile,
    journal_generation,
    missing_snapshot,
    read_journals,
    refuse_foreign,
)
from flowdag.stores._tablelog import split_txid
from flowdag.stores.base import StoredNode

__all__ = ["RunFiles"]

_READ_TRIES = 10
_T = TypeVar("_T")
_R = TypeVar("_R")

#: What applies one journal record: nodes to upsert, data keys to set (None deletes).
Apply = Callable[[Mapping[str, StoredNode], Mapping[str, bytes | None]], None]


class RunFiles:
    """The run files of one store directory in one format.

    Args:
        root: the store directory (every path is checked against it).
        format: how snapshots and commits are laid out as bytes.
        scheme: the store's URL scheme, bound into every encrypted file.
        seal, unseal: the store's encryption (identity without a key).
    """

    def __init__(
        self,
        root: Path,
        format: RunFormat,
        scheme: str,
        seal: Callable[[bytes, bytes], bytes],
        unseal: Callable[[bytes, bytes, str], bytes],
    ) -> None:
        self.root = root
        self.format = format
        self._scheme = scheme.encode()
        self._seal = seal
        self._unseal = unseal

    # -- paths ----------------------------------------------------------------

    def run_dir(self, run_id: str) -> Path:
        return self.root / "runs" / run_id  # run ids are validated: never a path

    def snapshot_path(self, run_id: str) -> Path:
        return self.run_dir(run_id) / f"snapshot{self.format.suffix}"

    def journal_path(self, run_id: str, generation: int) -> Path:
        # The format is in the name: a JSON and a FlatBuffers store sharing a
        # directory must never take each other's journals for stale ones.
        return self.run_dir(run_id) / f"journal-{generation}{self.format.suffix}.log"

    # -- encryption at rest (see _crypto.py) ------------------------------------

    def _aad(self, run_id: str, entry: bytes) -> bytes:
        return b"\0".join((b"flowdag", self._scheme, run_id.encode(), entry))

    def record_aad(self, run_id: str, stamp: Stamp, offset: int) -> bytes:
        """What a journal record's seal is bound to."""
        # The journal's snapshot id and the record's offset: a record cannot be
        # moved to another place in its journal, or into a journal of another
        # snapshot (format 1 had the generation, which a new run reuses).
        if stamp.id:
            return self._aad(run_id, b"journal %s %d" % (stamp.id.hex().encode(), offset))
        return self._aad(run_id, b"journal %d %d" % (stamp.generation, offset))

    def seal_snapshot(self, run_id: str, content: bytes) -> bytes:
        return self._seal(content, self._aad(run_id, b"snapshot"))

    def open_snapshot(self, run_id: str, path: Path, content: bytes) -> bytes:
        return self._unseal(content, self._aad(run_id, b"snapshot"), f"run '{run_id}': {path}")

    def seal_seal(self, run_id: str, content: bytes) -> bytes:
        """A run's seal file (`flowdag.stores._journal_seals`), sealed with a key."""
        return self._seal(content, self._aad(run_id, b"seal"))

    def open_seal(self, run_id: str, path: Path, content: bytes) -> bytes:
        return self._unseal(content, self._aad(run_id, b"seal"), f"run '{run_id}': {path}")

    # -- reading --------------------------------------------------------------

    def read(
        self,
        run_id: str,
        parse: Callable[[bytes], tuple[_R, Stamp]],
        apply: Callable[[_R, Mapping[str, StoredNode], Mapping[str, bytes | None]], None],
    ) -> _R:
        """Snapshot + journal replay, consistent even while another process compacts."""
        snapshot = self.snapshot_path(run_id)
        directory = snapshot.parent
        for _ in range(_READ_TRIES):
            try:
                before = os.stat(snapshot).st_ino
                content = read_file(snapshot, root=self.root)
            except FileNotFoundError:
                raise self.missing(run_id) from None
            content = self.open_snapshot(run_id, snapshot, content)
            run, stamp = self.parse(run_id, snapshot, parse, content)
            journal = self.journal_path(run_id, stamp.generation)
            try:
                records = read_file(journal, root=self.root)
            except FileNotFoundError:
                records = b""
            others = read_journals(directory, self.format.suffix, self.root, stamp.generation)
            # A writer compacting meanwhile replaced the snapshot and removed
            # its journal: what we read may not go together, so read again.
            if os.stat(snapshot).st_ino != before:
                continue
            refuse_foreign(run_id, stamp, others, snapshot)
            self.replay(run_id, stamp, records, functools.partial(apply, run))
            return run
        raise StoreError(f"run '{run_id}' kept changing while being read; try again")

    def replay(self, run_id: str, stamp: Stamp, records: bytes, apply: Apply) -> int:
        """Apply the live journal's whole records; return where they end (a torn tail follows)."""
        journal = self.journal_path(run_id, stamp.generation)
        if not records:
            return 0  # none yet
        mine, offset = self.parse(run_id, journal, read_header, records)
        found = JournalFile(journal.name, stamp.generation, mine)
        refuse_foreign(run_id, stamp, [found], self.snapshot_path(run_id))
        start = seed(stamp.id)
        payloads, end = self.parse(
            run_id, journal, lambda content: replay(content, offset, start), records
        )
        for payload in payloads:
            where = f"run '{run_id}': {journal} (record at byte {offset})"
            aad = self.record_aad(run_id, stamp, offset)
            plain = self._unseal(payload, aad, where)
            offset += OVERHEAD + len(payload)
            plain = split_txid(plain)[1]  # a transaction's txid (see _tablelog.py) aside
            apply(*self.parse(run_id, journal, self.format.load_commit, plain))
        return end

    def has_txid(self, run_id: str, txid: bytes) -> bool:
        """Whether a whole record of one of the run's journals carries ``txid``.

        Every journal file of the run is looked at, set aside or not: the record
        is the commit point of a table transaction (see ``_tablelog.py``).
        """
        directory = self.run_dir(run_id)
        for name in list_names(directory, root=self.root):
            generation = journal_generation(name, self.format.suffix)
            if generation is None:
                continue
            path = directory / name
            try:
                content = read_file(path, root=self.root)
            except FileNotFoundError:
                continue  # folded meanwhile
            snapshot_id, offset = self.parse(run_id, path, read_header, content)
            stamp = Stamp(generation, snapshot_id)
            start = seed(snapshot_id)
            payloads, _ = self.parse(
                run_id, path, functools.partial(replay, pos=offset, start=start), content
            )
            for payload in payloads:
                aad = self.record_aad(run_id, stamp, offset)
                plain = self._unseal(payload, aad, f"run '{run_id}': {path}")
                offset += OVERHEAD + len(payload)
                if split_txid(plain)[0] == txid:
                    return True
        return False

    def current_stamp(self, run_id: str) -> Stamp | None:
        """The stamp of the run's snapshot; None if there is none or it cannot be read."""
        path = self.snapshot_path(run_id)
        try:
            content = self.open_snapshot(run_id, path, read_file(path, root=self.root))
            return self.format.load_snapshot_metas(content)[2]
        except (FileNotFoundError, ValueError, CorruptStateError):
            return None  # none, or a damaged one (or one under another key) being replaced

    def missing(self, run_id: str) -> CorruptStateError | RunNotFoundError:
        """The error for a run whose snapshot is not there: absent, or damaged."""
        path = self.snapshot_path(run_id)
        return missing_snapshot(run_id, self.root, path, self.format.suffix)

    def parse(self, run_id: str, path: Path, parse: Callable[[bytes], _T], content: bytes) -> _T:
        """``parse(content)``, with what it cannot parse as `CorruptStateError` naming the file."""
        try:
            return parse(content)
        except (ValueError, CorruptStateError) as exc:
            raise CorruptStateError(
                f"run '{run_id}' is damaged: {path}: {exc}; "
                "restore it from a backup or delete the run and run it again"
            ) from exc
