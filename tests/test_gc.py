"""`flowdag.gc` on every store kind: what it deletes, what it never deletes, and its lock.

Blobs are made old by moving their mtime back (``age``), never by sleeping.
Kills during gc are in ``tests/stores/test_gc_kills.py``; the command line in
``tests/test_gc_cli.py``.
"""

from __future__ import annotations

import os
from collections.abc import Iterator
from pathlib import Path

import pytest

import flowdag
from flowdag.errors import InvalidArgumentError, InvalidArgumentTypeError, StoreError
from flowdag.stores._blobs import BlobArea
from flowdag.stores.base import Store
from tests import gc_stores
from tests.gc_stores import HOUR, age, age_temp, open_kind, spawn, url_of

kind, store = gc_stores.kind, gc_stores.store  # fixtures: every store kind


def blobs_of(store: Store) -> BlobArea:
    return store.blobs


def put(area: BlobArea, data: bytes, *, old: bool = True) -> str:
    sha256 = area.put(data).sha256
    if old:
        age(area, sha256, 2 * HOUR)
    return sha256


# -- blobs no run references ---------------------------------------------------------------


def test_unreferenced_blobs_older_than_grace_go(store: Store) -> None:
    area = blobs_of(store)
    old = [put(area, f"old {i}".encode() * 100) for i in range(5)]
    young = put(area, b"young" * 100, old=False)
    dry = flowdag.gc(store, dry_run=True)
    assert (dry.blobs, dry.runs, dry.dry_run) == (5, 0, True)
    assert all(area.exists(sha256) for sha256 in [*old, young])  # a dry run deletes nothing
    report = flowdag.gc(store)
    assert (report.blobs, report.bytes_freed) == (dry.blobs, dry.bytes_freed)
    assert report.bytes_freed > 0 and not report.dry_run and report.swept
    assert [area.exists(sha256) for sha256 in old] == [False] * 5
    assert area.exists(young)  # younger than the grace period
    again = flowdag.gc(store)  # converges
    assert (again.blobs, again.runs, again.bytes_freed) == (0, 0, 0)
    assert flowdag.gc(store, grace=0).blobs == 1  # no grace: the young one goes too
    assert area.entries() == []


def test_grace_is_a_duration(store: Store) -> None:
    area = blobs_of(store)
    sha256 = put(area, b"x" * 100, old=False)
    age(area, sha256, 90)
    assert flowdag.gc(store, grace="2m").blobs == 0
    assert flowdag.gc(store, grace=60).blobs == 1


def test_temp_leftovers_older_than_grace_go(tmp_path: Path, kind: str) -> None:
    if kind == "memory":
        pytest.skip("a memory blob area has no temp files")
    with open_kind(kind, tmp_path) as store:
        area = blobs_of(store)
        left = area.writer()
        # A writer killed before its commit leaves this (past the first MiB, which
        # a writer holds until it knows whether to compress, its bytes are on disk).
        left.write(b"cut short" * 200_000)
        left.flush()
        assert len(area.temp_entries()) == 1
        assert flowdag.gc(store).temp == 0  # young: its writer may be at work
        age_temp(area, 2 * HOUR)
        dry = flowdag.gc(store, dry_run=True)
        assert dry.temp == 1 and len(area.temp_entries()) == 1
        report = flowdag.gc(store)
        assert report.temp == 1 and report.bytes_freed == dry.bytes_freed > 0
        assert area.temp_entries() == []
        left.close()


def test_a_blob_moved_aside_by_a_killed_sweep_is_put_back(tmp_path: Path, kind: str) -> None:
    if kind == "memory":
        pytest.skip("a memory blob area has no files")
    with open_kind(kind, tmp_path) as store:
        area = blobs_of(store)
        sha256 = put(area, b"moved aside" * 100)
        name = area.name_of(sha256)
        path = Path(area.locate(name))
        aside = path.parent.parent / "tmp" / f"{name}.0a1b2c3d.gc.tmp"
        aside.parent.mkdir(exist_ok=True)
        os.rename(path, aside)  # where a kill between the move and the recheck leaves it
        age_temp(area, 2 * HOUR)
        dry = flowdag.gc(store, dry_run=True)
        assert (dry.temp, dry.blobs) == (0, 0) and not area.exists(sha256)
        report = flowdag.gc(store)  # put back, then judged again: nothing references it
        assert (report.temp, report.blobs) == (0, 1) and not area.exists(sha256)
        assert area.temp_entries() == [] and area.entries() == []


