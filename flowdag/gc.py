"""Garbage collection: expired runs go, then the blobs no live record holds (mark and sweep).

Design
------
`gc` works as git's collector does, in an order that makes every step safe
against the writers running beside it and against a ``kill -9`` at any moment:

1. **Lock.** One collector per store (`try_gc_lock`: an ``flock`` under
   ``<dir>/locks``, dropped by the OS if the collector dies). A second one
   does nothing and says so (`GCReport.busy`). The lock file's mtime, just
   written, is the file system's "now": blob mtimes are compared with it,
   never with this process's clock, which may run ahead of the coarse clock
   that stamps files.
2. **List the blob candidates first** (name, size, mtime). A blob written
   after this listing is never a candidate; one reused meanwhile has a fresh
   mtime (writers refresh a blob they reuse), which the sweep sees.
3. **Delete expired runs**, one `Store.delete`-like step per run: under the
   run's lock, its lifetime read again, then the run removed whole (each store
   deletes a run atomically). A run that is running, or locked by any live
   process, is skipped and reported (`GCReport.skipped_runs`). Expired means
   `Store.life` says so, or, with ``older_than``, the run's last node finished
   longer ago than that and none of its input waits is live (`flowdag._wait_gc`).
   After the mark, the waits of runs that are gone are removed.
4. **Mark.** Every `Holder` yields the sha256 of each blob a live record points
   at: runs now (`Store.life`: records only, no output decoded, no blob
   read), and later KV entries, cache entries and waits, which plug in as
   more holders (`HOLDER_KINDS`). A ref whose
   own ``expires_at`` has passed is not live. JSON and FlatBuffers stores in
   one directory share one blob area, so the runs of every store kind found in
   the directory are marked. A run that cannot be read may hold anything: then
   nothing is swept (`GCReport.unreadable` says which run and why).
5. **Sweep** each candidate that is unmarked and older than ``grace`` with
   ``blobs.delete(name, older_than=cutoff)``: the blob is moved aside and its
   mtime checked again, so a writer that reused it meanwhile keeps it.

Before step 2, the temp files of the blob area older than ``grace`` go (left
by writers that died before their rename); a blob that a killed sweep had
moved aside is put back instead, and is judged again with the other candidates.

A kill between any two steps leaves whole runs and whole blobs: at worst an
expired run or an orphan blob that the next ``gc`` removes. ``dry_run``
goes through the same steps, takes the same lock, and deletes nothing.
"""

from __future__ import annotations

import contextlib
import os
import sys
import time
from collections.abc import Callable, Iterable, Iterator
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Protocol

from flowdag._units import Duration, parse_duration
from flowdag._wait_gc import keeps_run, sweep_orphans
from flowdag.errors import (
    CorruptStateError,
    FlowdagError,
    InvalidArgumentTypeError,
    RunLockedError,
    RunNotFoundError,
    StoreError,
)
from flowdag.stores._blobs import BlobArea, BlobEntry
from flowdag.stores._gclock import GC_LOCK, gc_lock_holder, try_gc_lock
from flowdag.stores.base import RunLife, Store

__all__ = ["HOLDER_KINDS", "GCReport", "Holder", "RunHolder", "gc"]

_SCHEMES = ("lmdb", "json", "flatbuffers")
#: The suffix of a blob that a sweep moved aside (``DirectoryBlobs.delete``).
_ASIDE = ".gc.tmp"


@dataclass(slots=True)
class GCReport:
    """What `gc` removed (or, with ``dry_run``, would remove).

    Attributes:
        runs: expired runs deleted.
        blobs: unreferenced blobs deleted.
        kv: expired KV entries deleted.
        cache: expired cache entries deleted.
        waits: input waits deleted (with their keys) because their run is gone.
        temp: leftover temp files of the blob area removed.
        bytes_freed: bytes of the blobs and temp files removed (a run's own
            records are not counted: ``flowdag store compact`` gives their
            space back where deleting does not).
        skipped: runs not deleted because a live process holds them.
        skipped_runs: those runs, each with the reason.
        unreadable: runs that could not be read, with the reason; while there
            is one, no blob is swept (it may point at any of them).
        busy: another ``gc`` was collecting the store: this one did nothing.
        holder: that collector's pid (0: not named), when ``busy``.
        dry_run: nothing was deleted; the counts are what would go.
    """

    runs: int = 0
    blobs: int = 0
    kv: int = 0
    cache: int = 0
    waits: int = 0
    temp: int = 0
    bytes_freed: int = 0
    skipped: int = 0
    skipped_runs: dict[str, str] = field(default_factory=dict)
    unreadable: dict[str, str] = field(default_factory=dict)
    busy: bool = False
    holder: int | None = None
    dry_run: bool = False

    @property
    def swept(self) -> bool:
        """Whether blobs were swept: not when another gc held the store or a run was unreadable."""
        return not self.busy and not self.unreadable


