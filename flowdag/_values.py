"""The value model both codecs share: what flowdag stores, and the checks around it.

A codec (`flowdag.codec.Codec` for msgpack, `flowdag.json_codec.JSONCodec` for
JSON) owns only its framing and its tags; this module owns what they agree on:

- **Which values.** None, bool, int (any size), float (NaN and infinities too),
  str, bytes, list, tuple, dict (any hashable supported keys), set, frozenset,
  datetime, date, time, timedelta, Decimal, UUID, numpy arrays and scalars,
  and the standard-library types of `flowdag._stdtypes`: paths, Counter,
  OrderedDict, defaultdict (builtin factories), deque, complex, Fraction and
  ipaddress values; dataclass, NamedTuple, Enum, attrs and pydantic values of
  the types the user allowed (`flowdag._usertypes`). Types are matched exactly: every other
  subclass of a supported type is refused, as is a tzinfo
  other than `datetime.timezone` and a keyed `zoneinfo.ZoneInfo`. Two known
  exceptions: ``bytearray`` and ``memoryview`` are stored as bytes.
- **numpy** arrays and scalars: `flowdag._arrays` (numpy stays optional).
- **Refusals.** `SerializationError` naming the type, where it sits in the
  value and, where it helps, how to convert it (`unsupported_error`).
- **Pickle**, opt-in only (``allow_pickle=True``): a value of an unsupported
  type is pickled instead of refused, and a codec without the option refuses
  to unpickle, since unpickling runs code.
- **Limits and settings** common to both codecs (`CodecBase`): the largest
  blob, the most items in one container; argument checks, ``repr``, pickling.
"""

from __future__ import annotations

import enum
import pickle
import sys
from collections import Counter, OrderedDict, defaultdict, deque
from collections.abc import Callable
from datetime import date, datetime, time, timedelta, timezone
from decimal import Decimal
from fractions import Fraction
from typing import Any, ClassVar, NoReturn, Protocol, TypeVar, runtime_checkable
from uuid import UUID
from zoneinfo import ZoneInfo

from flowdag._frames import is_frame
from flowdag.errors import (
    CorruptStateError,
    InvalidArgumentError,
    InvalidArgumentTypeError,
    SerializationError,
)

DEFAULT_MAX_BLOB_SIZE = 1 << 31
DEFAULT_MAX_ITEMS = 1 << 31
SUPPORTED = (
    "None, bool, int, float, str, bytes, list, tuple, dict, set, frozenset, datetime, "
    "date, time, timedelta, Decimal, UUID, Path/PurePath, Counter, OrderedDict, defaultdict, "
    "deque, complex, Fraction, ipaddress values, numpy arrays and scalars"
)
# Exactly these types (numpy aside); a subclass of one gets a hint to convert it.
SUPPORTED_TYPES = frozenset(
    {bool, int, float, str, bytes, list, tuple, dict, set, frozenset}
    | {datetime, date, time, timedelta, Decimal, UUID}
    | {Counter, OrderedDict, defaultdict, deque, complex, Fraction}
)
# Containers whose items the item limit and `locate` look into.
SEQUENCE_TYPES = frozenset({list, tuple, set, frozenset, deque})
MAPPING_TYPES = frozenset({dict, Counter, OrderedDict, defaultdict})
_MICROSECOND = timedelta(microseconds=1)
T = TypeVar("T")


@runtime_checkable
class ValueCodec(Protocol):
    """What a store needs of a codec: values to bytes and back.

    `flowdag.codec.Codec` (msgpack) serves the binary stores;
    `flowdag.json_codec.JSONCodec` the JSON store. Both refuse what they cannot
    round-trip exactly.

    ``name`` is a short stable string naming the format the codec writes
    (``"msgpack"``, ``"json"``): stores record it, so that a store opened with a
    codec of another format is refused with a clear error instead of reading
    blobs it cannot decode. Two codecs with the same ``name`` must read each
    other's blobs.
    """

    name: ClassVar[str]

    def encode(self, value: Any) -> bytes:
        """``value`` as bytes; `SerializationError` if it cannot be stored."""
        ...

    def decode(self, blob: bytes) -> Any:
        """The value back; `CorruptStateError` if ``blob`` is damaged."""
        ...

    def plain_size(self, blob: bytes) -> int:
        """The length of ``blob`` with its payload uncompressed (compared with inline limits)."""
        ...

    def plain(self, blob: bytes) -> bytes:
        """``blob`` with its payload uncompressed, which `decode` reads (for the blob area)."""
        ...


