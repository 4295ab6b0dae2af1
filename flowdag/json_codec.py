"""Values <-> UTF-8 JSON text, exactly, for the JSON store.

`JSONCodec` has the interface of the msgpack `flowdag.codec.Codec` (both are
`ValueCodec`\\ s) and round-trips the same values, type and value alike, but
writes JSON a person can read: ``JSONStore`` splices these fragments into one
JSON document per run, and a user opening it sees statuses, outputs and data.

Values JSON holds natively are written as plain JSON: str, bool, None, int
(below 2**2000 in magnitude), finite float (always with a ``.`` or an exponent,
as ``repr`` writes it: 5.0 stays ``5.0``, -0.0 stays ``-0.0``), list, and dict
with str keys. Everything else becomes a *tag*, an object with a single key
that starts with ``$``::

    {"$tuple": [...]}          {"$set": [...]}            {"$frozenset": [...]}
    {"$bytes": "AP8="}         base64 (bytearray and memoryview come back as bytes)
    {"$int": "-0x1f..."}       an int of 2**2000 or more in magnitude, in hex
    {"$float": "NaN"}          also "Infinity" and "-Infinity" (never the NaN token)
    {"$dict": [[k, v], ...]}   a dict with a key that is not a str
    {"$datetime": "2026-11-22T03:04:05.123456+02:00"}
    {"$datetime": ["2026-10-25T02:30:00", {"zone": "Europe/Paris", "fold": 1}]}
    {"$time": "23:59:59.999999"}        same two forms as datetime
    {"$date": "2026-11-22"}
    {"$timedelta": [days, seconds, microseconds]}
    {"$decimal": "1.10"}       str(value): keeps NaN, sNaN, Infinity, -0, exponents
    {"$uuid": "12345678-1234-5678-1234-567812345678"}
    {"$ndarray": {"dtype": "<i8", "shape": [2, 3], "order": "F", "data": "base64"}}
    {"$npscalar": {"dtype": "<f4", "shape": [], "data": "base64"}}
    {"$path": ["PosixPath", "/data/out.csv"]}   also PurePosixPath, PureWindowsPath, WindowsPath
    {"$counter": {...}}        {"$ordereddict": {...}}    the dict as plain JSON or $dict
    {"$defaultdict": ["list", {...}]}     the factory's name (a builtin type) or null
    {"$deque": [maxlen or null, [...]]}
    {"$complex": [real, imag]}            floats, NaN and infinities as $float tags
    {"$fraction": [numerator, denominator]}
    {"$ipaddress": "10.0.0.1"}  {"$ipnetwork": "10.0.0.0/8"}  {"$ipinterface": "::1/64"}
    {"$user": ["myproject.models:Point", {"x": 1, "y": 2}]}   a registered user type:
                               a dataclass's, attrs class's or pydantic model's fields, a
                               NamedTuple's items, an Enum member's name
    {"$arrow": "base64"}       a DataFrame or Arrow table: the frame blob of `flowdag._frames`
    {"$ref": {"uri": ..., "sha256": ..., ...}}   a flowdag.Ref: its fields (`flowdag.refs`)
    {"$pickle": "base64"}      only with allow_pickle=True, see below

A datetime or time is its ``isoformat()`` (with the UTC offset of a
`datetime.timezone`), plus, when needed, an object with the `zoneinfo.ZoneInfo`
key (the ISO text is then the wall time), the name of a `datetime.timezone`
that has a custom one (``tzname``) and ``fold``. NaN's sign and payload bits
are not kept. A numpy array's ``order`` is there only for Fortran order. The
tags' encoders and decoders are in `flowdag._json_tags`.

Which values are stored, which are refused and how, the numpy rules and the
pickle policy are the value model's, shared with the msgpack codec: see
`flowdag._values`.

A user dict whose keys start with ``$`` could be mistaken for a tag, so every
such key gets one more ``$`` (``{"$tuple": 1}`` is written
``{"$$tuple": 1}``) and decoding strips it: an object whose keys start with a
single ``$`` is a tag when it has one key and damage otherwise. Nothing a user
stores is ever read back as a tag.

**No checksum.** A JSON blob is plain text and carries no checksum of its own:
the journal frames each commit with CRC32s and the snapshot file has one over
all of it, so stored fragments are checked where they are stored. On its own,
``decode`` refuses whatever is not a value ``encode`` could have written
(bad UTF-8 or JSON, unknown tags, malformed tag payloads, NaN tokens, limits)
with `CorruptStateError`, and never raises anything else, but a damaged digit
or letter that leaves valid JSON reads as another value.

Limits (constructor arguments): ``max_blob_size`` (2 GiB), the largest blob
``encode`` returns and ``decode`` accepts; ``max_items`` (2**31), the most items
in one list, tuple, set, frozenset, deque or dict (or dict type). Arrays and
objects nest at most 256 deep in the JSON text (a tuple, set or frozenset takes
two levels, a dict with non-str keys three, a deque or defaultdict three, a
Counter or OrderedDict two plus its dict's); a deeper value, or one with a
reference cycle, is refused.

Thread safety: a codec holds no mutable state; one codec serves every thread.
"""

