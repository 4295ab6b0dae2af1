"""SIGKILL during a map, on every disk store: completed items never run again.

A child process runs `workflow` (``extract`` -> map ``work`` over `ITEMS`
items -> ``total``), one attempt at a time, and kills itself at the N-th call of
a step that changes the disk (``write``, ``fsync``, ``rename``... and, for LMDB,
which writes in its C library, its record and commit writers), as in
``tests/test_kv_kills.py``: every step where there are at most `POINTS`. Each
item logs its call to a file. After each kill, from the store opened afresh in
this process:

- if any item has a record, the map node's record holds the expansion (one
  digest per item): it is committed before any item's;
- a resume (a child that is not killed) completes the run with the right list,
  and calls none of the items the store held as completed after the kill.

The cached variant maps over a list with repeated items and ``cache=True``
(equal items compute once, the others complete from the first's entry, in
the commit after it): the same holds, and the cache ends with one entry per
distinct item.
"""

from __future__ import annotations

import os
import shutil
from pathlib import Path

import pytest

import flowdag
from flowdag import Context, NodeStatus, Workflow
from flowdag._cache_entries import cache_entries
from flowdag._fingerprint import Fingerprinter, node_fingerprints
from flowdag.errors import RunNotFoundError
from flowdag.stores import lmdb_store, open_store
from tests.forkserver import ForkServer
from tests.stores.kill_steps import KillAt

ITEMS = 6
REPEATED = [0, 1, 0, 2, 1, 0]  # the cached variant's list: three distinct items
POINTS = 30
KINDS = ["lmdb", "json", "flatbuffers"]
CALLS = ("write", "pwrite", "fsync", "fdatasync", "ftruncate", "rename", "replace", "unlink")


def work(item: int, ctx: Context) -> int:
    with open(os.environ["FLOWDAG_MAP_LOG"], "a") as log:  # not a kill point: not os.write
        log.write(ctx.node + "\n")
    return item * item


def workflow(cached: bool = False) -> Workflow:
    wf = Workflow("map-kills")
    items = REPEATED if cached else list(range(ITEMS))
    wf.add_node("extract", lambda: items)
    wf.map("work", work, over="extract", cache=cached)
    wf.add_node("total", lambda work: list(work), deps=["work"])
    return wf


def warm_job() -> None:
    """In the fork server, once: the fingerprints every run computes first."""
    node_fingerprints(workflow().build(), Fingerprinter())
    node_fingerprints(workflow(cached=True).build(), Fingerprinter())


def run_job(url: str, log: str, kill_at: int, cached: bool) -> None:
    """In a forked child: run `workflow`, SIGKILLing itself at the ``kill_at``-th step
    (0: never; then it prints how many steps it made)."""
    os.environ["FLOWDAG_MAP_LOG"] = log
    kill = KillAt(kill_at)
    store = open_store(url, create=False)
    if url.startswith("lmdb"):  # LMDB writes and syncs in C: kill around it
        kill.patch(lmdb_store, "put_entry")
        kill.patch(type(store), "_header", "_put_commit")
    os.fsync = os.fdatasync = lambda fd: None  # a SIGKILL loses nothing the kernel has
    kill.patch(os, *CALLS)
    flowdag.run(workflow(cached), run_id="r", store=store, max_workers=1)
    print("steps", kill.calls)


def logged(log: Path) -> list[str]:
    return log.read_text().split() if log.exists() else []


@pytest.mark.parametrize("cached", [False, True], ids=["plain", "cached"])
@pytest.mark.parametrize("kind", KINDS)
def test_completed_items_never_run_again_after_a_kill(
    fork_server: ForkServer, tmp_path: Path, kind: str, cached: bool
) -> None:
    values = REPEATED if cached else list(range(ITEMS))
    with open_store(f"{kind}://{tmp_path / 'template'}"):  # a new store, copied for each point
        pass
    fork_server.warm(warm_job)
    shutil.copytree(tmp_path / "template", tmp_path / "whole")
    whole = fork_server.run(
        run_job, f"{kind}://{tmp_path / 'whole'}", str(tmp_path / "whole.log"), 0, cached
    )
    assert whole.returncode == 0, whole.stderr
    total = int(whole.stdout.split()[-1])
    assert total > ITEMS
    points = sorted({1 + i * (total - 1) // (POINTS - 1) for i in range(POINTS)})
    killed = 0
    for kill_at in points:
        root, log = tmp_path / str(kill_at), tmp_path / f"{kill_at}.log"
        shutil.copytree(tmp_path / "template", root)
        url = f"{kind}://{root}"
        code = fork_server.run(run_job, url, str(log), kill_at, cached).returncode
        # Group commit batches as the threads go: a run may make fewer steps than the first.
        assert code in (-9, 0), f"the child exited {code} at kill point {kill_at} of {total}"
        killed += code == -9
        with open_store(url, create=False) as store:
            try:
                nodes = store.load("r").nodes
            except RunNotFoundError:
                nodes = {}
        items = {n: s for n, s in nodes.items() if n.startswith("work[")}
        completed = {n for n, s in items.items() if s.status is NodeStatus.COMPLETED}
        if items and nodes["work"].status is NodeStatus.RUNNING:
            assert len(nodes["work"].output) == ITEMS, f"kill at {kill_at}: no expansion"
        before = len(logged(log))
        resumed = fork_server.run(run_job, url, str(log), 0, cached)
        assert resumed.returncode == 0, resumed.stderr
        again = set(logged(log)[before:])
        assert not again & completed, f"kill at {kill_at} of {total}: {again & completed} ran again"
        with open_store(url, create=False) as store:
            state = store.load("r")
        assert state.status == "completed", f"kill at {kill_at}"
        assert state.nodes["total"].output == [i * i for i in values]
        if cached:
            with open_store(url, create=False) as store:
                entries = cache_entries(store, "work")
            assert len(entries) == len(set(values)), f"kill at {kill_at}: {entries}"
    assert killed >= len(points) * 3 // 4, f"killed at {killed} of {len(points)} points only"