class Unsupported(Exception):
    """A value the codec cannot store; `encode` turns it into `unsupported_error`."""

    def __init__(self, value: Any, reason: str = "") -> None:
        super().__init__(value, reason)
        self.value = value
        self.reason = reason


class TooDeep(Exception):
    """A value nested deeper than the codec's limit (or holding a reference cycle)."""


# -- settings -----------------------------------------------------------------


def check_int(
    name: str, value: Any, low: int, high: int | None = None, *, or_none: bool = False
) -> int:
    """``value`` if it is an int from ``low`` to ``high``, else an argument error.

    With ``or_none``, None is accepted too and returned as ``low``.
    """
    if value is None and or_none:
        return low
    accepted = f"an int >= {low}" if high is None else f"an int from {low} to {high}"
    accepted += " or None" if or_none else ""
    if type(value) is not int:
        raise InvalidArgumentTypeError(f"{name} must be {accepted}, not {type_name(value)}")
    if value < low or (high is not None and value > high):
        raise InvalidArgumentError(f"{name} must be {accepted}, not {value}")
    return value


def check_bool(name: str, value: Any) -> bool:
    """``value`` if it is a bool, else `InvalidArgumentTypeError`."""
    if type(value) is not bool:
        raise InvalidArgumentTypeError(f"{name} must be True or False, not {type_name(value)}")
    return value


class CodecBase:
    """Settings both codecs take (pickle policy, blob and item limits) and their checks.

    A subclass calls `_set_limits` from ``__init__`` and lists every constructor
    argument in ``_SETTINGS`` (each a property), which drives ``repr`` and pickling.
    """

    __slots__ = ("_allow_pickle", "_max_blob_size", "_max_items")

    def _set_limits(self, allow_pickle: Any, max_blob_size: Any, max_items: Any) -> None:
        self._allow_pickle = check_bool("allow_pickle", allow_pickle)
        self._max_blob_size = check_int("max_blob_size", max_blob_size, 1)
        self._max_items = check_int("max_items", max_items, 1)

    @property
    def allow_pickle(self) -> bool:
        """Whether unsupported values are pickled, and pickled data unpickled."""
        return self._allow_pickle

    @property
    def max_blob_size(self) -> int:
        """The largest blob, in bytes."""
        return self._max_blob_size

    @property
    def max_items(self) -> int:
        """The most items in one list, tuple, set, frozenset, deque or dict (or dict type)."""
        return self._max_items

    # The constructor's arguments, in order: what ``repr`` shows and pickling keeps.
    _SETTINGS: ClassVar[tuple[str, ...]] = ("allow_pickle", "max_blob_size", "max_items")

    def _settings(self) -> dict[str, Any]:
        return {name: getattr(self, name) for name in self._SETTINGS}

    def __repr__(self) -> str:
        settings = ", ".join(f"{k}={v!r}" for k, v in self._settings().items())
        return f"{type(self).__name__}({settings})"

    # Stores may cross process boundaries: pickle the settings, not the caches.
    def __getstate__(self) -> dict[str, Any]:
        return self._settings()

    def __setstate__(self, state: dict[str, Any]) -> None:
        self.__init__(**state)  # type: ignore[misc]

    def _encode_other(
        self,
        value: Any,
        encode: Callable[..., Any] | None,
        encode_numpy: Callable[[Any, Any], Any],
        encode_user: Callable[..., Any],
        *args: Any,
    ) -> Any:
        """A value outside the format's native types: its type's tag, numpy's, a user
        type's (None if it is not one), or a pickle.

        ``encode`` is the tag of ``type(value)`` (called with the codec, the value
        and ``args``), if the format has one; `Unsupported` if nothing fits.
        """
        try:
            if encode is not None:
                return encode(self, value, *args)
            np = sys.modules.get("numpy")  # an array implies numpy is imported
            if np is not None and isinstance(value, np.ndarray | np.generic):
                return encode_numpy(np, value)
            if is_frame(value):  # a DataFrame or Arrow table: flowdag._frames
                return self._frame(value)
            encoded = encode_user(self, value, *args)  # refuses a type not allowed
            if encoded is not None:
                return encoded
            raise Unsupported(value)
        except Unsupported as exc:
            # Only the value that failed is pickled; a nested failure already had
            # its chance (its pickling failed) and goes up as it is.
            if exc.value is not value or not self._allow_pickle:
                raise
        return self._pickle(value)

    def _pickle(self, value: Any) -> Any:
        raise NotImplementedError

    def _frame(self, value: Any) -> Any:
        raise NotImplementedError

    def _check_items(self, value: Any) -> None:
        """Refuse ``value`` if one of its containers holds more than ``max_items`` items."""
        found = find_too_many(value, self._max_items)
        if found is not None:
            raise SerializationError(
                f"cannot store a value of type {type_name(value)!r}: it holds a {found}, over "
                f"max_items={self._max_items}; split it or pass a larger max_items to the "
                f"{type(self).__name__}"
            )

    def _too_large(self, value: Any, size: int, limit: str, what: str = "bytes") -> NoReturn:
        raise SerializationError(
            f"a value of type {type_name(value)!r} encodes to {size} {what}, over "
            f"{limit}={getattr(self, limit)}; keep large data elsewhere (a file) and return "
            f"its path, or pass a larger {limit} to the {type(self).__name__}"
        )

    def _check_blob_size(self, size: int) -> None:
        if size > self._max_blob_size:
            raise CorruptStateError(
                f"blob of {size} bytes is over max_blob_size={self._max_blob_size}; "
                f"pass a larger max_blob_size to the {type(self).__name__} if it is expected"
            )

    def _unpickle(self, data: bytes) -> Any:
        if not self._allow_pickle:
            codec = type(self).__name__
            raise CorruptStateError(
                "blob holds pickled data (a value of a type flowdag cannot store natively), "
                f"but this {codec} has allow_pickle=False, and unpickling can run code; decode "
                f"it with {codec}(allow_pickle=True) only if you trust whoever wrote the store"
            )
        return pickle.loads(data)


