"""Tests every store must pass: subclass `StoreTests` and override the fixtures.

Like zarr's ``StoreTests``: this module is not collected itself (its name does
not start with ``test_``); each backend's test module subclasses the class as
``TestXStore`` and overrides ``store`` (and ``store_dir`` if it uses the disk).
Stores on the journal engine (``_journal.py``) subclass `JournaledStoreTests`,
which adds torn journals and damaged bytes. Moving a state between any two
stores is tested in ``test_cross_store.py``.
"""

from __future__ import annotations

import contextlib
import dataclasses
import os
import random
import signal
import stat
import subprocess
import sys
import threading
from collections import defaultdict, deque
from collections.abc import Iterator
from datetime import UTC, date, datetime, timedelta, timezone
from decimal import Decimal
from pathlib import Path
from typing import Any
from uuid import UUID

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

import flowdag
from flowdag.errors import (
    CorruptStateError,
    InvalidRunIdError,
    RunLockedError,
    RunNotFoundError,
    StoreError,
)
from flowdag.state import AttemptInfo, ErrorInfo, NodeRecord, NodeState, NodeStatus, RunState
from flowdag.stores import open_store
from flowdag.stores._journal import JournaledStore
from flowdag.stores.base import Store
from flowdag.stores.transfer import same_value
from tests import usertypes_models as models
from tests.test_codec import STDLIB_VALUES
from tests.usertypes_values import MODEL_VALUES

flowdag.register_types("tests.usertypes_models")

