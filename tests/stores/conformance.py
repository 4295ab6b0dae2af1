"""Tests every store must pass: subclass `StoreTests` and override the fixtures.

Like zarr's ``StoreTests``: this module is not collected itself (its name does
not start with ``test_``); each backend's test module subclasses the class as
``TestXStore`` and overrides ``store`` (and ``store_dir`` if it uses the disk).
"""

from __future__ import annotations

import dataclasses
import os
import threading
from collections.abc import Iterator
from datetime import UTC, date, datetime, timedelta
from decimal import Decimal
from pathlib import Path
from typing import Any
from uuid import UUID

import pytest

from flowdag.errors import (
    InvalidRunIdError,
    RunLockedError,
    RunNotFoundError,
    StoreError,
)
from flowdag.state import ErrorInfo, NodeRecord, NodeState, NodeStatus, RunState
from flowdag.stores.base import Store

T0 = datetime(2026, 11, 22, 3, 4, 5, 123456, tzinfo=UTC)

# Values every codec round-trips, outputs and data alike.
PLAIN_VALUES: dict[str, Any] = {
    "none": None,
    "true": True,
    "zero": 0,
    "negative": -17,
    "big": 2**62,
    "float_whole": 5.0,
    "float": -1.25,
    "empty_str": "",
    "str": "héllo wörld ✓",
    "bytes": b"\x00\xffbinary",
    "empty_list": [],
    "list": [1, "a", None, 2.5, [b"x"]],
    "dict": {"a": {"b": [1, 2, {"c": None}]}, "": 0},
    "int_keys": {1: "one", 2: "two"},
}

# Values beyond JSON that API.md promises survive every store.
RICH_VALUES: dict[str, Any] = {
    "tuple": (1, "two", 3.0),
    "nested_tuple": (1, (2, (3, b"4")), [5, (6,)]),
    "set": {1, 2, 3},
    "frozenset": frozenset({4, 5}),
    "datetime": T0,
    "naive_datetime": datetime(2026, 1, 2, 3, 4, 5, 6),
    "date": date(2026, 11, 22),
    "decimal": Decimal("1.10"),
    "uuid": UUID("12345678-1234-5678-1234-567812345678"),
    "dict_of_rich": {"when": T0, "ids": {7, 8}, "pair": (1, 2)},
}

# (name, value) pairs that must be rejected before touching the disk.
INVALID_RUN_IDS: list[Any] = [
    "../x",
    "a/b",
    ".hidden",
    "",
    "x" * 201,
    "a\x00b",
    "a b",
    "é",
    None,
    42,
    b"bytes",
]


def shape(value: Any) -> Any:
    """A value's structure of types, so 5.0 vs 5 or a tuple vs a list tell apart."""
    if isinstance(value, dict):
        return ("dict", [(shape(k), shape(v)) for k, v in value.items()])
    if isinstance(value, list | tuple):
        return (type(value).__name__, [shape(v) for v in value])
    if isinstance(value, set | frozenset):
        return (type(value).__name__, sorted(repr(shape(v)) for v in value))
    if isinstance(value, datetime):
        return ("datetime", value.utcoffset())
    return type(value).__name__


def make_state(run_id: str = "run-1", outputs: dict[str, Any] | None = None) -> RunState:
    """A run with every node status, errors, times, deps, data and metadata."""
    outputs = PLAIN_VALUES if outputs is None else outputs
    nodes: dict[str, NodeState] = {}
    for i, (name, value) in enumerate(outputs.items()):
        nodes[f"out_{name}"] = NodeState(
            status=NodeStatus.COMPLETED,
            attempts=1 + i % 3,
            started_at=T0 + timedelta(seconds=i),
            finished_at=T0 + timedelta(seconds=i, microseconds=999_999),
            output=value,
        )
    first = next(iter(nodes), None)
    nodes["failed"] = NodeState(
        status=NodeStatus.FAILED,
        attempts=3,
        started_at=T0,
        finished_at=T0 + timedelta(minutes=1),
        error=ErrorInfo("ValueError", "bad row 7: 'x'", "Traceback (most recent call last):\n"),
        deps=(first,) if first else (),
    )
    nodes["skipped"] = NodeState(status=NodeStatus.SKIPPED, deps=("failed",))
    nodes["running"] = NodeState(status=NodeStatus.RUNNING, attempts=1, started_at=T0)
    nodes["pending"] = NodeState(deps=("running", "skipped"))
    nodes["long name ✓ " + "n" * 600] = NodeState(status=NodeStatus.COMPLETED, output="long")
    return RunState(
        run_id,
        "nightly-etl",
        nodes,
        data={"rows_loaded": 2, "cursor": {"page": 3}, "blob": b"\x01", "k" * 700: "long key"},
        metadata={"owner": "etl", "tags": ["a", "b"], "started": 1.5, "nested": {"x": None}},
    )


