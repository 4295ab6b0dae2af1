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

The children are forked from one server process that imported flowdag once,
so a kill point costs a fork, not an interpreter start; a child counts its
syncs as kill points but does not make them (a SIGKILL, unlike a power loss,
loses nothing the kernel has), which keeps the file cheap.
"""

from __future__ import annotations

import json
import shutil
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import pytest

from flowdag import Context, NodeStatus, Workflow
from flowdag.errors import RunNotFoundError
from tests.kv_stores import DISK_KINDS, open_kind, url_of
from tests.stores.conformance import ROOT

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


# Reads one JSON request a line ({"url", "kill_at", "steps"}), forks a child that runs
# the workflow and kills itself at the kill_at-th step (0: never; it then writes how many
# steps it made to the "steps" file), answers its exit code (or -signal).
SERVER = """
import json, os, signal, sys
import flowdag
from flowdag.stores import open_store
from tests.test_kv_kills import CALLS, workflow

def child(request):
    state = {"calls": 0}
    def step():
        state["calls"] += 1
        if state["calls"] == request["kill_at"]:
            os.kill(os.getpid(), signal.SIGKILL)
    def killing(real):
        def wrapped(*args, **kwargs):
            step()
            return real(*args, **kwargs)
        return wrapped
    def killing_after(real):  # killed before the call, and again after it returned
        def wrapped(*args, **kwargs):
            step()
            result = real(*args, **kwargs)
            step()
            return result
        return wrapped
    store = open_store(request["url"], create=False)
    cls = type(store)
    cls._transact_tables = killing_after(cls._transact_tables)
    if request["url"].startswith("lmdb"):  # LMDB writes and syncs in C: kill around it
        import flowdag.stores.lmdb_store as lmdb_store
        lmdb_store.put_entry = killing(lmdb_store.put_entry)
        for name in ("_header", "_put_commit", "_check_same_file"):
            setattr(cls, name, killing(getattr(cls, name)))
    # A SIGKILL loses nothing the kernel has: the syncs are kill points, but are not
    # made (only a power loss tells a made one apart, and they cost most of the time).
    os.fsync = os.fdatasync = lambda fd: None
    for name in CALLS:
        setattr(os, name, killing(getattr(os, name)))
    flowdag.run(workflow(), run_id="r", store=store, max_workers=1)
    with open(request["steps"], "w") as steps:
        steps.write(str(state["calls"]))
    os._exit(0)

print("ready", flush=True)
for line in sys.stdin:
    request = json.loads(line)
    pid = os.fork()
    if pid == 0:
        try:
            child(request)
        finally:
            os._exit(3)
    _, status = os.waitpid(pid, 0)
    code = -os.WTERMSIG(status) if os.WIFSIGNALED(status) else os.WEXITSTATUS(status)
    print(json.dumps(code), flush=True)
"""


@pytest.fixture(scope="module")
def server() -> Iterator[subprocess.Popen[str]]:
    proc = subprocess.Popen(
        [sys.executable, "-c", SERVER],
        stdin=subprocess.PIPE,
        stdout=subprocess.PIPE,
        text=True,
        cwd=ROOT,
        env={"PYTHONPATH": str(ROOT), "PATH": "/usr/bin:/bin"},
    )
    assert proc.stdout is not None and proc.stdout.readline() == "ready\n"
    yield proc
    proc.kill()
    proc.wait(timeout=60)


def ask(server: subprocess.Popen[str], url: str, kill_at: int, steps: Path) -> int:
    assert server.stdin is not None and server.stdout is not None
    request = {"url": url, "kill_at": kill_at, "steps": str(steps)}
    server.stdin.write(json.dumps(request) + "\n")
    server.stdin.flush()
    return int(json.loads(server.stdout.readline()))


@pytest.mark.parametrize("kind", DISK_KINDS)
def test_kv_writes_land_exactly_once_at_every_kill(
    server: subprocess.Popen[str], tmp_path: Path, kind: str
) -> None:
    with open_kind(kind, tmp_path / "template"):  # a new store (skipped while it keeps no tables)
        pass
    shutil.copytree(tmp_path / "template", tmp_path / "whole")
    assert ask(server, url_of(kind, tmp_path / "whole"), 0, tmp_path / "steps") == 0
    total = int((tmp_path / "steps").read_text())
    assert total > 2 * NODES  # two per node's transaction at least
    points = sorted({1 + i * (total - 1) // (POINTS - 1) for i in range(POINTS)})
    assert len(points) >= 50, f"only {len(points)} kill points of {total} steps"
    for kill_at in points:
        root = tmp_path / str(kill_at)
        shutil.copytree(tmp_path / "template", root)  # a new store, copied: cheaper than made
        code = ask(server, url_of(kind, root), kill_at, tmp_path / "steps")
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
        assert ask(server, url_of(kind, root), 0, tmp_path / "steps") == 0
        with open_kind(kind, root) as store:
            assert store.load("r").status == "completed"
            kv = store.kv()
            counts = {counter: kv.get(counter) for counter, _ in COUNTERS}
            assert counts == expected({f"n{i}" for i in range(NODES)}), f"kill at {kill_at}"
