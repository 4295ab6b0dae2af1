"""Copy runs between stores and check that runs load: the library behind ``flowdag store``.

A copy goes through `RunState`, not bytes: the JSON store keeps values in its
own codec, the others in msgpack, so only the decoded states can be compared.

A copy is crash-safe: it is written aside where the destination never looks
(the snapshot's temp file of a journaled store, LMDB's open write
transaction), read back from there and compared with the source state
(exactly: see `same_value`), and only then published, atomically (a rename, a
transaction commit). Killed at any moment, the destination holds either no
new copy or a checked one, never a run that silently differs from its source.
"""

from __future__ import annotations

import math
from collections.abc import Callable
from datetime import datetime
from decimal import Decimal
from typing import Any

from flowdag._equality import equal
from flowdag._frames import is_frame
from flowdag.errors import CorruptStateError, SerializationError, StoreError
from flowdag.state import AttemptInfo, NodeState, RunState
from flowdag.stores.base import Store, StoredRun

__all__ = ["copy_run", "same_value", "verify_run"]


def copy_run(src: Store, dst: Store, run_id: str) -> None:
    """Copy one run from ``src`` to ``dst`` (replacing any run of that id there) and verify it.

    The destination run is locked while it is written and read back, so a run
    that is running there is never overwritten. The copy is checked before it
    is published (see the module docstring).

    Raises:
        RunNotFoundError: ``src`` holds no such run.
        CorruptStateError: the run is damaged in ``src``; ``dst`` is untouched.
        RunLockedError: the run is running in ``dst``.
        StoreError: the run holds a value ``dst``'s codec cannot store, or the
            copy read back from ``dst`` is damaged, differs from the source or
            cannot be compared with it; it was not published and ``dst`` is as
            it was.
    """
    state = src.load(run_id)
    try:
        stored = dst._to_stored(state)
    except SerializationError as exc:  # a value the destination's codec cannot hold
        raise StoreError(
            f"run '{run_id}' cannot be stored in {dst.describe(run_id)}: {exc}; nothing was written"
        ) from exc

    def check(read_back: Callable[[], StoredRun]) -> None:
        try:
            problem = _difference(state, dst._from_stored(run_id, read_back()))
        except CorruptStateError as exc:  # raised by dst: not the source's damage
            problem = f"the copy cannot be read back ({exc})"
        except Exception as exc:  # a value whose == raises: the copy is not verified
            problem = f"the copy cannot be compared ({type(exc).__name__}: {exc})"
        if problem is not None:
            raise StoreError(
                f"copy of run '{run_id}' to {dst.describe(run_id)} differs from the source: "
                f"{problem}; the copy was not kept"
            )

    with dst.lock(run_id):
        dst._save_checked(run_id, stored, check)


def verify_run(store: Store, run_id: str) -> str | None:
    """Load one run fully; None if it loads, else why it is damaged.

    Raises:
        RunNotFoundError: the store holds no such run.
        StoreError: the store cannot be read at all (I/O error, closed store);
            damage to the run itself is returned, not raised.
    """
    try:
        store.load(run_id)
    except CorruptStateError as exc:
        return str(exc)
    return None


def _difference(expected: RunState, actual: RunState) -> str | None:
    """What differs between two states, briefly, or None if they are the same."""
    fields = [
        name
        for name in ("run_id", "workflow", "metadata", "data")
        if not same_value(getattr(expected, name), getattr(actual, name))
    ]
    names = expected.nodes.keys() | actual.nodes.keys()
    nodes = sorted(
        name
        for name in names
        if name not in expected.nodes
        or name not in actual.nodes
        or not _same_node(expected.nodes[name], actual.nodes[name])
    )
    if nodes:
        shown = ", ".join(repr(name) for name in nodes[:5])
        more = f" and {len(nodes) - 5} more" if len(nodes) > 5 else ""
        fields.append(f"node {shown}{more}")
    return "differs in " + ", ".join(fields) if fields else None


def _same_node(expected: NodeState, actual: NodeState) -> bool:
    return (
        expected.status == actual.status
        and expected.attempts == actual.attempts
        and same_value(expected.started_at, actual.started_at)
        and same_value(expected.finished_at, actual.finished_at)
        and expected.error == actual.error
        and expected.deps == actual.deps
        and len(expected.history) == len(actual.history)
        and all(map(_same_attempt, expected.history, actual.history))
        and same_value(expected.output, actual.output)
    )


def _same_attempt(expected: AttemptInfo, actual: AttemptInfo) -> bool:
    return (
        type(actual) is AttemptInfo
        and expected.number == actual.number
        and same_value(expected.started_at, actual.started_at)
        and same_value(expected.finished_at, actual.finished_at)
        and expected.error == actual.error
    )


def same_value(expected: Any, actual: Any) -> bool:
    """Whether a value came back exactly: same types all the way down, NaN equal to NaN.

    Stricter than ``==`` (5.0 is not 5, -0.0 is not 0.0, a tuple is not a list,
    ``Decimal("1.10")`` is not ``Decimal("1.1")``) and usable where ``==`` is not
    (NaN, numpy arrays). Iterative: values nested as deep as the codecs allow
    (1024 levels) are compared without recursion.
    """
    pending = [(expected, actual)]
    while pending:
        left, right = pending.pop()
        if type(left) is not type(right):
            return False
        if isinstance(left, list | tuple):
            if len(left) != len(right):
                return False
            pending.extend(zip(left, right, strict=True))
        elif isinstance(left, dict):
            if len(left) != len(right):
                return False
            for key, value in left.items():
                if key not in right:
                    return False
                pending.append((value, right[key]))
        elif not _same_leaf(left, right):
            return False
    return True


def _same_leaf(expected: Any, actual: Any) -> bool:
    """`same_value` for two values of the same type that are not lists, tuples or dicts."""
    if isinstance(expected, float):  # -0.0 is not 0.0; NaN is NaN
        if math.isnan(expected) or math.isnan(actual):
            return math.isnan(expected) and math.isnan(actual)
        return bool(expected == actual) and math.copysign(1, expected) == math.copysign(1, actual)
    if isinstance(expected, Decimal):
        return bool(expected.as_tuple() == actual.as_tuple())
    if isinstance(expected, datetime):  # aware and naive, or two zones, are not the same
        return bool(expected == actual and expected.utcoffset() == actual.utcoffset())
    if type(expected).__module__ == "numpy" and hasattr(expected, "dtype"):
        return _same_array(expected, actual)
    if is_frame(expected):  # a DataFrame's == is elementwise
        return equal(expected, actual)
    return bool(expected == actual)


def _same_array(expected: Any, actual: Any) -> bool:
    import numpy as np  # an array implies numpy is imported already

    if expected.dtype != actual.dtype or expected.shape != actual.shape:
        return False
    equal_nan = expected.dtype.kind in "fc"
    return bool(np.array_equal(expected, actual, equal_nan=equal_nan))
