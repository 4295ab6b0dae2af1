"""The msgpack codec's extension types: one encoder per type, one decoder per code.

Their codes and payloads are listed in `flowdag.codec`'s docstring (the blob
format). Each decoder checks that its payload is what the encoder writes and raises
`CorruptStateError` otherwise. Tuples, sets, frozensets, the `collections`
containers and fractions pack and unpack their payload through the codec
(`Codec._pack_items`, `Codec._unpack_nested`), which bounds their nesting.
"""

from __future__ import annotations

import functools
import struct
from collections import Counter, OrderedDict, defaultdict, deque
from collections.abc import Callable
from datetime import date, datetime, time, timedelta, timezone, tzinfo
from decimal import Decimal
from fractions import Fraction
from pathlib import PurePath
from typing import TYPE_CHECKING, Any
from uuid import UUID
from zoneinfo import ZoneInfo

import msgpack
from msgpack import ExtType

from flowdag import _stdtypes as std
from flowdag._arrays import array_from, array_parts, scalar_from
from flowdag._frames import decode_frame, encode_frame
from flowdag._usertypes import user_from, user_parts
from flowdag._values import (
    parse_exact,
    timedelta_from,
    tz_spec,
)
from flowdag.errors import CorruptStateError
from flowdag.refs import Ref, fields_of, ref_from

if TYPE_CHECKING:
    from flowdag.codec import Codec

__all__ = ["DECODERS", "ENCODERS", "EXT_PICKLE", "encode_frame_ext", "encode_numpy", "encode_user"]

_EXT_BIGINT = 1
_EXT_TUPLE = 2
_EXT_SET = 3
_EXT_FROZENSET = 4
_EXT_DATETIME = 5
_EXT_DATE = 6
_EXT_TIME = 7
_EXT_TIMEDELTA = 8
_EXT_DECIMAL = 9
_EXT_UUID = 10
_EXT_NDARRAY = 11
_EXT_NPSCALAR = 12
_EXT_PATHS = {kind: code for code, kind in enumerate(std.PATH_KINDS, start=13)}  # 13-16
_EXT_COUNTER = 17
_EXT_ORDEREDDICT = 18
_EXT_DEFAULTDICT = 19
_EXT_DEQUE = 20
_EXT_COMPLEX = 21
_EXT_FRACTION = 22
_EXT_IPS = {"address": 23, "network": 24, "interface": 25}
_EXT_USER = 26
_EXT_FRAME = 41
_EXT_REF = 42
EXT_PICKLE = 127

_U32 = struct.Struct("<I")
_COMPLEX = struct.Struct("<dd")
_pack_plain = functools.partial(msgpack.packb, use_bin_type=True)
# Payloads of fixed-shape exts: no ext hook, so a nested ext fails validation.
_unpack_plain = msgpack.unpackb


