"""Crash-safe file layout shared by the JSON and FlatBuffers stores.

Design
------
Per run, a directory ``<store>/runs/<run_id>/`` holds:

- ``snapshot<suffix>``: the whole run as of some *generation*, written atomically
  (temp file, fsync, rename, fsync of the directory);
- ``journal-<generation><suffix>.log``: an append-only log of the commits made since that
  snapshot. A commit appends one framed record and fsyncs before it returns, so
  its cost is the size of the record, not of the run.

Loading is snapshot + replay of that generation's journal. When a journal
outgrows its snapshot (and a floor of `COMPACT_MIN_BYTES`), the run is
*compacted*: a snapshot of generation g+1 is written atomically, a fresh journal
g+1 started and journal g deleted. A crash at any point of that leaves either
snapshot g with journal g or snapshot g+1 (whose journal is empty or missing):
both load the same state. Journals of other generations are stale and removed.

A record is framed as::

    magic(2) length(u32) crc32(payload)(u32) crc32(previous 10 bytes)(u32)
    payload(length)
    length(u32) crc32(payload)(u32)            # trailer: the record is whole

Replay tells a *torn* tail (the process died mid-append: the record was never
acknowledged, so it is ignored and cut off before the next append) from
*damage* (raised as `CorruptStateError`): a tail shorter than its header says,
or zero-filled, or whose payload fails its checksum while the trailer is
missing, is torn; a bad header with data after it, or a bad payload behind an
intact trailer, is damage.

A commit whose write or sync fails is taken back (the journal is cut to
where it was) before the error is raised, so a record that was never
acknowledged never shows up later. A compaction that fails after the record is
durable does not fail the commit: it is logged and tried again later.

With a key (``key=``, see ``_crypto.py``), each record's payload is sealed with
AES-256-GCM bound to the run, the journal's generation and the record's byte
offset, and each snapshot file is sealed whole, bound to the run: the framing
and the torn-tail rules above are unchanged, and a JSON snapshot is then no
longer readable JSON.

A format (`RunFormat`) only turns runs and commits into bytes and back. Only
the holder of a run's lock writes to it (the runner takes it); readers need
no lock and see a consistent state.
"""

from __future__ import annotations

import contextlib
import logging
import os
import shutil
import struct
import threading
import uuid
import zlib
from collections.abc import Callable, Iterator, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Protocol, TypeVar

from flowdag.codec import ValueCodec
from flowdag.errors import (
    CorruptStateError,
    InvalidRunIdError,
    RunLockedError,
    RunNotFoundError,
    StoreError,
)
from flowdag.stores._crypto import Cipher, is_sealed, make_cipher, not_encrypted_error
from flowdag.stores._files import (
    _fsync_dir,
    atomic_write,
    lock_run_file,
    make_private_dir,
    no_store_error,
    open_private,
)
from flowdag.stores.base import RunLock, Store, StoredNode, StoredRun

__all__ = ["COMPACT_MIN_BYTES", "Commit", "JournaledStore", "RunFormat", "frame", "replay"]

#: A journal is compacted once it is larger than its snapshot and than this.
COMPACT_MIN_BYTES = 256 * 1024

_MAGIC = b"\xf1\x4a"
_HEADER = struct.Struct("<2sIII")
_TRAILER = struct.Struct("<II")
_READ_TRIES = 10
_logger = logging.getLogger("flowdag")
_T = TypeVar("_T")
_R = TypeVar("_R")

#: One commit as a format sees it: nodes to upsert, data keys to set (None deletes).
Commit = tuple[Mapping[str, StoredNode], Mapping[str, bytes | None]]


class RunFormat(Protocol):
    """How a journaled store lays out one run's snapshot and commits as bytes.

    Every ``load_*`` raises ``ValueError`` (or a subclass) on bytes it cannot
    parse; the journal engine turns that into `CorruptStateError` naming the
    run and the file. Journal records are framed and checksummed by the engine,
    so a commit payload only needs to parse. A snapshot is written exactly as
    the format dumps it (so that a JSON snapshot stays a plain JSON file): the
    format must put a checksum of its own in it, and `load_snapshot` and
    `load_snapshot_metas` must raise ``ValueError`` when it does not match.
    """

    #: File name suffix of snapshots, e.g. ``".json"``.
    suffix: str

    def dump_snapshot(self, run: StoredRun, generation: int) -> bytes:
        """The whole run as one file's content, recording ``generation``."""
        ...

    def load_snapshot(self, content: bytes) -> tuple[StoredRun, int]:
        """Parse a snapshot: the run and its generation."""
        ...

    def load_snapshot_metas(self, content: bytes) -> tuple[bytes, dict[str, bytes], int]:
        """Header, node -> meta blob, and generation, without touching outputs or data."""
        ...

    def dump_commit(
        self, nodes: Mapping[str, StoredNode], data: Mapping[str, bytes | None]
    ) -> bytes:
        """One commit as a journal record's payload."""
        ...

    def load_commit(self, payload: bytes) -> Commit:
        """Parse a journal record's payload."""
        ...


