"""Store-wide tables: transactions are atomic, see their own writes, and may carry a commit."""

from __future__ import annotations

import functools
import os
import threading
import uuid
from collections.abc import Iterator, Sequence
from datetime import UTC, datetime
from pathlib import Path

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from flowdag._cache_entries import CacheEntry, entry_record, read_entry
from flowdag.errors import CorruptStateError, InvalidArgumentError, RunNotFoundError
from flowdag.state import NodeRecord, NodeState, NodeStatus, RunState
from flowdag.stores._tables import TABLES, TableTxn
from flowdag.stores.base import Store
from flowdag.stores.transfer import check_tables, copy_tables
from tests.forkserver import python_c, shared
from tests.gc_stores import KINDS, open_kind, options_of, url_of
from tests.stores.conformance import ROOT


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


# -- disk stores: processes, reopening, damage, compaction -----------------------------

DISK = [kind for kind in KINDS if kind != "memory"] + ["flatbuffers-encrypted"]

ADD = """
import sys
from flowdag.stores import open_store
options = {} if sys.argv[2] == "-" else {"key": sys.argv[2]}
store = open_store(sys.argv[1], **options)
def add_one(txn):
    txn.put("kv", "n", str(int(txn.get("kv", "n") or b"0") + 1).encode())
for _ in range(100):
    store.transact_tables(add_one)
"""


@pytest.mark.parametrize("kind", DISK)
def test_two_processes_read_modify_write_one_key(tmp_path: Path, kind: str) -> None:
    with open_kind(kind, tmp_path):
        pass
    key = options_of(kind).get("key", "-")
    env = {**os.environ, "PYTHONPATH": str(ROOT)}
    # Two ``python -c ADD`` processes, forked from the fork server (which imported flowdag).
    args = (ADD, str(tmp_path), env, url_of(kind, tmp_path), key)
    procs = [shared().start(python_c, *args) for _ in range(2)]
    done = [proc.wait(timeout=120) for proc in procs]
    assert [proc.returncode for proc in done] == [0, 0], done
    with open_kind(kind, tmp_path) as store:
        assert store.table_get("kv", "n") == b"200"


@pytest.mark.parametrize("kind", DISK)
def test_a_reopened_store_sees_committed_entries(tmp_path: Path, kind: str) -> None:
    long_key = "k" * 480 + ":" + "x" * 31  # 512 characters: over LMDB's key limit
    with open_kind(kind, tmp_path) as store:
        store.transact_tables(
            lambda txn: [txn.put("kv", long_key, b"long"), txn.put("kv", "a", b"")]
        )
        store.transact_tables(lambda txn: txn.put("cache", "a", b"\x00\xff"))
        store.transact_tables(lambda txn: txn.delete("kv", "a"))
    with open_kind(kind, tmp_path) as store:
        assert store.table_scan("kv") == [(long_key, b"long")]
        assert store.table_scan("kv", "k" * 481) == []
        assert store.table_get("kv", long_key) == b"long"
        assert store.table_get("cache", "a") == b"\x00\xff"


def _damage(kind: str, root: Path) -> Path:
    """Change one byte of the table entries' bytes on the disk; the file changed."""
    if kind.startswith("lmdb"):
        path = root / kind / "data.mdb"
    else:
        path = root / kind / "tables" / f"tables.{'json' if kind.startswith('json') else 'fb'}.log"
    content = bytearray(path.read_bytes())
    at = content.find(b"secret-value" if not kind.endswith("encrypted") else b"FDX1")
    if kind.endswith("encrypted") and not kind.startswith("lmdb"):
        at = len(content) - 12  # inside the last record's sealed payload
    elif kind.endswith("encrypted"):
        at = content.rfind(b"FDX1") + 20
    assert at > 0
    content[at] ^= 0x55
    path.write_bytes(bytes(content))
    return path


@pytest.mark.parametrize("kind", DISK)
def test_a_damaged_table_entry_is_reported_never_read(tmp_path: Path, kind: str) -> None:
    with open_kind(kind, tmp_path) as store:
        store.transact_tables(lambda txn: txn.put("kv", "a", b"secret-value"))
    _damage(kind, tmp_path)
    with open_kind(kind, tmp_path) as store, pytest.raises(CorruptStateError):
        store.table_get("kv", "a")


@pytest.mark.parametrize("kind", ["json", "flatbuffers-encrypted"])
def test_the_table_log_is_compacted_and_keeps_every_entry(tmp_path: Path, kind: str) -> None:
    with open_kind(kind, tmp_path, compact_min_bytes=1000) as store:
        for i in range(60):
            store.transact_tables(lambda txn, i=i: txn.put("kv", f"k{i % 5}", b"%d" % i))
        log = next((tmp_path / kind / "tables").glob("*.log"))
        assert log.stat().st_size < 2000  # 60 records rewritten as one snapshot along the way
        expected = [(f"k{i}", b"%d" % (55 + i)) for i in range(5)]
        assert store.table_scan("kv") == expected
    with open_kind(kind, tmp_path) as store:  # the default floor: no compaction by itself
        for _ in range(5):
            store.transact_tables(lambda txn: txn.put("kv", "big", b"x" * 5000))
        store.transact_tables(lambda txn: txn.delete("kv", "big"))
        before = log.stat().st_size
        store.compact()
        assert log.stat().st_size < before
        assert store.table_scan("kv") == expected
    with open_kind(kind, tmp_path) as store:
        assert store.table_scan("kv") == expected


