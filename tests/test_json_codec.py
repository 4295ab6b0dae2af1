"""JSONCodec: exact round trips as readable JSON, tags and escapes, damage, limits, pickle."""

from __future__ import annotations

import json
import math
import pickle
import re
import subprocess
import sys
import threading
import time as time_module
from collections import Counter, OrderedDict, defaultdict, deque
from concurrent.futures import ThreadPoolExecutor
from datetime import UTC, date, datetime, time, timedelta, timezone
from decimal import Decimal
from fractions import Fraction
from ipaddress import ip_address, ip_interface, ip_network
from pathlib import Path, PureWindowsPath
from typing import Any
from uuid import UUID

import numpy as np
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from flowdag.codec import Codec, ValueCodec
from flowdag.errors import (
    CorruptStateError,
    InvalidArgumentError,
    InvalidArgumentTypeError,
    SerializationError,
)
from flowdag.json_codec import JSONCodec, dump_json
from tests import test_codec
from tests.test_codec import PARIS, T0, Point, needs_tzdata, same

CODEC = JSONCodec()
PICKLING = JSONCodec(allow_pickle=True)


def round_trip(value: Any, codec: JSONCodec = CODEC) -> Any:
    return codec.decode(codec.encode(value))


def deep_tuple(depth: int, inner: Any = None) -> Any:
    value = inner
    for _ in range(depth):
        value = (value,)
    return value


def deep_list(depth: int, inner: Any = None) -> Any:
    value = inner
    for _ in range(depth):
        value = [value]
    return value


def test_is_a_value_codec() -> None:
    codec: ValueCodec = JSONCodec()  # mypy checks the protocol; this checks it runs
    assert codec.decode(codec.encode([1])) == [1]


# -- plain JSON ------------------------------------------------------------------------

# JSON-native values: written as plain JSON that any reader gets back, types and all.
PLAIN: dict[str, Any] = {
    "none": None,
    "true": True,
    "false": False,
    "zero": 0,
    "negative": -17,
    "uint64_max": 2**64 - 1,
    "huge_int": 3**500,
    "largest_plain_int": 2**2000 - 1,
    "smallest_plain_int": -(2**2000) + 1,
    "float_whole": 5.0,
    "float": -1.25,
    "negative_zero": -0.0,
    "float_exponent": 1e16,
    "float_tiny": 5e-324,
    "float_max": 1.7976931348623157e308,
    "str": 'héllo wörld ✓ \u2028 \x00\n\t"\\',
    "empty_str": "",
    "empty_list": [],
    "list": [1, "a", None, 2.5, [True, 1, 1.0, False, 0]],
    "dict": {"a": {"b": [1, 2, {"c": None}]}, "": 0},
    "dollar_not_first": {"a$": 1, "a$b": {"x$": "$"}},
    "dollar_values": ["$tuple", {"k": "$set"}, "$"],
    "deep_list": deep_list(200),
}


@pytest.mark.parametrize("value", PLAIN.values(), ids=PLAIN.keys())
def test_plain_values_are_plain_json(value: Any) -> None:
    blob = CODEC.encode(value)
    assert same(json.loads(blob), value)  # any JSON reader: same types and values
    assert same(CODEC.decode(blob), value)
    assert blob == json.dumps(value, ensure_ascii=False, separators=(",", ":")).encode()


def test_plain_values_are_not_copied() -> None:
    # The walk only checks plain data: nothing to copy, the encoder gets the value.
    value = {"rows": [{"id": i, "name": f"r{i}", "x": i / 3} for i in range(50)]}
    assert CODEC._prepare(value, 0) is value


@pytest.mark.parametrize(
    ("value", "text"),
    [(5.0, "5.0"), (-0.0, "-0.0"), (1e16, "1e+16"), (1e-7, "1e-07"), (2.5, "2.5"), (5, "5")],
)
def test_floats_keep_a_point_or_exponent(value: float, text: str) -> None:
    assert CODEC.encode(value) == text.encode()
    assert type(CODEC.decode(text.encode())) is type(value)


# -- tags --------------------------------------------------------------------------------