# -- framing ------------------------------------------------------------------


def frame(payload: bytes) -> bytes:
    """One journal record around ``payload`` (see the module docstring)."""
    crc = zlib.crc32(payload)
    head = _MAGIC + struct.pack("<II", len(payload), crc)
    return head + struct.pack("<I", zlib.crc32(head)) + payload + _TRAILER.pack(len(payload), crc)


def replay(content: bytes) -> tuple[list[bytes], int]:
    """The payloads of the whole records in ``content``, and where they end.

    Bytes past the returned offset are a torn tail (never acknowledged).

    Raises:
        ValueError: the journal is damaged (not merely torn at its end).
    """
    payloads: list[bytes] = []
    view = memoryview(content)
    size = len(content)
    pos = 0
    while pos < size:
        if size - pos < _HEADER.size:
            break  # a header cut short: torn
        magic, length, crc, head_crc = _HEADER.unpack_from(content, pos)
        if magic != _MAGIC or zlib.crc32(view[pos : pos + 10]) != head_crc:
            if not any(view[pos:]):
                break  # zero-filled tail: the file grew, the data never landed
            raise ValueError(f"damaged record header at byte {pos}")
        body = pos + _HEADER.size
        end = body + length + _TRAILER.size
        if end > size:
            break  # the header is sound, so the record was cut short: torn
        payload = view[body : body + length]
        if zlib.crc32(payload) != crc:
            intact = content[end - _TRAILER.size : end] == _TRAILER.pack(length, crc)
            if intact or end != size:
                raise ValueError(f"damaged record at byte {pos}")
            break  # the last record's payload never fully landed: torn
        payloads.append(bytes(payload))
        pos = end
    return payloads, pos


# -- the store ----------------------------------------------------------------


@dataclass(slots=True)
class _Writer:
    """A run this process commits to: its state in memory and its open journal."""

    run: StoredRun
    generation: int
    journal: int  # fd, opened for appending
    journal_path: Path
    journal_size: int
    journal_inode: int
    snapshot_size: int
    snapshot_inode: int


