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
table log are compacted along the way. The children are forked from
`tests.forkserver`, a process that imported flowdag once: a kill point costs a fork.
"""

from __future__ import annotations

import os
import shutil
import signal
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import pytest

from flowdag.state import NodeRecord, NodeState, NodeStatus, RunState
from flowdag.stores import lmdb_store, open_store
from flowdag.stores._tables import TableTxn
from flowdag.stores.base import Store
from tests.forkserver import ForkServer
from tests.gc_stores import open_kind, options_of, url_of
from tests.stores.kill_steps import KillAt

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


def killed_job(url: str, options: dict[str, Any], kill_at: int) -> None:
    """In a forked child: `steps`, SIGKILLing itself at the ``kill_at``-th call of `CALLS`."""
    kill = KillAt(kill_at)
    store = open_store(url, create=False, **options)
    if url.startswith("lmdb"):  # LMDB writes and syncs in C: kill around it
        kill.patch(lmdb_store, "put_entry")
        kill.patch(type(store), "_header", "_put_commit", "_check_same_file")
    kill.patch(os, *CALLS)
    steps(store)
    os._exit(0)


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
def test_table_commits_killed_at_every_step(
    tmp_path: Path, fork_server: ForkServer, kind: str
) -> None:
    base = tmp_path / "template"
    template(kind, base)
    options = {**options_of(kind), **store_options(kind)}
    kill_at, kills = 0, 0
    while True:
        kill_at += 1
        work = tmp_path / f"at-{kill_at}"
        shutil.copytree(base, work)
        status = fork_server.run(killed_job, url_of(kind, work), options, kill_at).returncode
        assert status in (0, -signal.SIGKILL), f"the child failed (exit status {status})"
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