def pickle_value(value: Any) -> bytes:
    """``value`` pickled, or `Unsupported` saying why pickle failed."""
    try:
        return pickle.dumps(value, protocol=pickle.HIGHEST_PROTOCOL)
    except Exception as exc:
        raise Unsupported(value, f"pickle failed: {type(exc).__name__}: {exc}") from exc


def find_too_many(value: Any, limit: int) -> str | None:
    """The first container in ``value`` with more than ``limit`` items, described."""
    stack = [value]
    while stack:
        item = stack.pop()
        kind = type(item)
        if kind in SEQUENCE_TYPES:
            if len(item) > limit:
                return f"{kind.__name__} of {len(item)} items"
            stack.extend(item)
        elif kind in MAPPING_TYPES:
            if len(item) > limit:
                return f"{kind.__name__} of {len(item)} items"
            stack.extend(item.keys())
            stack.extend(item.values())
        elif item is not None and kind not in SUPPORTED_TYPES:
            from flowdag._usertypes import user_data  # a user type's data has the same limits

            stack.append(user_data(item))  # None for any other value
    return None


# -- errors --------------------------------------------------------------------


def text_problem(text: str) -> str | None:
    """Why ``text`` cannot be a stored name or ``ctx.data`` key, or None if it can.

    Every store keeps node names and keys as UTF-8 (LMDB keys, FlatBuffers
    strings), so a str UTF-8 cannot encode (one holding a lone surrogate such
    as ``"\\ud800"``) is refused by all of them alike, before anything is written.
    """
    if text.isascii():  # fast path: nearly every name and key
        return None
    try:
        text.encode()
    except UnicodeEncodeError as exc:
        return (
            f"it holds a lone surrogate ({text[exc.start]!r} at position {exc.start}), "
            "which UTF-8 cannot encode"
        )
    return None


def type_name(value: Any) -> str:
    return type(value).__qualname__


