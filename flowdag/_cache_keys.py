"""Cache keys: a canonical, typed encoding of a ``cache_key=`` value, and the entry key.

Pure: no I/O, no `hash()`, nothing that depends on the process, so a key is the
same in every process, on every run and under every ``PYTHONHASHSEED``.

`canonical` turns the value a node's ``cache_key`` function returns into bytes.
Every item is written as a type tag, a length and a payload, so:

- **Types count.** ``1``, ``True``, ``1.0``, ``"1"``, ``b"1"``, ``(1,)``,
  ``[1]`` and ``None`` are eight keys; so are a tuple and a NamedTuple with the
  same items, a set and a frozenset, a dict, an OrderedDict, a Counter and a
  defaultdict with the same items. Types are matched exactly: a subclass of a
  supported type is refused, as the codec refuses it (``bytearray`` and
  ``memoryview`` are taken as the bytes they hold, as the codec stores them).
- **Order counts only where it is part of the value.** Sets, frozensets,
  dicts, Counters and defaultdicts are written with their items sorted by
  their own encoding, so any insertion order gives one key. An OrderedDict
  keeps its order (two OrderedDicts in another order are unequal in Python,
  and are two keys); a list, tuple or deque keeps its order.
- **Exact values.** A float is its IEEE 754 bits (``-0.0`` and ``0.0`` differ;
  every NaN is one NaN), as is each half of a complex; ints of any size; a
  str is its UTF-8 (a lone surrogate is refused); a Decimal is its sign,
  digits and exponent (``1.0`` and ``1.00`` differ; every quiet NaN is one,
  every signalling NaN another); a Fraction its numerator and denominator.
- **Dates and times as written**: their fields, ``fold`` and their timezone
  (naive and aware differ, and so do one instant in two zones); the tzinfo
  must be a `datetime.timezone` or a keyed `zoneinfo.ZoneInfo`, as in the codec.
- **Other standard types**: UUID (its 16 bytes), paths (the class counts:
  `PurePosixPath` and `PureWindowsPath` differ), ipaddress values, deque
  (with its ``maxlen``).
- **User types** count by their qualified name (``module:qualname``; a file
  the CLI loaded is named by its stem, as in code fingerprints) and their
  data: a dataclass, attrs class or pydantic model by its fields, a NamedTuple
  by its named items, an Enum member by its ``value``. No `register_types` is
  needed: a key is hashed, never decoded.
- **numpy** arrays and scalars (only if numpy is imported already) by dtype
  (byte order included), shape, whether a scalar, and their C-order bytes,
  every NaN made one NaN: an int32 and an int64 array with the same numbers
  differ, a C- and a Fortran-ordered array with the same items do not. The
  dtypes are the codec's (no object or structured dtypes).
- **A `flowdag.Ref`** counts by its ``sha256``, the digest of the stored value
  it stands for: its preview, extracted fields and expiry do not count.

Anything else (a socket, a DataFrame, a lambda), a container holding itself,
or nesting deeper than `MAX_DEPTH` levels is refused with
`InvalidArgumentTypeError` naming the type and where it sits
(``key[2]['x']: cannot make a cache key of a socket ...``).

The key of a cache entry is made in `flowdag._entry_keys`.
"""

from __future__ import annotations

import math
import struct
import sys
from collections import Counter, OrderedDict, defaultdict, deque
from collections.abc import Callable
from datetime import date, datetime, time, timedelta
from decimal import Decimal
from fractions import Fraction
from typing import Any
from uuid import UUID

from flowdag._arrays import array_parts
from flowdag._code_digests import _LOADED
from flowdag._stdtypes import IP_KINDS, PATH_KINDS, factory_name
from flowdag._userkinds import kind_of, parts
from flowdag._values import Unsupported, _hint, short_repr, tz_spec
from flowdag.errors import InvalidArgumentTypeError
from flowdag.refs import Ref

__all__ = ["MAX_DEPTH", "canonical"]

MAX_DEPTH = 100  # containers inside containers; deeper keys are refused, not a RecursionError
_LENGTH = struct.Struct(">Q")
_FLOAT = struct.Struct(">d")
_NAN = _FLOAT.pack(math.nan)  # the one NaN every NaN is written as
_FIX = "return a str, or a tuple of plain values (str, int, float, bytes, None), instead"


class _Refused(Exception):
    """Raised inside the walk; `canonical` turns it into the public error with its path."""

    def __init__(self, value: Any, path: str, reason: str = "") -> None:
        super().__init__(value, path, reason)
        self.value = value
        self.path = path
        self.reason = reason


def canonical(value: Any, *, name: str = "key") -> bytes:
    """The canonical typed encoding of ``value`` (see the module docstring).

    Args:
        value: what a node's ``cache_key`` function returned.
        name: what the value is called in an error (``key[2]['x']: ...``).

    Raises:
        InvalidArgumentTypeError: ``value`` holds something that cannot be
            part of a key, holds itself, or nests too deep.
    """
    try:
        return _Walk().encode(value, "", 0)
    except _Refused as exc:
        culprit = exc.value
        what = type(culprit).__qualname__
        reason = f" ({exc.reason})" if exc.reason else ""
        raise InvalidArgumentTypeError(
            f"{name}{exc.path}: cannot make a cache key of a {what}{reason}; {_FIX}"
        ) from None


