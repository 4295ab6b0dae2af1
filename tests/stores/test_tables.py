"""Store-wide tables: transactions are atomic, see their own writes, and may carry a commit."""

from __future__ import annotations

import threading
from collections.abc import Iterator, Sequence
from pathlib import Path

import pytest

from flowdag.errors import InvalidArgumentError, RunNotFoundError
from flowdag.state import NodeRecord, NodeState, NodeStatus, RunState
from flowdag.stores._tables import TableTxn
from flowdag.stores.base import Store
from tests.gc_stores import KINDS, open_kind


@pytest.fixture(params=KINDS)
def store(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[Store]:
    with open_kind(request.param, tmp_path) as opened:
        yield opened


def test_a_transaction_commits_its_writes_and_returns_what_its_work_returns(store: Store) -> None:
    def work(txn: TableTxn) -> str:
        txn.put("kv", "a", b"1")
        txn.put("kv", "b:x", b"2")
        txn.put("cache", "a", b"c")
        assert txn.get("kv", "a") == b"1"  # its own write
        assert store.table_get("kv", "a") is None  # not committed yet
        return "done"

    assert store.transact_tables(work) == "done"
    assert store.table_get("kv", "a") == b"1"
    assert store.table_get("cache", "a") == b"c"
    assert store.table_scan("kv") == [("a", b"1"), ("b:x", b"2")]
    assert store.table_scan("kv", "b:") == [("b:x", b"2")]


def test_a_transaction_that_raises_writes_nothing(store: Store) -> None:
    store.transact_tables(lambda txn: txn.put("kv", "kept", b"1"))

    def work(txn: TableTxn) -> None:
        txn.put("kv", "lost", b"2")
        txn.delete("kv", "kept")
        raise RuntimeError("boom")

    with pytest.raises(RuntimeError, match="boom"):
        store.transact_tables(work)
    assert store.table_scan("kv") == [("kept", b"1")]


def test_deletes_and_scans_see_staged_changes(store: Store) -> None:
    store.transact_tables(lambda txn: [txn.put("kv", k, k.encode()) for k in ("a", "b", "c")])

    def work(txn: TableTxn) -> list[tuple[str, bytes]]:
        txn.delete("kv", "b")
        txn.put("kv", "d", b"d")
        txn.delete("kv", "missing")
        return list(txn.scan("kv"))

    assert store.transact_tables(work) == [("a", b"a"), ("c", b"c"), ("d", b"d")]
    assert store.table_scan("kv") == [("a", b"a"), ("c", b"c"), ("d", b"d")]


def test_an_unknown_table_is_refused(store: Store) -> None:
    with pytest.raises(InvalidArgumentError, match="unknown table 'runs'"):
        store.table_get("runs", "a")
    with pytest.raises(InvalidArgumentError, match="unknown table"):
        store.transact_tables(lambda txn: txn.put("nope", "a", b""))


def test_transactions_are_exclusive_so_read_modify_write_composes(store: Store) -> None:
    def add_one(txn: TableTxn) -> None:
        old = txn.get("kv", "n")
        txn.put("kv", "n", str(int(old or b"0") + 1).encode())

    threads = [
        threading.Thread(target=lambda: [store.transact_tables(add_one) for _ in range(50)])
        for _ in range(4)
    ]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    assert store.table_get("kv", "n") == b"200"


def test_a_commit_with_tables_writes_records_and_table_changes_together(store: Store) -> None:
    state = RunState("r", "wf")
    state.nodes["a"] = NodeState()
    state.nodes["b"] = NodeState()
    store.save(state)

    def tables(txn: TableTxn, records: Sequence[NodeRecord]) -> Sequence[NodeRecord]:
        txn.put("kv", "count", b"1")
        return [r for r in records if r.node == "a"]  # the layer above may drop or replace

    done = [NodeRecord("a", NodeStatus.COMPLETED, 1), NodeRecord("b", NodeStatus.COMPLETED, 1)]
    store.commit("r", done, tables=tables)
    loaded = store.load("r")
    assert loaded.nodes["a"].status is NodeStatus.COMPLETED
    assert loaded.nodes["b"].status is NodeStatus.PENDING
    assert store.table_get("kv", "count") == b"1"


def test_a_commit_with_tables_to_a_missing_run_writes_nothing(store: Store) -> None:
    def tables(txn: TableTxn, records: Sequence[NodeRecord]) -> Sequence[NodeRecord]:
        txn.put("kv", "count", b"1")
        return records

    with pytest.raises(RunNotFoundError):
        store.commit("absent", [NodeRecord("a", NodeStatus.COMPLETED, 1)], tables=tables)
    assert store.table_get("kv", "count") is None
