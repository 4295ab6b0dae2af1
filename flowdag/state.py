"""Plain data at the centre: statuses, the state of a run, and one commit record.

`RunState` is what a store saves and loads; `NodeRecord` is what the runner
commits when a node finishes. Both are plain dataclasses, and a state moved
between any two stores compares equal: ``==`` on `RunState` and `NodeState`
compares outputs, ``data`` and ``metadata`` as stored values (see `_equal`),
so numpy arrays and NaNs inside them compare as they should.
"""

from __future__ import annotations

import sys
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from datetime import datetime
from decimal import Decimal
from enum import StrEnum
from typing import Any

from flowdag.errors import InvalidArgumentError, InvalidArgumentTypeError

__all__ = ["ErrorInfo", "NodeRecord", "NodeState", "NodeStatus", "RunState", "RunStatus"]


class NodeStatus(StrEnum):
    """Where one node stands in a run."""

    PENDING = "pending"
    RUNNING = "running"
    COMPLETED = "completed"
    FAILED = "failed"
    SKIPPED = "skipped"  # not run because an upstream node failed


class RunStatus(StrEnum):
    """Where a whole run stands."""

    PENDING = "pending"  # nothing has finished yet
    RUNNING = "running"  # some nodes finished, others have not (or a crash stopped it)
    COMPLETED = "completed"
    FAILED = "failed"
    SUSPENDED = "suspended"


@dataclass(frozen=True, slots=True)
class ErrorInfo:
    """Why a node failed: the exception's type name, message and traceback text."""

    type: str
    message: str
    traceback: str = ""

    def __str__(self) -> str:
        return f"{self.type}: {self.message}"


@dataclass(slots=True)
class NodeState:
    """One node of a run as stored: status, attempts, times, output or error.

    ``started_at`` and ``finished_at`` are timezone-aware datetimes (the runner
    writes UTC). Stores keep them as UTC instants, exact to the microsecond,
    and load them back in UTC. A naive datetime is not normalised, since it
    does not say which zone it is in: `flowdag.stores.Store.save` refuses it
    with `InvalidArgumentError` naming the node and the field.

    ``==`` compares ``output`` as a stored value: numpy arrays by dtype, shape
    and items, NaN equal to NaN (see `RunState`).
    """

    status: NodeStatus = NodeStatus.PENDING
    attempts: int = 0
    started_at: datetime | None = None
    finished_at: datetime | None = None
    output: Any = None
    error: ErrorInfo | None = None
    deps: tuple[str, ...] = ()

    @property
    def duration(self) -> float | None:
        """Seconds from start to finish of the last attempt, when both are known."""
        if self.started_at is None or self.finished_at is None:
            return None
        return (self.finished_at - self.started_at).total_seconds()

    def __eq__(self, other: object) -> bool:
        if not isinstance(other, NodeState):
            return NotImplemented
        return (
            self.status == other.status
            and self.attempts == other.attempts
            and self.started_at == other.started_at
            and self.finished_at == other.finished_at
            and self.error == other.error
            and self.deps == other.deps
            and _equal(self.output, other.output)
        )


@dataclass(slots=True)
class RunState:
    """Everything a store keeps about one run.

    ``==`` holds for a state and the same state saved by one store and loaded
    by another. Outputs, ``data`` and ``metadata`` compare as stored values:
    as with ``==`` for plain values (``1 == 1.0``), but a NaN (float, Decimal
    or numpy) equals another NaN, numpy arrays and scalars equal only numpy
    values of the same dtype and shape whose items are equal (NaN and NaT equal
    themselves), and this holds inside lists, tuples, dicts and sets too.
    """

    run_id: str
    workflow: str
    nodes: dict[str, NodeState] = field(default_factory=dict)
    data: dict[str, Any] = field(default_factory=dict)
    metadata: dict[str, Any] = field(default_factory=dict)

    @property
    def status(self) -> RunStatus:
        """The run's status, derived from its nodes' statuses."""
        statuses = {node.status for node in self.nodes.values()}
        if statuses <= {NodeStatus.COMPLETED}:
            return RunStatus.COMPLETED
        if statuses <= {NodeStatus.PENDING}:
            return RunStatus.PENDING
        if NodeStatus.PENDING in statuses or NodeStatus.RUNNING in statuses:
            return RunStatus.RUNNING
        return RunStatus.FAILED

    def __eq__(self, other: object) -> bool:
        if not isinstance(other, RunState):
            return NotImplemented
        return (
            self.run_id == other.run_id
            and self.workflow == other.workflow
            and self.nodes == other.nodes
            and _equal(self.data, other.data)
            and _equal(self.metadata, other.metadata)
        )


def check_times(state: RunState) -> None:
    """Refuse a state whose node times a store cannot keep exactly.

    Called by `flowdag.stores.Store.save` before anything is encoded.

    Raises:
        InvalidArgumentTypeError: a time that is not a datetime (or None).
        InvalidArgumentError: a naive datetime (no UTC offset).
    """
    for name, node in state.nodes.items():
        for label, moment in (("started_at", node.started_at), ("finished_at", node.finished_at)):
            if moment is None:
                continue
            where = f"run {state.run_id!r}: node {name!r} has"
            if not isinstance(moment, datetime):
                raise InvalidArgumentTypeError(
                    f"{where} {label}={moment!r}; node times must be timezone-aware "
                    "datetimes or None"
                )
            if moment.utcoffset() is None:
                raise InvalidArgumentError(
                    f"{where} a naive {label} ({moment.isoformat()}); node times must be "
                    "timezone-aware: use UTC, e.g. datetime.now(UTC)"
                )