@pytest.mark.parametrize("kind", ["lmdb", "json"])
def test_a_reader_in_another_store_object_sees_new_commits(tmp_path: Path, kind: str) -> None:
    with open_kind(kind, tmp_path) as writer, open_kind(kind, tmp_path) as reader:
        for i in range(3):
            writer.transact_tables(lambda txn, i=i: txn.put("kv", "n", b"%d" % i))
            assert reader.table_get("kv", "n") == b"%d" % i


@pytest.mark.parametrize(("source", "destination"), [("json", "lmdb"), ("lmdb", "flatbuffers")])
def test_tables_are_copied_between_codecs_and_checked(
    tmp_path: Path, source: str, destination: str
) -> None:
    with open_kind(source, tmp_path) as src, open_kind(destination, tmp_path) as dst:
        value = {"a": [1, 2.5, None], "b": "x"}
        src.kv().set("k", value)
        entry = CacheEntry("wf", "n", "r", src.codec.encode(3), "d", datetime.now(UTC))
        src.transact_tables(lambda txn: txn.put("cache", "c", entry_record(src.codec, entry)))
        dst.kv().set("only-there", 1)
        recoded = src.codec.name != dst.codec.name
        done = copy_tables(src, dst)
        assert (done.entries, done.left) == ((1, 1) if recoded else (2, 0))
        assert dst.kv().get("k") == value
        # The cache is left behind between codecs: its entries hold the source's
        # encodings and are keyed on their digests.
        cached = dst.table_get("cache", "c")
        assert cached is None if recoded else read_entry(dst.codec, "c", cached or b"") == entry
        assert [key for key, _ in dst.table_scan("kv")] == ["k", "only-there"]
        assert check_tables(dst) is None
    with open_kind(source, tmp_path) as src:
        src.transact_tables(lambda txn: txn.put("kv", "k", b"secret-value"))
    _damage(source, tmp_path)
    with open_kind(source, tmp_path) as src:
        assert "damaged" in (check_tables(src) or "")


_KEYS = st.sampled_from(["a", "a:b", "b", "k" * 450, "k" * 450 + "z"])
_STEP = st.tuples(
    st.sampled_from(["put", "delete", "raise", "reopen"]),
    st.sampled_from(TABLES),
    _KEYS,
    st.binary(max_size=8),
)


def _apply(
    transaction: list[tuple[str, str, str, bytes]],
    staged: dict[tuple[str, str], bytes],
    txn: TableTxn,
) -> None:
    """Make ``transaction``'s changes in ``txn`` and in the model ``staged``."""
    for action, table, key, value in transaction:
        if action == "raise":
            raise RuntimeError("abandoned")
        if action == "delete":
            txn.delete(table, key)
            staged.pop((table, key), None)
        elif action == "put":
            txn.put(table, key, value)
            staged[table, key] = value
        assert txn.get(table, key) == staged.get((table, key))


@pytest.mark.parametrize("kind", ["lmdb", "json", "flatbuffers-encrypted"])
@settings(
    max_examples=15, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture]
)
@given(steps=st.lists(st.lists(_STEP, min_size=1, max_size=4), max_size=8))
def test_tables_follow_a_dict_model(
    tmp_path: Path, kind: str, steps: list[list[tuple[str, str, str, bytes]]]
) -> None:
    root = tmp_path / uuid.uuid4().hex
    model: dict[tuple[str, str], bytes] = {}
    store = open_kind(kind, root, **({} if kind == "lmdb" else {"compact_min_bytes": 200}))
    try:
        for transaction in steps:
            if transaction[0][0] == "reopen":
                store.close()
                store = open_kind(kind, root)
                continue
            staged = dict(model)

            try:
                store.transact_tables(functools.partial(_apply, transaction, staged))
            except RuntimeError:
                pass
            else:
                model = staged
            for table in TABLES:
                expected = sorted((k, v) for (t, k), v in model.items() if t == table)
                assert store.table_scan(table) == expected
                assert store.table_scan(table, "k" * 450) == [
                    e for e in expected if e[0].startswith("k")
                ]
    finally:
        store.close()


def test_an_lmdb_read_does_not_wait_for_a_write_in_progress(tmp_path: Path) -> None:
    # A cache lookup or ctx.kv read must not queue behind a commit (and its fsync).
    with open_kind("lmdb", tmp_path) as store:
        store.transact_tables(lambda txn: txn.put("kv", "k", b"old"))
        inside, release = threading.Event(), threading.Event()
        seen: list[bytes | None] = []

        def slow_write(txn: TableTxn) -> None:
            txn.put("kv", "k", b"new")
            inside.set()
            assert release.wait(30)

        writer = threading.Thread(target=store.transact_tables, args=(slow_write,))
        writer.start()
        try:
            assert inside.wait(30)
            reader = threading.Thread(target=lambda: seen.append(store.table_get("kv", "k")))
            reader.start()
            reader.join(30)
            assert seen == [b"old"]  # read while the write was open: the committed value
        finally:
            release.set()
            writer.join(30)
        assert store.table_get("kv", "k") == b"new"


def test_table_keys_list_keys_without_values(tmp_path: Path) -> None:
    long = "k" * 450  # cut to fit an LMDB key: read back whole
    for kind in ("memory", "lmdb", "json"):
        with open_kind(kind, tmp_path / kind) as store:
            store.transact_tables(
                lambda txn: [txn.put("cache", k, b"v") for k in ("b", "a:1", long, "a:2")]
            )
            store.transact_tables(lambda txn: txn.put("kv", "a:3", b"v"))
            assert store.table_keys("cache") == sorted(["b", "a:1", long, "a:2"])
            assert store.table_keys("cache", "a:") == ["a:1", "a:2"]
            assert store.table_keys("kv") == ["a:3"]
