"""A store's own housekeeping: opening a store touches no run; a run is tidied under its lock.

Opening a store of thousands of runs (``flowdag status`` of one of them) used
to lock every run and rewrite its lock file. Each run's housekeeping (temp
files a crash left) is now done when that run is next locked.
"""

from __future__ import annotations

import os
import shutil
import time
from pathlib import Path

import pytest

from flowdag.errors import StoreError
from flowdag.state import NodeRecord, NodeState, NodeStatus, RunState
from flowdag.stores import FlatBuffersStore, JSONStore, LMDBStore
from flowdag.stores._directory import DirectoryStore

KINDS: dict[str, type[DirectoryStore]] = {
    "lmdb": LMDBStore,
    "json": JSONStore,
    "flatbuffers": FlatBuffersStore,
}


def files_below(root: Path) -> dict[str, tuple[int, int, int, int]]:
    """Every entry below ``root`` (not following links): inode, size, mtime, ctime."""
    found = {}
    for path in root.rglob("*"):
        info = path.lstat()
        found[str(path.relative_to(root))] = (
            info.st_ino,
            info.st_size,
            info.st_mtime_ns,
            info.st_ctime_ns,
        )
    return found


def fill(store: DirectoryStore, runs: int) -> None:
    for n in range(runs):
        run_id = f"r{n}"
        store.save(RunState(run_id, "wf", nodes={"a": NodeState(), "b": NodeState()}))
        with store.lock(run_id):
            output = store.codec.encode(n)
            store.commit(run_id, [NodeRecord("a", NodeStatus.COMPLETED, 1, output=output)])


@pytest.mark.parametrize("create", [True, False])
@pytest.mark.parametrize("kind", list(KINDS))
def test_opening_a_store_writes_no_file_of_any_run(kind: str, create: bool, tmp_path: Path) -> None:
    with KINDS[kind](tmp_path) as store:
        fill(store, 5)
    if kind != "lmdb":  # what a crash mid-write leaves behind
        (tmp_path / "runs" / "r3" / ".snapshot.x.abc.tmp").write_bytes(b"half")
    before = files_below(tmp_path)
    time.sleep(0.02)  # so that a rewrite would show in the times
    with KINDS[kind](tmp_path, create=create) as store:
        assert store.load_statuses("r2").nodes["a"].status is NodeStatus.COMPLETED
        assert sorted(store.list_runs()) == [f"r{n}" for n in range(5)]
        store.load("r4")
    after = files_below(tmp_path)
    if kind == "lmdb":  # LMDB's own lock file records readers; it is no run's file
        for name in ("lock.mdb", "data.mdb"):
            before.pop(name), after.pop(name)
    assert after == before


@pytest.mark.parametrize("kind", ["json", "flatbuffers"])
def test_a_runs_leftovers_go_when_it_is_locked(kind: str, tmp_path: Path) -> None:
    with KINDS[kind](tmp_path) as store:
        fill(store, 2)
    leftover = tmp_path / "runs" / "r1" / ".snapshot.x.abc.tmp"
    leftover.write_bytes(b"half")
    other = tmp_path / "runs" / "r0" / ".snapshot.x.abc.tmp"
    other.write_bytes(b"half")
    with KINDS[kind](tmp_path) as store:
        assert leftover.exists()
        with store.lock("r1"):
            assert not leftover.exists()
            assert other.exists()  # another run's, not locked
            store.commit(
                "r1", [NodeRecord("b", NodeStatus.COMPLETED, 1, output=store.codec.encode(1))]
            )
    with KINDS[kind](tmp_path) as store:
        assert store.load("r1").nodes["b"].status is NodeStatus.COMPLETED


@pytest.mark.parametrize("kind", ["json", "flatbuffers"])
def test_a_half_deleted_run_is_removed_by_a_writable_open_only(kind: str, tmp_path: Path) -> None:
    with KINDS[kind](tmp_path) as store:
        fill(store, 1)
    doomed = tmp_path / "runs" / ".deleted-r9-0123abcd"  # a delete cut short by a crash
    (doomed / "sub").mkdir(parents=True)
    (doomed / "sub" / "f").write_bytes(b"x")
    with KINDS[kind](tmp_path, create=False) as store:
        assert store.list_runs() == ["r0"]
    assert doomed.exists()  # read-only tools remove nothing
    with KINDS[kind](tmp_path) as store:
        assert store.list_runs() == ["r0"]
    assert not os.path.lexists(doomed)


@pytest.mark.parametrize(("written", "opened"), [("json", "flatbuffers"), ("flatbuffers", "json")])
def test_a_read_only_open_of_the_other_journaled_kind_finds_no_store(
    tmp_path: Path, written: str, opened: str
) -> None:
    # JSON and FlatBuffers stores may share a directory (runs/): a read-only open
    # of one kind must not take the other's runs for an empty store of its own.
    where = tmp_path / "s"
    with KINDS[written](where) as store:
        store.save(RunState("r1", "wf", {"a": NodeState()}))
    before = files_below(where)
    with pytest.raises(StoreError, match="no store at"):
        KINDS[opened](where, create=False)
    assert files_below(where) == before  # nothing created: no locks/, no record


@pytest.mark.parametrize("kind", ["json", "flatbuffers"])
def test_a_read_only_open_of_a_store_without_its_locks_directory_creates_none(
    tmp_path: Path, kind: str
) -> None:
    where = tmp_path / "s"
    with KINDS[kind](where) as store:
        store.save(RunState("r1", "wf", {"a": NodeState()}))
    shutil.rmtree(where / "locks", ignore_errors=True)  # e.g. copied without it
    with KINDS[kind](where, create=False) as store:
        assert store.list_runs() == ["r1"]
        assert store.load_statuses("r1").nodes["a"].status is NodeStatus.PENDING
    assert not (where / "locks").exists()