from __future__ import annotations

import json
import json.encoder
from collections.abc import Callable, Iterable
from itertools import islice
from json.encoder import encode_basestring, encode_basestring_ascii
from typing import Any, ClassVar

from flowdag._json_tags import PREPARERS, TAGS, b64, prepare_frame, prepare_numpy, prepare_user
from flowdag._values import (
    DEFAULT_MAX_BLOB_SIZE,
    DEFAULT_MAX_ITEMS,
    CodecBase,
    TooDeep,
    Unsupported,
    find_too_many,
    pickle_value,
    short_repr,
    size_of,
    type_name,
    unsupported_error,
)
from flowdag.errors import CorruptStateError, OptionalDependencyError, SerializationError

__all__ = ["JSONCodec", "dump_json"]

_MAX_DEPTH = 256  # JSON arrays and objects; see the module docstring
# Plain JSON ints stay below this: 603 decimal digits, within even the lowest
# int/str conversion limit Python allows (640 digits, see sys.set_int_max_str_digits).
_INT_LIMIT = 1 << 2000
_PLAIN = frozenset({str, bool, type(None)})  # JSON as they are; int and float need a look
_ITEM_TAGS: dict[type, str] = {tuple: "$tuple", set: "$set", frozenset: "$frozenset"}


def _no_default(value: Any) -> Any:
    # The walk hands the JSON encoder plain JSON only; anything else is a bug.
    raise TypeError(f"unexpected {type_name(value)} after preparing the value")


def _make_dumps(ascii_only: bool) -> Callable[[Any], str]:
    escape = encode_basestring_ascii if ascii_only else encode_basestring
    make_encoder: Any = getattr(json.encoder, "c_make_encoder", None)
    try:
        # Fast path: one C encoder built once. It is stateless without ``markers``
        # (cycles cannot reach it: the walk bounds the depth), so threads share it;
        # JSONEncoder.encode would build a new one on every call (~1 us each).
        encoder = make_encoder(None, _no_default, escape, None, ":", ",", False, False, False)

        def dumps(value: Any) -> str:
            return "".join(encoder(value, 0))

        dumps(None)
        return dumps
    except TypeError:  # no C accelerator (None), or another signature
        return json.JSONEncoder(
            ensure_ascii=ascii_only,
            separators=(",", ":"),
            allow_nan=False,
            check_circular=False,
            default=_no_default,
        ).encode


_dumps = _make_dumps(ascii_only=False)
_dumps_ascii = _make_dumps(ascii_only=True)


def dump_json(value: Any) -> bytes:
    """Plain JSON (no tags) as `JSONCodec` writes it: compact UTF-8, no NaN.

    Text that cannot be UTF-8 (a lone surrogate) is written with ``\\u`` escapes.
    For the JSON store's format, which re-writes fragments it had to parse.

    Raises:
        ValueError: ``value`` holds NaN or an infinity.
        TypeError: ``value`` is not plain JSON.
    """
    text = _dumps(value)
    try:
        return text.encode("utf-8")
    except UnicodeEncodeError:
        return _dumps_ascii(value).encode("ascii")


def _refuse_constant(name: str) -> Any:
    raise CorruptStateError(f"blob holds {name}, which is not JSON (encode writes a $float tag)")