# The documented layout of every tag, byte for byte.
TAGGED: dict[str, tuple[Any, str]] = {
    "tuple": ((1, "two", 3.0), '{"$tuple":[1,"two",3.0]}'),
    "empty_tuple": ((), '{"$tuple":[]}'),
    "set": ({3}, '{"$set":[3]}'),
    "frozenset": (frozenset({4}), '{"$frozenset":[4]}'),
    "nested": ((1, (2, {3})), '{"$tuple":[1,{"$tuple":[2,{"$set":[3]}]}]}'),
    "bytes": (b"\x00\xff", '{"$bytes":"AP8="}'),
    "empty_bytes": (b"", '{"$bytes":""}'),
    "big_int": (2**2000, '{"$int":"0x1' + "0" * 500 + '"}'),
    "big_negative_int": (-(2**2000), '{"$int":"-0x1' + "0" * 500 + '"}'),
    "nan": (math.nan, '{"$float":"NaN"}'),
    "inf": (math.inf, '{"$float":"Infinity"}'),
    "minus_inf": (-math.inf, '{"$float":"-Infinity"}'),
    "int_keys": ({1: "one", -2: "two"}, '{"$dict":[[1,"one"],[-2,"two"]]}'),
    "tuple_key": ({(1, "a"): None}, '{"$dict":[[{"$tuple":[1,"a"]},null]]}'),
    "mixed_keys": ({"$x": 1, 2: 3}, '{"$dict":[["$x",1],[2,3]]}'),
    "dollar_key": ({"$tuple": [1]}, '{"$$tuple":[1]}'),
    "dollar_keys": ({"$": 1, "a": 2, "$$b": 3}, '{"$$":1,"a":2,"$$$b":3}'),
    "datetime": (T0, '{"$datetime":"2026-11-22T03:04:05.123456"}'),
    "datetime_utc": (T0.replace(tzinfo=UTC), '{"$datetime":"2026-11-22T03:04:05.123456+00:00"}'),
    "datetime_whole_second": (datetime(2026, 1, 2), '{"$datetime":"2026-01-02T00:00:00"}'),
    "datetime_named_offset": (
        T0.replace(tzinfo=timezone(timedelta(hours=3), "MSK")),
        '{"$datetime":["2026-11-22T03:04:05.123456+03:00",{"tzname":"MSK"}]}',
    ),
    "datetime_fold": (
        datetime(2026, 1, 2, fold=1),
        '{"$datetime":["2026-01-02T00:00:00",{"fold":1}]}',
    ),
    "date": (date(2026, 11, 22), '{"$date":"2026-11-22"}'),
    "time": (time(23, 59, 59, 999999), '{"$time":"23:59:59.999999"}'),
    "time_utc": (time(1, 2, 3, tzinfo=UTC), '{"$time":"01:02:03+00:00"}'),
    "timedelta": (timedelta(days=-3, seconds=5, microseconds=7), '{"$timedelta":[-3,5,7]}'),
    "decimal": (Decimal("1.10"), '{"$decimal":"1.10"}'),
    "decimal_snan": (Decimal("-sNaN12"), '{"$decimal":"-sNaN12"}'),
    "uuid": (
        UUID("12345678-1234-5678-1234-567812345678"),
        '{"$uuid":"12345678-1234-5678-1234-567812345678"}',
    ),
    "ndarray": (
        np.arange(3, dtype="<i2"),
        '{"$ndarray":{"dtype":"<i2","shape":[3],"data":"AAABAAIA"}}',
    ),
    "ndarray_fortran": (
        np.asfortranarray(np.arange(4, dtype="|u1").reshape(2, 2)),
        '{"$ndarray":{"dtype":"|u1","shape":[2,2],"order":"F","data":"AAIBAw=="}}',
    ),
    "npscalar": (np.float32(1.5), '{"$npscalar":{"dtype":"<f4","shape":[],"data":"AADAPw=="}}'),
    "path": (Path("/data/out.csv"), '{"$path":["PosixPath","/data/out.csv"]}'),
    "windows_path": (PureWindowsPath("C:/x"), '{"$path":["PureWindowsPath","C:\\\\x"]}'),
    "counter": (Counter("aab"), '{"$counter":{"a":2,"b":1}}'),
    "counter_int_keys": (Counter([1]), '{"$counter":{"$dict":[[1,1]]}}'),
    "ordereddict": (OrderedDict(b=1, a=2), '{"$ordereddict":{"b":1,"a":2}}'),
    "defaultdict": (defaultdict(list, a=[1]), '{"$defaultdict":["list",{"a":[1]}]}'),
    "defaultdict_none": (defaultdict(None), '{"$defaultdict":[null,{}]}'),
    "deque": (deque([1, (2,)], maxlen=4), '{"$deque":[4,[1,{"$tuple":[2]}]]}'),
    "complex": (complex(1, -math.inf), '{"$complex":[1.0,{"$float":"-Infinity"}]}'),
    "fraction": (Fraction(-3, 4), '{"$fraction":[-3,4]}'),
    "ip_address": (ip_address("::1"), '{"$ipaddress":"::1"}'),
    "ip_network": (ip_network("10.0.0.0/8"), '{"$ipnetwork":"10.0.0.0/8"}'),
    "ip_interface": (ip_interface("10.0.0.1/8"), '{"$ipinterface":"10.0.0.1/8"}'),
}
if PARIS is not None:
    TAGGED |= {
        "datetime_zoneinfo_fold": (
            datetime(2026, 10, 25, 2, 30, fold=1, tzinfo=PARIS),
            '{"$datetime":["2026-10-25T02:30:00",{"zone":"Europe/Paris","fold":1}]}',
        ),
        "time_zoneinfo": (time(8, tzinfo=PARIS), '{"$time":["08:00:00",{"zone":"Europe/Paris"}]}'),
    }


@pytest.mark.parametrize(("value", "text"), TAGGED.values(), ids=TAGGED.keys())
def test_tag_layout(value: Any, text: str) -> None:
    blob = CODEC.encode(value)
    assert blob == text.encode()
    json.loads(blob)  # standard JSON, no NaN token
    assert same(CODEC.decode(blob), value)


