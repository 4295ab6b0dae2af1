"""The JSON codec's tags: one encoder per type, one decoder per ``$`` tag.

The tags and their payloads are listed in `flowdag.json_codec`'s docstring.
An encoder returns plain JSON for its value (the codec walks the items of a
tuple or set itself). JSON checks little, so each decoder checks that its
payload is what the encoder writes and raises `CorruptStateError` otherwise.
"""

from __future__ import annotations

import base64
import binascii
import math
import re
from collections import Counter, OrderedDict, defaultdict, deque
from collections.abc import Callable
from datetime import date, datetime, time, timedelta, timezone
from decimal import Decimal
from fractions import Fraction
from typing import TYPE_CHECKING, Any
from uuid import UUID
from zoneinfo import ZoneInfo

from flowdag import _stdtypes as std
from flowdag._arrays import array_from, array_parts, scalar_from
from flowdag._frames import decode_frame, encode_frame
from flowdag._usertypes import user_from, user_parts
from flowdag._values import (
    invalid,
    parse_exact,
    timedelta_from,
    tz_spec,
)
from flowdag.errors import CorruptStateError
from flowdag.refs import Ref, fields_of, ref_from

if TYPE_CHECKING:
    from flowdag.json_codec import JSONCodec

__all__ = ["PREPARERS", "TAGS", "b64", "prepare_frame", "prepare_numpy", "prepare_user"]

_FLOAT_NAMES = {"NaN": math.nan, "Infinity": math.inf, "-Infinity": -math.inf}
_HEX_INT = re.compile(r"-?0x[0-9a-f]+")
_TZ_FIELDS = frozenset({"zone", "tzname", "fold"})
_ARRAY_FIELDS = frozenset({"dtype", "shape", "data"})


# -- tags: encode ------------------------------------------------------------------


def b64(data: bytes) -> str:
    return base64.b64encode(data).decode("ascii")


def _prepare_bytes(codec: JSONCodec, value: bytes | bytearray | memoryview, depth: int) -> Any:
    return {"$bytes": b64(bytes(value))}


def _tz_extra(value: datetime | time) -> tuple[str, dict[str, Any]]:
    """ISO text and the fields it cannot carry: zone key, offset name, fold."""
    spec = tz_spec(value)  # None, a ZoneInfo key, [micros] or [micros, name]
    extra: dict[str, Any] = {}
    if type(spec) is str:
        text = value.replace(tzinfo=None).isoformat()  # the wall time; the zone's rules
        extra["zone"] = spec  # give its offset, which a tzdata update may change
    else:
        text = value.isoformat()
        if spec is not None and len(spec) == 2:
            extra["tzname"] = spec[1]
    if value.fold:
        extra["fold"] = 1
    return text, extra


def _prepare_datetime(codec: JSONCodec, value: datetime | time, depth: int) -> Any:
    text, extra = _tz_extra(value)
    tag = "$datetime" if type(value) is datetime else "$time"
    return {tag: [text, extra] if extra else text}


def _prepare_date(codec: JSONCodec, value: date, depth: int) -> Any:
    return {"$date": value.isoformat()}


def _prepare_timedelta(codec: JSONCodec, value: timedelta, depth: int) -> Any:
    return {"$timedelta": [value.days, value.seconds, value.microseconds]}


def prepare_numpy(np: Any, value: Any) -> Any:
    scalar, dtype, shape, fortran, data = array_parts(np, value)
    payload: dict[str, Any] = {"dtype": dtype, "shape": shape}
    if fortran:
        payload["order"] = "F"
    payload["data"] = b64(data)
    return {"$npscalar" if scalar else "$ndarray": payload}


# Tags around values: the tag's object is one JSON level, an array in it another.


def _prepare_mapping(tag: str) -> Callable[[JSONCodec, Any, int], Any]:
    return lambda codec, value, depth: {tag: codec._prepare(dict(value), depth + 1)}


def _prepare_defaultdict(codec: JSONCodec, value: defaultdict[Any, Any], depth: int) -> Any:
    return {"$defaultdict": [std.factory_name(value), codec._prepare(dict(value), depth + 2)]}


