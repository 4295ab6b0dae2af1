"""The LMDB store's run layouts (``_lmdb_keys.py``): numbered entries, the marker, moving a run.

Layout 2 numbers each name in order of first write. Two stores on one
directory (each keeping its own numbers in memory, as two processes do),
committing, saving and growing the map (a write aborted after it numbered
names, then tried again) in any order, must always read back what was
written. A run of layout 1 (written here as that release wrote it) with any
names and ``ctx.data`` keys (empty, NUL, long, not ASCII) reads back the same
before and after a commit moves it to layout 2, that commit's changes
applied. A damaged marker, or one of a later layout, is refused.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import lmdb
import pytest
from hypothesis import HealthCheck, example, given, settings
from hypothesis import strategies as st

from flowdag.errors import CorruptStateError
from flowdag.stores import LMDBStore
from flowdag.stores._lmdb_env import Env
from flowdag.stores._lmdb_keys import run_prefix
from flowdag.stores._stored import StoredNode, StoredRun
from tests.stores.lmdb_layout1 import write_layout1

KEY = "6c6567616379206669787475726573206f6620666c6f77646167207374726573"
NAMES = st.one_of(st.text(max_size=12), st.text(alphabet="ab\x00é", min_size=500, max_size=600))


OPS = st.lists(
    st.tuples(
        st.sampled_from(["commit", "save", "big", "load"]),
        st.integers(0, 1),  # which store
        st.dictionaries(st.sampled_from("abcdef"), st.none() | st.binary(max_size=4), max_size=3),
        st.dictionaries(st.sampled_from("xyz"), st.none() | st.binary(max_size=4), max_size=2),
    ),
    max_size=12,
)


@settings(max_examples=30, deadline=None)
@given(ops=OPS)
@example(ops=[("big", 0, {"a": b""}, {})])  # aborted (full map) after numbering "a"
@example(
    ops=[("commit", 0, {"a": b""}, {}), ("commit", 1, {"b": None}, {"x": b""}), ("load", 0, {}, {})]
)
def test_two_stores_writing_one_run_keep_it_right(tmp_path_factory: Any, ops: list[Any]) -> None:
    path = tmp_path_factory.mktemp("s")
    nodes: dict[str, StoredNode] = {}
    data: dict[str, bytes] = {}
    stores = [LMDBStore(path, map_size=64 * 1024), LMDBStore(path, map_size=64 * 1024)]
    try:
        stores[0]._save_checked("r", StoredRun(b"h", {}, {}), None)
        for step, (op, which, changed, keys) in enumerate(ops):
            store = stores[which]
            if op == "load":
                assert store._load("r") == StoredRun(b"h", nodes, data)
                assert store._load_metas("r") == (b"h", {n: v.meta for n, v in nodes.items()})
                continue
            size = 100 * 1024 if op == "big" else 0  # grows the map: aborted, then done again
            written = {
                name: StoredNode(b"m%d" % step, None if out is None else out + b"o" * size)
                for name, out in changed.items()
            }
            if op == "save":
                nodes = {**nodes, **written}
                data = {k: v for k, v in {**data, **keys}.items() if v is not None}
                store._save_checked("r", StoredRun(b"h", nodes, data), None)
            else:
                store._commit("r", written, keys)
                nodes.update(written)
                data = {k: v for k, v in {**data, **keys}.items() if v is not None}
        for store in stores:
            assert store._load("r") == StoredRun(b"h", nodes, data)
    finally:
        for store in stores:
            store.close()


def marker(store: LMDBStore, run_id: str) -> bytes | None:
    def read(txn: Any, env: Env) -> bytes | None:
        value: bytes | None = txn.get(run_prefix(run_id), db=env.nodes)
        return value

    return store._transact(run_id, read)


BLOBS = st.binary(max_size=20)


@settings(
    max_examples=25, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture]
)
@given(
    nodes=st.dictionaries(NAMES, st.tuples(BLOBS, st.none() | BLOBS), max_size=8),
    data=st.dictionaries(NAMES, BLOBS, max_size=4),
    commit=st.dictionaries(NAMES, st.tuples(BLOBS, st.none() | BLOBS), max_size=4),
    changes=st.dictionaries(NAMES, st.none() | BLOBS, max_size=4),
    encrypted=st.booleans(),
)
def test_a_layout1_run_reads_the_same_before_and_after_a_commit_moves_it(
    tmp_path_factory: pytest.TempPathFactory,
    nodes: dict[str, tuple[bytes, bytes | None]],
    data: dict[str, bytes],
    commit: dict[str, tuple[bytes, bytes | None]],
    changes: dict[str, bytes | None],
    encrypted: bool,
) -> None:
    path = tmp_path_factory.mktemp("s")
    run = StoredRun(b"header", {n: StoredNode(*v) for n, v in nodes.items()}, dict(data))
    with LMDBStore(path, key=KEY if encrypted else None) as store:
        write_layout1(store, "r", run)
        write_layout1(store, "other", run)
        assert store._load("r") == run and marker(store, "r") is None
        assert store._load_metas("r") == (b"header", {n: v[0] for n, v in nodes.items()})
        store._commit("r", {n: StoredNode(*v) for n, v in commit.items()}, changes)
        assert marker(store, "r") is not None
        expected = StoredRun(
            b"header",
            {**run.nodes, **{n: StoredNode(*v) for n, v in commit.items()}},
            {k: v for k, v in {**data, **changes}.items() if v is not None},
        )
        assert store._load("r") == expected
        assert store._load("other") == run and marker(store, "other") is None
        store._save_checked("other", expected, None)  # a save writes layout 2
        assert store._load("other") == expected and marker(store, "other") is not None


def damage_marker(path: Path, value: bytes) -> None:
    with lmdb.open(str(path), max_dbs=5, create=False) as env:
        nodes = env.open_db(b"nodes", create=False)
        with env.begin(write=True) as txn:
            assert txn.get(b"r\x00", db=nodes) is not None
            txn.put(b"r\x00", value, db=nodes)


@pytest.mark.parametrize(
    ("value", "message"),
    [
        (b"\xc1junk", "unreadable layout marker"),
        (b"\x81\xa6layout\x03", "LMDB layout 3, which this flowdag cannot read"),
        (b"\x81\xa6layout\x01", "unreadable layout marker"),
        (b"\x82\xa6layout\x02\xa4next\x00", "a node entry has a malformed key"),
    ],
    ids=["junk", "later", "one", "behind"],
)
def test_a_bad_marker_is_refused(tmp_path: Path, value: bytes, message: str) -> None:
    run = StoredRun(b"header", {"a": StoredNode(b"meta", b"out")}, {})
    with LMDBStore(tmp_path / "s") as store:
        store._save_checked("r", run, None)
    damage_marker(tmp_path / "s", value)
    with LMDBStore(tmp_path / "s") as store:
        for call in (store._load, store._load_metas):
            with pytest.raises(CorruptStateError, match=message):
                call("r")
        with pytest.raises(CorruptStateError, match=message):  # and no write goes through
            store._commit("r", {"b": StoredNode(b"meta")}, {})
        assert store.delete("r")  # a damaged run can be removed
