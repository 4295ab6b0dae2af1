"""LMDB stores of the release that keyed entries by a hash of the name (layout 1).

``fixtures/legacy7`` was written by that release (see ``fixtures/legacy7.py``),
plain and encrypted: a run that failed part way and a completed one. They must
load as they are (a read never rewrites a run), resume running only what did
not complete (the resume's first commit moves the run to layout 2, all in its
transaction), and be copied, compacted, collected and deleted like any run. A
kill -9 at any step of the resume leaves the run whole, in one layout or the
other, and the resume then finishes it. The same release's JSON and
FlatBuffers stores (their format unchanged) load and resume too.
"""

from __future__ import annotations

import os
import shutil
import signal
from pathlib import Path
from typing import Any

import lmdb
import msgpack
import pytest

import flowdag
from flowdag.state import NodeStatus, RunState
from flowdag.stores import Store, _lmdb_runs, open_store
from flowdag.stores.transfer import copy_run, verify_run
from tests.forkserver import ForkServer
from tests.stores.fixtures import legacy7
from tests.stores.kill_steps import KillAt
from tests.stores.test_history_fixtures import copy_fixture

ENCRYPTED = pytest.mark.parametrize("encrypted", [False, True], ids=["plain", "encrypted"])
DONE = flowdag.NodeStatus.COMPLETED


def _options(encrypted: bool) -> dict[str, Any]:
    return {"key": legacy7.KEY} if encrypted else {}


def layouts(path: Path) -> dict[str, int]:
    """Run id -> layout, read raw from the store's files (no store may have them open)."""
    found = {}
    with lmdb.open(str(path), max_dbs=5, create=False) as env:
        runs = env.open_db(b"runs", create=False)
        nodes = env.open_db(b"nodes", create=False)
        with env.begin() as txn:
            for run_id in txn.cursor(runs).iternext(values=False):
                marked = txn.get(run_id + b"\x00", db=nodes) is not None
                found[run_id.decode()] = 2 if marked else 1
    return found


def check_failed_run(state: RunState) -> None:
    """``legacy7`` as that release left it: ``flaky`` failed, ``after`` skipped, the rest done."""
    statuses = {name: node.status for name, node in state.nodes.items()}
    assert statuses == {
        **dict.fromkeys(legacy7.NODES, DONE),
        "flaky": NodeStatus.FAILED,
        "after": NodeStatus.SKIPPED,
    }
    check_outputs(state, set(legacy7.NODES) - {"flaky", "after"})


def digest_forms(store: Store, run_id: str) -> dict[str, type]:
    """Node -> the type of the code digest its stored record holds: `str` (hex, as
    the previous release wrote, header format 5) or `bytes` (this release, format 6)."""
    forms = {}
    for name, node in store._load(run_id).nodes.items():
        meta = store.codec.decode(node.meta)
        if len(meta) == 8 and meta[7][0] is not None:
            forms[name] = type(msgpack.unpackb(meta[7][0], raw=False)["fp"])
    return forms


def check_outputs(state: RunState, names: set[str]) -> None:
    for name in names:
        if name in legacy7.OUTPUTS:
            assert state.nodes[name].output == legacy7.OUTPUTS[name], name
    assert state.data == legacy7.DATA


@ENCRYPTED
def test_both_runs_load_without_being_rewritten(tmp_path: Path, encrypted: bool) -> None:
    url = copy_fixture(tmp_path, "legacy7", "lmdb", encrypted)
    with open_store(url, create=False, **_options(encrypted)) as store:
        assert store.list_runs() == [legacy7.RUN_ID, legacy7.DONE_ID]
        check_failed_run(store.load(legacy7.RUN_ID))
        done = store.load(legacy7.DONE_ID)
        assert {node.status for node in done.nodes.values()} == {DONE}
        check_outputs(done, set(legacy7.NODES))
        statuses = store.load_statuses(legacy7.DONE_ID)
        assert {name: n.status for name, n in statuses.nodes.items()} == dict.fromkeys(
            legacy7.NODES, DONE
        )
    assert layouts(tmp_path / "store") == {legacy7.RUN_ID: 1, legacy7.DONE_ID: 1}


