"""SIGKILL at every step of a run whose nodes update kv counters: each update lands exactly once.

A child process runs `workflow`: each node adds 1 to every counter of
`COUNTERS` it is an updater of (each counter has its own set of nodes) and
sets ``done:NODE``. The child kills itself at the N-th call of any step that
changes the disk (``write``, ``fsync``, ``rename``...), of the store's table
transaction (before it, and again after it returns) or, for LMDB (which
writes and syncs in its C library), of its record writer, commit writer and
post-commit check. A first child runs to the end and counts those steps;
then N goes over them, every one where they are at most `POINTS`, else
`POINTS` evenly spread over the run: at least 50 kill points per disk store
kind (every step of the journal stores' table transactions is killed in
``tests/stores/test_table_kills.py``). After each kill, from the store opened
afresh in this process:

- each counter equals the number of completed nodes (in the stored run)
  that update it, and ``done:NODE`` is there exactly for the completed nodes:
  a node's kv writes are durable exactly when its completion is;
- a resume (a child that is not killed) completes the run, and then each
  counter is the number of nodes that update it: one update per node, none
  lost or applied twice.

The children are forked from `tests.forkserver`, a process that imported
flowdag once, so a kill point costs a fork, not an interpreter start; a child counts its
syncs as kill points but does not make them (a SIGKILL, unlike a power loss,
loses nothing the kernel has), which keeps the file cheap.
"""

from __future__ import annotations

import os
import shutil
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest

import flowdag
from flowdag import Context, NodeStatus, Workflow
from flowdag._fingerprint import Fingerprinter, node_fingerprints
from flowdag.errors import RunNotFoundError
from flowdag.stores import lmdb_store, open_store
from tests.forkserver import ForkServer
from tests.kv_stores import DISK_KINDS, open_kind, url_of
from tests.stores.kill_steps import KillAt

NODES = 6
POINTS = 56
#: Each counter and the nodes (by index) that add 1 to it.
COUNTERS = (
    ("count", range(NODES)),
    ("even", range(0, NODES, 2)),
    ("odd", range(1, NODES, 2)),
    ("third", range(0, NODES, 3)),
    ("late", range(NODES // 2, NODES)),
)
CALLS = ("write", "pwrite", "fsync", "fdatasync", "ftruncate", "rename", "replace", "unlink")


def count_and_mark(ctx: Context, **deps: object) -> None:
    index = int(ctx.node[1:])
    for counter, updaters in COUNTERS:
        if index in updaters:
            ctx.kv.update(counter, lambda old: (old or 0) + 1)
    ctx.kv.set(f"done:{ctx.node}", ctx.attempt)


def expected(completed: set[str]) -> dict[str, int]:
    """What each counter must hold once the nodes of ``completed`` have completed."""
    indexes = {int(name[1:]) for name in completed}
    return {counter: len(indexes.intersection(nodes)) for counter, nodes in COUNTERS}


def workflow() -> Workflow:
    """A chain, so that each node commits on its own: a kill point or two per node."""
    wf = Workflow("kv-kills")
    for i in range(NODES):
        wf.add_node(f"n{i}", count_and_mark, deps=[f"n{i - 1}"] if i else [])
    return wf


def warm_job() -> None:
    """In the fork server, once: what every run computes first (its nodes' fingerprints)."""
    node_fingerprints(workflow().build(), Fingerprinter())


def killing_after(kill: KillAt, real: Callable[..., Any]) -> Callable[..., Any]:
    """``real`` wrapped so that ``kill`` counts a step before the call and again after it."""
    before, after = kill.wrap(real), kill.wrap(lambda result: result)

    def wrapped(*args: Any, **kwargs: Any) -> Any:
        return after(before(*args, **kwargs))

    return wrapped


def run_job(url: str, kill_at: int) -> None:
    """In a forked child: run `workflow`, SIGKILLing itself at the ``kill_at``-th step.

    With ``kill_at`` 0 it is never killed, and prints how many steps it made.
    """
    kill = KillAt(kill_at)
    store = open_store(url, create=False)
    cls = type(store)
    cls._transact_tables = killing_after(kill, cls._transact_tables)  # type: ignore[method-assign]
    if url.startswith("lmdb"):  # LMDB writes and syncs in C: kill around it
        kill.patch(lmdb_store, "put_entry")
        kill.patch(cls, "_header", "_put_commit", "_check_same_file")
    # A SIGKILL loses nothing the kernel has: the syncs are kill points, but are not
    # made (only a power loss tells a made one apart, and they cost most of the time).
    os.fsync = os.fdatasync = lambda fd: None
    kill.patch(os, *CALLS)
    flowdag.run(workflow(), run_id="r", store=store, max_workers=1)
    print("steps", kill.calls)


@pytest.mark.parametrize("kind", DISK_KINDS)
def test_kv_writes_land_exactly_once_at_every_kill(
    fork_server: ForkServer, tmp_path: Path, kind: str
) -> None:
    with open_kind(kind, tmp_path / "template"):  # a new store (skipped while it keeps no tables)
        pass
    shutil.copytree(tmp_path / "template", tmp_path / "whole")
    fork_server.warm(warm_job)  # the children inherit what it read
    whole = fork_server.run(run_job, url_of(kind, tmp_path / "whole"), 0)
    assert whole.returncode == 0, whole.stderr
    total = int(whole.stdout.split()[-1])
    assert total > 2 * NODES  # two per node's transaction at least
    points = sorted({1 + i * (total - 1) // (POINTS - 1) for i in range(POINTS)})
    assert len(points) >= 50, f"only {len(points)} kill points of {total} steps"
    for kill_at in points:
        root = tmp_path / str(kill_at)
        shutil.copytree(tmp_path / "template", root)  # a new store, copied: cheaper than made
        code = fork_server.run(run_job, url_of(kind, root), kill_at).returncode
        assert code == -9, f"the child exited {code} at kill point {kill_at} of {total}"
        with open_kind(kind, root) as store:
            try:
                nodes = store.load("r").nodes
            except RunNotFoundError:
                nodes = {}
            completed = {n for n, s in nodes.items() if s.status is NodeStatus.COMPLETED}
            kv = store.kv()
            counts = {counter: kv.get(counter, default=0) for counter, _ in COUNTERS}
            assert counts == expected(completed), f"kill at {kill_at} of {total}"
            assert {key for key, _ in kv.items("done:")} == {f"done:{n}" for n in completed}
        # The resume runs in a child too (it runs to the end: kill point 0).
        resumed = fork_server.run(run_job, url_of(kind, root), 0)
        assert resumed.returncode == 0, resumed.stderr
        with open_kind(kind, root) as store:
            assert store.load("r").status == "completed"
            kv = store.kv()
            counts = {counter: kv.get(counter) for counter, _ in COUNTERS}
            assert counts == expected({f"n{i}" for i in range(NODES)}), f"kill at {kill_at}"