def _encode_int(codec: Codec, value: int) -> ExtType:
    # msgpack calls the hook only for ints beyond its 64-bit range.
    return ExtType(_EXT_BIGINT, value.to_bytes((value.bit_length() + 8) // 8, "big", signed=True))


def _decode_int(codec: Codec, data: bytes) -> int:
    if not data:
        raise CorruptStateError("blob holds an empty big integer")
    return int.from_bytes(data, "big", signed=True)


def _decode_tz(spec: Any) -> tzinfo | None:
    if spec is None:
        return None
    if type(spec) is str:
        return ZoneInfo(spec)
    if type(spec) is list and len(spec) in (1, 2) and type(spec[0]) is int:
        offset = timedelta(microseconds=spec[0])
        if len(spec) == 1:
            return timezone(offset)
        if type(spec[1]) is str:
            return timezone(offset, spec[1])
    raise CorruptStateError(f"blob holds an invalid time zone {spec!r}")


def _fields(data: bytes, count: int, what: str) -> list[Any]:
    fields = _unpack_plain(data)
    if type(fields) is not list or len(fields) != count:
        raise CorruptStateError(f"blob holds an invalid {what}")
    if not all(type(field) is int for field in fields[: count - 1]):
        raise CorruptStateError(f"blob holds an invalid {what}")
    return fields


def _encode_datetime(codec: Codec, value: datetime) -> ExtType:
    v = value
    fields = [v.year, v.month, v.day, v.hour, v.minute, v.second, v.microsecond, v.fold]
    return ExtType(_EXT_DATETIME, _pack_plain([*fields, tz_spec(v)]))


def _decode_datetime(codec: Codec, data: bytes) -> datetime:
    year, month, day, hour, minute, second, micros, fold, tz = _fields(data, 9, "datetime")
    return datetime(
        year, month, day, hour, minute, second, micros, tzinfo=_decode_tz(tz), fold=fold
    )


def _encode_date(codec: Codec, value: date) -> ExtType:
    return ExtType(_EXT_DATE, _pack_plain(value.toordinal()))


def _decode_date(codec: Codec, data: bytes) -> date:
    ordinal = _unpack_plain(data)
    if type(ordinal) is not int:
        raise CorruptStateError("blob holds an invalid date")
    return date.fromordinal(ordinal)


def _encode_time(codec: Codec, value: time) -> ExtType:
    v = value
    fields = [v.hour, v.minute, v.second, v.microsecond, v.fold, tz_spec(v)]
    return ExtType(_EXT_TIME, _pack_plain(fields))


def _decode_time(codec: Codec, data: bytes) -> time:
    hour, minute, second, micros, fold, tz = _fields(data, 6, "time")
    return time(hour, minute, second, micros, tzinfo=_decode_tz(tz), fold=fold)


def _encode_timedelta(codec: Codec, value: timedelta) -> ExtType:
    return ExtType(_EXT_TIMEDELTA, _pack_plain([value.days, value.seconds, value.microseconds]))


def _decode_timedelta(codec: Codec, data: bytes) -> timedelta:
    return timedelta_from(_unpack_plain(data))


def _encode_decimal(codec: Codec, value: Decimal) -> ExtType:
    return ExtType(_EXT_DECIMAL, str(value).encode("ascii"))


def _decode_decimal(codec: Codec, data: bytes) -> Decimal:
    return parse_exact("Decimal", data.decode("ascii"), Decimal)


def _encode_uuid(codec: Codec, value: UUID) -> ExtType:
    return ExtType(_EXT_UUID, value.bytes)


def _decode_uuid(codec: Codec, data: bytes) -> UUID:
    if len(data) != 16:
        raise CorruptStateError(f"blob holds a UUID of {len(data)} bytes, not 16")
    return UUID(bytes=data)


def encode_numpy(np: Any, value: Any) -> ExtType:
    scalar, dtype, shape, fortran, data = array_parts(np, value)
    head = _pack_plain([dtype, shape, fortran])
    code = _EXT_NPSCALAR if scalar else _EXT_NDARRAY
    return ExtType(code, b"".join((_U32.pack(len(head)), head, data)))


def _decode_ndarray(codec: Codec, data: bytes) -> Any:
    (size,) = _U32.unpack_from(data)
    end = _U32.size + size
    if end > len(data):
        raise CorruptStateError("blob holds a truncated numpy array header")
    head = _unpack_plain(data[_U32.size : end])
    if type(head) is not list or len(head) != 3 or type(head[2]) is not bool:
        raise CorruptStateError("blob holds an invalid numpy array header")
    dtype, shape, fortran = head
    return array_from(dtype, shape, fortran, memoryview(data)[end:])


def _encode_path(codec: Codec, value: PurePath) -> ExtType:
    return ExtType(_EXT_PATHS[type(value)], str(value).encode())


def _path_decoder(kind: type) -> Callable[[Codec, bytes], PurePath]:
    name = std.PATH_KINDS[kind]
    return lambda codec, data: std.path_from(name, data.decode())


def _decode_complex(codec: Codec, data: bytes) -> complex:
    if len(data) != _COMPLEX.size:
        raise CorruptStateError(f"blob holds a complex of {len(data)} bytes, not 16")
    return complex(*_COMPLEX.unpack(data))


def _encode_ip(codec: Codec, value: Any) -> ExtType:
    return ExtType(_EXT_IPS[std.IP_KINDS[type(value)]], str(value).encode("ascii"))


def _ip_decoder(kind: str) -> Callable[[Codec, bytes], Any]:
    return lambda codec, data: std.ip_from(kind, data.decode("ascii"))


def encode_user(codec: Codec, value: Any) -> ExtType | None:
    parts = user_parts(value)
    return None if parts is None else codec._pack_items(_EXT_USER, list(parts))


def encode_frame_ext(value: Any) -> ExtType:
    return ExtType(_EXT_FRAME, encode_frame(value))


ENCODERS: dict[type, Callable[[Codec, Any], ExtType]] = {
    int: _encode_int,
    tuple: lambda codec, value: codec._pack_items(_EXT_TUPLE, list(value)),
    set: lambda codec, value: codec._pack_items(_EXT_SET, list(value)),
    frozenset: lambda codec, value: codec._pack_items(_EXT_FROZENSET, list(value)),
    datetime: _encode_datetime,
    date: _encode_date,
    time: _encode_time,
    timedelta: _encode_timedelta,
    Decimal: _encode_decimal,
    UUID: _encode_uuid,
    # The payloads of these nest through the codec: any supported keys and items.
    Counter: lambda codec, value: codec._pack_items(_EXT_COUNTER, dict(value)),
    OrderedDict: lambda codec, value: codec._pack_items(_EXT_ORDEREDDICT, dict(value)),
    defaultdict: lambda codec, value: codec._pack_items(
        _EXT_DEFAULTDICT, [std.factory_name(value), dict(value)]
    ),
    deque: lambda codec, value: codec._pack_items(_EXT_DEQUE, [value.maxlen, list(value)]),
    Fraction: lambda codec, value: codec._pack_items(
        _EXT_FRACTION, [value.numerator, value.denominator]
    ),
    complex: lambda codec, value: ExtType(_EXT_COMPLEX, _COMPLEX.pack(value.real, value.imag)),
    **dict.fromkeys(std.PATH_KINDS, _encode_path),
    **dict.fromkeys(std.IP_KINDS, _encode_ip),
    Ref: lambda codec, value: codec._pack_items(_EXT_REF, fields_of(value)),
}

DECODERS: dict[int, Callable[[Codec, bytes], Any]] = {
    _EXT_BIGINT: _decode_int,
    _EXT_TUPLE: lambda codec, data: tuple(codec._unpack_items(data)),
    _EXT_SET: lambda codec, data: set(codec._unpack_items(data)),
    _EXT_FROZENSET: lambda codec, data: frozenset(codec._unpack_items(data)),
    _EXT_DATETIME: _decode_datetime,
    _EXT_DATE: _decode_date,
    _EXT_TIME: _decode_time,
    _EXT_TIMEDELTA: _decode_timedelta,
    _EXT_DECIMAL: _decode_decimal,
    _EXT_UUID: _decode_uuid,
    _EXT_NDARRAY: _decode_ndarray,
    _EXT_NPSCALAR: lambda codec, data: scalar_from(_decode_ndarray(codec, data)),
    **{code: _path_decoder(kind) for kind, code in _EXT_PATHS.items()},
    _EXT_COUNTER: lambda codec, data: std.counter_from(codec._unpack_nested(data)),
    _EXT_ORDEREDDICT: lambda codec, data: std.ordereddict_from(codec._unpack_nested(data)),
    _EXT_DEFAULTDICT: lambda codec, data: std.defaultdict_from(codec._unpack_nested(data)),
    _EXT_DEQUE: lambda codec, data: std.deque_from(codec._unpack_nested(data)),
    _EXT_COMPLEX: _decode_complex,
    _EXT_FRACTION: lambda codec, data: std.fraction_from(codec._unpack_nested(data)),
    **{code: _ip_decoder(kind) for kind, code in _EXT_IPS.items()},
    _EXT_USER: lambda codec, data: user_from(codec._unpack_nested(data)),
    _EXT_FRAME: lambda codec, data: decode_frame(data, codec.max_decoded_size),
    _EXT_REF: lambda codec, data: ref_from(codec._unpack_nested(data)),
    EXT_PICKLE: lambda codec, data: codec._unpickle(data),
}