def statuses_of(state: RunState) -> RunState:
    """What `load_statuses` returns for ``state``: no outputs, no data."""
    nodes = {name: dataclasses.replace(node, output=None) for name, node in state.nodes.items()}
    return RunState(state.run_id, state.workflow, nodes, {}, dict(state.metadata))


def pending_state(run_id: str, *names: str) -> RunState:
    return RunState(run_id, "wf", {name: NodeState() for name in names})


def files_under(path: Path | None) -> list[tuple[str, int]]:
    """Every path under ``path`` with its size, to show nothing was created."""
    if path is None or not path.exists():
        return []
    return sorted(
        (os.path.relpath(os.path.join(root, name), path), os.path.getsize(os.path.join(root, name)))
        for root, dirs, files in os.walk(path)
        for name in dirs + files
    )


class StoreTests:
    """The contract of `flowdag.stores.base.Store`, for every backend."""

    @pytest.fixture
    def store(self) -> Iterator[Store]:
        raise NotImplementedError("override the store fixture in the backend's test class")

    @pytest.fixture
    def store_dir(self) -> Path | None:
        """The directory the store writes to, or None for stores in memory."""
        return None

    # -- save / load ------------------------------------------------------------

    def test_save_load_round_trip(self, store: Store) -> None:
        state = make_state()
        store.save(state)
        loaded = store.load("run-1")
        assert loaded == state
        for name, node in state.nodes.items():
            assert shape(loaded.nodes[name].output) == shape(node.output), name
        for key, value in state.data.items():  # the order of data keys is not kept
            assert shape(loaded.data[key]) == shape(value), key
        assert shape(loaded.metadata) == shape(state.metadata)

    @pytest.mark.parametrize("name", sorted(RICH_VALUES))
    def test_round_trip_rich_values(self, store: Store, name: str) -> None:
        value = RICH_VALUES[name]
        state = make_state(outputs={name: value})
        state.data["rich"] = value
        store.save(state)
        loaded = store.load("run-1")
        assert loaded == state
        assert shape(loaded.nodes[f"out_{name}"].output) == shape(value)
        assert shape(loaded.data["rich"]) == shape(value)

    def test_empty_run(self, store: Store) -> None:
        state = RunState("empty", "wf")
        store.save(state)
        assert store.load("empty") == state
        assert store.load_statuses("empty") == state

    def test_load_returns_a_copy(self, store: Store) -> None:
        store.save(make_state())
        first = store.load("run-1")
        first.nodes.clear()
        first.data["rows_loaded"] = -1
        assert store.load("run-1") == make_state()

    def test_save_replaces_the_whole_run(self, store: Store) -> None:
        store.save(make_state())
        replacement = RunState(
            "run-1",
            "other",
            {"failed": NodeState(status=NodeStatus.COMPLETED, output=[1])},
            data={"new": 1},
        )
        store.save(replacement)
        assert store.load("run-1") == replacement
        assert store.load_statuses("run-1") == statuses_of(replacement)

    def test_load_missing_run(self, store: Store) -> None:
        with pytest.raises(RunNotFoundError, match="nope") as info:
            store.load("nope")
        assert isinstance(info.value, KeyError)
        with pytest.raises(RunNotFoundError):
            store.load_statuses("nope")

    def test_load_statuses_skips_outputs_and_data(self, store: Store) -> None:
        state = make_state()
        store.save(state)
        statuses = store.load_statuses("run-1")
        assert statuses == statuses_of(state)
        assert all(node.output is None for node in statuses.nodes.values())
        assert statuses.data == {}

    def test_runs_with_shared_prefixes_stay_apart(self, store: Store) -> None:
        # Backends that scan by run-id prefix must not mix "a" with "ab" or "a.b".
        states = [pending_state(run_id, "x", "y") for run_id in ("a", "ab", "a.b", "a-")]
        for state in states:
            state.data[state.run_id] = state.run_id
            store.save(state)
        store.commit("a", [NodeRecord("x", NodeStatus.COMPLETED, output=store.codec.encode(1))])
        assert store.delete("ab")
        assert store.load("a").nodes["x"].output == 1
        assert store.load("a").data == {"a": "a"}
        for state in states[2:]:
            assert store.load(state.run_id) == state
        assert store.list_runs() == ["a", "a-", "a.b"]

    def test_many_nodes_round_trip(self, store: Store) -> None:
        state = RunState("big", "wf")
        for i in range(100_000):
            state.nodes[f"node-{i}"] = NodeState(
                status=NodeStatus.COMPLETED,
                attempts=1,
                started_at=T0,
                finished_at=T0,
                output=i,
                deps=(f"node-{i - 1}",) if i else (),
            )
        store.save(state)
        assert store.load("big") == state
        assert len(store.load_statuses("big").nodes) == 100_000

    # -- commit -------------------------------------------------------------------

    def test_commit_then_load(self, store: Store) -> None:
        encode = store.codec.encode
        store.save(pending_state("r", "a", "b", "c"))
        store.commit(
            "r",
            [
                NodeRecord(
                    "a",
                    NodeStatus.COMPLETED,
                    attempts=1,
                    started_at=T0,
                    finished_at=T0 + timedelta(seconds=2),
                    output=encode({"rows": [1, 2]}),
                    data={"seen": encode(2), "blob": encode(b"\x00")},
                )
            ],
        )
        store.commit(
            "r",
            [
                NodeRecord(
                    "b",
                    NodeStatus.FAILED,
                    attempts=3,
                    started_at=T0,
                    finished_at=T0,
                    error=ErrorInfo("KeyError", "'id'", "tb"),
                    data={"seen": None, "missing": None},
                )
            ],
        )
        loaded = store.load("r")
        assert loaded.nodes["a"] == NodeState(
            NodeStatus.COMPLETED, 1, T0, T0 + timedelta(seconds=2), {"rows": [1, 2]}
        )
        assert loaded.nodes["b"] == NodeState(
            NodeStatus.FAILED, 3, T0, T0, error=ErrorInfo("KeyError", "'id'", "tb")
        )
        assert loaded.nodes["c"] == NodeState()
        assert loaded.data == {"blob": b"\x00"}
        statuses = store.load_statuses("r")
        assert statuses == statuses_of(loaded)

    def test_commit_later_records_win(self, store: Store) -> None:
        encode = store.codec.encode
        store.save(pending_state("r", "a", "b"))
        store.commit(
            "r",
            [
                NodeRecord("a", NodeStatus.FAILED, attempts=1, data={"k": encode(1)}),
                NodeRecord("b", NodeStatus.COMPLETED, output=encode("b"), data={"gone": encode(0)}),
                NodeRecord("a", NodeStatus.COMPLETED, attempts=2, output=encode("a"),
                           data={"k": encode(2), "gone": None}),
            ],
        )  # fmt: skip
        loaded = store.load("r")
        assert loaded.nodes["a"] == NodeState(NodeStatus.COMPLETED, 2, output="a")
        assert loaded.nodes["b"].output == "b"
        assert loaded.data == {"k": 2}

    def test_commit_replaces_an_earlier_output(self, store: Store) -> None:
        encode = store.codec.encode
        store.save(pending_state("r", "a"))
        store.commit("r", [NodeRecord("a", NodeStatus.COMPLETED, output=encode([1] * 100))])
        store.commit("r", [NodeRecord("a", NodeStatus.FAILED, error=ErrorInfo("E", "m"))])
        assert store.load("r").nodes["a"] == NodeState(NodeStatus.FAILED, error=ErrorInfo("E", "m"))
        store.commit("r", [NodeRecord("a", NodeStatus.COMPLETED, output=encode(None))])
        assert store.load("r").nodes["a"] == NodeState(NodeStatus.COMPLETED)

    def test_commit_to_unknown_run(self, store: Store) -> None:
        record = NodeRecord("a", NodeStatus.COMPLETED, output=store.codec.encode(1))
        with pytest.raises(RunNotFoundError, match="ghost"):
            store.commit("ghost", [record])
        assert store.list_runs() == []
        with pytest.raises(RunNotFoundError):
            store.load("ghost")

    def test_commit_to_deleted_run(self, store: Store) -> None:
        store.save(pending_state("r", "a"))
        assert store.delete("r")
        with pytest.raises(RunNotFoundError):
            store.commit("r", [NodeRecord("a", NodeStatus.COMPLETED)])

    def test_commit_after_save_of_outputs(self, store: Store) -> None:
        state = make_state()
        store.save(state)
        store.commit("run-1", [NodeRecord("pending", NodeStatus.COMPLETED, attempts=1,
                                          output=store.codec.encode(("x", 1)))])  # fmt: skip
        loaded = store.load("run-1")
        expected = store.codec.decode(store.codec.encode(("x", 1)))
        assert loaded.nodes["pending"].output == expected
        assert loaded.nodes["pending"].deps == ("running", "skipped")
        del loaded.nodes["pending"], state.nodes["pending"]
        assert loaded == state

    def test_concurrent_commits_from_threads(self, store: Store) -> None:
        names = [f"n{i}" for i in range(64)]
        store.save(pending_state("r", *names))
        errors: list[BaseException] = []

        def work(chunk: list[str]) -> None:
            try:
                for name in chunk:
                    output = store.codec.encode(name)
                    data = {name: store.codec.encode(len(name))}
                    store.commit("r", [NodeRecord(name, NodeStatus.COMPLETED, 1, output=output,
                                                  data=data)])  # fmt: skip
                    store.load_statuses("r")
            except BaseException as exc:
                errors.append(exc)

        threads = [threading.Thread(target=work, args=(names[i::8],)) for i in range(8)]
        for thread in threads:
            thread.start()
        for thread in threads:
            thread.join()
        assert errors == []
        loaded = store.load("r")
        assert {name: node.output for name, node in loaded.nodes.items()} == {n: n for n in names}
        assert loaded.data == {n: len(n) for n in names}

    # -- list / delete --------------------------------------------------------------

    def test_list_runs_sorted(self, store: Store) -> None:
        assert store.list_runs() == []
        for run_id in ("b", "a:2", "A", "a", "2026-11-22", "z_9"):
            store.save(pending_state(run_id, "x"))
        assert store.list_runs() == sorted(["b", "a:2", "A", "a", "2026-11-22", "z_9"])

    def test_delete(self, store: Store) -> None:
        store.save(make_state("one"))
        store.save(make_state("two"))
        assert store.delete("one") is True
        assert store.delete("one") is False
        assert store.delete("never") is False
        assert store.list_runs() == ["two"]
        with pytest.raises(RunNotFoundError):
            store.load("one")
        assert store.load("two") == make_state("two")
        store.save(pending_state("one", "fresh"))  # a deleted id can be used again
        assert store.load("one") == pending_state("one", "fresh")

    # -- run ids --------------------------------------------------------------------

    @pytest.mark.parametrize("run_id", INVALID_RUN_IDS, ids=repr)
    def test_invalid_run_ids(self, store: Store, store_dir: Path | None, run_id: Any) -> None:
        before = files_under(store_dir)
        state = make_state()
        state.run_id = run_id
        calls = {
            "save": lambda: store.save(state),
            "load": lambda: store.load(run_id),
            "load_statuses": lambda: store.load_statuses(run_id),
            "commit": lambda: store.commit(run_id, [NodeRecord("a", NodeStatus.COMPLETED)]),
            "delete": lambda: store.delete(run_id),
            "lock": lambda: store.lock(run_id).__enter__(),
        }
        for method, call in calls.items():
            with pytest.raises(InvalidRunIdError) as info:
                call()
            assert isinstance(info.value, ValueError), method
        assert files_under(store_dir) == before
        assert store.list_runs() == []

    @pytest.mark.parametrize("run_id", ["a", "x" * 200, "2026-11-22T03:04:05", "A.b_c-d:e", "a.."])
    def test_valid_run_ids(self, store: Store, run_id: str) -> None:
        store.save(pending_state(run_id, "n"))
        assert store.list_runs() == [run_id]
        with store.lock(run_id):
            pass

    # -- lifecycle ------------------------------------------------------------------

    def test_closed_store_refuses_every_call(self, store: Store) -> None:
        store.save(pending_state("r", "a"))
        store.close()
        store.close()  # closing twice is fine
        calls = {
            "save": lambda: store.save(pending_state("r", "a")),
            "load": lambda: store.load("r"),
            "load_statuses": lambda: store.load_statuses("r"),
            "commit": lambda: store.commit("r", [NodeRecord("a", NodeStatus.COMPLETED)]),
            "list_runs": store.list_runs,
            "delete": lambda: store.delete("r"),
            "lock": lambda: store.lock("r").__enter__(),
        }
        for call in calls.values():
            with pytest.raises(StoreError, match="closed"):
                call()

    def test_context_manager(self, store: Store) -> None:
        with store as entered:
            assert entered is store
            store.save(pending_state("r", "a"))
        with pytest.raises(StoreError, match="closed"):
            store.list_runs()

    # -- locking --------------------------------------------------------------------

    def test_lock_is_exclusive_in_process(self, store: Store) -> None:
        with store.lock("nightly"):
            with pytest.raises(RunLockedError, match="nightly"), store.lock("nightly"):
                pass  # pragma: no cover
            with store.lock("other"):  # other run ids are independent
                pass
        with store.lock("nightly"):  # released: free again
            pass

    def test_lock_is_released_on_error(self, store: Store) -> None:
        with pytest.raises(RuntimeError), store.lock("r"):
            raise RuntimeError("boom")
        with store.lock("r"):
            pass

    def test_lock_across_threads(self, store: Store) -> None:
        results: list[str] = []
        with store.lock("r"):

            def other() -> None:
                try:
                    with store.lock("r"):
                        results.append("acquired")  # pragma: no cover
                except RunLockedError:
                    results.append("locked")

            thread = threading.Thread(target=other)
            thread.start()
            thread.join()
        assert results == ["locked"]

    def test_describe_names_the_store(self, store: Store) -> None:
        assert isinstance(store.describe("r"), str)
        assert store.describe("r")
