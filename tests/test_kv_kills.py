"""SIGKILL at every step of a run whose nodes write kv entries: each write lands exactly once.

A child process runs `workflow` (each node adds 1 to ``count`` and sets
``done:NODE``) and kills itself at the N-th call of any step that changes the
disk (``write``, ``fsync``, ``rename``...) or of the store's table transaction
(before it, and again after it returns). A first child runs to the end and
counts those steps; then N goes over them, every one where they are at most
`POINTS` (LMDB), else `POINTS` evenly spread over the run (the journal stores
make hundreds; every one of their steps is killed in
``tests/stores/test_table_kills.py``). After each kill, from the store opened
afresh in this process:

- ``count`` equals the number of completed nodes in the stored run, and
  ``done:NODE`` is there exactly for those nodes: a node's kv writes are
  durable exactly when its completion is;
- a resume completes the run, and then ``count`` is the number of nodes:
  no write is lost or applied twice.

The children are forked from one server process that imported flowdag once,
so a kill point costs a fork, not an interpreter start.
"""

from __future__ import annotations

import json
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import pytest

import flowdag
from flowdag import Context, NodeStatus, Workflow
from flowdag.errors import RunNotFoundError
from tests.kv_stores import DISK_KINDS, open_kind, url_of
from tests.stores.conformance import ROOT

NODES = 10
POINTS = 24
CALLS = ("write", "pwrite", "fsync", "fdatasync", "ftruncate", "rename", "replace", "unlink")


def count_and_mark(ctx: Context, **deps: object) -> None:
    ctx.kv.update("count", lambda old: (old or 0) + 1)
    ctx.kv.set(f"done:{ctx.node}", ctx.attempt)


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
    with open_kind(kind, tmp_path / "whole"):  # a new store (skipped while it keeps no tables)
        pass
    assert ask(server, url_of(kind, tmp_path / "whole"), 0, tmp_path / "steps") == 0
    total = int((tmp_path / "steps").read_text())
    assert total > 2 * NODES  # two per node's transaction at least
    points = sorted({1 + i * (total - 1) // (POINTS - 1) for i in range(POINTS)})
    for kill_at in points:
        root = tmp_path / str(kill_at)
        with open_kind(kind, root):
            pass
        code = ask(server, url_of(kind, root), kill_at, tmp_path / "steps")
        assert code == -9, f"the child exited {code} at kill point {kill_at} of {total}"
        with open_kind(kind, root) as store:
            try:
                nodes = store.load("r").nodes
            except RunNotFoundError:
                nodes = {}
            completed = {n for n, s in nodes.items() if s.status is NodeStatus.COMPLETED}
            kv = store.kv()
            assert kv.get("count", default=0) == len(completed), f"kill at {kill_at}"
            assert {key for key, _ in kv.items("done:")} == {f"done:{n}" for n in completed}
            assert flowdag.run(workflow(), run_id="r", store=store).status == "completed"
            assert kv.get("count") == NODES, f"kill at {kill_at}"
