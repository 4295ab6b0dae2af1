"""RunState and NodeState: equality of stored values, and node times the stores can keep."""

from __future__ import annotations

import math
import subprocess
import sys
from datetime import UTC, datetime, timedelta, timezone
from decimal import Decimal
from pathlib import Path
from typing import Any

import numpy as np
import pytest

from flowdag import InvalidArgumentError, NodeState, NodeStatus, RunState
from flowdag.errors import InvalidArgumentTypeError
from flowdag.stores import open_store

T0 = datetime(2026, 11, 22, 3, 4, 5, 123456, tzinfo=UTC)
STORES = ["memory", "lmdb", "json", "flatbuffers"]


def url(kind: str, tmp_path: Path) -> str:
    return "memory://" if kind == "memory" else f"{kind}://{tmp_path / kind}"


def state_with(output: Any = None, data: Any = None, **node: Any) -> RunState:
    fields: dict[str, Any] = {"status": NodeStatus.COMPLETED, "attempts": 1}
    fields |= {"started_at": T0, "finished_at": T0 + timedelta(seconds=2), "output": output}
    state = RunState("r1", "wf", nodes={"a": NodeState(**(fields | node))})
    state.data = {"d": data}
    return state


def fresh(value: Any) -> Any:
    """An equal value built anew: arrays copied, floats (NaN too) new objects."""
    if isinstance(value, np.ndarray):
        return value.copy()
    if type(value) is float:
        return float(repr(value)) if not math.isnan(value) else float("nan")
    if type(value) in (list, tuple):
        return type(value)(fresh(item) for item in value)
    if type(value) is dict:
        return {fresh(k): fresh(v) for k, v in value.items()}
    if type(value) in (set, frozenset):
        return type(value)(fresh(item) for item in value)
    return value


# -- equality ---------------------------------------------------------------------------

EQUAL: dict[str, Any] = {
    "none": None,
    "int": 5,
    "list": [1, "a", 2.5, None, b"x"],
    "array": np.arange(6).reshape(2, 3),
    "array_in_list": [np.arange(3), {"k": np.ones(2)}],
    "array_in_tuple": (1, np.zeros(3, dtype="<f4")),
    "array_in_dict": {"x": np.array([1.5, 2.5]), "y": [np.int8(3)]},
    "numpy_scalars": [np.float32(1.5), np.int64(-2), np.bool_(True)],
    "nan": math.nan,
    "nan_in_list": [1.0, math.nan],
    "nan_array": np.array([1.0, math.nan, -math.inf]),
    "nan_numpy_scalar": np.float64("nan"),
    "nat_array": np.array(["2026-01-01", "NaT"], dtype="M8[D]"),
    "nan_in_set": {1.0, math.nan},
    "nan_dict_key": {math.nan: 1, 2.0: "b"},
    "nan_tuple_key": {(1, math.nan): "t"},
    "decimal_nan": [Decimal("NaN"), Decimal("-sNaN1"), Decimal("1.5")],
    "empty_array": np.zeros((0, 2)),
    "rows": [{"x": i, "y": i / 3, "z": str(i)} for i in range(50)],
    "datetime": T0,
}


@pytest.mark.parametrize("value", EQUAL.values(), ids=EQUAL.keys())
def test_states_with_equal_values_are_equal(value: Any) -> None:
    state = state_with(value, data=value)
    other = state_with(fresh(value), data=fresh(value))
    assert state == other
    assert (state != other) is False
    assert state.nodes["a"] == other.nodes["a"]


UNEQUAL: dict[str, tuple[Any, Any]] = {
    "int": (1, 2),
    "list_and_tuple": ([1], (1,)),
    "array_values": (np.arange(3), np.array([0, 1, 3])),
    "array_dtype": (np.arange(3, dtype="<i8"), np.arange(3, dtype="<i4")),
    "array_byte_order": (np.arange(3, dtype="<i8"), np.arange(3, dtype=">i8")),
    "array_shape": (np.arange(6).reshape(2, 3), np.arange(6).reshape(3, 2)),
    "array_broadcast": (np.array([1]), np.array([[1]])),
    "one_item_array_dtype": ([np.array([1])], [np.array([1.0])]),
    "array_and_list": (np.arange(3), [0, 1, 2]),
    "numpy_scalar_dtype": (np.float32(1.5), np.float64(1.5)),
    "numpy_scalar_and_python": ([np.int64(1)], [1]),
    "nan_and_number": ([math.nan], [1.0]),
    "nan_array_and_number": (np.array([math.nan]), np.array([0.0])),
    "nan_set": ({math.nan, 1.0}, {math.nan, 2.0}),
    "dict_keys": ({"a": 1}, {"b": 1}),
    "nan_key_and_other_key": ({math.nan: 1}, {3.0: 1}),
    "decimal_nan_and_snan": (Decimal("NaN"), Decimal("sNaN")),
    "array_in_dict": ({"x": np.arange(2)}, {"x": np.arange(3)}),
}


