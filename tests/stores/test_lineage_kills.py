"""SIGKILL at every step of the write orders that bind journals to snapshots.

A child process (forked from `tests.forkserver`: a kill point costs a fork)
does one write (a commit that compacts, the first commit to a run of the
previous release, a save over a run whose snapshot was lost or rolled back) and
kills itself at the N-th sync, rename, link, unlink or truncate; the test then
checks what is on the disk, for N = 1, 2, ... until the write finishes:

- a load gives the state before the write or after it, or (where the run was
  already damaged) refuses it; never another state, never a crash;
- no journal holding commits the snapshot lacks is ever deleted;
- the next writer carries on.
"""

from __future__ import annotations

import os
import shutil
import signal
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest

import flowdag
from flowdag.errors import CorruptStateError, RunNotFoundError
from flowdag.state import NodeRecord, NodeState, NodeStatus, RunState
from flowdag.stores import open_store
from flowdag.stores.base import Store
from tests.forkserver import ForkServer
from tests.stores.fixtures.legacy import KEY, build
from tests.stores.kill_steps import KillAt

LEGACY = Path(__file__).parent / "fixtures" / "legacy"
SCHEMES = ("json", "flatbuffers")


def killed_write_job(url: str, key: str, action: str, kill_at: int) -> None:
    """In a forked child: one write (``action`` "commit" or "save"), killed at its N-th step.

    ``key`` is "-" for none; the child SIGKILLs itself at the ``kill_at``-th sync, rename,
    link, unlink or truncate.
    """
    options: dict[str, Any] = {} if key == "-" else {"key": key}
    kill = KillAt(kill_at)
    with open_store(url, compact_min_bytes=0, **options) as store:
        run_id = store.list_runs()[0] if action == "commit" else "r"
        with store.lock(run_id):
            if action == "commit":
                store.load(run_id)
            kill.patch(os, "fsync", "fdatasync", "replace", "rename", "link", "unlink", "ftruncate")
            if action == "commit":
                record = NodeRecord(
                    "transform", NodeStatus.COMPLETED, 2, output=store.codec.encode([2, 4, 6] * 400)
                )
                store.commit(run_id, [record])
            else:
                store.save(RunState("r", "new", nodes={"fresh": NodeState()}))
    print("done", kill.calls)


def every_kill(
    server: ForkServer,
    make: Callable[[Path], str],
    key: str,
    action: str,
    check: Callable[[str, Path, bool], None],
) -> list[int]:
    """Kill ``action`` at each step in a fresh copy made by ``make``; ``check`` each outcome."""
    steps = []
    for kill_at in range(1, 60):
        where = Path(make(Path(f"k{kill_at}")))
        url = f"{where.name.split('-')[0]}://{where}"
        proc = server.run(killed_write_job, url, key, action, kill_at)
        finished = proc.returncode == 0
        assert finished or proc.returncode == -signal.SIGKILL, proc.stderr
        check(url, where, finished)
        steps.append(kill_at)
        if finished:
            return steps
    pytest.fail("the write never finished")


def files_of(run_dir: Path) -> list[bytes]:
    return [p.read_bytes() for p in run_dir.iterdir() if p.is_file()]


def open_keyed(url: str, key: str) -> Store:
    return open_store(url, **({} if key == "-" else {"key": key}))


@pytest.fixture(params=[False, True], ids=["plain", "encrypted"])
def key(request: pytest.FixtureRequest) -> str:
    return KEY if request.param else "-"


# -- the first commit to a run of the previous release: compacted into format 2 first ---


@pytest.mark.parametrize("scheme", SCHEMES)
def test_first_commit_to_a_legacy_run_killed_at_every_step(
    tmp_path: Path, fork_server: ForkServer, scheme: str, key: str
) -> None:
    source = LEGACY / (scheme if key == "-" else f"{scheme}-encrypted")

    def make(name: Path) -> str:
        where = tmp_path / f"{scheme}-{name}"
        shutil.copytree(source, where)
        return str(where)

    def check(url: str, where: Path, finished: bool) -> None:
        with open_keyed(url, key) as store:
            transform = store.load("legacy").nodes["transform"]
            if finished:
                assert transform.status is NodeStatus.COMPLETED
            assert transform.status in (NodeStatus.FAILED, NodeStatus.COMPLETED)
            if transform.status is NodeStatus.COMPLETED:
                assert transform.output == [2, 4, 6] * 400
            assert store.load("legacy").nodes["extract"].status is NodeStatus.COMPLETED
        # The next writer carries on: the run resumes and finishes.
        calls: list[str] = []
        with open_keyed(url, key) as store:
            result = flowdag.run(build(fail=False, calls=calls), run_id="legacy", store=store)
        assert result.ok and "extract" not in calls

    steps = every_kill(fork_server, make, key, "commit", check)
    assert len(steps) >= 6  # the snapshot, the journal, the old journal's removal, the record