class JSONCodec(CodecBase):
    """Turns values into UTF-8 JSON blobs for the JSON store, and back, exactly.

    Args:
        allow_pickle: pickle values of unsupported types into a ``$pickle`` tag
            instead of refusing them, and unpickle such tags when decoding. Only
            for stores you trust: unpickling runs code.
        max_blob_size: the largest blob ``encode`` returns and ``decode`` accepts.
        max_items: the most items in one list, tuple, set, frozenset, deque or
            dict (or dict type).

    Raises:
        InvalidArgumentTypeError: a limit that is not an int, or an
            ``allow_pickle`` that is not a bool.
        InvalidArgumentError: a limit out of range.
    """

    name: ClassVar[str] = "json"  # recorded by stores: see codec.ValueCodec

    __slots__ = ("__weakref__", "_fast_size", "_scan_plain", "_scan_tagged")

    def __init__(
        self,
        *,
        allow_pickle: bool = False,
        max_blob_size: int = DEFAULT_MAX_BLOB_SIZE,
        max_items: int = DEFAULT_MAX_ITEMS,
    ) -> None:
        self._set_limits(allow_pickle, max_blob_size, max_items)
        # Blobs up to this size are within both limits: every item takes a byte.
        self._fast_size = min(max_blob_size, max_items)
        # JSON's C scanners: stateless between calls, so threads share them.
        self._scan_plain = json.JSONDecoder(parse_constant=_refuse_constant).raw_decode
        self._scan_tagged = json.JSONDecoder(
            object_hook=self._object_hook, parse_constant=_refuse_constant
        ).raw_decode

    # -- encode ---------------------------------------------------------------

    def encode(self, value: Any) -> bytes:
        """Return ``value`` as UTF-8 JSON that `decode` turns back into an equal value.

        Raises:
            SerializationError: the value holds a type the codec cannot store
                (and pickle is off or fails), or it is over the limits.
        """
        if value is None:  # Fast path: the output of most side-effect nodes.
            return b"null"
        try:
            prepared = self._prepare(value, 0)
            blob = dump_json(prepared)
        except SerializationError:
            raise
        except Unsupported as exc:
            raise unsupported_error(value, exc) from exc.__cause__
        except (TooDeep, RecursionError):
            raise SerializationError(
                f"cannot store a value of type {type_name(value)!r}: it nests more than "
                f"{_MAX_DEPTH} levels deep in JSON, or holds a reference cycle; flatten it"
            ) from None
        except (ValueError, TypeError, OverflowError, MemoryError) as exc:
            raise SerializationError(
                f"cannot store a value of type {type_name(value)!r} ({type(exc).__name__}: {exc})"
            ) from exc
        if len(blob) > self._fast_size:
            self._check_encoded(value, blob)
        return blob

    def plain_size(self, blob: bytes) -> int:
        """The length of ``blob``: JSON is never compressed (see `Codec.plain_size`)."""
        return len(blob)

    def plain(self, blob: bytes) -> bytes:
        """``blob`` itself: JSON is never compressed (see `Codec.plain`)."""
        return blob

    def _check_encoded(self, value: Any, blob: bytes) -> None:
        if len(blob) > self._max_blob_size:
            self._too_large(value, len(blob), "max_blob_size", "bytes of JSON")
        if len(blob) > self._max_items:
            self._check_items(value)

    # The walk returns plain JSON for a value: the value itself while nothing in
    # it needs a tag or an escape, new containers otherwise. ``depth`` is how
    # many JSON arrays and objects enclose ``value``. Lists and dicts are first
    # only checked (plain data is the common case, and is never copied); the
    # first item that changes hands over to a copy from there on. Containers
    # recurse one or two frames per JSON level, so the depth limit stays well
    # within the interpreter's recursion limit.

    def _prepare(self, value: Any, depth: int) -> Any:
        kind = type(value)
        if (
            kind in _PLAIN
            or (kind is int and -_INT_LIMIT < value < _INT_LIMIT)
            or (kind is float and value - value == 0.0)  # finite: inf - inf and NaN are NaN
        ):
            return value
        if kind is list:
            return self._prepare_list(value, depth)
        if kind is dict:
            return self._prepare_dict(value, depth)
        return self._prepare_other(value, depth)

    def _prepare_list(self, value: Iterable[Any], depth: int) -> Any:
        """A list's items (or a dict's values view) prepared: ``value`` itself if unchanged."""
        if depth >= _MAX_DEPTH:
            raise TooDeep
        inner = depth + 1
        i = 0
        for item in value:
            kind = type(item)
            if (
                kind in _PLAIN
                or (kind is int and -_INT_LIMIT < item < _INT_LIMIT)
                or (kind is float and item - item == 0.0)
            ):
                i += 1
                continue
            if kind is list:
                new = self._prepare_list(item, inner)
            elif kind is dict:
                new = self._prepare_dict(item, inner)
            else:
                new = self._prepare_other(item, inner)
            if new is not item:
                out = list(islice(value, i))
                out.append(new)
                prepare = self._prepare
                for rest in islice(value, i + 1, None):  # a loop: no frame of its own
                    out.append(prepare(rest, inner))
                return out
            i += 1
        return value

    def _prepare_dict(self, value: dict[Any, Any], depth: int) -> Any:
        if depth >= _MAX_DEPTH:
            raise TooDeep
        # Keys first, before any value is walked: a dict that turns out to need
        # the pairs form must not walk its values twice (twice per level nests
        # into 2**depth walks).
        escape = False
        for key in value:
            if type(key) is not str:
                return self._prepare_pairs(value, depth)
            if key[:1] == "$":
                escape = True
        if escape:
            # A "$" key gets one more: never read back as a tag.
            inner = depth + 1
            prepare = self._prepare
            return {
                "$" + key if key[:1] == "$" else key: prepare(item, inner)
                for key, item in value.items()
            }
        # The values walk as a list's items would (same depth rule): one loop for both.
        values = value.values()
        prepared = self._prepare_list(values, depth)
        return value if prepared is values else dict(zip(value, prepared, strict=True))

    def _prepare_pairs(self, value: dict[Any, Any], depth: int) -> dict[str, Any]:
        # {"$dict": [[k, v], ...]}: three levels, the keys and values inside them.
        if depth + 3 > _MAX_DEPTH:
            raise TooDeep
        inner = depth + 3
        prepare = self._prepare
        return {"$dict": [[prepare(k, inner), prepare(v, inner)] for k, v in value.items()]}

    def _prepare_other(self, value: Any, depth: int) -> Any:
        kind = type(value)
        if kind is int:
            return {"$int": hex(value)}
        if kind is float:
            return {"$float": "NaN" if value != value else "Infinity" if value > 0 else "-Infinity"}
        tag = _ITEM_TAGS.get(kind)
        if tag is not None:  # {"$tuple": [...]}: the object, then the array inside it
            return {tag: self._prepare_list(list(value), depth + 1)}
        return self._encode_other(value, PREPARERS.get(kind), prepare_numpy, prepare_user, depth)

    def _frame(self, value: Any) -> Any:
        return prepare_frame(value)

    def _pickle(self, value: Any) -> dict[str, str]:
        return {"$pickle": b64(pickle_value(value))}

    # -- decode ---------------------------------------------------------------

    def decode(self, blob: bytes) -> Any:
        """Return the value that `encode` turned into ``blob``.

        Raises:
            CorruptStateError: the blob is not UTF-8 JSON that `encode` could have
                written, is over the limits, or holds pickled data while pickle
                is off. Nothing else: whatever the input, this is the only error.
        """
        try:
            size = len(blob)
            self._check_blob_size(size)
            text = str(blob, "utf-8")
            # Fast path: with no key that could start with "$" there is no tag and no
            # escaped key, so the C scanner alone builds the value, no Python hook.
            # (A "$" can also be spelled \u0024 inside a JSON string.)
            if '"$' in text or "\\u0024" in text:
                value, end = self._scan_tagged(text, 0)
            else:
                value, end = self._scan_plain(text, 0)
            if end != len(text):
                raise CorruptStateError(f"blob has data after its JSON value, at offset {end}")
            if size > self._max_items:
                found = find_too_many(value, self._max_items)
                if found is not None:
                    raise CorruptStateError(
                        f"blob holds a {found}, over max_items={self._max_items}; pass a "
                        "larger max_items to the JSONCodec if it is expected"
                    )
            return value
        except (CorruptStateError, OptionalDependencyError):
            raise
        except Exception as exc:
            raise CorruptStateError(
                f"cannot decode a JSON blob of {size_of(blob)} bytes ({type(exc).__name__}: "
                f"{exc}); it is damaged or was written by an incompatible flowdag"
            ) from exc

    def _object_hook(self, obj: dict[str, Any]) -> Any:
        """JSON's hook for every object, innermost first: tags and escaped keys."""
        for key in obj:
            if key[:1] == "$":
                break
        else:
            return obj
        if len(obj) == 1:
            ((key, payload),) = obj.items()
            if key[1:2] != "$":
                decode = TAGS.get(key)
                if decode is None:
                    raise CorruptStateError(f"blob holds an unknown tag {short_repr(key)}")
                return decode(self, payload)
        out = {}
        for key, item in obj.items():
            if key[:1] == "$":
                if key[1:2] != "$":
                    raise CorruptStateError(
                        f"blob holds an object with the tag-like key {short_repr(key)} among others"
                    )
                key = key[1:]
            out[key] = item
        return out
