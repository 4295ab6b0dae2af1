"""SIGKILL at every step of table transactions that carry run commits: all of one or none.

A child process commits the nodes of a run one by one, each commit a table
transaction that counts the node in ``kv/count`` and marks it in
``kv/done:<node>``, with a transaction of the tables alone in between; it is
killed at the N-th call of any step that changes the disk (``write``,
``fsync``, ``rename``...) or, for LMDB (which syncs in its C library), of the
store's commit writer and of its check after the commit, for N = 1, 2, ...
until it finishes. After each kill, from the store opened afresh here:

- every node is completed exactly when its mark is there, and the count is the
  number of completed nodes: a node record and its table writes land together;
- the same holds after a following transaction (which resolves what the kill
  left open on the disk), and that transaction commits.

Journaled stores run with a small compaction floor, so run journals and the
table log are compacted along the way. The children are forked from one server
process that imported flowdag once: a kill point costs a fork.
"""

from __future__ import annotations

import json
import os
import shutil
import signal
import subprocess
import sys
from collections.abc import Iterator, Sequence
from pathlib import Path
from typing import Any

import pytest

from flowdag.state import NodeRecord, NodeState, NodeStatus, RunState
from flowdag.stores._tables import TableTxn
from flowdag.stores.base import Store
from tests.gc_stores import open_kind, options_of, url_of
from tests.stores.conformance import ROOT

NODES = 5
#: The calls a child is killed at: every one that changes what is on the disk.
CALLS = (
    "write",
    "pwrite",
    "fsync",
    "fdatasync",
    "ftruncate",
    "rename",
    "replace",
    "link",
    "unlink",
)


def store_options(kind: str) -> dict[str, Any]:
    """A small compaction floor for journaled stores: compactions happen in the child."""
    return {} if kind.startswith("lmdb") else {"compact_min_bytes": 600}


def counting(node: str) -> Any:
    def tables(txn: TableTxn, records: Sequence[NodeRecord]) -> Sequence[NodeRecord]:
        txn.put("kv", "count", b"%d" % (int(txn.get("kv", "count") or b"0") + 1))
        txn.put("kv", f"done:{node}", b"1")
        return records

    return tables


def bump(txn: TableTxn) -> None:
    txn.put("kv", "plain", b"%d" % (int(txn.get("kv", "plain") or b"0") + 1))
    txn.put("cache", "filler", b"x" * 100)


def steps(store: Store) -> None:
    """What the child does: commit every node, each with its table writes."""
    for i in range(NODES):
        node = f"n{i}"
        store.commit("r", [NodeRecord(node, NodeStatus.COMPLETED, 1)], tables=counting(node))
        store.transact_tables(bump)


SERVER = """
import json, os, signal, sys
from flowdag.stores import open_store
from tests.stores.kill_steps import KILLING
from tests.stores.test_table_kills import CALLS, steps

def child(request):
    space = {"os": os, "signal": signal, "calls": 0, "kill_at": request["kill_at"]}
    exec(KILLING, space)
    killing = space["killing"]
    store = open_store(request["url"], create=False, **request["options"])
    cls = type(store)
    if request["url"].startswith("lmdb"):  # LMDB writes and syncs in C: kill around it
        import flowdag.stores.lmdb_store as lmdb_store
        lmdb_store.put_entry = killing(lmdb_store.put_entry)
        for name in ("_header", "_put_commit", "_check_same_file"):
            setattr(cls, name, killing(getattr(cls, name)))
    for name in CALLS:
        setattr(os, name, killing(getattr(os, name)))
    steps(store)
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
    print(json.dumps({"status": code}), flush=True)
"""


class Server:
    def __init__(self) -> None:
        self.proc = subprocess.Popen(
            [sys.executable, "-c", SERVER],
            stdin=subprocess.PIPE,
            stdout=subprocess.PIPE,
            text=True,
            env={**os.environ, "PYTHONPATH": str(ROOT)},
        )
        assert self._line() == "ready"

    def _line(self) -> str:
        assert self.proc.stdout is not None
        line = self.proc.stdout.readline()
        assert line, "the kill server died"
        return line.strip()

    def kill(self, url: str, options: dict[str, Any], kill_at: int) -> int:
        assert self.proc.stdin is not None
        request = {"url": url, "options": options, "kill_at": kill_at}
        self.proc.stdin.write(json.dumps(request) + "\n")
        self.proc.stdin.flush()
        status: int = json.loads(self._line())["status"]
        assert status in (0, -signal.SIGKILL), f"the child failed (exit status {status})"
        return status

    def close(self) -> None:
        assert self.proc.stdin is not None
        self.proc.stdin.close()
        self.proc.wait(timeout=60)


@pytest.fixture(scope="module")
def server() -> Iterator[Server]:
    started = Server()
    yield started
    started.close()


def template(kind: str, root: Path) -> None:
    state = RunState("r", "wf")
    for i in range(NODES + 1):
        state.nodes[f"n{i}"] = NodeState()
    with open_kind(kind, root) as store:
        store.save(state)


def check(store: Store) -> int:
    """The run and the tables agree; the number of completed nodes."""
    nodes = store.load("r").nodes
    done = {name for name, node in nodes.items() if node.status is NodeStatus.COMPLETED}
    marked = {key.removeprefix("done:") for key, _ in store.table_scan("kv", "done:")}
    assert done == marked
    assert int(store.table_get("kv", "count") or b"0") == len(done)
    return len(done)


@pytest.mark.parametrize("kind", ["lmdb", "json", "flatbuffers", "json-encrypted"])
def test_table_commits_killed_at_every_step(tmp_path: Path, server: Server, kind: str) -> None:
    base = tmp_path / "template"
    template(kind, base)
    options = {**options_of(kind), **store_options(kind)}
    kill_at, kills = 0, 0
    while True:
        kill_at += 1
        work = tmp_path / f"at-{kill_at}"
        shutil.copytree(base, work)
        status = server.kill(url_of(kind, work), options, kill_at)
        with open_kind(kind, work, create=False, **store_options(kind)) as store:
            done = check(store)  # before any recovery on the disk: readers resolve in memory
            if status == 0:
                assert done == NODES
            node = f"n{NODES}"
            store.commit("r", [NodeRecord(node, NodeStatus.COMPLETED, 1)], tables=counting(node))
            assert check(store) == done + 1
            with store.lock("r"):
                pass
        with open_kind(kind, work, create=False) as store:
            assert check(store) == done + 1
        shutil.rmtree(work)
        if status == 0:
            break
        kills += 1
    assert kills >= 20