@ENCRYPTED
def test_the_failed_run_resumes_and_moves_to_the_new_layout(
    tmp_path: Path, encrypted: bool
) -> None:
    url = copy_fixture(tmp_path, "legacy7", "lmdb", encrypted)
    with open_store(url, create=False, **_options(encrypted)) as store:
        before = store.load(legacy7.RUN_ID)
        calls: list[str] = []
        result = flowdag.run(legacy7.build(calls), run_id=legacy7.RUN_ID, store=store)
        assert result.ok, result.errors
        assert sorted(calls) == ["after", "flaky"]
        assert result.outputs == {
            name: value
            for name, value in result.outputs.items()
            if name not in legacy7.OUTPUTS or value == legacy7.OUTPUTS[name]
        }
        after = store.load(legacy7.RUN_ID)
        check_outputs(after, set(legacy7.NODES))
        for name in set(legacy7.NODES) - {"flaky", "after"}:  # moved as they were
            assert after.nodes[name] == before.nodes[name], name
        again: list[str] = []
        assert flowdag.run(legacy7.build(again), run_id=legacy7.RUN_ID, store=store).ok
        assert again == []
    assert layouts(tmp_path / "store") == {legacy7.RUN_ID: 2, legacy7.DONE_ID: 1}
    with open_store(url, create=False, **_options(encrypted)) as store:
        assert store.load(legacy7.RUN_ID) == after


@ENCRYPTED
def test_old_runs_copy_compact_collect_and_delete(tmp_path: Path, encrypted: bool) -> None:
    url = copy_fixture(tmp_path, "legacy7", "lmdb", encrypted)
    options = _options(encrypted)
    with open_store(url, create=False, **options) as store:
        done = store.load(legacy7.DONE_ID)
        flowdag.gc(store)
        store.compact()
        assert store.load(legacy7.DONE_ID) == done
        for run_id in (legacy7.RUN_ID, legacy7.DONE_ID):
            assert verify_run(store, run_id) is None  # `flowdag store verify`
        for target in ("json", "lmdb"):  # `flowdag store convert`
            with open_store(f"{target}://{tmp_path / target}") as copy:
                for run_id in (legacy7.RUN_ID, legacy7.DONE_ID):
                    copy_run(store, copy, run_id)
                assert copy.load(legacy7.DONE_ID) == done
                check_failed_run(copy.load(legacy7.RUN_ID))
    assert layouts(tmp_path / "lmdb") == {legacy7.RUN_ID: 2, legacy7.DONE_ID: 2}
    with open_store(url, create=False, **options) as store:
        assert store.delete(legacy7.DONE_ID)
        assert store.list_runs() == [legacy7.RUN_ID]
        check_failed_run(store.load(legacy7.RUN_ID))


# -- kill -9 at every step of the resume of a layout 1 run ----------------------------------


def killed_resume(url: str, kill_at: int) -> None:
    """In a forked child: resume ``legacy7``, SIGKILLing itself at the ``kill_at``-th step.

    The steps are the calls that make or write a run's entries (LMDB writes and
    syncs in C, inside the transaction these calls fill) and the check after a
    commit: the moving of the run, and every commit of the resume.
    """
    kill = KillAt(kill_at)
    kill.patch(_lmdb_runs, "pack_named", "delete_range")
    store = open_store(url, create=False)
    kill.patch(type(store), "_move_to_layout", "_check_same_file")
    result = flowdag.run(legacy7.build(), run_id=legacy7.RUN_ID, store=store)
    assert result.ok, result.errors
    os._exit(0)


def test_a_resume_killed_at_every_step_leaves_the_run_whole(
    tmp_path: Path, fork_server: ForkServer
) -> None:
    base = tmp_path / "fixture"
    shutil.copytree(Path(legacy7.__file__).parent / "legacy7" / "lmdb", base)
    kill_at, seen = 0, set()
    while True:
        kill_at += 1
        work = tmp_path / f"at-{kill_at}"
        shutil.copytree(base, work)
        status = fork_server.run(killed_resume, f"lmdb://{work}", kill_at).returncode
        assert status in (0, -signal.SIGKILL), f"the child failed (exit status {status})"
        layout = layouts(work)[legacy7.RUN_ID]
        seen.add(layout)
        with open_store(f"lmdb://{work}", create=False) as store:
            state = store.load(legacy7.RUN_ID)
            if layout == 1:  # killed before the first commit: as that release left it
                check_failed_run(state)
            flaky, after = state.nodes["flaky"].status, state.nodes["after"].status
            assert after is not DONE or flaky is DONE
            check_outputs(state, {name for name, n in state.nodes.items() if n.status is DONE})
            calls: list[str] = []
            result = flowdag.run(legacy7.build(calls), run_id=legacy7.RUN_ID, store=store)
            assert result.ok, result.errors
            assert set(calls) <= {"flaky", "after"}
            assert len(calls) == len(set(calls))
            check_outputs(store.load(legacy7.RUN_ID), set(legacy7.NODES))
        assert layouts(work)[legacy7.RUN_ID] == 2
        shutil.rmtree(work)
        if status == 0:
            break
    assert seen == {1, 2} and kill_at > 10  # killed before, inside and after the move