class JournaledStore(Store):
    """A store of one directory per run: an atomic snapshot plus a journal.

    Subclasses name a `RunFormat`; everything else (framing, fsync, compaction,
    torn tails, temp files, locks, error wrapping, encryption) is here.

    Args:
        path: the store directory; created (0700) if missing.
        codec: the value codec.
        compact_min_bytes: fold a journal into a new snapshot only once it is
            larger than this and than the snapshot.
        key: encrypt snapshots and journal records with AES-256-GCM under this
            key (32 bytes, 64 hex digits or base64; or a `Cipher`); None stores
            plain bytes. A store written with a key is read only with that key.
        create: False to refuse a directory that holds no such store (nothing
            is created then), as read-only tools want.
    """

    format: RunFormat
    #: The store's name in messages, e.g. "JSON".
    kind: str = "journaled"

    def __init__(
        self,
        path: str | os.PathLike[str],
        *,
        codec: ValueCodec | None = None,
        compact_min_bytes: int = COMPACT_MIN_BYTES,
        key: bytes | str | Cipher | None = None,
        create: bool = True,
    ) -> None:
        super().__init__(codec=codec)
        self.path = Path(os.path.abspath(path))
        if not create and not (self.path / "runs").is_dir():
            raise no_store_error(self.path, self.kind)
        self.compact_min_bytes = compact_min_bytes
        self._cipher = make_cipher(key)
        self._guard = threading.RLock()
        self._writers: dict[str, _Writer] = {}
        try:
            if self.path.exists() and not self.path.is_dir():
                raise StoreError(f"store path {self.path} is not a directory; pass a directory")
            make_private_dir(self.path / "runs")
            make_private_dir(self.path / "locks")
            self._remove_orphans()
        except OSError as exc:
            raise StoreError(f"cannot open store at {self.path}: {exc}") from exc

    def __repr__(self) -> str:
        return f"{type(self).__name__}({str(self.path)!r})"

    def describe(self, run_id: str) -> str:
        """The run's directory."""
        return str(self._run_dir(run_id))

    # -- paths ----------------------------------------------------------------

    def _run_dir(self, run_id: str) -> Path:
        return self.path / "runs" / run_id  # run ids are validated: never a path

    def _snapshot_path(self, run_id: str) -> Path:
        return self._run_dir(run_id) / f"snapshot{self.format.suffix}"

    def _journal_path(self, run_id: str, generation: int) -> Path:
        # The format is in the name: a JSON and a FlatBuffers store sharing a
        # directory must never take each other's journals for stale ones.
        return self._run_dir(run_id) / f"journal-{generation}{self.format.suffix}.log"

    # -- hooks ----------------------------------------------------------------

    def _save(self, run_id: str, run: StoredRun) -> None:
        with self._guard, self._io(run_id, "save"):
            self._drop_writer(run_id)
            directory = self._run_dir(run_id)
            if not directory.is_dir():
                make_private_dir(directory)
                _fsync_dir(directory.parent)
            generation = self._current_generation(run_id) + 1
            content = self._seal_snapshot(run_id, self.format.dump_snapshot(run, generation))
            atomic_write(self._snapshot_path(run_id), content)
            self._remove_stale_journals(run_id, generation)

    def _load(self, run_id: str) -> StoredRun:
        return self._read(run_id, self.format.load_snapshot, _apply)

    def _load_metas(self, run_id: str) -> tuple[bytes, dict[str, bytes]]:
        def metas_only(content: bytes) -> tuple[tuple[bytes, dict[str, bytes]], int]:
            header, metas, generation = self.format.load_snapshot_metas(content)
            return (header, metas), generation

        def apply_metas(
            run: tuple[bytes, dict[str, bytes]],
            nodes: Mapping[str, StoredNode],
            data: Mapping[str, bytes | None],
        ) -> None:
            run[1].update((name, node.meta) for name, node in nodes.items())

        return self._read(run_id, metas_only, apply_metas)

    def _commit(
        self, run_id: str, nodes: Mapping[str, StoredNode], data: Mapping[str, bytes | None]
    ) -> None:
        payload = self.format.dump_commit(nodes, data)
        with self._guard, self._io(run_id, "commit to"):
            writer = self._writer(run_id)
            start = writer.journal_size
            if self._cipher is not None:
                payload = self._cipher.encrypt(
                    payload, self._record_aad(run_id, writer.generation, start)
                )
            record = frame(payload)
            try:
                _write_all(writer.journal, record)
                os.fdatasync(writer.journal)
            except BaseException:
                self._undo_append(run_id, writer, start)
                raise
            writer.journal_size += len(record)
            _apply(writer.run, nodes, data)
            if writer.journal_size > max(writer.snapshot_size, self.compact_min_bytes):
                try:
                    self._compact(run_id, writer)
                except (OSError, ValueError, StoreError) as exc:
                    # The record is durable in the journal, so the commit stands;
                    # compaction only saves replay time and is tried again later.
                    # The files may be half switched: the next commit reopens them.
                    _logger.warning("run %s: compaction failed, will retry: %s", run_id, exc)
                    self._drop_writer(run_id)

    def _list_runs(self) -> list[str]:
        with self._guard, self._io("", "list runs of"):
            return [
                entry.name
                for entry in os.scandir(self.path / "runs")
                if not entry.name.startswith(".")
                and os.path.exists(self._snapshot_path(entry.name))
            ]

    def _delete(self, run_id: str) -> bool:
        with self._guard, self._io(run_id, "delete"):
            self._drop_writer(run_id)
            directory = self._run_dir(run_id)
            if not directory.exists():
                return False
            # Rename first: a crash mid-delete leaves a hidden directory, not half a run.
            doomed = directory.with_name(f".deleted-{run_id}-{uuid.uuid4().hex[:8]}")
            os.replace(directory, doomed)
            shutil.rmtree(doomed, ignore_errors=True)
            return True

    def _lock(self, run_id: str) -> RunLock:
        with self._io(run_id, "lock"):
            held = lock_run_file(self.path / "locks" / f"{run_id}.lock", run_id)
            try:
                self._remove_temp_files(self._run_dir(run_id))
            except BaseException:
                held.release()
                raise
            return held

    def _close(self) -> None:
        with self._guard:
            for run_id in list(self._writers):
                self._drop_writer(run_id)

    # -- reading --------------------------------------------------------------

    def _read(
        self,
        run_id: str,
        parse: Callable[[bytes], tuple[_R, int]],
        apply: Callable[[_R, Mapping[str, StoredNode], Mapping[str, bytes | None]], None],
    ) -> _R:
        """Snapshot + journal replay, consistent even while another process compacts."""
        snapshot = self._snapshot_path(run_id)
        with self._guard, self._io(run_id, "read"):
            for _ in range(_READ_TRIES):
                try:
                    before = os.stat(snapshot).st_ino
                    content = snapshot.read_bytes()
                except FileNotFoundError:
                    raise RunNotFoundError(f"no run '{run_id}' in {self.path}") from None
                content = self._open_snapshot(run_id, snapshot, content)
                run, generation = self._parse(run_id, snapshot, parse, content)
                journal = self._journal_path(run_id, generation)
                try:
                    records = journal.read_bytes()
                except FileNotFoundError:
                    records = b""
                # A writer compacting meanwhile replaced the snapshot and removed
                # its journal: what we read may not go together, so read again.
                if os.stat(snapshot).st_ino != before:
                    continue
                payloads, _ = self._parse(run_id, journal, replay, records)
                offset = 0
                for payload in payloads:
                    plain = self._open_record(run_id, journal, generation, offset, payload)
                    offset += _HEADER.size + len(payload) + _TRAILER.size
                    nodes, data = self._parse(run_id, journal, self.format.load_commit, plain)
                    apply(run, nodes, data)
                return run
        raise StoreError(f"run '{run_id}' kept changing while being read; try again")

    def _current_generation(self, run_id: str) -> int:
        try:
            content = self._snapshot_path(run_id).read_bytes()
        except FileNotFoundError:
            return 0
        try:
            content = self._open_snapshot(run_id, self._snapshot_path(run_id), content)
            return self.format.load_snapshot_metas(content)[2]
        except (ValueError, CorruptStateError):
            return 0  # a damaged snapshot (or one under another key) being replaced by save()

    def _parse(self, run_id: str, path: Path, parse: Callable[[bytes], _T], content: bytes) -> _T:
        try:
            return parse(content)
        except (ValueError, CorruptStateError) as exc:
            raise CorruptStateError(
                f"run '{run_id}' is damaged: {path}: {exc}; "
                "restore it from a backup or delete the run and run it again"
            ) from exc

    # -- writing --------------------------------------------------------------

    def _writer(self, run_id: str) -> _Writer:
        """The run's open journal, (re)opened if another writer changed the files."""
        writer = self._writers.get(run_id)
        if writer is not None:
            # A replaced snapshot (another writer compacted, or a file was put back
            # from elsewhere) means our journal may no longer be the one loads read.
            try:
                st = os.stat(writer.journal_path)
                current = (st.st_ino, st.st_size) == (writer.journal_inode, writer.journal_size)
                current = current and (
                    os.stat(self._snapshot_path(run_id)).st_ino == writer.snapshot_inode
                )
            except FileNotFoundError:
                current = False
            if current:
                return writer
            self._drop_writer(run_id)
        # Opening for writing: load the run, then cut off any torn tail so that
        # the next record follows the last whole one.
        snapshot = self._snapshot_path(run_id)
        try:
            snapshot_inode = os.stat(snapshot).st_ino
            content = snapshot.read_bytes()
        except FileNotFoundError:
            raise RunNotFoundError(f"no run '{run_id}' in {self.path}") from None
        run = self._load(run_id)
        plain = self._open_snapshot(run_id, snapshot, content)
        generation = self._parse(run_id, snapshot, self.format.load_snapshot_metas, plain)[2]
        writer = self._open_journal(run_id, run, generation, len(content), snapshot_inode)
        records = os.pread(writer.journal, writer.journal_size, 0)
        _, end = replay(records)
        if end != len(records):
            os.ftruncate(writer.journal, end)
            os.fsync(writer.journal)
            writer.journal_size = end
        self._remove_stale_journals(run_id, generation)
        return writer

    def _open_journal(
        self,
        run_id: str,
        run: StoredRun,
        generation: int,
        snapshot_size: int,
        snapshot_inode: int,
    ) -> _Writer:
        path = self._journal_path(run_id, generation)
        fd = open_private(path, os.O_RDWR | os.O_APPEND)
        try:
            _fsync_dir(path.parent)  # the journal's name is durable before its records
            st = os.fstat(fd)
        except BaseException:
            os.close(fd)
            raise
        writer = _Writer(
            run, generation, fd, path, st.st_size, st.st_ino, snapshot_size, snapshot_inode
        )
        self._writers[run_id] = writer
        return writer

    def _compact(self, run_id: str, writer: _Writer) -> None:
        """Fold the journal into a new snapshot; see the module docstring for crash safety."""
        generation = writer.generation + 1
        content = self._seal_snapshot(run_id, self.format.dump_snapshot(writer.run, generation))
        snapshot = self._snapshot_path(run_id)
        atomic_write(snapshot, content)
        # The new snapshot is durable, so the old journal is stale from here on.
        self._drop_writer(run_id)
        inode = os.stat(snapshot).st_ino
        self._open_journal(run_id, writer.run, generation, len(content), inode)
        self._remove_stale_journals(run_id, generation)

    def _undo_append(self, run_id: str, writer: _Writer, size: int) -> None:
        """Take back a record whose write or sync failed: it was never acknowledged.

        Cut the journal back to ``size``, so that neither a load nor a later
        commit sees the record (after a failed sync its bytes may or may not be
        on disk), and drop the writer: the next commit reopens the journal from
        the disk and cuts any torn tail that the truncation could not remove.
        """
        with contextlib.suppress(OSError):
            os.ftruncate(writer.journal, size)
        self._drop_writer(run_id)

    # -- encryption at rest (see _crypto.py) ------------------------------------

    def _aad(self, run_id: str, entry: bytes) -> bytes:
        return b"\0".join((b"flowdag", self.scheme.encode(), run_id.encode(), entry))

    def _record_aad(self, run_id: str, generation: int, offset: int) -> bytes:
        # The journal's generation and the record's offset: a record cannot be
        # moved to another place in its journal, or into another journal.
        return self._aad(run_id, b"journal %d %d" % (generation, offset))

    def _seal_snapshot(self, run_id: str, content: bytes) -> bytes:
        if self._cipher is None:
            return content
        return self._cipher.encrypt(content, self._aad(run_id, b"snapshot"))

    def _open_snapshot(self, run_id: str, path: Path, content: bytes) -> bytes:
        where = f"run '{run_id}': {path}"
        if self._cipher is None:
            if is_sealed(content):
                raise not_encrypted_error(where)
            return content
        return self._cipher.decrypt(content, self._aad(run_id, b"snapshot"), where)

    def _open_record(
        self, run_id: str, path: Path, generation: int, offset: int, payload: bytes
    ) -> bytes:
        where = f"run '{run_id}': {path} (record at byte {offset})"
        if self._cipher is None:
            if is_sealed(payload):
                raise not_encrypted_error(where)
            return payload
        aad = self._record_aad(run_id, generation, offset)
        return self._cipher.decrypt(payload, aad, where)

    def _drop_writer(self, run_id: str) -> None:
        writer = self._writers.pop(run_id, None)
        if writer is not None:
            os.close(writer.journal)

    def _remove_stale_journals(self, run_id: str, generation: int) -> None:
        keep = self._journal_path(run_id, generation).name
        for entry in os.scandir(self._run_dir(run_id)):
            ending = f"{self.format.suffix}.log"
            mine = entry.name.startswith("journal-") and entry.name.endswith(ending)
            if mine and entry.name != keep:
                os.unlink(entry.path)

    def _remove_temp_files(self, directory: Path) -> None:
        """Temp files a crash left behind (only under the run's lock)."""
        with contextlib.suppress(FileNotFoundError):
            for entry in os.scandir(directory):
                if entry.name.startswith(".") and entry.name.endswith(".tmp"):
                    os.unlink(entry.path)

    def _remove_orphans(self) -> None:
        """On open: temp files of runs nobody runs, and half-deleted runs."""
        for entry in os.scandir(self.path / "runs"):
            if entry.name.startswith(".deleted-"):
                shutil.rmtree(entry.path, ignore_errors=True)
            elif entry.is_dir():
                lock = self.path / "locks" / f"{entry.name}.lock"
                try:
                    held = lock_run_file(lock, entry.name)
                except (RunLockedError, InvalidRunIdError):
                    continue  # its holder cleans up after itself
                try:
                    self._remove_temp_files(Path(entry.path))
                finally:
                    held.release()

    @contextlib.contextmanager
    def _io(self, run_id: str, action: str) -> Iterator[None]:
        """Turn an OSError into a StoreError naming the run and the cause."""
        try:
            yield
        except OSError as exc:
            where = f"run '{run_id}' in {self.path}" if run_id else str(self.path)
            raise StoreError(f"cannot {action} {where}: {exc}") from exc


def _apply(
    run: StoredRun, nodes: Mapping[str, StoredNode], data: Mapping[str, bytes | None]
) -> None:
    run.nodes.update(nodes)
    for key, value in data.items():
        if value is None:
            run.data.pop(key, None)
        else:
            run.data[key] = value


def _write_all(fd: int, data: bytes) -> None:
    view = memoryview(data)
    while view:
        view = view[os.write(fd, view) :]