# -- the lock: one collector at a time -------------------------------------------------------

# Holds the gc lock of a store in another process until killed.
HOLD_GC = """
import sys, time
from flowdag.stores import open_store
from flowdag.stores._gclock import try_gc_lock
store = open_store(sys.argv[1])
lock = try_gc_lock(store)
print("held" if lock else "busy", flush=True)
time.sleep(120)
"""


def test_a_second_gc_skips(tmp_path: Path, kind: str) -> None:
    with open_kind(kind, tmp_path) as store:
        area = blobs_of(store)
        sha256 = put(area, b"x" * 100)
        if kind == "memory":  # the lock of this process's store object
            from flowdag.stores._gclock import try_gc_lock

            held = try_gc_lock(store)
            assert held is not None
            holder = os.getpid()
        else:
            proc = spawn(HOLD_GC, url_of(kind, tmp_path))
            assert proc.stdout is not None and proc.stdout.readline() == "held\n"
            holder = proc.pid
        try:
            report = flowdag.gc(store)
            assert report.busy and report.holder == holder and not report.swept
            assert (report.runs, report.blobs, report.bytes_freed) == (0, 0, 0)
            assert area.exists(sha256)
        finally:
            if kind == "memory":
                held.release()
            else:
                proc.kill()
                proc.wait(timeout=60)
        # The holder is gone (killed: the OS dropped its lock): the next gc collects.
        report = flowdag.gc(store)
        assert not report.busy and report.blobs == 1


def test_the_lock_file_is_no_run_lock(tmp_path: Path) -> None:
    with open_kind("lmdb", tmp_path) as store:
        flowdag.gc(store)
        locks = store.path / "locks"  # type: ignore[attr-defined]
        assert [p.name for p in locks.iterdir()] == [".gc.lock"]
        assert store.list_runs() == []
        with store.lock("gc"):  # a run called "gc" has its own lock file
            assert flowdag.gc(store).busy is False


# -- bad input -----------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("options", "option"),
    [({"grace": "1 hour"}, "grace"), ({"grace": -1}, "grace"), ({"older_than": "x"}, "older_than")],
)
def test_bad_durations_name_the_option(options: dict[str, object], option: str) -> None:
    with (
        pytest.raises(InvalidArgumentError, match=rf"^{option}.*'(7d|90s)'"),
        flowdag.MemoryStore() as store,
    ):
        flowdag.gc(store, **options)  # type: ignore[arg-type]


def test_bad_types() -> None:
    with pytest.raises(InvalidArgumentTypeError, match="gc needs a store"):
        flowdag.gc("lmdb://.flowdag")  # type: ignore[arg-type]
    with pytest.raises(InvalidArgumentTypeError, match="grace must be a duration"):
        flowdag.gc(flowdag.MemoryStore(), grace=[1])  # type: ignore[arg-type]
    store = flowdag.MemoryStore()
    store.close()
    with pytest.raises(StoreError, match="closed"):
        flowdag.gc(store)


def test_report_fields() -> None:
    report = flowdag.GCReport()
    assert (report.runs, report.blobs, report.kv, report.cache, report.bytes_freed) == (0,) * 5
    assert report.skipped == 0 and report.swept


def test_other_record_kinds_plug_in_as_holders(store: Store) -> None:
    """KV, cache and waits will hold blobs too: a holder added to HOLDER_KINDS keeps its blobs."""
    import sys

    gc_module = sys.modules["flowdag.gc"]  # flowdag.gc is the function
    area = blobs_of(store)
    kept, dropped = put(area, b"held by a kv entry" * 10), put(area, b"held by nothing" * 10)

    class KVHolder:
        def held(self, now: object, report: flowdag.GCReport) -> Iterator[str]:
            yield kept

    gc_module.HOLDER_KINDS.append(lambda s: [KVHolder()] if s is store else [])
    try:
        report = flowdag.gc(store)
    finally:
        gc_module.HOLDER_KINDS.pop()
    assert report.blobs == 1 and area.exists(kept) and not area.exists(dropped)
