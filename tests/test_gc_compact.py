"""`Store.compact` and ``flowdag store compact`` on every store kind.

Compaction keeps every run as it was (loaded back equal) and the store
writable afterwards; LMDB gives the pages of deleted runs back and refuses
while anyone else uses the store; the journaled stores fold every journal into
its snapshot, skipping (and naming) a run that is running. Kills during a
compaction are in ``tests/stores/test_gc_kills.py``.
"""

from __future__ import annotations

import os
from pathlib import Path

import pytest

from flowdag.errors import StoreError
from flowdag.state import NodeRecord, NodeState, NodeStatus, RunState
from flowdag.stores._compaction import Compaction
from flowdag.stores.base import Store
from tests.gc_stores import DISK_KINDS, KINDS, cli, held_elsewhere, open_kind, options_of, url_of
from tests.stores.conformance import assert_same_state

ROOT = Path(__file__).resolve().parents[1]


def fill(store: Store, runs: int = 12, size: int = 20_000) -> dict[str, RunState]:
    """Runs with a node committed through the journal (a journal to fold); half deleted."""
    kept = {}
    for i in range(runs):
        run_id = f"r{i}"
        store.save(RunState(run_id, "wf", {"a": NodeState(), "b": NodeState(deps=("a",))}))
        with store.lock(run_id):
            output = os.urandom(size) if i % 2 else [i, "x" * 100]
            record = NodeRecord("a", NodeStatus.COMPLETED, 1, output=store.codec.encode(output))
            store.commit(run_id, [record])
        if i % 2:
            store.delete(run_id)
        else:
            kept[run_id] = store.load(run_id)
    return kept


def check_runs(store: Store, kept: dict[str, RunState]) -> None:
    assert store.list_runs() == sorted(kept)
    for run_id, state in kept.items():
        assert_same_state(store.load(run_id), state, run_id)


def check_writable(store: Store, kept: dict[str, RunState]) -> None:
    """After a compaction the store takes new runs and commits to old ones."""
    store.save(RunState("after", "wf", {"a": NodeState()}))
    run_id = sorted(kept)[0]
    with store.lock(run_id):
        store.load(run_id)
        store.commit(
            run_id, [NodeRecord("b", NodeStatus.COMPLETED, 1, output=store.codec.encode(7))]
        )
    assert store.load(run_id).nodes["b"].output == 7
    assert "after" in store.list_runs()


@pytest.mark.parametrize("kind", KINDS)
def test_compact_keeps_every_run(tmp_path: Path, kind: str) -> None:
    with open_kind(kind, tmp_path) as store:
        kept = fill(store)
        done = store.compact()
        check_runs(store, kept)
        check_writable(store, kept)
    if kind == "memory":
        assert done == Compaction()
        return
    with open_kind(kind, tmp_path, create=False) as store:  # and it opens again
        assert set(kept) <= set(store.list_runs())
        for run_id in kept:
            store.load(run_id)


@pytest.mark.parametrize("kind", ["lmdb", "lmdb-encrypted"])
def test_lmdb_compaction_gives_deleted_pages_back(tmp_path: Path, kind: str) -> None:
    with open_kind(kind, tmp_path) as store:
        kept = fill(store, runs=40, size=100_000)
        data = store.path / "data.mdb"  # type: ignore[attr-defined]
        size = data.stat().st_size
        done = store.compact()
        assert done.bytes_before == size
        assert done.bytes_after == data.stat().st_size
        assert done.bytes_after < done.bytes_before / 2  # 20 of 40 runs of 100 kB were deleted
        check_runs(store, kept)
        # Nothing is left beside the store.
        assert not [p for p in store.path.iterdir() if p.name.startswith(".compact-")]  # type: ignore[attr-defined]
        assert store.compact().bytes_after <= done.bytes_after  # again: nothing more to give


@pytest.mark.parametrize("kind", ["json", "flatbuffers", "json-encrypted"])
def test_journaled_compaction_folds_every_journal(tmp_path: Path, kind: str) -> None:
    with open_kind(kind, tmp_path) as store:
        kept = fill(store)
        done = store.compact()
        assert done.runs == len(kept) and done.skipped == {}
        check_runs(store, kept)
        assert store.compact().runs == 0  # nothing left to fold
    with open_kind(kind, tmp_path) as store:
        check_runs(store, kept)