class Holder(Protocol):
    """Something whose live records point at blobs (runs now; KV, cache and waits later)."""

    def held(self, now: datetime, report: GCReport) -> Iterator[str]:
        """The sha256 of every blob a live record points at (repeats allowed).

        A record that cannot be read goes into ``report.unreadable`` (named,
        with the reason): it may point at any blob, so then nothing is swept.
        """
        ...


def _kv_holders(store: Store) -> Iterable[Holder]:
    # Imported here: flowdag.kv needs nothing of gc, and gc loads it only when it runs.
    from flowdag._kv_entries import kv_holders

    return kv_holders(store)


def _cache_holders(store: Store) -> Iterable[Holder]:
    # Imported here, likewise.
    from flowdag._cache_entries import CacheHolder

    return [CacheHolder(store)]


#: Makers of the holders of other record kinds: each is given the store and
#: returns its holders. KV entries (`flowdag._kv_entries.KVHolder`) and cache
#: entries (`flowdag._cache.CacheHolder`): live entries hold their blobs, and
#: expired entries are deleted as they are read. Waits hold no blobs (JSON only).
HOLDER_KINDS: list[Callable[[Store], Iterable[Holder]]] = [_kv_holders, _cache_holders]


def gc(
    store: Store,
    dry_run: bool = False,
    grace: Duration = "1h",
    older_than: Duration | None = None,
) -> GCReport:
    """Delete expired runs, then blobs no live record references that are older than ``grace``.

    Never deletes a run that is running or locked by a live process, nor a
    blob any live record points at. A ``kill -9`` at any moment leaves a store
    that loads; a second ``gc`` finishes the work. See the module docstring.

    Args:
        store: the store to collect.
        dry_run: delete nothing; report what would go, bytes included.
        grace: leave blobs (and temp files) younger than this, e.g. "1h": a
            run writing them may not have committed its ref yet.
        older_than: also delete every run, expired or not, whose last node
            finished longer ago than this (e.g. "30d"), unless a live process holds it.

    Raises:
        InvalidArgumentError: ``grace`` or ``older_than`` is not a duration.
        StoreError: the store cannot be read or written.
    """
    grace_s = parse_duration(grace, "grace")
    older_s = None if older_than is None else parse_duration(older_than, "older_than")
    if not isinstance(store, Store):
        raise InvalidArgumentTypeError(
            f"gc needs a store (flowdag.open_store(...)), not {type(store).__name__}"
        )
    report = GCReport(dry_run=dry_run)
    store._check_open()  # before the lock is taken
    lock = try_gc_lock(store)
    if lock is None:
        report.busy, report.holder = True, gc_lock_holder(store)
        return report
    with lock:
        now = datetime.now(UTC)
        area = store.blobs
        cutoff = _file_clock(store) - grace_s
        # First the temp area: a blob that a killed sweep moved aside is put
        # back, so that this sweep judges it again with the others.
        _sweep_temp(area, area.temp_entries(), cutoff, dry_run, report)
        candidates = area.entries()  # step 2: before any mark
        kept, doomed = _delete_expired(store, now, older_s, dry_run, report)
        marked: set[str] = set()
        with _siblings(store, report) as others:
            holders: list[Holder] = [RunHolder(store, kept, doomed)]
            holders += [RunHolder(other) for other in others]
            for make in HOLDER_KINDS:  # the siblings' records share the blob area too
                for each in (store, *others):
                    holders += make(each)
            for holder in holders:
                marked.update(holder.held(now, report))
            if report.swept:  # an unreadable run or store may own any wait: none goes
                report.waits = sweep_orphans(store, [store, *others], doomed, dry_run)
        if report.swept:
            _sweep(area, candidates, marked, cutoff, dry_run, report)
    report.skipped = len(report.skipped_runs)
    return report


# -- step 3: expired runs --------------------------------------------------------------------