def _prepare_deque(codec: JSONCodec, value: deque[Any], depth: int) -> Any:
    return {"$deque": [value.maxlen, codec._prepare(list(value), depth + 2)]}


def _prepare_pair(tag: str, first: Any, second: Any, codec: JSONCodec, depth: int) -> Any:
    # Floats may need a $float tag, numbers a $int tag: each goes through the walk.
    return {tag: [codec._prepare(first, depth + 2), codec._prepare(second, depth + 2)]}


def prepare_user(codec: JSONCodec, value: Any, depth: int) -> Any:
    parts = user_parts(value)
    if parts is None:
        return None
    name, data = parts
    return {"$user": [name, codec._prepare(data, depth + 2)]}


def prepare_frame(value: Any) -> Any:
    return {"$arrow": b64(encode_frame(value))}


PREPARERS: dict[type, Callable[[JSONCodec, Any, int], Any]] = {
    bytes: _prepare_bytes,
    # msgpack stores these as bytes too; the stores must agree on what they accept.
    bytearray: _prepare_bytes,
    memoryview: _prepare_bytes,
    datetime: _prepare_datetime,
    date: _prepare_date,
    time: _prepare_datetime,
    timedelta: _prepare_timedelta,
    Decimal: lambda codec, value, depth: {"$decimal": str(value)},
    UUID: lambda codec, value, depth: {"$uuid": str(value)},
    Counter: _prepare_mapping("$counter"),
    OrderedDict: _prepare_mapping("$ordereddict"),
    defaultdict: _prepare_defaultdict,
    deque: _prepare_deque,
    complex: lambda codec, v, depth: _prepare_pair("$complex", v.real, v.imag, codec, depth),
    Fraction: lambda codec, v, depth: _prepare_pair(
        "$fraction", v.numerator, v.denominator, codec, depth
    ),
    **{
        kind: lambda codec, value, depth: {"$path": [std.PATH_KINDS[type(value)], str(value)]}
        for kind in std.PATH_KINDS
    },
    **{
        kind: lambda codec, value, depth: {f"$ip{std.IP_KINDS[type(value)]}": str(value)}
        for kind in std.IP_KINDS
    },
    Ref: lambda codec, value, depth: {"$ref": codec._prepare(fields_of(value), depth + 1)},
}


# -- tags: decode ------------------------------------------------------------------
# Each checks that its payload is what encode writes, since JSON itself checks little.


def _items(payload: Any, what: str) -> list[Any]:
    if type(payload) is not list:
        raise invalid(what, payload)
    return payload


def _unb64(payload: Any, what: str) -> bytes:
    if type(payload) is not str:
        raise invalid(what, payload)
    try:
        return base64.b64decode(payload, validate=True)
    except (binascii.Error, ValueError) as exc:
        raise CorruptStateError(f"blob holds invalid base64 in a {what} ({exc})") from exc


def _decode_int(codec: JSONCodec, payload: Any) -> int:
    if type(payload) is not str or not _HEX_INT.fullmatch(payload):
        raise invalid("big integer", payload)
    return int(payload, 16)


def _decode_float(codec: JSONCodec, payload: Any) -> float:
    if type(payload) is not str or payload not in _FLOAT_NAMES:
        raise invalid("float", payload)
    return _FLOAT_NAMES[payload]


def _decode_dict(codec: JSONCodec, payload: Any) -> dict[Any, Any]:
    out = {}
    for pair in _items(payload, "dict"):
        if type(pair) is not list or len(pair) != 2:
            raise invalid("dict item", pair)
        out[pair[0]] = pair[1]
    return out


def _iso_and_extra(payload: Any, what: str) -> tuple[str, dict[str, Any]]:
    if type(payload) is str:
        return payload, {}
    if (
        type(payload) is list
        and len(payload) == 2
        and type(payload[0]) is str
        and type(payload[1]) is dict
        and payload[1]
        and payload[1].keys() <= _TZ_FIELDS
        and payload[1].get("fold", 1) == 1
        and type(payload[1].get("fold", 1)) is int
    ):
        return payload[0], payload[1]
    raise invalid(what, payload)


