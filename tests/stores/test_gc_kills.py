"""SIGKILL at every step of ``store compact`` and of ``gc``: the store always loads after.

A subprocess compacts (or collects) a store and kills itself at the N-th
system call that changes the disk (``fsync``, ``rename``, ``unlink``,
``ftruncate``...), for N = 1, 2, ... until the work finishes. After each kill:

- the store opens and every run that was there loads, equal to what it was;
- the next compaction (or gc) finishes, and leaves nothing of the killed one.
"""

from __future__ import annotations

import os
import signal
import subprocess
import sys
from collections.abc import Callable
from pathlib import Path

import pytest

from flowdag.state import RunState
from flowdag.stores.base import Store
from tests.gc_stores import open_kind, options_of, url_of
from tests.stores.conformance import ROOT, assert_same_state
from tests.stores.kill_steps import KILLING
from tests.test_gc_compact import fill

#: The calls a child is killed at: every one that changes what is on the disk.
CALLS = ("fsync", "fdatasync", "ftruncate", "rename", "replace", "link", "unlink", "rmdir", "mkdir")

# argv: url, key ("-": none), kill_at, action ("compact" or "gc").
KILLED = (
    """
import os, signal, sys
import flowdag
from flowdag.stores import open_store

url, key, kill_at, action = sys.argv[1], sys.argv[2], int(sys.argv[3]), sys.argv[4]
options = {} if key == "-" else {"key": key}
calls = 0
"""
    + KILLING
    + f"""
with open_store(url, create=False, **options) as store:
    for name in {CALLS!r}:
        setattr(os, name, killing(getattr(os, name)))
    if action == "compact":
        store.compact()
    else:
        flowdag.gc(store, grace=0)
print("done", calls)
"""
)


def killed(kind: str, root: Path, kill_at: int, action: str) -> subprocess.CompletedProcess[str]:
    key = options_of(kind).get("key", "-")
    return subprocess.run(
        [sys.executable, "-c", KILLED, url_of(kind, root), key, str(kill_at), action],
        capture_output=True,
        text=True,
        env={**os.environ, "PYTHONPATH": str(ROOT)},
        timeout=120,
    )


def every_kill(
    kind: str,
    tmp_path: Path,
    action: str,
    make: Callable[[Store], dict[str, RunState]],
    check: Callable[[Store, dict[str, RunState], bool], None],
) -> int:
    """Kill ``action`` at each step, each time in a fresh store made by ``make``; steps taken."""
    for kill_at in range(1, 400):
        root = tmp_path / f"k{kill_at}"
        with open_kind(kind, root) as store:
            expected = make(store)
        proc = killed(kind, root, kill_at, action)
        finished = proc.returncode == 0
        assert finished or proc.returncode == -signal.SIGKILL, proc.stderr
        with open_kind(kind, root, create=False) as store:
            check(store, expected, finished)
        if finished:
            return kill_at
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
def test_compact_killed_at_every_step(tmp_path: Path, kind: str) -> None:
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

    steps = every_kill(kind, tmp_path, "compact", lambda store: fill(store, runs=6), check)
    assert steps >= (6 if kind.startswith("lmdb") else 10)