def _delete_expired(
    store: Store, now: datetime, older_s: float | None, dry_run: bool, report: GCReport
) -> tuple[dict[str, RunLife], set[str]]:
    """Delete the runs that are expired (or older than ``older_s``).

    Returns the lives of the runs kept, and the runs deleted (with ``dry_run``:
    those that would be, which the mark then skips as it would not find them).
    """
    with _reader(store) as reader:
        expiry = _Expiry(store, reader, now, older_s, report)
        for run_id in store.list_runs():
            try:
                expiry.judge(run_id, dry_run)
            except RunNotFoundError:
                continue  # deleted by someone else meanwhile
            except RunLockedError as exc:
                report.skipped_runs[run_id] = str(exc)
            except CorruptStateError as exc:
                report.unreadable[run_id] = str(exc)
    return expiry.kept, expiry.doomed


@dataclass(slots=True)
class _Expiry:
    """Step 3, one run at a time: delete it if it is expired, else keep its life for the mark."""

    store: Store
    reader: Store  # reads the run under its lock (see `_reader`)
    now: datetime
    older_s: float | None
    report: GCReport
    kept: dict[str, RunLife] = field(default_factory=dict)
    doomed: set[str] = field(default_factory=set)

    def judge(self, run_id: str, dry_run: bool) -> None:
        store = self.store
        life = store.life(run_id)
        if not self.expired(store, run_id, life):
            self.kept[run_id] = life
        elif dry_run:
            holder = store.lock_holder(run_id)
            if holder is None:
                self.doomed.add(run_id)
                self.report.runs += 1
            else:
                self.report.skipped_runs[run_id] = _held_by(run_id, holder)
                self.kept[run_id] = life
        else:
            with store.lock(run_id):
                # Again under the lock: a run resumed since is not expired any more.
                life = self.reader.life(run_id)
                if self.expired(self.reader, run_id, life):
                    store._delete(run_id)
                    self.doomed.add(run_id)
                    self.report.runs += 1
                    return
            self.kept[run_id] = life

    def expired(self, store: Store, run_id: str, life: RunLife) -> bool:
        return _expired(store, run_id, life, self.now, self.older_s)


@contextlib.contextmanager
def _reader(store: Store) -> Iterator[Store]:
    """What reads a run under the lock gc holds: for a journaled store, a second one.

    A journaled store serves the runs it holds the lock of through a writer,
    which it sets up on the first read (a journal made and synced): a waste
    for a run about to be deleted. Another store object on the same
    directory reads the files as any reader does.
    """
    # Not imported here: a store can only be journaled once its module is loaded.
    journal = sys.modules.get("flowdag.stores._journal")
    if journal is None or not isinstance(store, journal.JournaledStore):
        yield store
        return
    from flowdag.stores import open_store

    cipher = store._cipher
    options = {} if cipher is None else {"key": cipher}
    try:
        twin = open_store(
            f"{store.scheme}://{store.path}", create=False, codec=store.codec, **options
        )
    except StoreError:
        twin = None  # nothing on the disk says which store this is yet: read through ``store``
    if twin is None:
        yield store
        return
    with twin:
        yield twin


def _expired(
    store: Store, run_id: str, life: RunLife, now: datetime, older_s: float | None
) -> bool:
    if life.expires_at is not None and life.expires_at <= now:
        return True
    if older_s is None:
        return False
    state = store.load_statuses(run_id)
    finished = [node.finished_at for node in state.nodes.values() if node.finished_at]
    if not finished:
        return False  # nothing ever finished: no age to judge it by
    # A run that is running now is not judged here: its lock, which the delete
    # takes, refuses it (and it is reported as skipped).
    if max(finished) > now - timedelta(seconds=older_s):
        return False
    # An old run waiting for input (a wait open and before its deadline, or
    # answered) is kept however old. Asked again under the run's lock.
    return not keeps_run(store, run_id, now)


def _held_by(run_id: str, pid: int) -> str:
    holder = f"pid {pid}" if pid else "another process"
    return f"run '{run_id}' is locked by {holder}; it is running: not deleted"


# -- step 4: mark ------------------------------------------------------------------------------