def _with_tz(value: Any, extra: dict[str, Any], what: str) -> Any:
    zone = extra.get("zone")
    name = extra.get("tzname")
    fold = extra.get("fold", 0)
    if zone is not None:
        if type(zone) is not str or value.tzinfo is not None or name is not None:
            raise invalid(what, extra)
        return value.replace(tzinfo=ZoneInfo(zone), fold=fold)
    if name is not None:
        offset = value.utcoffset()
        if type(name) is not str or offset is None:
            raise invalid(what, extra)
        return value.replace(tzinfo=timezone(offset, name), fold=fold)
    return value.replace(fold=fold) if fold else value


def _decode_datetime(codec: JSONCodec, payload: Any) -> datetime:
    text, extra = _iso_and_extra(payload, "datetime")
    value = parse_exact("datetime", text, datetime.fromisoformat, datetime.isoformat)
    result: datetime = _with_tz(value, extra, "datetime")
    return result


def _decode_time(codec: JSONCodec, payload: Any) -> time:
    text, extra = _iso_and_extra(payload, "time")
    value = parse_exact("time", text, time.fromisoformat, time.isoformat)
    result: time = _with_tz(value, extra, "time")
    return result


def _decode_ndarray(codec: JSONCodec, payload: Any) -> Any:
    if (
        type(payload) is not dict
        or not _ARRAY_FIELDS <= payload.keys() <= _ARRAY_FIELDS | {"order"}
        or payload.get("order", "F") != "F"
    ):
        raise invalid("numpy array", payload)
    raw = _unb64(payload["data"], "numpy array")
    return array_from(payload["dtype"], payload["shape"], "order" in payload, raw)


def _pair(payload: Any, what: str) -> list[Any]:
    if type(payload) is not list or len(payload) != 2:
        raise invalid(what, payload)
    return payload


def _decode_complex(codec: JSONCodec, payload: Any) -> complex:
    real, imag = _pair(payload, "complex")
    if type(real) is not float or type(imag) is not float:
        raise invalid("complex", payload)
    return complex(real, imag)


TAGS: dict[str, Callable[[JSONCodec, Any], Any]] = {
    "$tuple": lambda codec, payload: tuple(_items(payload, "tuple")),
    "$set": lambda codec, payload: set(_items(payload, "set")),
    "$frozenset": lambda codec, payload: frozenset(_items(payload, "frozenset")),
    "$bytes": lambda codec, payload: _unb64(payload, "bytes"),
    "$int": _decode_int,
    "$float": _decode_float,
    "$dict": _decode_dict,
    "$datetime": _decode_datetime,
    "$time": _decode_time,
    "$date": lambda codec, payload: parse_exact(
        "date", payload, date.fromisoformat, date.isoformat
    ),
    "$timedelta": lambda codec, payload: timedelta_from(payload),
    "$decimal": lambda codec, payload: parse_exact("Decimal", payload, Decimal),
    "$uuid": lambda codec, payload: parse_exact("UUID", payload, UUID),
    "$ndarray": _decode_ndarray,
    "$npscalar": lambda codec, payload: scalar_from(_decode_ndarray(codec, payload)),
    "$path": lambda codec, payload: std.path_from(*_pair(payload, "path")),
    "$counter": lambda codec, payload: std.counter_from(payload),
    "$ordereddict": lambda codec, payload: std.ordereddict_from(payload),
    "$defaultdict": lambda codec, payload: std.defaultdict_from(payload),
    "$deque": lambda codec, payload: std.deque_from(payload),
    "$complex": _decode_complex,
    "$fraction": lambda codec, payload: std.fraction_from(payload),
    "$ipaddress": lambda codec, payload: std.ip_from("address", payload),
    "$ipnetwork": lambda codec, payload: std.ip_from("network", payload),
    "$ipinterface": lambda codec, payload: std.ip_from("interface", payload),
    "$user": lambda codec, payload: user_from(payload),
    "$ref": lambda codec, payload: ref_from(payload),
    "$arrow": lambda codec, payload: decode_frame(
        _unb64(payload, "Arrow frame"), codec._max_blob_size
    ),
    "$pickle": lambda codec, payload: codec._unpickle(_unb64(payload, "pickle")),
}
