"""Equality of stored values: ``==`` where ``==`` is not enough.

A state saved by one store and loaded by another must compare equal, but plain
``==`` raises on numpy arrays ("truth value ... is ambiguous") and says a
loaded NaN differs from the stored one; DataFrames have the same troubles.
`equal` fixes them and costs a C-level ``==`` for containers of plain values.
`flowdag.state` uses it for ``==`` on `RunState` and `NodeState`.
"""

from __future__ import annotations

import sys
from collections.abc import Iterable
from decimal import Decimal
from typing import Any

from flowdag._frames import is_frame

__all__ = ["equal"]

_SIMPLE = frozenset({str, int, bool, type(None), bytes})
_PLAIN = _SIMPLE | {float}  # == is right for these, but for NaN


def equal(a: Any, b: Any) -> bool:
    """``a == b`` for stored values, usable where ``==`` is not, and NaN equal to NaN.

    As ``==`` for plain values (so ``1 == 1.0``), except that a float, Decimal
    or numpy NaN equals another NaN (a stored NaN loads back as another object),
    numpy arrays and scalars equal only numpy values of the same dtype and
    shape with equal items (NaN and NaT equal to themselves), and containers
    compare their items this way, numpy arrays anywhere inside included.
    DataFrames and Arrow tables equal only frames of the same type with the
    same schema, index, names and values (nulls equal to nulls).
    """
    if a is b:
        return True
    kind = type(a)
    if kind in _SIMPLE and type(b) in _SIMPLE:  # fast path: most values are these
        return bool(a == b)
    if kind is list or kind is tuple:
        if type(b) is not kind or len(a) != len(b):
            return False
        return _fast_equal(a, b, a, b) or all(map(equal, a, b))
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
    if is_frame(a) or is_frame(b):
        return _equal_frames(a, b)
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
        elif not equal(value, other):
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
            if equal(item, other):
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


def _equal_frames(a: Any, b: Any) -> bool:
    """Two pandas or polars DataFrames or Arrow tables: exactly the same frame."""
    if type(a) is not type(b):
        return False
    if type(a).__module__.startswith("pandas"):
        try:  # dtypes, index and column names and types, values bit for bit
            sys.modules["pandas"].testing.assert_frame_equal(a, b, check_exact=True)
        except AssertionError:
            return False
        return True
    if type(a).__module__.startswith("polars"):
        return bool(a.schema == b.schema and a.equals(b))
    return bool(a.equals(b, check_metadata=True))
