"""A state moved between any two stores is equal, value types and all; and store URLs."""

from __future__ import annotations

import itertools
import math
from collections.abc import Iterator
from datetime import timedelta
from pathlib import Path
from typing import Any

import numpy as np
import pytest

from flowdag.errors import StoreError
from flowdag.state import ErrorInfo, NodeRecord, NodeStatus, RunState
from flowdag.stores import (
    FlatBuffersStore,
    JSONStore,
    LMDBStore,
    MemoryStore,
    open_store,
    parse_store_url,
)
from flowdag.stores.base import Store
from tests.stores.conformance import (
    PLAIN_VALUES,
    RICH_VALUES,
    T0,
    assert_same_state,
    make_state,
    statuses_of,
)

SCHEMES = ["memory", "lmdb", "json", "flatbuffers"]
PAIRS = list(itertools.product(SCHEMES, SCHEMES))

# Beyond == : values that only an exact comparison tells apart, or that == cannot compare.
EXACT_VALUES: dict[str, Any] = {
    "nan": math.nan,
    "infinities": [math.inf, -math.inf],
    "negative_zero": -0.0,
    "array": np.arange(6, dtype=np.float32).reshape(2, 3),
    "array_nan": np.array([1.0, math.nan]),
    "array_int": np.array([[1, -2], [3, 2**40]], dtype=np.int64),
    "array_empty": np.zeros((0, 3), dtype=np.uint8),
}


def open_at(scheme: str, path: Path) -> Store:
    return open_store("memory://" if scheme == "memory" else f"{scheme}://{path}")


@pytest.fixture
def pair(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[tuple[Store, Store]]:
    src_scheme, dst_scheme = request.param
    with open_at(src_scheme, tmp_path / "src") as src, open_at(dst_scheme, tmp_path / "dst") as dst:
        yield src, dst


def rich_state() -> RunState:
    """Every value type flowdag promises, as outputs, data and metadata."""
    state = make_state("moved", {**PLAIN_VALUES, **RICH_VALUES})
    state.data.update({f"rich_{name}": value for name, value in RICH_VALUES.items()})
    state.metadata["when"] = T0
    return state


def assert_moved(src: Store, dst: Store, run_id: str) -> RunState:
    """Load from ``src``, save to ``dst``, load again: the same state, exactly."""
    state = src.load(run_id)
    dst.save(state)
    moved = dst.load(run_id)
    assert_same_state(moved, state)
    assert dst.load_statuses(run_id) == src.load_statuses(run_id) == statuses_of(state)
    return moved


def pair_ids(pair: tuple[str, str]) -> str:
    return f"{pair[0]}->{pair[1]}"


@pytest.mark.parametrize("pair", PAIRS, ids=pair_ids, indirect=True)
def test_saved_state_moves_exactly(pair: tuple[Store, Store]) -> None:
    src, dst = pair
    state = rich_state()
    src.save(state)
    moved = assert_moved(src, dst, "moved")
    assert_same_state(moved, state)


@pytest.mark.parametrize("pair", PAIRS, ids=pair_ids, indirect=True)
def test_committed_state_moves_exactly(pair: tuple[Store, Store]) -> None:
    src, dst = pair
    encode = src.codec.encode
    src.save(make_state("r", {}))
    src.commit("r", [NodeRecord("pending", NodeStatus.COMPLETED, 2, T0, T0 + timedelta(days=1),
                                output=encode(RICH_VALUES["dict_of_rich"]),
                                data={"cursor": None, "new": encode((1, 2.0))})])  # fmt: skip
    src.commit("r", [NodeRecord("running", NodeStatus.FAILED, 1, T0, T0,
                                error=ErrorInfo("KeyError", "'x'", "tb"))])  # fmt: skip
    moved = assert_moved(src, dst, "r")
    assert moved.nodes["pending"].output == RICH_VALUES["dict_of_rich"]
    assert moved.data["new"] == (1, 2.0) and "cursor" not in moved.data
    # The destination carries on from the moved state.
    dst.commit("r", [NodeRecord("running", NodeStatus.COMPLETED, 2, output=dst.codec.encode(7))])
    assert dst.load("r").nodes["running"].output == 7


@pytest.mark.parametrize("pair", PAIRS, ids=pair_ids, indirect=True)
def test_values_beyond_equality_move_exactly(pair: tuple[Store, Store]) -> None:
    src, dst = pair
    src.save(make_state("x", EXACT_VALUES))
    moved = assert_moved(src, dst, "x")
    outputs = {name[4:]: node.output for name, node in moved.nodes.items() if name[:4] == "out_"}
    assert math.isnan(outputs["nan"])
    assert math.copysign(1.0, outputs["negative_zero"]) == -1.0
    for name in ("array", "array_nan", "array_int", "array_empty"):
        assert isinstance(outputs[name], np.ndarray), name
        assert outputs[name].dtype == EXACT_VALUES[name].dtype, name
        assert np.array_equal(outputs[name], EXACT_VALUES[name], equal_nan=name == "array_nan")


def test_state_moved_through_every_store_in_turn(tmp_path: Path) -> None:
    schemes = [*SCHEMES, "json", "memory"]
    stores = [open_at(scheme, tmp_path / f"{i}-{scheme}") for i, scheme in enumerate(schemes)]
    try:
        stores[0].save(rich_state())
        for src, dst in itertools.pairwise(stores):
            assert_moved(src, dst, "moved")
        assert_same_state(stores[-1].load("moved"), rich_state())
    finally:
        for store in stores:
            store.close()


# -- store URLs -------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("scheme", "cls"),
    [
        ("json", JSONStore),
        ("flatbuffers", FlatBuffersStore),
        ("lmdb", LMDBStore),
    ],
)
def test_open_store_by_scheme(tmp_path: Path, scheme: str, cls: type[Store]) -> None:
    with open_store(f"{scheme}://{tmp_path / scheme}") as store:
        assert type(store) is cls
        assert store.scheme == scheme
        store.save(make_state())
    with cls(tmp_path / scheme) as store:  # type: ignore[call-arg]
        assert store.load("run-1") == make_state()