def size_of(blob: Any) -> Any:
    """``len(blob)`` for a message, whatever ``blob`` is."""
    try:
        return len(blob)
    except TypeError:
        return f"? (a {type_name(blob)}, not bytes)"


def short_repr(value: Any) -> str:
    text = repr(value)
    return text if len(text) <= 40 else text[:37] + "..."


def unsupported_error(value: Any, exc: Unsupported) -> SerializationError:
    """The error for ``exc.value`` found inside ``value``: its type, place and a hint."""
    culprit = exc.value
    path = locate(value, culprit)
    where = f" (at {path})" if path else ""
    reason = exc.reason or _hint(culprit)
    reason = f": {reason}" if reason else ""
    return SerializationError(
        f"cannot store a value of type {type_name(culprit)!r}{where}{reason}; return one of "
        f"{SUPPORTED} instead, or create the store's Codec with allow_pickle=True"
    )


def _hint(value: Any) -> str:
    if isinstance(value, enum.Enum):
        return "enum members are refused, store its .value"
    if isinstance(value, tuple) and hasattr(value, "_fields"):
        return "a namedtuple, convert it with tuple(x) or x._asdict()"
    for base in type(value).__mro__[1:]:
        if base in SUPPORTED_TYPES:
            return f"a subclass of {base.__name__}, convert it to a plain {base.__name__}"
    return ""


def locate(root: Any, target: Any) -> str:
    """Where ``target`` sits inside ``root``, as ``[2]['x']``; "" for the root itself."""
    stack: list[tuple[Any, str]] = [(root, "")]
    seen: set[int] = set()
    while stack:
        value, path = stack.pop()
        if value is target:
            return path
        kind = type(value)
        if id(value) in seen or (kind not in SEQUENCE_TYPES and kind not in MAPPING_TYPES):
            continue
        seen.add(id(value))
        children: list[tuple[Any, str]] = []
        if kind in MAPPING_TYPES:
            for i, (key, item) in enumerate(value.items()):
                children.append((key, f"{path}<dict key #{i}>"))
                children.append((item, f"{path}[{short_repr(key)}]"))
        elif kind is list or kind is tuple or kind is deque:
            children.extend((item, f"{path}[{i}]") for i, item in enumerate(value))
        else:
            children.extend((item, f"{path}<{kind.__name__} item>") for item in value)
        stack.extend(reversed(children))
    return ""


# -- fields both codecs write the same way ------------------------------------------


def tz_spec(value: datetime | time) -> Any:
    """None, a `ZoneInfo` key, or [offset in microseconds] (+ the name if not the default)."""
    tz = value.tzinfo
    if tz is None:
        return None
    if type(tz) is timezone:
        offset = tz.utcoffset(None)
        name = tz.tzname(None)
        micros = offset // _MICROSECOND
        return [micros] if name == timezone(offset).tzname(None) else [micros, name]
    if type(tz) is ZoneInfo and tz.key is not None:
        return tz.key
    raise Unsupported(
        value,
        f"its tzinfo is a {type_name(tz)}; use datetime.timezone or zoneinfo.ZoneInfo(key)",
    )


def timedelta_from(fields: Any) -> timedelta:
    """The timedelta of ``[days, seconds, microseconds]`` as encode writes them (normalized)."""
    if type(fields) is not list or len(fields) != 3 or any(type(f) is not int for f in fields):
        raise invalid("timedelta", fields)
    days, seconds, micros = fields
    value = timedelta(days, seconds, micros)
    if (value.days, value.seconds, value.microseconds) != (days, seconds, micros):
        raise invalid("timedelta", fields)
    return value


def parse_exact(
    what: str, text: Any, parse: Callable[[str], T], show: Callable[[T], str] = str
) -> T:
    """``parse(text)`` if ``text`` is the one spelling encode writes (``show`` of the value).

    Decimal, UUID and ISO dates accept other spellings (spaces, underscores,
    other digits, ...) that encode never writes: those are damage.
    """
    if type(text) is not str or not text.isascii():
        raise invalid(what, text)
    value = parse(text)
    if show(value) != text:
        raise invalid(what, text)
    return value


def invalid(what: str, payload: Any) -> CorruptStateError:
    return CorruptStateError(f"blob holds an invalid {what} {short_repr(payload)}")