@pytest.mark.parametrize(("left", "right"), UNEQUAL.values(), ids=UNEQUAL.keys())
def test_states_with_different_values_are_not_equal(left: Any, right: Any) -> None:
    assert state_with(left) != state_with(right)
    assert state_with(data=left) != state_with(data=right)
    assert state_with(right) != state_with(left)


def test_plain_equality_is_kept() -> None:
    assert state_with([1, 2.0, True]) == state_with([1.0, 2, 1])  # as == says
    assert state_with({"a": 1}) == state_with({"a": 1})
    assert state_with(error=None) != state_with(attempts=2)
    assert state_with(deps=("x",)) != state_with()
    assert RunState("r", "wf") != RunState("r", "other")
    assert RunState("r", "wf") != "not a state"
    with pytest.raises(TypeError):
        hash(RunState("r", "wf"))


def test_numpy_output_was_a_value_error_before() -> None:
    # The bug: dataclass == compared outputs with ==, and bool(array == array) raised.
    value = {"rows": np.arange(10), "mean": np.float64(4.5)}
    assert state_with(value) == state_with(fresh(value))


@pytest.mark.parametrize("kind", STORES)
def test_numpy_and_nan_state_loads_back_equal(kind: str, tmp_path: Path) -> None:
    state = state_with(
        {"a": np.arange(6.0).reshape(2, 3), "nan": math.nan, "m": [np.float32("nan")]},
        data=[np.array([math.nan]), {math.nan: 1}],
    )
    with open_store(url(kind, tmp_path)) as store:
        store.save(state)
        assert store.load("r1") == state


# -- node times --------------------------------------------------------------------------

NAIVE = datetime(2026, 11, 22, 3, 4, 5)


@pytest.mark.parametrize("kind", STORES)
@pytest.mark.parametrize("field", ["started_at", "finished_at"])
def test_naive_node_time_is_refused_on_save(kind: str, field: str, tmp_path: Path) -> None:
    state = state_with(**{field: NAIVE})
    with open_store(url(kind, tmp_path)) as store:
        with pytest.raises(InvalidArgumentError) as info:
            store.save(state)
        message = str(info.value)
        assert "'a'" in message and field in message and "naive" in message
        assert "timezone-aware" in message and "UTC" in message
        assert isinstance(info.value, ValueError)
        assert store.list_runs() == []  # nothing was written


@pytest.mark.parametrize("kind", STORES)
def test_node_time_of_wrong_type_is_refused_on_save(kind: str, tmp_path: Path) -> None:
    state = state_with(started_at="2026-11-22T03:04:05Z")
    with open_store(url(kind, tmp_path)) as store, pytest.raises(InvalidArgumentTypeError) as info:
        store.save(state)
    assert "started_at" in str(info.value)


@pytest.mark.parametrize("kind", STORES)
def test_aware_node_times_load_back_as_utc(kind: str, tmp_path: Path) -> None:
    paris_winter = timezone(timedelta(hours=1))
    state = state_with(started_at=T0.astimezone(paris_winter), finished_at=None)
    with open_store(url(kind, tmp_path)) as store:
        store.save(state)
        loaded = store.load("r1")
    assert loaded == state
    started = loaded.nodes["a"].started_at
    assert started == T0 and started is not None and started.utcoffset() == timedelta(0)


def test_nan_equality_without_numpy_imported() -> None:
    # Without numpy, == in C is trusted for containers: NaNs must still be seen.
    code = (
        "import math, sys\n"
        "from flowdag.state import NodeState, RunState\n"
        "assert 'numpy' not in sys.modules\n"
        "def state(x, key):\n"
        "    out = [1.0, x, {'k': x}, (x,)]\n"
        "    return RunState('r', 'w', {'n': NodeState(output=out)}, {'d': {key: 1}})\n"
        "assert state(math.nan, math.nan) == state(float('nan'), float('nan'))\n"
        "assert state(math.nan, math.nan) != state(2.0, math.nan)\n"
        "assert state(math.nan, math.nan) != state(math.nan, 2.0)\n"
    )
    result = subprocess.run(
        [sys.executable, "-c", code], capture_output=True, text=True, check=False
    )
    if "numpy" in result.stderr and "AssertionError" in result.stderr:
        pytest.skip("something imported by flowdag.state imports numpy")
    assert result.returncode == 0, result.stderr


@pytest.mark.parametrize("kind", ["memory", "lmdb", "json", "flatbuffers"])
def test_a_loaded_state_and_a_resumed_result_pickle(kind: str, tmp_path: Path) -> None:
    import pickle

    import flowdag

    wf = flowdag.Workflow("pickled")
    wf.add_node("a", lambda: 1)
    wf.add_node("b", lambda a: a + 1, deps=["a"])
    url = "memory://" if kind == "memory" else f"{kind}://{tmp_path / kind}"
    with flowdag.open_store(url) as store:
        first = flowdag.run(wf, run_id="r", store=store)
        state = store.load("r")  # its provenance holds read-only mappings
        assert pickle.loads(pickle.dumps(state)) == state
        again = flowdag.run(wf, run_id="r", store=store)
        for result in (first, again):
            copied = pickle.loads(pickle.dumps(result))
            assert dict(copied.nodes) == dict(result.nodes)
            assert copied.outputs["b"] == 2