class RunHolder:
    """The runs of one store: each live run holds the blobs of its refs that have not expired.

    Args:
        store: the store whose runs are read (`Store.life`: no output decoded).
        known: lives already read (by the expiry step), reused; runs started
            since are read too.
        doomed: runs deleted (or, in a dry run, to be deleted): not live.
    """

    def __init__(
        self,
        store: Store,
        known: dict[str, RunLife] | None = None,
        doomed: set[str] | None = None,
    ) -> None:
        self.store = store
        self.known = known or {}
        self.doomed = doomed or set()

    def held(self, now: datetime, report: GCReport) -> Iterator[str]:
        for run_id in self.store.list_runs():
            if run_id in self.doomed:
                continue
            life = self.known.get(run_id)
            if life is None:
                try:
                    life = self.store.life(run_id)
                except RunNotFoundError:
                    continue
                except CorruptStateError as exc:
                    report.unreadable[run_id] = str(exc)
                    continue
            # An expired run left (locked by a live process) is still live to its holder.
            for sha256, expires_at in life.blobs.items():
                if expires_at is None or expires_at > now:
                    yield sha256


class _Siblings:
    """The other stores in the directory of ``store`` (they share its blob area), closed after."""

    def __init__(self, store: Store, report: GCReport) -> None:
        self.store = store
        self.report = report
        self.opened: list[Store] = []

    def __enter__(self) -> list[Store]:
        from flowdag.stores import open_store

        path = getattr(self.store, "path", None)
        if path is None:
            return []
        for scheme in _SCHEMES:
            if scheme == self.store.scheme or not _holds(path, scheme):
                continue
            cipher = getattr(self.store, "_cipher", None)
            options = {} if cipher is None else {"key": cipher}
            try:
                self.opened.append(open_store(f"{scheme}://{path}", create=False, **options))
            except FlowdagError as exc:
                # Its runs may point at our blobs and cannot be read: sweep nothing.
                self.report.unreadable[f"{scheme}://{path}"] = str(exc)
        return self.opened

    def __exit__(self, *exc_info: object) -> None:
        for other in self.opened:
            other.close()


def _siblings(store: Store, report: GCReport) -> _Siblings:
    return _Siblings(store, report)


def _holds(path: Path, scheme: str) -> bool:
    """Whether the directory holds a store of ``scheme`` (cheap checks, nothing opened)."""
    if scheme == "lmdb":
        return os.path.lexists(path / "data.mdb")
    if os.path.lexists(path / f"{scheme}-store.json"):
        return True
    suffix = ".json" if scheme == "json" else ".fb"
    runs = path / "runs"
    try:
        with os.scandir(runs) as entries:
            for entry in entries:
                if entry.name.startswith("."):
                    continue
                for name in os.listdir(entry.path):
                    if name == f"snapshot{suffix}" or name.endswith(f"{suffix}.log"):
                        return True
    except (FileNotFoundError, NotADirectoryError):
        return False
    return False


# -- step 5: sweep -----------------------------------------------------------------------------


def _sweep(
    area: BlobArea,
    candidates: Iterable[BlobEntry],
    marked: set[str],
    cutoff: float,
    dry_run: bool,
    report: GCReport,
) -> None:
    live = {area.name_of(sha256) for sha256 in marked}
    for entry in candidates:
        if entry.name in live or entry.mtime >= cutoff:
            continue
        if dry_run:
            freed = entry.stored_size
        else:
            # Moved aside, then its mtime checked again: a writer that reused it wins.
            # Not synced one by one: a crash can only bring back an orphan (next gc).
            freed = area.delete(entry.name, older_than=cutoff, sync=False)
            if not freed and (entry.stored_size or area._stat(entry.name) is not None):
                continue  # kept (fresh again), or already gone
        report.blobs += 1
        report.bytes_freed += freed


def _sweep_temp(
    area: BlobArea, temps: Iterable[BlobEntry], cutoff: float, dry_run: bool, report: GCReport
) -> None:
    for entry in temps:
        if entry.mtime >= cutoff:
            continue  # a writer may still be at work
        if entry.name.endswith(_ASIDE):
            if not dry_run:
                area.remove_temp(entry.name)  # a blob moved aside: put back, not freed
            continue
        report.temp += 1
        report.bytes_freed += entry.stored_size if dry_run else area.remove_temp(entry.name)


# -- the store's blob area and clock -----------------------------------------------------------


def _file_clock(store: Store) -> float:
    """Now, as the store's file system stamps files: the gc lock file was just written."""
    path = getattr(store, "path", None)
    if path is not None:
        try:
            return os.stat(path / "locks" / GC_LOCK).st_mtime
        except OSError as exc:
            raise StoreError(f"cannot read the gc lock {path / 'locks' / GC_LOCK}: {exc}") from exc
    return time.time()  # memory blobs are stamped with time.time()
