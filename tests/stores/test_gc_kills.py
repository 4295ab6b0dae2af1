"""SIGKILL at every step of ``store compact`` and of ``gc``: the store always loads after.

A child process (forked from `tests.forkserver`: a kill point costs a fork)
compacts (or collects) a store and kills itself at the N-th system call that
changes the disk (``fsync``, ``rename``, ``unlink``,
``ftruncate``...), for N = 1, 2, ... until the work finishes. After each kill:

- the store opens and every run that was there loads, equal to what it was;
- the next compaction (or gc) finishes, and leaves nothing of the killed one.
"""

from __future__ import annotations

import os
import shutil
import signal
import subprocess
from collections.abc import Callable
from pathlib import Path
from typing import Any, TypeVar

import pytest

import flowdag
from flowdag.state import RunState
from flowdag.stores import open_store
from flowdag.stores.base import Store
from tests.forkserver import ForkServer
from tests.gc_stores import HOUR, age_all, open_kind, options_of, url_of
from tests.stores.conformance import assert_same_state
from tests.stores.kill_steps import KillAt
from tests.test_gc_compact import fill
from tests.test_gc_runs import outputs, start

T = TypeVar("T")

#: The calls a child is killed at: every one that changes what is on the disk.
CALLS = ("fsync", "fdatasync", "ftruncate", "rename", "replace", "link", "unlink", "rmdir", "mkdir")


def killed_job(url: str, key: str, kill_at: int, action: str) -> None:
    """In a forked child: compact (``action`` "compact") or collect the store at ``url``.

    ``key`` is "-" for none; the child SIGKILLs itself at the ``kill_at``-th call of `CALLS`.
    """
    options = {} if key == "-" else {"key": key}
    kill = KillAt(kill_at)
    with open_store(url, create=False, **options) as store:
        kill.patch(os, *CALLS)
        if action == "compact":
            store.compact()
        else:
            flowdag.gc(store)
    print("done", kill.calls)


def killed(
    server: ForkServer, kind: str, root: Path, kill_at: int, action: str
) -> subprocess.CompletedProcess[str]:
    key = options_of(kind).get("key", "-")
    return server.run(killed_job, url_of(kind, root), key, kill_at, action)


def every_kill(
    server: ForkServer,
    kind: str,
    tmp_path: Path,
    action: str,
    make: Callable[[Path], T],
    check: Callable[[Store, T, bool], None],
) -> int:
    """Kill ``action`` at each step, each time in a fresh store made by ``make``; steps taken.

    An encrypted store takes the same steps as its plain kind plus its sealing,
    so it is killed at every third step only, to keep the suite's time.
    """
    stride = 3 if kind.endswith("-encrypted") else 1
    for kill_at in range(1, 400, stride):
        root = tmp_path / f"k{kill_at}"
        expected = make(root)
        proc = killed(server, kind, root, kill_at, action)
        finished = proc.returncode == 0
        assert finished or proc.returncode == -signal.SIGKILL, proc.stderr
        with open_kind(kind, root, create=False) as store:
            check(store, expected, finished)
        if finished:
            return kill_at  # (with a stride: at least the steps taken)
    pytest.fail(f"{action} never finished")


def check_loads(store: Store, expected: dict[str, RunState]) -> None:
    assert set(expected) <= set(store.list_runs())
    for run_id, state in expected.items():
        assert_same_state(store.load(run_id), state, run_id)


# -- store compact ---------------------------------------------------------------------


@pytest.mark.slow
@pytest.mark.parametrize(
    "kind", ["lmdb", "json", "flatbuffers", "lmdb-encrypted", "json-encrypted"]
)
def test_compact_killed_at_every_step(tmp_path: Path, fork_server: ForkServer, kind: str) -> None:
    def check(store: Store, expected: dict[str, RunState], finished: bool) -> None:
        check_loads(store, expected)
        store.compact()  # the next compaction finishes...
        check_loads(store, expected)
        path = store.path  # type: ignore[attr-defined]
        leftovers = [p.name for p in path.iterdir() if p.name.startswith(".compact-")]
        assert leftovers == []  # ...and leaves nothing of the killed one
        if kind.startswith("json"):
            for run_id in expected:  # every journal folded: a header, no record
                assert store.compact().runs == 0, run_id

    def make(root: Path) -> dict[str, RunState]:
        with open_kind(kind, root) as store:
            return fill(store, runs=6)

    steps = every_kill(fork_server, kind, tmp_path, "compact", make, check)
    assert steps >= (6 if kind.startswith("lmdb") else 10)


# -- gc ----------------------------------------------------------------------------------


def gc_template(kind: str, root: Path) -> dict[str, dict[str, Any]]:
    """Live runs, expired runs sharing a blob with them, orphans and temp leftovers, all old.

    Returns the live runs' outputs, as values.
    """
    with open_kind(kind, root) as store:
        for i in range(3):
            start(store, f"live-{i}")
        for i in range(4):
            start(store, f"gone-{i}", expired=True)
        area = store.blobs
        for i in range(8):
            area.put(f"orphan {i} ".encode() * 50)
        temp = Path(area.locate("0" * 64)).parent.parent / "tmp"
        for i in range(2):  # what writers killed before their rename leave
            (temp / f"left{i}.tmp").write_bytes(b"x" * 100)
        age_all(store)
        for entry in area.temp_entries():
            path = temp / entry.name
            os.utime(path, (entry.mtime - 2 * HOUR, entry.mtime - 2 * HOUR))
        return {f"live-{i}": outputs(store, f"live-{i}") for i in range(3)}


def check_collected(store: Store, live: dict[str, dict[str, Any]]) -> None:
    """Every live run loads with its outputs; what is left is exactly the live runs' blobs."""
    assert set(live) <= set(store.list_runs())
    for run_id, values in live.items():
        assert outputs(store, run_id) == values, run_id
    area = store.blobs
    held = {area.name_of(s) for run_id in live for s in store.life(run_id).blobs}
    assert {entry.name for entry in area.entries()} == held
    assert area.temp_entries() == []
    assert sorted(store.list_runs()) == sorted(live)  # no expired run left


@pytest.mark.slow
@pytest.mark.parametrize(
    "kind", ["lmdb", "json", "flatbuffers", "lmdb-encrypted", "json-encrypted"]
)
def test_gc_killed_at_every_step(tmp_path: Path, fork_server: ForkServer, kind: str) -> None:
    template = tmp_path / "template"
    live = gc_template(kind, template)

    def make(root: Path) -> dict[str, dict[str, Any]]:
        shutil.copytree(template, root)  # mtimes kept: the blobs stay old
        return live

    def check(store: Store, live: dict[str, dict[str, Any]], finished: bool) -> None:
        for run_id, values in live.items():  # after the kill: every live run whole
            assert outputs(store, run_id) == values, run_id
        if not finished:
            report = flowdag.gc(store)  # the next gc finishes the work...
            assert not report.busy and report.swept  # (the killed one's lock went with it)
        check_collected(store, live)
        again = flowdag.gc(store)  # ...and a gc after it finds nothing
        assert (again.runs, again.blobs, again.temp, again.bytes_freed) == (0, 0, 0, 0)

    steps = every_kill(fork_server, kind, tmp_path, "gc", make, check)
    assert steps >= 50