@dataclass(frozen=True, slots=True)
class NodeRecord:
    """One finished node as the runner commits it: durable all together or not at all.

    ``output`` and the values in ``data`` are already encoded by the store's codec
    (encoding happens once, off the driver thread); ``output`` is None when the node
    has none (failed or skipped). ``data`` holds the node's changes to ``ctx.data``:
    key -> encoded value, or None where the node deleted the key.
    """

    node: str
    status: NodeStatus
    attempts: int = 0
    started_at: datetime | None = None
    finished_at: datetime | None = None
    error: ErrorInfo | None = None
    output: bytes | None = None
    data: Mapping[str, bytes | None] = field(default_factory=dict)


# -- equality of stored values ------------------------------------------------

_SIMPLE = frozenset({str, int, bool, type(None), bytes})
_PLAIN = _SIMPLE | {float}  # == is right for these, but for NaN


def _equal(a: Any, b: Any) -> bool:
    """``a == b`` for stored values, usable where ``==`` is not, and NaN equal to NaN.

    As ``==`` for plain values (so ``1 == 1.0``), except that a float, Decimal
    or numpy NaN equals another NaN (a stored NaN loads back as another object),
    numpy arrays and scalars equal only numpy values of the same dtype and
    shape with equal items (NaN and NaT equal to themselves), and containers
    compare their items this way, numpy arrays anywhere inside included.
    """
    if a is b:
        return True
    kind = type(a)
    if kind in _SIMPLE and type(b) in _SIMPLE:  # fast path: most values are these
        return bool(a == b)
    if kind is list or kind is tuple:
        if type(b) is not kind or len(a) != len(b):
            return False
        return _fast_equal(a, b, a, b) or all(map(_equal, a, b))
    if kind is dict:
        if type(b) is not dict:
            return False
        return _fast_equal(a, b, a.values(), b.values()) or _equal_dicts(a, b)
    if kind is float and type(b) is float:
        return a == b or (a != a and b != b)
    np = sys.modules.get("numpy")
    if np is not None and (isinstance(a, _numpy_types(np)) or isinstance(b, _numpy_types(np))):
        return _equal_numpy(np, a, b)
    if kind is Decimal and type(b) is Decimal and (a.is_nan() or b.is_nan()):
        return a.is_nan() and b.is_nan() and a.is_snan() == b.is_snan()
    if kind is set or kind is frozenset:
        return _equal_sets(a, b)
    try:
        return bool(a == b)
    except Exception:  # a user type (pickled) whose == fails is not equal
        return False


def _fast_equal(a: Any, b: Any, items_a: Iterable[Any], items_b: Iterable[Any]) -> bool:
    """``a == b`` in C, when that is right: no numpy value can be among the items.

    That is when numpy is not imported, or every item is of a plain type. A
    False may still be a NaN, and needs the walk.
    """
    if "numpy" in sys.modules and not (
        _PLAIN.issuperset(map(type, items_a)) and _PLAIN.issuperset(map(type, items_b))
    ):
        return False
    try:
        return bool(a == b)
    except Exception:  # a user type (pickled) whose == fails: the walk decides
        return False


def _equal_dicts(a: dict[Any, Any], b: dict[Any, Any]) -> bool:
    if len(a) != len(b):
        return False
    missing = object()
    lost = []
    for key, value in a.items():
        other = b.get(key, missing)
        if other is missing:
            # A key holding a NaN loads back as another NaN, which no lookup finds;
            # any other key that is not found is missing.
            if _reflexive(key):
                return False
            lost.append((key, value))
        elif not _equal(value, other):
            return False
    return not lost or _pair_up(lost, [(k, v) for k, v in b.items() if k not in a])


def _equal_sets(a: Any, b: Any) -> bool:
    if type(b) is not set and type(b) is not frozenset:
        return False
    if a == b:
        return True
    lost = list(a - b)
    return len(a) == len(b) and not any(map(_reflexive, lost)) and _pair_up(lost, list(b - a))


def _pair_up(left: list[Any], right: list[Any]) -> bool:
    """Whether each of ``left`` equals a different one of ``right`` (NaNs only: few)."""
    if len(left) != len(right):
        return False
    rest = list(right)
    for item in left:
        for i, other in enumerate(rest):
            if _equal(item, other):
                del rest[i]
                break
        else:
            return False
    return True


def _reflexive(value: Any) -> bool:
    """Whether a lookup finds ``value`` (hashable) by an equal one: not if a NaN is inside."""
    if type(value) is tuple or type(value) is frozenset:
        return all(map(_reflexive, value))
    try:
        return bool(value == value)
    except Exception:  # a signalling Decimal NaN
        return False


def _numpy_types(np: Any) -> Any:
    return (np.ndarray, np.generic)


def _equal_numpy(np: Any, a: Any, b: Any) -> bool:
    if type(a) is not type(b) or not isinstance(a, _numpy_types(np)):
        return False
    if a.dtype != b.dtype or a.shape != b.shape:
        return False
    # NaN (and NaT, for datetime64 and timedelta64) equal themselves: a stored
    # array loads back as another object with the same bits.
    equal_nan = a.dtype.kind in "fcmM"
    return bool(np.array_equal(a, b, equal_nan=equal_nan))
