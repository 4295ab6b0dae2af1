"""numpy arrays and scalars in both codecs: their parts to store, and checked rebuilding.

numpy is imported only when an array is decoded (encoding finds it in
``sys.modules``), so it stays optional. Only bool, number,
datetime64/timedelta64, bytes, str and unstructured void dtypes are accepted;
object, structured and numpy 2's variable-width string dtypes are refused.
Arrays come back C- or Fortran-contiguous, writable, with their dtype (byte
order included) and shape; a scalar comes back as its own numpy type.
"""

from __future__ import annotations

import importlib
import math
import sys
from typing import Any

from flowdag._values import Unsupported, invalid
from flowdag.errors import CorruptStateError

__all__ = ["NUMPY_KINDS", "array_from", "array_parts", "scalar_from"]

NUMPY_KINDS = frozenset("biufcmMSUV")


def array_parts(np: Any, value: Any) -> tuple[bool, str, list[int], bool, bytes]:
    """(is a scalar, dtype.str, shape, Fortran order, raw data) of a numpy value to store."""
    if type(value) is np.ndarray:
        array, scalar = value, False
    elif isinstance(value, np.generic):
        array, scalar = np.asarray(value), True
        if np.dtype(array.dtype.str).type is not type(value):
            raise Unsupported(value, "this numpy scalar type would come back as another one")
    else:
        raise Unsupported(value, "a numpy.ndarray subclass, convert it with np.asarray(x)")
    dtype = array.dtype
    if dtype.kind not in NUMPY_KINDS or dtype.fields is not None or dtype.subdtype is not None:
        raise Unsupported(
            value,
            f"numpy dtype {dtype} is not supported (object, structured and "
            "variable-width string dtypes are refused)",
        )
    fortran = array.ndim > 1 and array.flags.f_contiguous and not array.flags.c_contiguous
    data: bytes = array.tobytes(order="F" if fortran else "C")
    return scalar, dtype.str, list(array.shape), fortran, data


def array_from(dtype_str: Any, shape: Any, fortran: bool, raw: bytes | memoryview) -> Any:
    """The array `array_parts` described, after checking every part; a fresh, writable copy."""
    if (
        type(dtype_str) is not str
        or type(shape) is not list
        or len(shape) > 64
        or not all(type(n) is int and n >= 0 for n in shape)
    ):
        raise invalid("numpy array header", [dtype_str, shape])
    np = _numpy()
    dtype = np.dtype(dtype_str)
    if dtype.kind not in NUMPY_KINDS or dtype.fields is not None or dtype.subdtype is not None:
        raise CorruptStateError(f"blob holds a numpy array of refused dtype {dtype_str!r}")
    if len(raw) != math.prod(shape) * dtype.itemsize:
        raise CorruptStateError(
            f"blob holds a numpy array of shape {shape} and dtype {dtype_str!r} "
            f"with {len(raw)} bytes of data"
        )
    if dtype.kind == "b" and bytes(raw).translate(None, b"\x00\x01"):
        raise CorruptStateError("blob holds a numpy bool array with bytes other than 0 and 1")
    order = "F" if fortran else "C"
    if not raw:
        return np.zeros(shape, dtype, order=order)
    # frombuffer only views ``raw``; the copy makes the array writable and its own.
    return np.frombuffer(raw, dtype).reshape(shape, order=order).copy(order="K")


def scalar_from(array: Any) -> Any:
    """The numpy scalar a 0-d array decoded by `array_from` holds."""
    if array.ndim != 0:
        raise CorruptStateError("blob holds a numpy scalar with a shape")
    return array[()]


def _numpy() -> Any:
    numpy = sys.modules.get("numpy")
    if numpy is not None:
        return numpy
    try:
        return importlib.import_module("numpy")
    except ImportError as exc:
        raise CorruptStateError(
            "blob holds a numpy array, but numpy is not installed; install numpy to read it"
        ) from exc