@pytest.mark.parametrize("kind", ["lmdb", "lmdb-encrypted"])
def test_lmdb_compaction_refused_while_another_process_has_the_store(
    tmp_path: Path, kind: str
) -> None:
    with open_kind(kind, tmp_path) as store:
        kept = fill(store)
        data = store.path / "data.mdb"  # type: ignore[attr-defined]
        before = data.read_bytes()
        with held_elsewhere(kind, tmp_path):
            with pytest.raises(StoreError, match="another process has the store open"):
                store.compact()
            assert data.read_bytes() == before
            check_runs(store, kept)  # still open and usable here
        with held_elsewhere(kind, tmp_path, "r0") as pid, pytest.raises(StoreError) as refused:
            store.compact()
        assert f"run 'r0' is running (pid {pid})" in str(refused.value)
        check_writable(store, kept)
        now = {run_id: store.load(run_id) for run_id in store.list_runs()}
        store.compact()  # nobody else now
        check_runs(store, now)


def test_lmdb_compaction_refused_while_this_process_uses_the_store(tmp_path: Path) -> None:
    with open_kind("lmdb", tmp_path) as store:
        kept = fill(store)
        with open_kind("lmdb", tmp_path) as other:
            with pytest.raises(StoreError, match="1 other store"):
                store.compact()
            check_runs(other, kept)
        with store.lock("r0"), pytest.raises(StoreError, match="running run 'r0'"):
            store.compact()
        store.compact()
        check_runs(store, kept)


@pytest.mark.parametrize("kind", ["json", "flatbuffers"])
def test_journaled_compaction_skips_a_running_run(tmp_path: Path, kind: str) -> None:
    with open_kind(kind, tmp_path) as store:
        kept = fill(store)
        with held_elsewhere(kind, tmp_path, "r0") as pid:
            done = store.compact()
        assert list(done.skipped) == ["r0"] and f"pid {pid}" in done.skipped["r0"]
        assert done.runs == len(kept) - 1
        check_runs(store, kept)
        assert store.compact().runs == 1  # r0, now that it is free


def test_closed_store_refuses(tmp_path: Path) -> None:
    store = open_kind("lmdb", tmp_path)
    store.close()
    with pytest.raises(StoreError, match="closed"):
        store.compact()


# -- flowdag store compact -------------------------------------------------------------


@pytest.mark.parametrize("kind", DISK_KINDS)
def test_cli_store_compact(tmp_path: Path, kind: str) -> None:
    with open_kind(kind, tmp_path) as store:
        kept = fill(store)
    key = options_of(kind).get("key")
    env = {"FLOWDAG_KEY": key} if key else {}
    done = cli("store", "compact", url_of(kind, tmp_path), **env)
    assert done.returncode == 0, done.stderr
    assert done.stdout.startswith(f"compacted {url_of(kind, tmp_path)}: "), done.stdout
    assert " -> " in done.stdout and done.stderr == ""
    with open_kind(kind, tmp_path) as store:
        check_runs(store, kept)


def test_cli_store_compact_refused_and_skipped(tmp_path: Path) -> None:
    with open_kind("lmdb", tmp_path) as store:
        fill(store)
    with open_kind("json", tmp_path) as store:
        fill(store)
    with held_elsewhere("lmdb", tmp_path, "r0"):
        done = cli("store", "compact", url_of("lmdb", tmp_path))
    assert done.returncode == 2 and done.stdout == ""
    assert done.stderr.startswith("flowdag: error: cannot compact ") and "run 'r0'" in done.stderr
    assert len(done.stderr.splitlines()) == 1  # one line, no traceback
    with held_elsewhere("json", tmp_path, "r0"):
        done = cli("store", "compact", url_of("json", tmp_path))
    assert done.returncode == 1, done.stderr
    assert done.stdout.startswith("r0: skipped: run 'r0' is locked")
    assert "1 run skipped" in done.stdout
    missing = cli("store", "compact", f"lmdb://{tmp_path / 'nothing'}")
    assert missing.returncode == 2 and "no store at" in missing.stderr
    assert not (tmp_path / "nothing").exists()