def test_open_store_relative_and_home_directories(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.chdir(tmp_path)
    monkeypatch.setenv("HOME", str(tmp_path / "home"))
    with open_store("json://state") as store:
        assert isinstance(store, JSONStore)
        assert store.path == tmp_path / "state"
    with open_store("flatbuffers://~/fb") as store:
        assert isinstance(store, FlatBuffersStore)
        assert store.path == tmp_path / "home" / "fb"


@pytest.mark.parametrize(
    ("url", "expected"),
    [
        ("memory://", ("memory", None)),
        ("lmdb:///abs/dir", ("lmdb", Path("/abs/dir"))),
        ("json:///a/../b", ("json", Path("/b"))),
        ("flatbuffers:///x/y/", ("flatbuffers", Path("/x/y"))),
    ],
)
def test_parse_store_url(url: str, expected: tuple[str, Path | None]) -> None:
    assert parse_store_url(url) == expected


def test_parse_store_url_relative(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.chdir(tmp_path)
    assert parse_store_url("json://state") == ("json", tmp_path / "state")


@pytest.mark.parametrize(
    ("url", "fragment"),
    [
        ("", "unknown store URL"),
        ("state", "unknown store URL"),
        ("json:state", "unknown store URL"),
        ("s3://bucket/key", "unknown store URL"),
        ("JSON://x", "unknown store URL"),
        ("json://", "names no directory"),
        ("flatbuffers://", "names no directory"),
        ("memory://x", "takes no path"),
    ],
)
def test_bad_store_urls(tmp_path: Path, url: str, fragment: str) -> None:
    for call in (open_store, parse_store_url):
        with pytest.raises(StoreError, match=fragment) as info:
            call(url)
        if fragment == "unknown store URL":
            for known in ("flatbuffers://DIR", "json://DIR", "lmdb://DIR", "memory://"):
                assert known in str(info.value)
    assert list(tmp_path.iterdir()) == []


def test_store_url_must_be_a_string() -> None:
    with pytest.raises(StoreError, match="must be a string"):
        open_store(Path("x"))  # type: ignore[arg-type]


def test_memory_stores_are_not_shared() -> None:
    one, two = open_store("memory://"), open_store("memory://")
    assert isinstance(one, MemoryStore)
    one.save(make_state())
    assert two.list_runs() == []


def test_two_journaled_stores_in_one_directory_never_lose_a_commit(tmp_path: Path) -> None:
    run = make_state("r", {})
    with JSONStore(tmp_path) as json_store:
        json_store.save(run)
        json_store.save(run)  # generation 2: its journal is journal-2.json.log
        json_store.commit("r", [NodeRecord("pending", NodeStatus.COMPLETED, 1)])
        try:
            with FlatBuffersStore(tmp_path) as fb_store:
                fb_store.save(run)
        except StoreError:
            return  # refusing a directory that holds another format is fine too
        assert json_store.load("r").nodes["pending"].status is NodeStatus.COMPLETED