def test_bytearray_and_memoryview_are_stored_as_bytes() -> None:
    # As in the msgpack codec, so that every store accepts the same outputs.
    assert same(round_trip([bytearray(b"ab"), memoryview(b"cd")]), [b"ab", b"cd"])


# -- round trips ---------------------------------------------------------------------------

ROUND_TRIP: dict[str, Any] = {
    "dollar_keys_nested": {"$$x": {"$y": (1, {"$z": b"\x00"})}, "$": [{"$tuple": ()}]},
    "tag_lookalikes": [{"$tuple": [1]}, {"$set": 1, "x": 2}, {"$pickle": "gAQu"}, {"$$": None}],
    "escaped_dollar_key": {"\u0024x": 1},
    "dollar_key_in_pairs": {1: {"$a": 2}, "$b": (3,)},
    "lone_surrogates": {"\ud800": "a\udfffb", "k": ["\udc00"]},
    "surrogate_with_tags": ("\ud800", b"x", "é"),
    "control_chars": "\x00\x01\x1f\x7f\n\r\t",
    "floats_in_containers": [-0.0, math.inf, (math.nan, -math.inf), {"x": -0.0}],
    "float_keys": {1.5: "a", -0.0: "b", math.inf: "c"},
    "bool_and_none_keys": {True: 1, None: 2, False: 3},
    "bytes_key": {b"k": 1, frozenset({(1, 2)}): 2},
    "big_ints_inside": [2**2000, {"n": -(2**3000)}, (2**2000 - 1,)],
    "set_of_tags": {(1, b"x"), Decimal("2.5"), date(2026, 1, 1)},
    "datetime_micro_offset": T0.replace(tzinfo=timezone(timedelta(seconds=1, microseconds=7))),
    "datetime_negative_offset": T0.replace(tzinfo=timezone(-timedelta(hours=5, minutes=30))),
    "datetime_min_max": [datetime.min, datetime.max, date.min, date.max, time.max],
    "time_named_offset": time(1, tzinfo=timezone(timedelta(hours=1), "X")),
    "time_fold": time(1, 30, fold=1),
    "timedelta_extremes": [timedelta.max, timedelta.min, timedelta(0)],
    "tuples_100_deep": deep_tuple(100),
    "set_in_tuples": deep_tuple(50, frozenset({(1,)})),
    "long_list": list(range(5000)),
}


@pytest.mark.parametrize("codec", [CODEC, PICKLING], ids=["default", "pickle"])
@pytest.mark.parametrize("value", ROUND_TRIP.values(), ids=ROUND_TRIP.keys())
def test_round_trip(codec: JSONCodec, value: Any) -> None:
    blob = codec.encode(value)
    json.loads(blob)  # always standard JSON
    assert same(codec.decode(blob), value)


# Everything the msgpack codec round-trips, this one does too (its own tables).
MSGPACK_VALUES = {
    **test_codec.ROUND_TRIP,
    **{f"scalar_{type(v).__name__}": v for v in test_codec.SCALARS},
}


@pytest.mark.parametrize("value", MSGPACK_VALUES.values(), ids=MSGPACK_VALUES.keys())
def test_same_values_as_msgpack_codec(value: Any) -> None:
    assert same(round_trip(value), value)


@pytest.mark.parametrize("array", test_codec.ARRAYS.values(), ids=test_codec.ARRAYS.keys())
def test_ndarray_round_trip(array: Any) -> None:
    result = round_trip(array)
    assert type(result) is np.ndarray
    assert result.dtype == array.dtype and result.dtype.str == array.dtype.str
    assert result.shape == array.shape
    assert result.tobytes() == array.tobytes()  # bit for bit: NaN and NaT too
    assert result.flags.writeable and result.flags.owndata
    fortran_only = array.flags.f_contiguous and not array.flags.c_contiguous
    assert result.flags.f_contiguous if fortran_only else result.flags.c_contiguous


@needs_tzdata
def test_zoneinfo_keeps_zone_and_fold() -> None:
    moment = datetime(2026, 10, 25, 2, 30, fold=1, tzinfo=PARIS)
    result = round_trip(moment)
    assert result.tzinfo is PARIS
    assert (result.fold, result.utcoffset(), result.tzname()) == (1, timedelta(hours=1), "CET")


def test_utc_comes_back_as_the_singleton() -> None:
    assert round_trip(T0.replace(tzinfo=UTC)).tzinfo is UTC


def test_dict_order_is_kept() -> None:
    value = {"b": 1, "$a": 2, "c": (3,), "a": 4}
    assert list(round_trip(value)) == ["b", "$a", "c", "a"]
    assert list(round_trip({2: 0, 1: 0, "x": 0})) == [2, 1, "x"]


# -- escaping never misreads user data ---------------------------------------------------

TAG_NAMES = ["$tuple", "$set", "$bytes", "$int", "$float", "$dict", "$pickle", "$datetime"]
DOLLAR_KEYS = st.sampled_from(TAG_NAMES) | st.text(alphabet="$tx", max_size=4)
DOLLAR_VALUES = st.recursive(
    st.none() | st.integers() | st.text(alphabet="$ab", max_size=3) | st.binary(max_size=2),
    lambda inner: (
        st.lists(inner, max_size=3)
        | st.lists(inner, max_size=3).map(tuple)
        | st.dictionaries(DOLLAR_KEYS, inner, max_size=3)
        | st.dictionaries(st.integers(0, 3) | DOLLAR_KEYS, inner, max_size=3)
    ),
    max_leaves=12,
)