def _item(tag: bytes, payload: bytes) -> bytes:
    """One encoded item: its tag, its length, its payload (so items concatenate unambiguously)."""
    return tag + _LENGTH.pack(len(payload)) + payload


def _int(value: int) -> bytes:
    magnitude = abs(value)
    sign = b"-" if value < 0 else b"+"
    return sign + magnitude.to_bytes((magnitude.bit_length() + 7) // 8, "big")


def _float(value: float) -> bytes:
    return _NAN if value != value else _FLOAT.pack(value)


def _str(value: str, path: str) -> bytes:
    try:
        return value.encode("utf-8")
    except UnicodeEncodeError as exc:
        raise _Refused(
            value,
            path,
            f"it holds a lone surrogate ({value[exc.start]!r} at position {exc.start}), "
            "which UTF-8 cannot encode",
        ) from None


def _type_name(cls: type) -> str:
    """``module:qualname``, a file the CLI loaded named by its stem (the same every run)."""
    module = cls.__module__
    loaded = _LOADED.fullmatch(module)
    return f"{loaded.group(1) if loaded else module}:{cls.__qualname__}"


class _Walk:
    """One encoding: the ids of the containers on the current path, to refuse cycles."""

    __slots__ = ("_open",)

    def __init__(self) -> None:
        self._open: set[int] = set()

    def encode(self, value: Any, path: str, depth: int) -> bytes:
        kind = type(value)
        simple = _SIMPLE.get(kind)
        if simple is not None:
            tag, write = simple
            return _item(tag, write(value, path))
        container = _CONTAINERS.get(kind)
        if container is None and not _other(value):
            np = sys.modules.get("numpy")  # an array implies numpy is imported
            if np is not None and isinstance(value, np.ndarray | np.generic):
                return _item(b"A", _numpy(np, value, path))
            raise _Refused(value, path, _reason(value))
        if depth >= MAX_DEPTH:
            raise _Refused(value, path, f"it nests more than {MAX_DEPTH} levels deep; flatten it")
        if id(value) in self._open:
            raise _Refused(value, path, "it holds itself")
        self._open.add(id(value))
        try:
            if container is not None:
                tag, write_items = container
                return _item(tag, write_items(self, value, path, depth + 1))
            return self._other(value, path, depth + 1)
        finally:
            self._open.discard(id(value))

    # -- containers ------------------------------------------------------------------------

    def ordered(self, items: Any, path: str, depth: int) -> bytes:
        return b"".join(self.encode(item, f"{path}[{i}]", depth) for i, item in enumerate(items))

    def unordered(self, items: Any, path: str, depth: int) -> bytes:
        kind = type(items).__name__
        encoded = [self.encode(item, f"{path}<{kind} item>", depth) for item in items]
        return b"".join(sorted(encoded))

    def pairs(self, mapping: Any, path: str, depth: int, *, keep_order: bool = False) -> bytes:
        entries = []
        for i, (key, item) in enumerate(mapping.items()):
            entries.append(
                (
                    self.encode(key, f"{path}<dict key #{i}>", depth),
                    self.encode(item, f"{path}[{short_repr(key)}]", depth),
                )
            )
        if not keep_order:
            entries.sort()  # by key; ties only between NaN keys, then by value
        return b"".join(key + item for key, item in entries)

    def _other(self, value: Any, path: str, depth: int) -> bytes:
        """A Ref, a deque, a defaultdict or a user type (`_other` said it is one)."""
        cls = type(value)
        if cls is deque:
            maxlen = b"" if value.maxlen is None else _int(value.maxlen)
            return _item(b"q", _item(b"m", maxlen) + self.ordered(value, path, depth))
        if cls is defaultdict:
            try:
                factory = factory_name(value) or ""
            except Unsupported as exc:
                raise _Refused(value, path, exc.reason) from None
            return _item(b"X", _item(b"s", factory.encode()) + self.pairs(value, path, depth))
        kind = kind_of(cls)
        assert kind is not None
        name = _item(b"s", _type_name(cls).encode("utf-8", "surrogatepass"))
        if kind == "enum":
            return _item(b"E", name + self.encode(value.value, f"{path}.value", depth))
        if kind == "namedtuple":
            fields = dict(zip(cls._fields, value, strict=True))
        else:
            try:
                fields = parts(kind, value)
            except Unsupported as exc:
                raise _Refused(value, path, exc.reason) from None
        items = b"".join(
            _item(b"s", _str(field, path)) + self.encode(item, f"{path}.{field}", depth)
            for field, item in fields.items()
        )
        return _item(b"U", name + items)


def _other(value: Any) -> bool:
    """Whether ``value`` is a container `_Walk._other` encodes."""
    cls = type(value)
    return cls is deque or cls is defaultdict or kind_of(cls) is not None


def _reason(value: Any) -> str:
    """Why ``value`` cannot be in a key, when there is more to say than its type."""
    hint = _hint(value)
    if hint:
        return hint
    if type(value).__module__.partition(".")[0] in ("pandas", "polars", "pyarrow"):
        return "key a table by a few values that identify it, or use cache=True"
    return ""


# -- scalars -------------------------------------------------------------------------------


def _tz(value: datetime | time, path: str) -> bytes:
    try:
        spec = tz_spec(value)
    except Unsupported as exc:
        raise _Refused(value, path, exc.reason) from None
    if spec is None:
        return _item(b"N", b"")
    if type(spec) is str:  # a ZoneInfo key
        return _item(b"z", spec.encode())
    return _item(b"o", _int(spec[0]) + (b"" if len(spec) == 1 else b"\x00" + spec[1].encode()))


def _ints(*numbers: int) -> bytes:
    return b"".join(_item(b"i", _int(n)) for n in numbers)


def _datetime(value: datetime, path: str) -> bytes:
    fields = (value.year, value.month, value.day, value.hour, value.minute, value.second)
    return _ints(*fields, value.microsecond, value.fold) + _tz(value, path)


def _time(value: time, path: str) -> bytes:
    fields = (value.hour, value.minute, value.second, value.microsecond, value.fold)
    return _ints(*fields) + _tz(value, path)


def _decimal(value: Decimal, path: str) -> bytes:
    # Not str(value): it follows the context (``capitals``); the tuple is exact and context-free.
    if value.is_nan():  # a NaN's sign and payload do not count, as a float's do not
        return b"sNaN" if value.is_snan() else b"NaN"
    if value.is_infinite():
        return b"-Infinity" if value.is_signed() else b"Infinity"
    sign, digits, exponent = value.as_tuple()
    assert type(exponent) is int
    return _ints(sign, exponent) + _item(b"s", "".join(map(str, digits)).encode())


def _numpy(np: Any, value: Any, path: str) -> bytes:
    try:
        scalar, dtype, shape, fortran, data = array_parts(np, value)
    except Unsupported as exc:
        raise _Refused(value, path, exc.reason) from None
    array = np.asarray(value)
    if fortran:  # the order items sit in memory is not part of the value
        data = array.tobytes(order="C")
    if array.dtype.kind in "fc":
        flat = array.reshape(-1)
        if flat.dtype.kind == "c":  # each half on its own, as a complex's
            flat = flat.view(np.dtype(dtype[0] + "f" + str(array.dtype.itemsize // 2)))
        nans = np.isnan(flat)
        if nans.any():
            flat = flat.copy()
            flat[nans] = np.nan  # every NaN as one bit pattern
            data = flat.tobytes()
    head = _item(b"b", b"\x01" if scalar else b"\x00") + _item(b"s", dtype.encode())
    return head + _ints(len(shape), *shape) + _item(b"y", data)


def _path(value: Any) -> bytes:
    # A path from the file system may hold surrogate escapes: kept (injectively), not refused.
    name = PATH_KINDS[type(value)]
    return _item(b"s", name.encode()) + str(value).encode("utf-8", "surrogatepass")


_Writer = Callable[[Any, str], bytes]


def _plain(write: Callable[[Any], bytes]) -> _Writer:
    return lambda value, path: write(value)


_SIMPLE: dict[type, tuple[bytes, _Writer]] = {
    type(None): (b"N", _plain(lambda value: b"")),
    bool: (b"B", _plain(lambda value: b"\x01" if value else b"\x00")),
    int: (b"i", _plain(_int)),
    float: (b"f", _plain(_float)),
    complex: (b"c", _plain(lambda value: _float(value.real) + _float(value.imag))),
    str: (b"s", _str),
    bytes: (b"y", _plain(bytes)),
    bytearray: (b"y", _plain(bytes)),  # stored as bytes by the codec: the same key
    memoryview: (b"y", _plain(lambda value: value.tobytes())),
    Decimal: (b"m", _decimal),
    Fraction: (b"r", _plain(lambda value: _ints(value.numerator, value.denominator))),
    UUID: (b"u", _plain(lambda value: value.bytes)),
    date: (b"a", _plain(lambda value: _ints(value.toordinal()))),
    datetime: (b"D", _datetime),
    time: (b"h", _time),
    timedelta: (b"e", _plain(lambda value: _ints(value.days, value.seconds, value.microseconds))),
    Ref: (b"R", _plain(lambda value: value.sha256.encode())),
}
_SIMPLE.update(dict.fromkeys(PATH_KINDS, (b"p", _plain(_path))))
_SIMPLE.update(
    dict.fromkeys(
        IP_KINDS, (b"P", _plain(lambda value: f"{type(value).__name__} {value}".encode()))
    )
)

_CONTAINERS: dict[type, tuple[bytes, Callable[[_Walk, Any, str, int], bytes]]] = {
    list: (b"l", _Walk.ordered),
    tuple: (b"t", _Walk.ordered),
    set: (b"S", _Walk.unordered),
    frozenset: (b"F", _Walk.unordered),
    dict: (b"d", _Walk.pairs),
    Counter: (b"C", _Walk.pairs),
    OrderedDict: (
        b"O",
        lambda walk, value, path, depth: walk.pairs(value, path, depth, keep_order=True),
    ),
}