# -- a commit that compacts, in format 2 ------------------------------------------------


@pytest.mark.parametrize("scheme", SCHEMES)
def test_compacting_commit_killed_at_every_step(
    tmp_path: Path, fork_server: ForkServer, scheme: str, key: str
) -> None:
    def make(name: Path) -> str:
        where = tmp_path / f"{scheme}-{name}"
        with open_keyed(f"{scheme}://{where}", key) as store:
            store.save(RunState("r", "wf", nodes={"transform": NodeState(), "other": NodeState()}))
            output = store.codec.encode(1)
            store.commit("r", [NodeRecord("other", NodeStatus.COMPLETED, 1, output=output)])
        return str(where)

    def check(url: str, where: Path, finished: bool) -> None:
        with open_keyed(url, key) as store:
            state = store.load("r")
            assert state.nodes["other"].status is NodeStatus.COMPLETED
            transform = state.nodes["transform"]
            assert transform.status in (NodeStatus.PENDING, NodeStatus.COMPLETED)
            assert finished <= (transform.status is NodeStatus.COMPLETED)
            with store.lock("r"):
                output = store.codec.encode(2)
                record = NodeRecord("other", NodeStatus.COMPLETED, 2, output=output)
                store.commit("r", [record])
            assert store.load("r").nodes["other"].attempts == 2
            assert store.load("r").nodes["transform"].status is transform.status

    steps = every_kill(fork_server, make, key, "commit", check)
    assert len(steps) >= 6


# -- a save over a run whose journal does not belong: set aside, never deleted ----------


def _lost_snapshot(where: Path, scheme: str, key: str) -> bytes:
    with open_keyed(f"{scheme}://{where}", key) as store:
        store.save(RunState("r", "old", nodes={"n": NodeState()}))
        output = store.codec.encode(3)
        store.commit("r", [NodeRecord("n", NodeStatus.COMPLETED, 1, output=output)])
    (snapshot,) = (where / "runs" / "r").glob("snapshot.*")
    snapshot.unlink()
    (journal,) = (where / "runs" / "r").glob("journal-*")
    return journal.read_bytes()


def _rolled_back(where: Path, scheme: str, key: str) -> bytes:
    with open_keyed(f"{scheme}://{where}", key) as store:
        store.save(RunState("r", "old", nodes={"n": NodeState(), "m": NodeState()}))
        (snapshot,) = (where / "runs" / "r").glob("snapshot.*")
        older = snapshot.read_bytes()
        store.save(store.load("r"))  # generation 2
        output = store.codec.encode(3)
        store.commit("r", [NodeRecord("n", NodeStatus.COMPLETED, 1, output=output)])
    snapshot.write_bytes(older)
    (journal,) = (where / "runs" / "r").glob("journal-*")
    return journal.read_bytes()


@pytest.mark.parametrize("damage", [_lost_snapshot, _rolled_back], ids=["lost", "rolled-back"])
@pytest.mark.parametrize("scheme", SCHEMES)
def test_save_over_a_foreign_journal_killed_at_every_step(
    tmp_path: Path,
    fork_server: ForkServer,
    scheme: str,
    key: str,
    damage: Callable[[Path, str, str], bytes],
) -> None:
    kept: dict[Path, bytes] = {}

    def make(name: Path) -> str:
        where = tmp_path / f"{scheme}-{name}"
        kept[where] = damage(where, scheme, key)
        return str(where)

    def check(url: str, where: Path, finished: bool) -> None:
        run_dir = where / "runs" / "r"
        assert kept[where] in files_of(run_dir)  # never deleted, whatever the step
        with open_keyed(url, key) as store:
            outcome: Any
            try:
                outcome = store.load("r")
            except (CorruptStateError, RunNotFoundError) as exc:
                outcome = exc
            if finished:
                assert isinstance(outcome, RunState)
            if isinstance(outcome, RunState):  # the new run, or the restored snapshot alone
                assert all(n.status is NodeStatus.PENDING for n in outcome.nodes.values())
                if finished or outcome.workflow == "new":
                    assert outcome.workflow == "new" and set(outcome.nodes) == {"fresh"}
                else:  # the journal set aside, the new snapshot not yet written
                    assert damage is _rolled_back and set(outcome.nodes) == {"n", "m"}
            elif not isinstance(outcome, RunNotFoundError):
                assert "'r'" in str(outcome) and "journal-" in str(outcome)
            store.save(RunState("r", "new", nodes={"fresh": NodeState()}))
            with store.lock("r"):
                output = store.codec.encode(4)
                record = NodeRecord("fresh", NodeStatus.COMPLETED, 1, output=output)
                store.commit("r", [record])
            assert store.load("r").nodes["fresh"].output == 4
        assert kept[where] in files_of(run_dir)

    steps = every_kill(fork_server, make, key, "save", check)
    assert len(steps) >= 4