@settings(max_examples=150, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(value=DOLLAR_VALUES)
def test_property_dollar_keys_round_trip(value: Any) -> None:
    assert same(round_trip(value), value)


def test_escaped_dollar_spelling_is_read_as_the_same_key() -> None:
    # "\u0024" is "$" in JSON: both spellings must take the tag-aware path.
    assert CODEC.decode(b'{"\\u0024tuple":[1]}') == (1,)
    assert CODEC.decode(b'{"\\u0024\\u0024x":1}') == {"$x": 1}
    with pytest.raises(CorruptStateError, match="tag-like key"):
        CODEC.decode(b'{"\\u0024x":1,"y":2}')


# -- refused values --------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("value", "type_name", "detail"),
    test_codec.UNSUPPORTED.values(),
    ids=test_codec.UNSUPPORTED.keys(),
)
def test_unsupported_type_names_type(value: Any, type_name: str, detail: str) -> None:
    with pytest.raises(SerializationError) as info:
        CODEC.encode(value)
    message = str(info.value)
    assert f"type {type_name!r}" in message
    assert detail in message
    assert "allow_pickle=True" in message
    assert isinstance(info.value, TypeError)


def test_nesting_limits() -> None:
    assert round_trip(deep_list(256)) == deep_list(256)
    with pytest.raises(SerializationError, match="256 levels deep"):
        CODEC.encode(deep_list(257))
    # Every level copied (a tag at the bottom), at the limit: far from the recursion limit.
    assert same(round_trip(deep_list(254, (None,))), deep_list(254, (None,)))
    with pytest.raises(SerializationError, match="256 levels deep"):
        CODEC.encode(deep_list(255, (None,)))
    assert same(round_trip(deep_list(80, {"$k": [b"x"]})), deep_list(80, {"$k": [b"x"]}))
    nested = deep_tuple(128)  # a tuple takes two JSON levels
    assert round_trip(nested) == nested
    with pytest.raises(SerializationError, match="deep"):
        CODEC.encode((nested,))
    # A deque takes three levels (tag, pair, items), a Counter two (tag, dict).
    for wrap, levels in ((lambda v: deque([v]), 3), (lambda v: Counter(k=v), 2)):
        value: Any = None
        for _ in range(256 // levels):
            value = wrap(value)
        assert same(round_trip(value), value)
        with pytest.raises(SerializationError, match="256 levels deep"):
            CODEC.encode(wrap(value))
    cycle: list[Any] = []
    cycle.append(cycle)
    with pytest.raises(SerializationError, match="cycle"):
        CODEC.encode(cycle)
    loop: dict[str, Any] = {}
    loop["$self"] = loop
    with pytest.raises(SerializationError, match="cycle"):
        CODEC.encode(loop)


def chain(levels: int, make: Any) -> Any:
    value: Any = (1,)
    for _ in range(levels):
        value = make(value)
    return value


@pytest.mark.parametrize(
    "make",
    [
        lambda inner: {"a": inner, "b": 1},  # the first value changes at every level
        lambda inner: {"$a": inner, "b": 1},  # escaped keys at every level
        lambda inner: {"a": inner, 1: 0},  # pairs found after a value was walked
        lambda inner: {"$a": inner, 1: 0},
    ],
    ids=["copy", "escape", "pairs", "escape_pairs"],
)
def test_no_value_is_walked_twice(make: Any) -> None:
    # Walking a changed child twice per level would take 2**40 steps here.
    value = chain(40, make)
    start = time_module.perf_counter()
    assert same(round_trip(value), value)
    assert time_module.perf_counter() - start < 1.0


@pytest.mark.parametrize(
    ("codec", "value", "message"),
    [
        (JSONCodec(max_blob_size=10), "x" * 9, "max_blob_size"),
        (JSONCodec(max_blob_size=10), b"xyzxyz", "max_blob_size"),
        (JSONCodec(max_items=10), list(range(11)), "list of 11 items"),
        (JSONCodec(max_items=10), {"a": [(0,) * 11]}, "tuple of 11 items"),
        (JSONCodec(max_items=10), [{i: None for i in range(11)}], "dict of 11 items"),
        (JSONCodec(max_items=10), frozenset(range(11)), "frozenset of 11 items"),
    ],
)
def test_encode_limits(codec: JSONCodec, value: Any, message: str) -> None:
    with pytest.raises(SerializationError, match=message):
        codec.encode(value)


def test_within_limits() -> None:
    codec = JSONCodec(max_items=10, max_blob_size=100)
    for value in ([0] * 10, {"a": (1,) * 10}, "x" * 98, ["long string " * 5]):
        assert codec.decode(codec.encode(value)) == value


def test_decode_limits() -> None:
    blob = CODEC.encode({"rows": [[i, str(i)] for i in range(100)]})
    with pytest.raises(CorruptStateError, match="max_blob_size"):
        JSONCodec(max_blob_size=len(blob) - 1).decode(blob)
    with pytest.raises(CorruptStateError, match="list of 100 items"):
        JSONCodec(max_items=99).decode(blob)
    assert JSONCodec(max_items=100, max_blob_size=len(blob)).decode(blob)["rows"][5] == [5, "5"]
    with pytest.raises(CorruptStateError, match="set of 20 items"):
        JSONCodec(max_items=19).decode(CODEC.encode({"k": set(range(20))}))
    for container in (
        deque(range(20)),
        Counter(range(20)),
        OrderedDict.fromkeys(range(20)),
        defaultdict(int, dict.fromkeys(map(str, range(20)))),
    ):
        blob = CODEC.encode([container])
        assert same(JSONCodec(max_items=20).decode(blob), [container])
        with pytest.raises(CorruptStateError, match=f"{type(container).__name__} of 20 items"):
            JSONCodec(max_items=19).decode(blob)


# -- damaged and crafted blobs -------------------------------------------------------------

CRAFTED: dict[str, Any] = {
    "empty": b"",
    "space": b" ",
    "truncated_null": b"nul",
    "nan_token": b"NaN",
    "infinity_token": b"Infinity",
    "nested_nan_token": b"[1,-Infinity]",
    "two_values": b"1 2",
    "trailing_garbage": b"[1]x",
    "bad_utf8": b"\xff",
    "truncated_utf8": b'"\xc3"',
    "raw_control_char": b'"a\x01"',
    "bad_escape": b'"\\x41"',
    "utf16": '"a"'.encode("utf-16"),
    "deep_lists": b"[" * 5000 + b"]" * 5000,
    "int_too_long": b"1" * 5000,
    "msgpack_blob": Codec().encode([1, 2]),
    "str": "not bytes",
    "none": None,
    "int": 5,
    "unknown_tag": b'{"$nope":1}',
    "lone_dollar_key": b'{"$":1}',
    "tag_with_sibling": b'{"$tuple":[1],"a":2}',
    "sibling_then_tag": b'{"a":2,"$tuple":[1]}',
    "tag_and_escaped": b'{"$x":1,"$$y":2}',
    "tuple_of_object": b'{"$tuple":{"a":1}}',
    "tuple_of_str": b'{"$tuple":"ab"}',
    "tuple_of_tuple": b'{"$tuple":{"$tuple":[1]}}',
    "set_of_lists": b'{"$set":[[1]]}',
    "set_of_dicts": b'{"$set":[{"a":1}]}',
    "bytes_bad_padding": b'{"$bytes":"AP8"}',
    "bytes_space": b'{"$bytes":"A P8="}',
    "bytes_not_str": b'{"$bytes":[0]}',
    "bytes_non_ascii": b'{"$bytes":"\xc3\xa9"}',
    "int_decimal": b'{"$int":"12"}',
    "int_empty_hex": b'{"$int":"0x"}',
    "int_upper_hex": b'{"$int":"0X1F"}',
    "int_not_str": b'{"$int":31}',
    "float_lowercase": b'{"$float":"nan"}',
    "float_number": b'{"$float":1.0}',
    "dict_short_pair": b'{"$dict":[[1]]}',
    "dict_list_key": b'{"$dict":[[[1],2]]}',
    "dict_object": b'{"$dict":{"a":1}}',
    "datetime_month_13": b'{"$datetime":"2026-13-01T00:00:00"}',
    "datetime_date_only": b'{"$datetime":"2026-01-01"}',
    "datetime_basic_format": b'{"$datetime":"20260101T000000"}',
    "datetime_z": b'{"$datetime":"2026-01-01T00:00:00Z"}',
    "datetime_empty_extra": b'{"$datetime":["2026-01-01T00:00:00",{}]}',
    "datetime_fold_2": b'{"$datetime":["2026-01-01T00:00:00",{"fold":2}]}',
    "datetime_fold_true": b'{"$datetime":["2026-01-01T00:00:00",{"fold":true}]}',
    "datetime_unknown_field": b'{"$datetime":["2026-01-01T00:00:00",{"dst":1}]}',
    "datetime_unknown_zone": b'{"$datetime":["2026-01-01T00:00:00",{"zone":"No/Where"}]}',
    "datetime_zone_escape": b'{"$datetime":["2026-01-01T00:00:00",{"zone":"../../etc/passwd"}]}',
    "datetime_zone_not_str": b'{"$datetime":["2026-01-01T00:00:00",{"zone":1}]}',
    "datetime_zone_and_offset": (
        b'{"$datetime":["2026-01-01T00:00:00+01:00",{"zone":"Europe/Paris"}]}'
    ),
    "datetime_zone_and_name": b'{"$datetime":["2026-01-01T00:00:00",{"zone":"UTC","tzname":"x"}]}',
    "datetime_name_no_offset": b'{"$datetime":["2026-01-01T00:00:00",{"tzname":"X"}]}',
    "datetime_three_items": b'{"$datetime":["2026-01-01T00:00:00",{"fold":1},1]}',
    "datetime_number": b'{"$datetime":5}',
    "date_short": b'{"$date":"2026-1-1"}',
    "date_basic": b'{"$date":"20260101"}',
    "date_number": b'{"$date":0}',
    "time_hour_24": b'{"$time":"24:00:00"}',
    "time_zone_with_offset": b'{"$time":["08:00:00+01:00",{"zone":"Europe/Paris"}]}',
    "timedelta_unnormalized": b'{"$timedelta":[0,86400,0]}',
    "timedelta_too_big": b'{"$timedelta":[1000000000,0,0]}',
    "timedelta_float": b'{"$timedelta":[1.0,0,0]}',
    "timedelta_bool": b'{"$timedelta":[true,0,0]}',
    "timedelta_short": b'{"$timedelta":[1,0]}',
    "decimal_spaces": b'{"$decimal":" 1.5 "}',
    "decimal_underscore": b'{"$decimal":"1_000"}',
    "decimal_arabic_digit": b'{"$decimal":"\\u0661"}',
    "decimal_word": b'{"$decimal":"pickle"}',
    "decimal_number": b'{"$decimal":1.5}',
    "uuid_no_dashes": b'{"$uuid":"12345678123456781234567812345678"}',
    "uuid_upper": b'{"$uuid":"12345678-1234-5678-1234-56781234567A"}',
    "uuid_garbage": b'{"$uuid":"x"}',
    "array_object_dtype": b'{"$ndarray":{"dtype":"|O","shape":[1],"data":"AAAAAAAAAAA="}}',
    "array_structured": b'{"$ndarray":{"dtype":"[(\'a\', \'<i4\')]","shape":[1],"data":""}}',
    "array_subarray": b'{"$ndarray":{"dtype":"(2,)<i4","shape":[1],"data":"AAAAAAAAAAA="}}',
    "array_unknown_dtype": b'{"$ndarray":{"dtype":"<q9","shape":[1],"data":"AAAAAAAAAAA="}}',
    "array_short_data": b'{"$ndarray":{"dtype":"<i8","shape":[2],"data":"AAAAAAAAAAA="}}',
    "array_huge_shape": (
        b'{"$ndarray":{"dtype":"<i8","shape":[1099511627776,1099511627776],"data":""}}'
    ),
    "array_negative_shape": b'{"$ndarray":{"dtype":"<i8","shape":[-1],"data":""}}',
    "array_65_dims": b'{"$ndarray":{"dtype":"<i8","shape":[' + b"1," * 64 + b'1],"data":""}}',
    "array_order_c": b'{"$ndarray":{"dtype":"|u1","shape":[1],"order":"C","data":"AA=="}}',
    "array_extra_field": b'{"$ndarray":{"dtype":"|u1","shape":[1],"x":1,"data":"AA=="}}',
    "array_no_data": b'{"$ndarray":{"dtype":"|u1","shape":[1]}}',
    "array_bool_2": b'{"$ndarray":{"dtype":"|b1","shape":[2],"data":"AQI="}}',
    "array_shape_bool": b'{"$ndarray":{"dtype":"|u1","shape":[true],"data":"AA=="}}',
    "array_not_object": b'{"$ndarray":[1]}',
    "scalar_with_shape": b'{"$npscalar":{"dtype":"|u1","shape":[1],"data":"AA=="}}',
    "pickle_not_str": b'{"$pickle":1}',
    "path_unknown_kind": b'{"$path":["os.system","x"]}',
    "path_not_normal": b'{"$path":["PosixPath","a//b"]}',
    "path_not_pair": b'{"$path":"a"}',
    "windows_path_here": b'{"$path":["WindowsPath","C:\\\\x"]}',
    "counter_of_list": b'{"$counter":[1]}',
    "ordereddict_of_str": b'{"$ordereddict":"a"}',
    "defaultdict_unknown_factory": b'{"$defaultdict":["os.system",{}]}',
    "defaultdict_of_list": b'{"$defaultdict":[null,[]]}',
    "deque_over_maxlen": b'{"$deque":[0,[1]]}',
    "deque_bool_maxlen": b'{"$deque":[true,[]]}',
    "complex_of_ints": b'{"$complex":[1,2]}',
    "complex_of_three": b'{"$complex":[1.0,2.0,3.0]}',
    "fraction_not_lowest": b'{"$fraction":[2,4]}',
    "fraction_zero_denominator": b'{"$fraction":[1,0]}',
    "fraction_str": b'{"$fraction":"1/2"}',
    "ip_address_garbage": b'{"$ipaddress":"10.0.0.256"}',
    "ip_network_host_bits": b'{"$ipnetwork":"10.0.0.1/8"}',
    "ip_interface_int": b'{"$ipinterface":1}',
}


@pytest.mark.parametrize("blob", CRAFTED.values(), ids=CRAFTED.keys())
def test_crafted_blob_is_refused(blob: Any) -> None:
    for codec in (CODEC, PICKLING):
        with pytest.raises(CorruptStateError):
            codec.decode(blob)


def test_crafted_helpers_are_near_misses() -> None:
    # The refusals above come from the one defect each holds, not from a broken frame.
    assert CODEC.decode(b'{"$ndarray":{"dtype":"<i8","shape":[1],"data":"AAAAAAAAAAA="}}') == [0]
    assert CODEC.decode(b'{"$datetime":["2026-01-01T00:00:00",{"fold":1}]}').fold == 1
    assert CODEC.decode(b'{"$timedelta":[0,86399,0]}') == timedelta(seconds=86399)
    assert CODEC.decode(b'{"$uuid":"12345678-1234-5678-1234-56781234567a"}').int % 16 == 10


def valid(result: Any) -> bool:
    """A value encode can write: it survives a round trip (NaN-aware, via same)."""
    return same(round_trip(result), result)


# A JSON blob has no checksum (the journal and snapshot hold those): a flipped
# digit is another number. What decode guarantees is that a damaged blob gives
# CorruptStateError or a well-formed value, never another exception.
DAMAGE_VALUES: dict[str, Any] = {
    "none": None,
    "true": True,
    "str": "héllo",
    "dict": {"a": 1, "b": [1.5, "x"], "c": None},
    "tags": (2**2000 // 2**1990, {1, 2}, Decimal("1.5"), UUID(int=5), b"\x00", -math.inf),
    "dates": [T0.replace(tzinfo=UTC), date(2026, 1, 1), timedelta(1), time(1, fold=1)],
    "escaped": {"$t": {1: "x"}},
    "array": np.arange(6, dtype=">i2").reshape(2, 3),
}


@pytest.mark.parametrize("value", DAMAGE_VALUES.values(), ids=DAMAGE_VALUES.keys())
def test_every_byte_flip_gives_an_error_or_a_valid_value(value: Any) -> None:
    blob = CODEC.encode(value)
    assert len(blob) < 200  # small enough to try every offset
    for offset in range(len(blob)):
        for mask in (0x01, 0x02, 0x04, 0x10, 0x20, 0x80, 0xFF, 0x5A):
            damaged = bytearray(blob)
            damaged[offset] ^= mask
            try:
                result = CODEC.decode(bytes(damaged))
            except CorruptStateError:
                continue
            assert valid(result), (bytes(damaged), result)


@pytest.mark.parametrize("value", DAMAGE_VALUES.values(), ids=DAMAGE_VALUES.keys())
def test_every_truncation_is_caught(value: Any) -> None:
    # Holds for everything but a bare number at the top ("12" cut is "1").
    blob = CODEC.encode(value)
    for end in range(len(blob)):
        with pytest.raises(CorruptStateError):
            CODEC.decode(blob[:end])
    assert same(CODEC.decode(blob), value)


def test_changed_tag_names_are_caught() -> None:
    # A letter changed in a tag's name makes an unknown tag, never another value.
    blob = CODEC.encode((1, {2}, 2**2000, b"x", math.nan, date(2026, 1, 1)))
    names = [m.span(1) for m in re.finditer(rb'"\$([a-z]+)"', blob)]
    assert len(names) == 6
    for start, end in names:
        for offset in range(start, end):
            for letter in b"abcdefghijklmnopqrstuvwxyz":
                if letter != blob[offset]:
                    damaged = blob[:offset] + bytes([letter]) + blob[offset + 1 :]
                    with pytest.raises(CorruptStateError, match="unknown tag"):
                        CODEC.decode(damaged)


def test_a_flipped_digit_reads_as_another_number() -> None:
    # Documented limit: integrity is the journal's and the snapshot's job.
    assert CODEC.decode(CODEC.encode([17])) == [17]
    assert CODEC.decode(b"[18]") == [18]


def test_errors_are_store_errors_with_a_cause() -> None:
    with pytest.raises(CorruptStateError, match="cannot decode a JSON blob of 3 bytes") as info:
        CODEC.decode(b"[1,")
    assert info.value.__cause__ is not None


# -- pickle ----------------------------------------------------------------------------------


@pytest.mark.parametrize(
    "value",
    [
        Point(1, 2),
        {"p": [Point(1, 2)], "o": (1, Point(3, 4))},
        [test_codec.Weird(), {1, 2}],
        T0.replace(tzinfo=test_codec.OddZone()),  # type: ignore[abstract]
        np.array([1, "a"], dtype=object),
        {"fn": test_codec.function},
    ],
    ids=["namedtuple", "nested", "object", "odd_tzinfo", "object_array", "function"],
)
def test_pickle_when_opted_in(value: Any) -> None:
    blob = PICKLING.encode(value)
    assert b'"$pickle":' in blob
    result = PICKLING.decode(blob)
    assert type(result) is type(value)
    if isinstance(value, np.ndarray):
        assert result.tolist() == value.tolist()
    else:
        assert result == value
    with pytest.raises(CorruptStateError, match=r"pickled data.*allow_pickle=False"):
        CODEC.decode(blob)


def test_pickle_only_for_unsupported_parts() -> None:
    value = [1, (2, Point(3, 4)), {"d": T0}]
    blob = PICKLING.encode(value)
    assert blob.count(b"$pickle") == 1
    assert PICKLING.decode(blob) == value
    plain = [1, (2,), {"d": T0}]
    assert PICKLING.encode(plain) == CODEC.encode(plain)


def test_pickle_is_off_by_default(monkeypatch: pytest.MonkeyPatch) -> None:
    def forbidden(*args: Any, **kwargs: Any) -> Any:
        raise AssertionError("pickle used without opt-in")

    monkeypatch.setattr(pickle, "dumps", forbidden)
    monkeypatch.setattr(pickle, "loads", forbidden)
    assert not JSONCodec().allow_pickle
    with pytest.raises(SerializationError, match="allow_pickle=True"):
        CODEC.encode(Point(1, 2))
    with pytest.raises(CorruptStateError, match="pickle"):
        CODEC.decode(b'[1,{"$pickle":"Y29zCnN5c3RlbQooUydlY2hvIG93bmVkJwp0Ui4="}]')


def test_unpicklable_value_with_pickle_on() -> None:
    with pytest.raises(SerializationError, match=r"type 'function' \(at \[1\]\): pickle failed"):
        PICKLING.encode([1, lambda: 2])
    with pytest.raises(SerializationError, match="lock"):
        PICKLING.encode({"k": threading.Lock()})


class Reentrant:
    """Encodes with the same codec while being pickled, in the middle of a value."""

    def __reduce__(self) -> tuple[Any, ...]:
        assert PICKLING.decode(PICKLING.encode((1, {2}, [3, (4,)]))) == (1, {2}, [3, (4,)])
        return (Reentrant, ())

    def __eq__(self, other: object) -> bool:
        return type(other) is Reentrant

    __hash__ = object.__hash__


def test_encode_reentered_from_pickle() -> None:
    value = [(1, ("a", Reentrant(), (b"z",)), 2), {"k": (3,)}]
    assert PICKLING.decode(PICKLING.encode(value)) == value


# -- the codec object -------------------------------------------------------------------------


def test_codec_pickles_and_shows_settings() -> None:
    codec = JSONCodec(allow_pickle=True, max_items=9999, max_blob_size=12345)
    copy = pickle.loads(pickle.dumps(codec))
    assert (
        repr(copy)
        == repr(codec)
        == ("JSONCodec(allow_pickle=True, max_blob_size=12345, max_items=9999)")
    )
    assert (copy.allow_pickle, copy.max_items, copy.max_blob_size) == (True, 9999, 12345)
    assert copy.decode(codec.encode({"$a": (1,)})) == {"$a": (1,)}


@pytest.mark.parametrize(
    ("kwargs", "error", "message"),
    [
        ({"max_blob_size": 0}, InvalidArgumentError, "max_blob_size must be an int >= 1, not 0"),
        ({"max_items": -5}, InvalidArgumentError, "max_items must be an int >= 1, not -5"),
        ({"max_items": 2.0}, InvalidArgumentTypeError, "max_items must be an int >= 1, not float"),
        (
            {"max_blob_size": "1MiB"},
            InvalidArgumentTypeError,
            "max_blob_size must be an int >= 1, not str",
        ),
        (
            {"allow_pickle": None},
            InvalidArgumentTypeError,
            "allow_pickle must be True or False, not NoneType",
        ),
    ],
)
def test_bad_settings(kwargs: dict[str, Any], error: type[Exception], message: str) -> None:
    with pytest.raises(error) as info:
        JSONCodec(**kwargs)
    assert type(info.value) is error and str(info.value) == message
    assert isinstance(info.value, ValueError)


def test_dump_json_writes_plain_json_like_the_codec() -> None:
    value = {"a": [1, 5.0, "é", None], "$b": "\ud800"}
    assert dump_json(value) == b'{"a":[1,5.0,"\xc3\xa9",null],"$b":"\\ud800"}'.replace(
        b"\xc3\xa9", b"\\u00e9"
    )
    assert dump_json({"a": "é"}) == '{"a":"é"}'.encode()
    with pytest.raises(ValueError):
        dump_json([math.nan])


def test_threads_share_one_codec() -> None:
    values = [
        {"i": i, "rows": [(i, str(j)) for j in range(i % 50)], "$k": {i: np.arange(i % 7)}}
        for i in range(400)
    ]

    def work(value: Any) -> bool:
        return same(CODEC.decode(CODEC.encode(value)), value)

    with ThreadPoolExecutor(8) as pool:
        assert all(pool.map(work, values * 3))


def test_numpy_is_imported_lazily() -> None:
    script = (
        "import sys\n"
        "from flowdag.json_codec import JSONCodec\n"
        "if 'numpy' in sys.modules: print('preloaded'); raise SystemExit\n"
        "codec = JSONCodec()\n"
        "value = {'a': (1, {2}), 'b': b'x' * 5000, '$c': [1.5]}\n"
        "assert codec.decode(codec.encode(value)) == value\n"
        "print('numpy' in sys.modules)\n"
    )
    out = subprocess.run(
        [sys.executable, "-c", script], capture_output=True, text=True, check=True, timeout=60
    ).stdout.strip()
    if out == "preloaded":
        pytest.skip("something imported by flowdag.json_codec imports numpy")
    assert out == "False"


# -- properties -------------------------------------------------------------------------------


@settings(max_examples=100, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(value=test_codec.VALUES)
def test_property_round_trip(value: Any) -> None:
    blob = CODEC.encode(value)
    json.loads(blob)
    assert same(CODEC.decode(blob), value)