@ENCRYPTED
@pytest.mark.parametrize("kind", ["json", "flatbuffers"])
def test_journal_stores_of_that_release_load_and_resume(
    tmp_path: Path, kind: str, encrypted: bool
) -> None:
    """The same runs in that release's JSON and FlatBuffers stores (their files'
    format is unchanged; their records were format 5, and a resume writes format 6
    beside them): they load, and the failed one resumes running only what failed."""
    url = copy_fixture(tmp_path, "legacy7", kind, encrypted)
    with open_store(url, create=False, **_options(encrypted)) as store:
        assert sorted(store.list_runs()) == sorted([legacy7.RUN_ID, legacy7.DONE_ID])
        check_failed_run(store.load(legacy7.RUN_ID))
        check_outputs(store.load(legacy7.DONE_ID), set(legacy7.NODES))
        calls: list[str] = []
        result = flowdag.run(legacy7.build(calls), run_id=legacy7.RUN_ID, store=store)
        assert result.ok, result.errors
        assert sorted(calls) == ["after", "flaky"]
        check_outputs(store.load(legacy7.RUN_ID), set(legacy7.NODES))
        assert verify_run(store, legacy7.DONE_ID) is None


@ENCRYPTED
@pytest.mark.parametrize("kind", ["lmdb", "json", "flatbuffers"])
def test_runs_of_that_release_hold_no_seal_and_are_planned_as_before(
    tmp_path: Path, kind: str, encrypted: bool
) -> None:
    """That release wrote no seals (`flowdag._seal`), and its workflow has a map,
    which is never sealed: every call of its runs is loaded and planned, and a
    completed one calls nothing."""
    url = copy_fixture(tmp_path, "legacy7", kind, encrypted)
    with open_store(url, create=False, **_options(encrypted)) as store:
        for run_id in (legacy7.DONE_ID, legacy7.RUN_ID):
            assert store._sealed(run_id) is None
            calls: list[str] = []
            first = flowdag.run(legacy7.build(calls), run_id=run_id, store=store)
            assert first.ok and sorted(calls) == (
                [] if run_id == legacy7.DONE_ID else ["after", "flaky"]
            )
            again = flowdag.run(legacy7.build(calls), run_id=run_id, store=store)
            assert type(again.nodes) is dict and dict(again.nodes) == store.load(run_id).nodes
            assert store._sealed(run_id) is None
            check_outputs(store.load(run_id), set(legacy7.NODES))


@ENCRYPTED
@pytest.mark.parametrize("kind", ["lmdb", "json", "flatbuffers"])
def test_a_resume_that_keeps_the_run_writes_format_6_beside_format_5(
    tmp_path: Path, kind: str, encrypted: bool
) -> None:
    """Resumed with its own ttl (nothing to save whole), a run of that release
    holds the records it wrote (format 5: hex digests) beside those of the nodes
    this release ran (format 6: digests as bytes); it loads, and runs nothing again."""
    url = copy_fixture(tmp_path, "legacy7", kind, encrypted)
    with open_store(url, create=False, **_options(encrypted)) as store:
        assert set(digest_forms(store, legacy7.DONE_ID).values()) == {str}
        before = store.load(legacy7.RUN_ID)
        calls: list[str] = []
        run = flowdag.run(legacy7.build(calls), run_id=legacy7.RUN_ID, store=store, ttl=legacy7.TTL)
        assert run.ok and sorted(calls) == ["after", "flaky"]
        forms = digest_forms(store, legacy7.RUN_ID)
        assert forms["flaky"] is bytes and forms["after"] is bytes and forms["source"] is str
        after = store.load(legacy7.RUN_ID)
        check_outputs(after, set(legacy7.NODES))
        for name in set(legacy7.NODES) - {"flaky", "after"}:
            assert after.nodes[name] == before.nodes[name], name
        fingerprint = after.nodes["flaky"].provenance.fingerprint  # read back as hex text
        assert type(fingerprint) is str and bytes.fromhex(fingerprint).hex() == fingerprint
        again: list[str] = []
        assert flowdag.run(legacy7.build(again), run_id=legacy7.RUN_ID, store=store).ok
        assert again == []