ROOT = Path(__file__).resolve().parents[2]

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
    # Standard-library types (flowdag._stdtypes): the codec tests' set, on every store.
    **{f"stdlib_{name}": value for name, value in STDLIB_VALUES.items() if "nan" not in name},
    # User types allowed with flowdag.register_types (above).
    "user_dataclass": models.Event("x", ("a",), T0),
    "user_namedtuple": models.Pair((1, 2), {3}),
    "user_enum": models.Color.GREEN,
    "user_nested": {"p": [models.Point(1, 2.5)], "l": models.Level.LOW},
    **{f"user_{name}": value for name, value in MODEL_VALUES.items()},  # attrs, pydantic
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
    if isinstance(value, defaultdict):  # its factory is part of the value
        return ("defaultdict", value.default_factory, shape(dict(value)))
    if isinstance(value, dict):  # Counter and OrderedDict by name, items in order
        return (type(value).__name__, [(shape(k), shape(v)) for k, v in value.items()])
    if isinstance(value, deque):
        return ("deque", value.maxlen, [shape(v) for v in value])
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
        if i % 2:  # the usual history: one attempt, the node's own
            node = nodes[f"out_{name}"]
            node.history = (AttemptInfo(1, node.started_at, node.finished_at),)  # type: ignore[arg-type]
    first = next(iter(nodes), None)
    error = ErrorInfo("ValueError", "bad row 7: 'x'", "Traceback (most recent call last):\n")
    nodes["failed"] = NodeState(
        status=NodeStatus.FAILED,
        attempts=3,
        started_at=T0,
        finished_at=T0 + timedelta(minutes=1),
        error=error,
        deps=(first,) if first else (),
        history=(
            AttemptInfo(1, T0 - timedelta(hours=1), T0 - timedelta(minutes=59), error),
            AttemptInfo(
                2, T0 - timedelta(minutes=2), T0 - timedelta(minutes=1), ErrorInfo("E", "")
            ),
            AttemptInfo(3, T0, T0 + timedelta(minutes=1), error),
        ),
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


def assert_same_state(actual: RunState, expected: RunState, where: str = "") -> None:
    """The same run, every value of the same type (5.0 is not 5); NaN and arrays compare too."""
    assert (actual.run_id, actual.workflow) == (expected.run_id, expected.workflow), where
    assert actual.nodes.keys() == expected.nodes.keys(), where
    for name, node in expected.nodes.items():
        got = actual.nodes[name]
        without_output = dataclasses.replace(got, output=None)
        assert without_output == dataclasses.replace(node, output=None), f"{where} node {name!r}"
        assert same_value(got.output, node.output), f"{where} output of {name!r}"
    assert same_value(actual.data, expected.data), f"{where} data"
    assert same_value(actual.metadata, expected.metadata), f"{where} metadata"


def assert_names_run_and_file(error: CorruptStateError, run_id: str, path: Path) -> None:
    """A damage report must say which run and which file, so the user can act on it."""
    message = str(error)
    assert f"run '{run_id}'" in message, message
    assert str(path) in message, message


def spawn(code: str, *args: object) -> subprocess.Popen[str]:
    """A Python subprocess running ``code`` (this checkout first on its path)."""
    env = {
        **os.environ,
        "PYTHONPATH": os.pathsep.join([str(ROOT), os.environ.get("PYTHONPATH", "")]),
    }
    return subprocess.Popen(
        [sys.executable, "-c", code, *map(str, args)], stdout=subprocess.PIPE, text=True, env=env
    )


# Takes a run's lock in another process and holds it until killed.
HOLD_LOCK = """
import sys, time
from flowdag.stores import open_store
store = open_store(sys.argv[1])
held = store.lock(sys.argv[2])
held.__enter__()  # keep a reference: a collected context manager releases
print("locked", flush=True)
time.sleep(120)
"""


def _mode(path: Path) -> int:
    return stat.S_IMODE(os.lstat(path).st_mode)


# -- random attempt histories -----------------------------------------------------------

_TEXT = st.text(st.characters(exclude_categories=["Cs"]), max_size=30)
_ERRORS = st.none() | st.builds(ErrorInfo, _TEXT, _TEXT, _TEXT)
# Any zone: a store keeps the instant and loads it in UTC.
_ZONES = st.sampled_from(
    [UTC, timezone(timedelta(hours=5, minutes=30)), timezone(-timedelta(hours=8))]
)
_MOMENTS = st.datetimes(datetime(1, 1, 2), datetime(9999, 12, 30), timezones=_ZONES)
_ATTEMPTS = st.builds(AttemptInfo, st.integers(1, 2**63 - 1), _MOMENTS, _MOMENTS, _ERRORS)


@st.composite
def node_states(draw: st.DrawFn) -> NodeState:
    """A node with a random history; often ending with its own attempt, as the runner writes."""
    status = draw(st.sampled_from([s for s in NodeStatus if s is not NodeStatus.COMPLETED]))
    started, finished = draw(st.none() | _MOMENTS), draw(st.none() | _MOMENTS)
    error = draw(_ERRORS)
    history = tuple(draw(st.lists(_ATTEMPTS, max_size=4)))
    if history and started is not None and finished is not None and draw(st.booleans()):
        history = (*history[:-1], AttemptInfo(history[-1].number, started, finished, error))
    return NodeState(status, draw(st.integers(0, 2**63 - 1)), started, finished, None, error,
                     history=history)  # fmt: skip


def utc(node: NodeState) -> NodeState:
    """``node`` as a store loads it: every time in UTC."""

    def at(moment: datetime | None) -> datetime | None:
        return None if moment is None else moment.astimezone(UTC)

    history = tuple(
        AttemptInfo(a.number, a.started_at.astimezone(UTC), a.finished_at.astimezone(UTC), a.error)
        for a in node.history
    )
    return dataclasses.replace(
        node, started_at=at(node.started_at), finished_at=at(node.finished_at), history=history
    )


def assert_same_node(actual: NodeState, expected: NodeState) -> None:
    """Equal, and exactly so: every time an aware UTC datetime, numbers ints."""
    expected = utc(expected)
    assert actual == expected
    assert same_value(
        [(a.number, a.started_at, a.finished_at) for a in actual.history],
        [(a.number, a.started_at, a.finished_at) for a in expected.history],
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

    def test_histories_round_trip(self, store: Store) -> None:
        # Saved whole, and committed as a record: every attempt comes back exactly.
        # (A nested test: hypothesis refuses one method run by several classes.)
        @settings(max_examples=25, deadline=None, suppress_health_check=[HealthCheck.too_slow])
        @given(nodes=st.lists(node_states(), min_size=1, max_size=4), record=node_states())
        def check(nodes: list[NodeState], record: NodeState) -> None:
            state = RunState("h", "wf", {f"n{i}": node for i, node in enumerate(nodes)})
            state.nodes["c"] = NodeState()
            store.save(state)
            store.commit(
                "h",
                [
                    NodeRecord(
                        "c",
                        record.status,
                        record.attempts,
                        record.started_at,
                        record.finished_at,
                        record.error,
                        history=record.history,
                    )
                ],
            )
            for loaded in (store.load("h"), store.load_statuses("h")):
                for i, node in enumerate(nodes):
                    assert_same_node(loaded.nodes[f"n{i}"], node)
                assert_same_node(loaded.nodes["c"], record)

        check()

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
        # Past 65,535 nodes: the header's deps map (one entry a node) takes msgpack's
        # 32-bit map header (msgpack-coded stores). 100,000 nodes exercised nothing
        # more, in 40% more time.
        nodes = 70_000
        state = RunState("big", "wf")
        for i in range(nodes):
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
        assert len(store.load_statuses("big").nodes) == nodes

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

    def test_checked_save_publishes_only_a_copy_that_passed(self, store: Store) -> None:
        # What copy_run builds on: the check sees the run as written, and a
        # refused run is never published (the store keeps what it had).
        old, new = pending_state("r", "a"), make_state("r")
        store.save(old)

        def refuse(read_back: Any) -> None:
            assert_same_state(store._from_stored("r", read_back()), new)
            raise StoreError("refused by the check")

        with store.lock("r"), pytest.raises(StoreError, match="refused by the check"):
            store._save_checked("r", store._to_stored(new), refuse)
        assert store.load("r") == old

        def refuse_unread(read_back: Any) -> None:
            raise StoreError("refused by the check")

        other = store._to_stored(make_state("other"))
        with store.lock("other"), pytest.raises(StoreError, match="refused by the check"):
            store._save_checked("other", other, refuse_unread)
        assert store.list_runs() == ["r"]  # a new run refused: no run at all
        seen: list[RunState] = []

        def accept(read_back: Any) -> None:
            seen.append(store._from_stored("r", read_back()))

        with store.lock("r"):
            store._save_checked("r", store._to_stored(new), accept)
        assert_same_state(seen[0], new)
        assert_same_state(store.load("r"), new)

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

    def test_delete_refuses_a_running_run(self, store: Store, store_dir: Path | None) -> None:
        """A run whose lock is held (by its writer) is not deleted under it."""
        store.save(make_state("busy"))
        store.save(make_state("idle"))
        proc = None
        held = contextlib.ExitStack()
        try:
            if store_dir is None:  # a store in memory: the holder is this process
                held.enter_context(store.lock("busy"))
            else:  # a disk store: a real second process holds the run
                proc = spawn(HOLD_LOCK, f"{store.scheme}://{store_dir}", "busy")
                assert proc.stdout is not None
                assert proc.stdout.readline().strip() == "locked"
            with pytest.raises(RunLockedError) as info:
                store.delete("busy")
            assert "run 'busy'" in str(info.value)
            if proc is not None:
                assert f"pid {proc.pid}" in str(info.value)
            assert store.load("busy") == make_state("busy")  # nothing deleted
            assert store.delete("idle") is True  # only that run is refused
        finally:
            held.close()
            if proc is not None:
                proc.kill()
                proc.wait()
        assert store.delete("busy") is True  # free once its holder is gone
        assert store.list_runs() == []

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

    def test_open_without_create(
        self, store: Store, store_dir: Path | None, tmp_path: Path
    ) -> None:
        if store_dir is None:
            with open_store(f"{store.scheme}://", create=False) as other:
                assert other.list_runs() == []  # nothing to create: accepted
            return
        other_kind = "json" if store.scheme == "lmdb" else "lmdb"
        with open_store(f"{other_kind}://{tmp_path / 'other'}") as other:
            other.save(pending_state("r", "a"))
        empty = tmp_path / "empty"
        empty.mkdir()
        (empty / "notes.txt").write_text("not a store")
        for where in (tmp_path / "missing", tmp_path / "missing" / "deeper", empty,
                      tmp_path / "other", empty / "notes.txt"):  # fmt: skip
            before = files_under(tmp_path)
            with pytest.raises(StoreError) as info:
                open_store(f"{store.scheme}://{where}", create=False)
            message = str(info.value)
            assert message.startswith(f"no store at {where}: "), message
            assert "run a workflow first, or pass the right store URL" in message
            assert files_under(tmp_path) == before, where  # nothing created
        # A store that exists opens as before, and reads.
        store.save(pending_state("r", "a"))
        with open_store(f"{store.scheme}://{store_dir}", create=False) as again:
            assert again.list_runs() == ["r"]
            assert again.load("r") == pending_state("r", "a")

    def test_lock_held_by_another_process(self, store: Store, store_dir: Path | None) -> None:
        if store_dir is None:
            pytest.skip("a store in memory is not shared with other processes")
        store.save(pending_state("nightly", "a"))
        proc = spawn(HOLD_LOCK, f"{store.scheme}://{store_dir}", "nightly")
        try:
            assert proc.stdout is not None
            assert proc.stdout.readline().strip() == "locked"
            with pytest.raises(RunLockedError) as info, store.lock("nightly"):
                pass  # pragma: no cover
            message = str(info.value)
            assert f"pid {proc.pid}" in message and "run 'nightly'" in message, message
            assert "use another run id" in message and "--" not in message  # says what to do
            with store.lock("other"):  # only that run id is taken
                pass
            assert store.load("nightly") == pending_state("nightly", "a")  # readers need no lock
            proc.send_signal(signal.SIGKILL)  # the OS drops a dead holder's lock
            proc.wait()
            with store.lock("nightly"):
                store.commit("nightly", [NodeRecord("a", NodeStatus.COMPLETED, 1)])
        finally:
            proc.kill()
            proc.wait()
        assert store.load("nightly").nodes["a"].status is NodeStatus.COMPLETED

    def test_lock_holder(self, store: Store, store_dir: Path | None) -> None:
        assert store.lock_holder("nightly") is None  # never locked: no holder, nothing made
        with store.lock("nightly"):
            assert store.lock_holder("nightly") == os.getpid()
            assert store.lock_holder("other") is None
        assert store.lock_holder("nightly") is None  # released
        with store.lock("nightly"):  # looking never kept it
            pass
        if store_dir is None:
            return
        proc = spawn(HOLD_LOCK, f"{store.scheme}://{store_dir}", "nightly")
        try:
            assert proc.stdout is not None
            assert proc.stdout.readline().strip() == "locked"
            assert store.lock_holder("nightly") == proc.pid
            proc.send_signal(signal.SIGKILL)  # its pid stays in the lock file
            proc.wait()
            assert store.lock_holder("nightly") is None
        finally:
            proc.kill()
            proc.wait()

    # -- permissions ----------------------------------------------------------------

    def test_files_are_private_whatever_the_umask(
        self, store: Store, store_dir: Path | None, tmp_path: Path
    ) -> None:
        if store_dir is None:
            pytest.skip("a store in memory has no files")
        top = tmp_path / "private"
        path = top / "nested" / "store"
        old = os.umask(0)  # modes that are right under umask 0 are set, not inherited
        try:
            with open_store(f"{store.scheme}://{path}") as other:
                encode = other.codec.encode
                for run_id in ("r", "gone"):
                    other.save(make_state(run_id))
                record = NodeRecord("pending", NodeStatus.COMPLETED, 1, output=encode(1),
                                    data={"k": encode(2)})  # fmt: skip
                with other.lock("r"):
                    other.commit("r", [record])
                assert other.delete("gone")
                other.load("r")
                other.load_statuses("r")
        finally:
            os.umask(old)
        created = [top, top / "nested", *sorted(path.rglob("*")), path]
        assert any(p.is_file() for p in created)
        for entry in created:
            if entry.is_dir():
                assert _mode(entry) == 0o700, entry
            else:
                assert _mode(entry) == 0o600, entry


# Masks for flipped bytes: the lowest bit, ASCII case, and every bit.
FLIP_MASKS = (0x01, 0x20, 0xFF)
#: Files up to this size get every byte flipped; larger ones a sample.
FLIP_ALL_UP_TO = 1024
FLIP_SAMPLE = 500


def flip_offsets(size: int) -> list[int]:
    """Every offset of a small file; for a larger one both ends and a fixed sample."""
    if size <= FLIP_ALL_UP_TO:
        return list(range(size))
    ends = set(range(64)) | set(range(size - 64, size))
    return sorted(ends | set(random.Random(size).sample(range(size), FLIP_SAMPLE)))


class JournaledStoreTests(StoreTests):
    """`StoreTests` plus torn journals and damaged bytes, for stores on ``_journal.py``.

    Each test writes a run as snapshot + journal, damages one file byte by byte,
    and reads it back through a second store on the same directory: every read
    must give exactly the last acknowledged state or raise `CorruptStateError`
    naming the run and the file.
    """

    RUN = "r"

    def reopen(self, store: Store) -> JournaledStore:
        assert isinstance(store, JournaledStore)
        return type(store)(store.path)

    def snapshot_path(self, store: Store) -> Path:
        assert isinstance(store, JournaledStore)
        return store.path / "runs" / self.RUN / f"snapshot{store.format.suffix}"

    def journal_path(self, store: Store) -> Path:
        assert isinstance(store, JournaledStore)
        (path,) = (store.path / "runs" / self.RUN).glob("journal-*.log")
        return path

    def write_run(self, store: Store) -> tuple[RunState, RunState, int]:
        """Save, then three commits: the state before and after the last, and where it starts."""
        encode = store.codec.encode
        store.save(make_state(self.RUN, {"str": "x", "tuple": (1, 2.0), "float": 5.0}))
        store.commit(self.RUN, [NodeRecord("pending", NodeStatus.COMPLETED, 1, T0, T0,
                                           output=encode([1, "two"]),
                                           data={"seen": encode(1)})])  # fmt: skip
        store.commit(self.RUN, [NodeRecord("running", NodeStatus.FAILED, 2, T0, T0,
                                           error=ErrorInfo("E", "m", "tb"),
                                           data={"rows_loaded": None})])  # fmt: skip
        acknowledged = store.load(self.RUN)
        last_start = self.journal_path(store).stat().st_size
        store.commit(self.RUN, [
            NodeRecord("skipped", NodeStatus.COMPLETED, 1, T0, T0, output=encode((b"\x00", 2.5))),
            NodeRecord("failed", NodeStatus.COMPLETED, 4, output=encode({"k": {1, 2}})),
        ], )  # fmt: skip
        store.commit(self.RUN, [])  # no records: nothing is appended
        final = store.load(self.RUN)
        assert final != acknowledged
        return acknowledged, final, last_start

    def test_journal_cut_at_every_byte_of_its_last_record(self, store: Store) -> None:
        acknowledged, final, last_start = self.write_run(store)
        journal = self.journal_path(store)
        content = journal.read_bytes()
        assert last_start < len(content)
        store.close()
        encode = store.codec.encode
        extra = NodeRecord("out_str", NodeStatus.COMPLETED, 9, output=encode("after"))
        for cut in range(last_start, len(content) + 1):
            journal.write_bytes(content[:cut])
            expected = final if cut == len(content) else acknowledged
            where = f"journal cut at byte {cut} of {len(content)}"
            # A fresh store each time, as after a crash: no journal is open yet.
            with self.reopen(store) as reader:
                assert_same_state(reader.load(self.RUN), expected, where)
                assert reader.load_statuses(self.RUN) == statuses_of(expected), where
                # The torn tail is cut off before the next append, which then loads.
                reader.commit(self.RUN, [extra])
                loaded = reader.load(self.RUN)
            assert loaded.nodes["out_str"] == NodeState(NodeStatus.COMPLETED, 9, output="after")
            loaded.nodes["out_str"] = expected.nodes["out_str"]
            assert_same_state(loaded, expected, where + ", then a commit")

    def test_flipped_journal_bytes(self, store: Store) -> None:
        _, final, _ = self.write_run(store)
        store.close()
        self.check_flips(store, self.journal_path(store), final)

    def test_flipped_snapshot_bytes(self, store: Store) -> None:
        _, final, _ = self.write_run(store)
        store.close()
        self.check_flips(store, self.snapshot_path(store), final)

    def check_flips(self, store: Store, path: Path, expected: RunState) -> None:
        original = path.read_bytes()
        statuses = statuses_of(expected)
        damaged = 0
        with self.reopen(store) as reader:
            for offset in flip_offsets(len(original)):
                content = bytearray(original)
                content[offset] ^= FLIP_MASKS[offset % len(FLIP_MASKS)]
                path.write_bytes(content)
                where = f"{path.name} byte {offset} flipped"
                for read, want in ((reader.load, expected), (reader.load_statuses, statuses)):
                    try:
                        got = read(self.RUN)
                    except CorruptStateError as exc:
                        assert_names_run_and_file(exc, self.RUN, path)
                        damaged += 1
                    else:
                        assert_same_state(got, want, where)
            path.write_bytes(original)
            assert_same_state(reader.load(self.RUN), expected)
        assert damaged > 0

    def test_cut_snapshot_is_damage(self, store: Store) -> None:
        self.write_run(store)
        store.close()
        path = self.snapshot_path(store)
        original = path.read_bytes()
        with self.reopen(store) as reader:
            for cut in flip_offsets(len(original)):  # a snapshot is written whole or not at all
                path.write_bytes(original[:cut])
                for read in (reader.load, reader.load_statuses):
                    with pytest.raises(CorruptStateError) as info:
                        read(self.RUN)
                    assert_names_run_and_file(info.value, self.RUN, path)

    def test_damaged_run_leaves_other_runs_readable_and_can_be_deleted(self, store: Store) -> None:
        _, final, _ = self.write_run(store)
        store.save(make_state("intact"))
        path = self.snapshot_path(store)
        path.write_bytes(b"\x00" * path.stat().st_size)
        with pytest.raises(CorruptStateError) as info:
            store.load(self.RUN)
        assert_names_run_and_file(info.value, self.RUN, path)
        assert store.list_runs() == ["intact", self.RUN]
        assert store.load("intact") == make_state("intact")
        store.save(final)  # a damaged run can be replaced...
        assert_same_state(store.load(self.RUN), final)
        assert store.delete(self.RUN)  # ...or deleted
        assert store.list_runs() == ["intact"]
