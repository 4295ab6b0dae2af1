"""Codec: exact round trips, the blob format, damage, limits, pickle opt-in."""

from __future__ import annotations

import collections
import enum
import ipaddress
import math
import os
import pickle
import subprocess
import sys
import threading
import tracemalloc
import zlib
from concurrent.futures import ThreadPoolExecutor
from datetime import UTC, date, datetime, time, timedelta, timezone, tzinfo
from decimal import Decimal
from fractions import Fraction
from pathlib import Path, PurePath, PurePosixPath, PureWindowsPath
from typing import Any, NamedTuple
from uuid import UUID

import msgpack
import numpy as np
import pytest
import zstandard
from hypothesis import HealthCheck, assume, given, settings
from hypothesis import strategies as st

from flowdag.codec import Codec
from flowdag.errors import (
    CorruptStateError,
    FlowdagError,
    InvalidArgumentError,
    InvalidArgumentTypeError,
    SerializationError,
    StoreError,
)

try:
    from zoneinfo import ZoneInfo

    PARIS: tzinfo | None = ZoneInfo("Europe/Paris")
except Exception:  # no tz database on this machine
    PARIS = None

needs_tzdata = pytest.mark.skipif(PARIS is None, reason="no IANA time zone database")

KIB = 1024
MIB = 1024 * KIB


# Standard-library types beyond the basic ones (flowdag._stdtypes), exactly.
STDLIB_VALUES: dict[str, Any] = {
    "pure_posix_path": PurePosixPath("data/out.csv"),
    "pure_windows_path": PureWindowsPath(r"C:\data\out.csv"),
    "path": Path("/tmp/flowdag/é x.parquet"),
    "relative_path": Path("a/b"),
    "paths_apart": [PurePosixPath("a"), PureWindowsPath("a"), Path("a")],
    "counter": collections.Counter("abracadabra"),
    "counter_odd_counts": collections.Counter({(1, 2): -3, "x": 0, None: 2.5}),
    "ordereddict": collections.OrderedDict([("z", 1), ("a", (2,)), (3, {4})]),
    "ordereddict_of_rich": collections.OrderedDict(when=datetime(2026, 1, 2), p=Path("x")),
    "defaultdict_list": collections.defaultdict(list, {"a": [1, 2]}),
    "defaultdict_int": collections.defaultdict(int, {(1,): 5}),
    "defaultdict_none": collections.defaultdict(None, {"k": "v"}),
    "defaultdict_set_empty": collections.defaultdict(set),
    "deque": collections.deque([1, "two", (3,)]),
    "deque_maxlen": collections.deque([1, 2], maxlen=3),
    "deque_maxlen_zero": collections.deque(maxlen=0),
    "complex": 1 + 2j,
    "complex_odd": complex(-0.0, math.inf),
    "complex_nan": complex(math.nan, 1e-300),
    "fraction": Fraction(-3, 4),
    "fraction_big": Fraction(2**100 + 1, 3**50),
    "fraction_int": Fraction(7),
    "ipv4_address": ipaddress.ip_address("192.168.0.1"),
    "ipv6_address": ipaddress.ip_address("2001:db8::1"),
    "ipv6_scoped": ipaddress.IPv6Address("fe80::1%eth0"),
    "ipv4_mapped": ipaddress.ip_address("::ffff:10.0.0.1"),
    "ipv4_network": ipaddress.ip_network("10.0.0.0/8"),
    "ipv6_network": ipaddress.ip_network("2001:db8::/32"),
    "ipv4_interface": ipaddress.ip_interface("10.1.2.3/24"),
    "ipv6_interface": ipaddress.ip_interface("::1/128"),
    "stdlib_nested": {
        "$key": collections.Counter({"$a": 1}),
        (1,): collections.OrderedDict({1: collections.deque([Fraction(1, 3)])}),
    },
}


# -- helpers ---------------------------------------------------------------------


def same(a: Any, b: Any) -> bool:
    """Equal values of exactly the same types, all the way down (NaN equals NaN)."""
    if type(a) is not type(b):
        return False
    if type(a) is float:
        if math.isnan(a):
            return math.isnan(b)
        return a == b and math.copysign(1, a) == math.copysign(1, b)
    if type(a) is Decimal:
        return str(a) == str(b)
    if type(a) is complex:
        return same(a.real, b.real) and same(a.imag, b.imag)
    if type(a) is collections.deque:
        return a.maxlen == b.maxlen and same(list(a), list(b))
    if type(a) is collections.defaultdict:
        return a.default_factory is b.default_factory and same(dict(a), dict(b))
    if type(a) in (collections.Counter, collections.OrderedDict):
        return same(dict(a), dict(b))
    if isinstance(a, PurePath):
        return str(a) == str(b) and a == b
    if type(a) in (list, tuple):
        return len(a) == len(b) and all(map(same, a, b))
    if type(a) is dict:
        return len(a) == len(b) and all(
            same(ka, kb) and same(va, vb)
            for (ka, va), (kb, vb) in zip(a.items(), b.items(), strict=True)
        )
    if type(a) in (set, frozenset):
        stored = {item: item for item in b}  # the element b holds for each key of a
        return a == b and all(same(item, stored[item]) for item in a)
    if type(a) in (datetime, time):
        # repr shows the fields, fold and tzinfo (zone key, offset and name).
        return repr(a) == repr(b) and a.utcoffset() == b.utcoffset() and a.tzname() == b.tzname()
    if type(a) is np.ndarray:
        return (
            a.dtype.str == b.dtype.str
            and a.shape == b.shape
            and a.tobytes() == b.tobytes()
            and a.flags.c_contiguous == b.flags.c_contiguous
            and a.flags.f_contiguous == b.flags.f_contiguous
        )
    if isinstance(a, np.generic):
        return a.dtype.str == b.dtype.str and a.tobytes() == b.tobytes()
    return bool(a == b)


def round_trip(value: Any, codec: Codec | None = None) -> Any:
    codec = codec or Codec()
    return codec.decode(codec.encode(value))


def seal(payload: bytes) -> bytes:
    """An uncompressed blob around any payload, with a valid CRC (the documented layout)."""
    crc = zlib.crc32(b"\x00" + payload)
    return bytes([0xF1, 0]) + crc.to_bytes(4, "little") + payload


def seal_zstd(frame: bytes, length: int) -> bytes:
    """A compressed blob claiming ``length`` bytes, with a valid CRC."""
    body = length.to_bytes(8, "little") + frame
    return bytes([0xF1, 1]) + zlib.crc32(b"\x01" + body).to_bytes(4, "little") + body


def ext(code: int, data: bytes) -> bytes:
    return msgpack.packb(msgpack.ExtType(code, data))


def array_ext(code: int, dtype: str, shape: list[int], raw: bytes, fortran: Any = False) -> bytes:
    head = msgpack.packb([dtype, shape, fortran])
    return ext(code, len(head).to_bytes(4, "little") + head + raw)


def check_damaged(codec: Codec, blob: bytes, value: Any) -> None:
    """A damaged blob must be refused, or (never for a CRC32) decode to the same value."""
    try:
        result = codec.decode(blob)
    except CorruptStateError:
        return
    assert same(result, value)


class Point(NamedTuple):
    x: int
    y: int


class Color(enum.IntEnum):
    RED = 1


class Mode(enum.StrEnum):
    FAST = "fast"


class Weird:
    def __eq__(self, other: object) -> bool:
        return type(other) is Weird

    __hash__ = object.__hash__


class MyInt(int):
    pass


class MyStr(str):
    __slots__ = ()


class MyList(list[int]):
    pass


class MyDict(dict[str, int]):
    pass


class MyCounter(collections.Counter[str]):
    pass


class MyArray(np.ndarray):  # type: ignore[type-arg]
    pass


class OddZone(tzinfo):
    def utcoffset(self, dt: datetime | None) -> timedelta:
        return timedelta(hours=1)


# -- round trips -------------------------------------------------------------------

T0 = datetime(2026, 11, 22, 3, 4, 5, 123456)
ROUND_TRIP: dict[str, Any] = {
    "none": None,
    "true": True,
    "false": False,
    "zero": 0,
    "int64_min": -(2**63),
    "uint64_max": 2**64 - 1,
    "int_2**64": 2**64,
    "int_below_int64": -(2**63) - 1,
    "huge_int": 3**500,
    "huge_negative": -(7**300),
    "float_whole": 5.0,
    "float": -1.25,
    "negative_zero": -0.0,
    "nan": math.nan,
    "inf": math.inf,
    "minus_inf": -math.inf,
    "str": "héllo wörld ✓",
    "empty_str": "",
    "bytes": b"\x00\xffbinary",
    "empty_bytes": b"",
    "list": [1, "a", None, 2.5, [b"x"]],
    "bools_stay_bools": [True, 1, False, 0, 1.0],
    "dict": {"a": {"b": [1, 2, {"c": None}]}, "": 0},
    "int_keys": {1: "one", -2: "two", 2**70: "big"},
    "mixed_keys": {None: 1, True: 2, 2.5: 3, b"k": 4, "k": 5},
    "tuple_keys": {(1, "a"): [1], (2, (3, 4)): {5}},
    "frozenset_key": {frozenset({1, 2}): "f"},
    "tuple": (1, "two", 3.0),
    "empty_tuple": (),
    "one_tuple": (None,),
    "nested_tuple": (1, (2, (3, b"4")), [5, (6,)]),
    "set": {1, 2, 3},
    "empty_set": set(),
    "set_of_tuples": {(1, 2), (3, (4,))},
    "frozenset": frozenset({4, "five", (6,)}),
    "set_in_tuple": ({1}, frozenset()),
    "datetime_naive": T0,
    "datetime_utc": T0.replace(tzinfo=UTC),
    "datetime_offset": T0.replace(tzinfo=timezone(timedelta(hours=-5, minutes=-30))),
    "datetime_named_offset": T0.replace(tzinfo=timezone(timedelta(hours=2), "CEST-ish")),
    "datetime_micro_offset": T0.replace(tzinfo=timezone(timedelta(seconds=1, microseconds=7))),
    "datetime_min": datetime.min,
    "datetime_max": datetime.max,
    "date": date(2026, 11, 22),
    "date_min": date.min,
    "time": time(23, 59, 59, 999999),
    "time_utc": time(1, 2, 3, tzinfo=UTC),
    "time_fold": time(1, 30, fold=1),
    "timedelta": timedelta(days=-3, seconds=5, microseconds=7),
    "timedelta_max": timedelta.max,
    "decimal": Decimal("1.10"),
    "decimal_exp": Decimal("-1.5E+30"),
    "decimal_nan": Decimal("NaN"),
    "decimal_snan": Decimal("-sNaN12"),
    "decimal_inf": Decimal("-Infinity"),
    "decimal_minus_zero": Decimal("-0"),
    "uuid": UUID("12345678-1234-5678-1234-567812345678"),
    "rich_dict": {"when": T0, "ids": {7, 8}, "pair": (1, 2), "d": Decimal("3")},
    "long_list": list(range(5000)),
    "numpy_in_dict": {"a": np.arange(3), "s": np.float32(1.5)},
    **STDLIB_VALUES,
}
if PARIS is not None:
    ROUND_TRIP |= {
        "datetime_zoneinfo": T0.replace(tzinfo=PARIS),
        "datetime_zoneinfo_summer": datetime(2026, 7, 1, 12, tzinfo=PARIS),
        # 02:30 on 2026-10-25 happens twice in Paris; fold picks the second (UTC+1).
        "datetime_zoneinfo_fold": datetime(2026, 10, 25, 2, 30, fold=1, tzinfo=PARIS),
        "time_zoneinfo": time(8, tzinfo=PARIS),
    }

CODECS = {
    "default": Codec(),
    "never_compress": Codec(compress_threshold=0),
    "compress_none": Codec(compress_threshold=None),
    "always_compress": Codec(compress_threshold=1, level=1),
}


@pytest.mark.parametrize("codec", CODECS.values(), ids=CODECS.keys())
@pytest.mark.parametrize("value", ROUND_TRIP.values(), ids=ROUND_TRIP.keys())
def test_round_trip(codec: Codec, value: Any) -> None:
    result = codec.decode(codec.encode(value))
    assert same(result, value), (value, result)


def test_same_tells_types_apart() -> None:
    # The checker itself: these must not count as round trips.
    for a, b in [(5, 5.0), (True, 1), ((1,), [1]), ({1}, frozenset({1})), (0.0, -0.0)]:
        assert not same(a, b)
    assert not same([{1: (True,)}], [{1: (1,)}])


@needs_tzdata
def test_zoneinfo_keeps_zone() -> None:
    moment = datetime(2026, 10, 25, 2, 30, fold=1, tzinfo=PARIS)
    result = round_trip(moment)
    assert result.tzinfo is PARIS  # ZoneInfo(key) is cached: the very same zone
    assert result.utcoffset() == timedelta(hours=1)
    assert result.tzname() == "CET"
    assert result.fold == 1


def test_fixed_offset_keeps_name() -> None:
    zone = timezone(timedelta(hours=3), "MSK")
    result = round_trip(T0.replace(tzinfo=zone))
    assert result.tzinfo == zone
    assert result.tzname() == "MSK"
    assert round_trip(T0.replace(tzinfo=UTC)).tzinfo is UTC


# -- numpy -------------------------------------------------------------------------

ARRAYS: dict[str, Any] = {
    "int64": np.arange(10, dtype=np.int64),
    "big_endian_int32": np.arange(6, dtype=">i4").reshape(2, 3),
    "little_endian_float": np.linspace(0, 1, 7, dtype="<f8"),
    "big_endian_float": np.array([1.5, np.nan, -np.inf], dtype=">f8"),
    "float16": np.array([1, 2, 3], dtype=np.float16),
    "float32_3d": np.arange(24, dtype=np.float32).reshape(2, 3, 4),
    "complex": np.array([1 + 2j, -3j], dtype=np.complex128),
    "bool": np.array([True, False, True]),
    "uint8": np.frombuffer(bytes(range(256)), dtype=np.uint8).copy(),
    "unicode": np.array(["a", "héllo", ""]),
    "bytes": np.array([b"ab", b"\x00\xff"]),
    "datetime64": np.array(["2026-01-01T00:00:00.000000001", "NaT"], dtype="M8[ns]"),
    "timedelta64": np.array([1, 2], dtype="m8[s]"),
    "void": np.array([b"abcd"], dtype="V4"),
    "fortran": np.asfortranarray(np.arange(12, dtype=np.int16).reshape(3, 4)),
    "transposed": np.arange(12).reshape(3, 4).T,
    "strided": np.arange(20)[::3],
    "negative_strides": np.arange(12).reshape(3, 4)[::-1, ::-2],
    "zero_d": np.array(3.5),
    "empty": np.zeros((0, 3), dtype=np.int32),
    "empty_fortran": np.asfortranarray(np.zeros((3, 0, 2))),
    "large": np.arange(300_000, dtype=np.float64),
}


@pytest.mark.parametrize("codec", CODECS.values(), ids=CODECS.keys())
@pytest.mark.parametrize("array", ARRAYS.values(), ids=ARRAYS.keys())
def test_ndarray_round_trip(codec: Codec, array: Any) -> None:
    result = codec.decode(codec.encode(array))
    assert type(result) is np.ndarray
    assert result.dtype == array.dtype and result.dtype.str == array.dtype.str
    assert result.shape == array.shape
    assert result.tobytes() == array.tobytes()  # bit for bit: NaN and NaT too
    assert result.flags.writeable and result.flags.owndata
    fortran_only = array.flags.f_contiguous and not array.flags.c_contiguous
    assert result.flags.f_contiguous if fortran_only else result.flags.c_contiguous


SCALARS = [
    np.int8(-3),
    np.uint16(7),
    np.int64(2**62),
    np.float16(0.5),
    np.float32(np.nan),
    np.float64(-0.0),
    np.complex64(1 - 1j),
    np.bool_(True),
    np.str_("hé"),
    np.bytes_(b"x\x00y"),
    np.datetime64("2026-11-22"),
    np.timedelta64(5, "ms"),
]


@pytest.mark.parametrize("scalar", SCALARS, ids=lambda s: type(s).__name__)
def test_numpy_scalar_round_trip(scalar: Any) -> None:
    result = round_trip(scalar)
    assert type(result) is type(scalar)
    assert same(result, scalar)
    assert same(round_trip([scalar, (scalar,)]), [scalar, (scalar,)])


def test_numpy_is_imported_lazily() -> None:
    script = (
        "import sys\n"
        "from flowdag.codec import Codec\n"
        "if 'numpy' in sys.modules: print('preloaded'); raise SystemExit\n"
        "codec = Codec()\n"
        "value = {'a': (1, {2}), 'b': b'x' * 5000}\n"
        "assert codec.decode(codec.encode(value)) == value\n"
        "print('numpy' in sys.modules)\n"
    )
    out = subprocess.run(
        [sys.executable, "-c", script], capture_output=True, text=True, check=True, timeout=60
    ).stdout.strip()
    if out == "preloaded":
        pytest.skip("something imported by flowdag.codec imports numpy")
    assert out == "False"


# -- blob format -------------------------------------------------------------------

COMPRESSIBLE = {"rows": [{"name": f"row {i % 7}", "value": i % 3} for i in range(2000)]}


def test_small_blob_layout() -> None:
    blob = Codec().encode(None)
    payload = msgpack.packb(None)
    assert blob == seal(payload)
    assert blob[0] == 0xF1 and blob[1] == 0
    assert len(blob) == 6 + len(payload)


def test_compressed_blob_layout_and_size() -> None:
    codec = Codec()
    compressed = codec.encode(COMPRESSIBLE)
    plain = Codec(compress_threshold=0).encode(COMPRESSIBLE)
    assert compressed[1] == 1 and plain[1] == 0
    assert len(compressed) < len(plain) / 10
    payload = plain[6:]
    assert int.from_bytes(compressed[6:14], "little") == len(payload)
    assert zstandard.ZstdDecompressor().decompress(compressed[14:]) == payload
    assert compressed == seal_zstd(compressed[14:], len(payload))
    assert same(codec.decode(compressed), COMPRESSIBLE)
    assert same(codec.decode(plain), COMPRESSIBLE)  # either codec reads either blob
    assert same(Codec(compress_threshold=0).decode(compressed), COMPRESSIBLE)


@pytest.mark.parametrize(
    ("threshold", "size", "compressed"),
    [(1024, 1000, False), (1024, 2000, True), (0, 100_000, False), (None, 100_000, False)],
)
def test_compress_threshold(threshold: int | None, size: int, compressed: bool) -> None:
    value = b"a" * size
    blob = Codec(compress_threshold=threshold).encode(value)
    assert blob[1] == compressed
    assert round_trip(value) == value


def test_incompressible_payload_stays_raw() -> None:
    value = os.urandom(200 * KIB)  # also past the decoder's 64 KiB copy-free path
    blob = Codec().encode(value)
    assert blob[1] == 0
    assert Codec().decode(blob) == value


def test_big_values_round_trip() -> None:
    # Over a MiB: the thread's Packer is replaced afterwards, so it keeps no big buffer.
    codec = Codec()
    for value in (os.urandom(3 * MIB), [b"x" * MIB, (b"y" * MIB,)], bytes(3 * MIB)):
        assert codec.decode(codec.encode(value)) == value
    assert codec.decode(codec.encode((1, 2))) == (1, 2)


def test_codec_pickles_and_shows_settings() -> None:
    codec = Codec(compress_threshold=10, level=5, allow_pickle=True, max_items=9999)
    copy = pickle.loads(pickle.dumps(codec))
    assert repr(copy) == repr(codec)
    assert "level=5" in repr(codec) and "max_items=9999" in repr(codec)
    assert copy.decode(codec.encode(COMPRESSIBLE)) == COMPRESSIBLE
    assert (copy.compress_threshold, copy.level, copy.allow_pickle) == (10, 5, True)
    assert Codec(compress_threshold=0).compress_threshold is None


@pytest.mark.parametrize(
    ("kwargs", "message"),
    [
        ({"compress_threshold": -1}, "compress_threshold must be an int >= 0 or None, not -1"),
        ({"level": 23}, "level must be an int from -131072 to 22, not 23"),
        ({"level": -(1 << 17) - 1}, "level must be an int from -131072 to 22, not -131073"),
        ({"max_blob_size": 0}, "max_blob_size must be an int >= 1, not 0"),
        ({"max_decoded_size": -5}, "max_decoded_size must be an int >= 1, not -5"),
        ({"max_items": 0}, "max_items must be an int >= 1, not 0"),
    ],
)
def test_bad_settings(kwargs: dict[str, Any], message: str) -> None:
    with pytest.raises(InvalidArgumentError) as info:
        Codec(**kwargs)
    assert str(info.value) == message
    assert isinstance(info.value, ValueError) and isinstance(info.value, FlowdagError)
    assert not isinstance(info.value, TypeError)


@pytest.mark.parametrize(
    ("kwargs", "message"),
    [
        ({"compress_threshold": 1.5}, "compress_threshold must be an int >= 0 or None, not float"),
        ({"compress_threshold": "1024"}, "compress_threshold must be an int >= 0 or None, not str"),
        ({"level": None}, "level must be an int from -131072 to 22, not NoneType"),
        ({"level": True}, "level must be an int from -131072 to 22, not bool"),
        ({"allow_pickle": 1}, "allow_pickle must be True or False, not int"),
        ({"allow_pickle": "yes"}, "allow_pickle must be True or False, not str"),
        ({"max_blob_size": 1e9}, "max_blob_size must be an int >= 1, not float"),
        ({"max_decoded_size": "1GiB"}, "max_decoded_size must be an int >= 1, not str"),
        ({"max_items": None}, "max_items must be an int >= 1, not NoneType"),
    ],
)
def test_bad_setting_types(kwargs: dict[str, Any], message: str) -> None:
    with pytest.raises(InvalidArgumentTypeError) as info:
        Codec(**kwargs)
    assert str(info.value) == message
    assert isinstance(info.value, TypeError) and isinstance(info.value, ValueError)


def test_good_settings_at_the_bounds() -> None:
    assert Codec(level=-(1 << 17)).level == -(1 << 17)
    assert Codec(level=22, compress_threshold=0, max_items=1).level == 22
    assert Codec(compress_threshold=None).compress_threshold is None


# -- damage --------------------------------------------------------------------------

DAMAGE_VALUES = {
    "none": None,
    "int": 7,
    "dict": {"a": 1, "b": [1.5, "x"], "c": None},
    "exts": (2**80, {1, 2}, Decimal("1.5"), UUID(int=5), T0.replace(tzinfo=UTC), b"\x00"),
    "array": np.arange(6, dtype=">i2").reshape(2, 3),
    "compressed": ["same text over and over"] * 200,
}


@pytest.mark.parametrize("value", DAMAGE_VALUES.values(), ids=DAMAGE_VALUES.keys())
def test_every_byte_flip_is_caught(value: Any) -> None:
    codec = Codec(compress_threshold=64)
    blob = codec.encode(value)
    assert len(blob) < 200  # small enough to try every offset
    for offset in range(len(blob)):
        for mask in (0x01, 0x80, 0xFF, 0x5A):
            damaged = bytearray(blob)
            damaged[offset] ^= mask
            check_damaged(codec, bytes(damaged), value)


def test_every_byte_value_is_caught() -> None:
    codec = Codec()
    value = {"k": (1, 2)}
    blob = codec.encode(value)
    for offset in range(len(blob)):
        for byte in range(256):
            if byte != blob[offset]:
                damaged = blob[:offset] + bytes([byte]) + blob[offset + 1 :]
                check_damaged(codec, damaged, value)


@pytest.mark.parametrize("value", DAMAGE_VALUES.values(), ids=DAMAGE_VALUES.keys())
def test_every_truncation_and_extension_is_caught(value: Any) -> None:
    codec = Codec(compress_threshold=64)
    blob = codec.encode(value)
    for end in range(len(blob)):
        with pytest.raises(CorruptStateError):
            codec.decode(blob[:end])
    for extra in (b"\x00", b"\xc0", blob):
        check_damaged(codec, blob + extra, value)
    assert same(codec.decode(blob), value)


GARBAGE: dict[str, Any] = {
    "empty": b"",
    "one_byte": b"\xf1",
    "header_only": b"\xf1\x00\x00\x00\x00\x00",
    "json": b'{"a": 1}',
    "msgpack": msgpack.packb({"a": 1}),
    "zeros": bytes(64),
    "random": os.urandom(100),
    "str": "not bytes",
    "none": None,
    "int": 5,
    "old_format_1": b"\x01\x00" + zlib.crc32(b"\xc0").to_bytes(4, "little") + b"\xc0",
    "unknown_flags": bytes([0xF1, 2]) + zlib.crc32(b"\x02\xc0").to_bytes(4, "little") + b"\xc0",
    "compressed_no_frame": seal_zstd(b"", 5),
    "compressed_not_zstd": seal_zstd(b"not a zstd frame", 16),
    "compressed_empty": seal_zstd(zstandard.ZstdCompressor().compress(b""), 0),
    "compressed_short_header": bytes([0xF1, 1])
    + zlib.crc32(b"\x01\x05").to_bytes(4, "little")
    + b"\x05",
}

# Blobs with a valid CRC around payloads encode never writes: each must be refused.
CRAFTED: dict[str, bytes] = {
    "empty_payload": b"",
    "trailing_data": msgpack.packb(1) + msgpack.packb(2),
    "truncated_map": b"\x82\xa1a",
    "bad_utf8": b"\xa2\xff\xfe",
    "unhashable_key": b"\x81\x91\x01\x02",
    "array_claims_4g_items": b"\xdd\xff\xff\xff\xff",
    "map_claims_4g_items": b"\xdf\xff\xff\xff\xff",
    "bin_claims_4g": b"\xc6\xff\xff\xff\xff\x00",
    "ext_claims_4g": b"\xc9\xff\xff\xff\xff\x02",
    "deep_lists": b"\x91" * 5000 + b"\xc0",
    "unknown_ext": ext(42, b"x"),
    "negative_ext": b"\xd4\xfbx",  # fixext 1, code -5 (msgpack-reserved)
    "empty_bigint": ext(1, b""),
    "tuple_of_map": ext(2, msgpack.packb({"a": 1})),
    "tuple_of_garbage": ext(2, b"\xc1"),
    "set_of_lists": ext(3, msgpack.packb([[1]])),
    "frozenset_of_bytes": ext(4, b"\x00\x01"),
    "datetime_short": ext(5, msgpack.packb([2026, 1, 1])),
    "datetime_month_13": ext(5, msgpack.packb([2026, 13, 1, 0, 0, 0, 0, 0, None])),
    "datetime_float": ext(5, msgpack.packb([2026.0, 1, 1, 0, 0, 0, 0, 0, None])),
    "datetime_fold_2": ext(5, msgpack.packb([2026, 1, 1, 0, 0, 0, 0, 2, None])),
    "datetime_bad_tz": ext(5, msgpack.packb([2026, 1, 1, 0, 0, 0, 0, 0, 5])),
    "datetime_offset_too_big": ext(5, msgpack.packb([2026, 1, 1, 0, 0, 0, 0, 0, [10**12]])),
    "datetime_unknown_zone": ext(5, msgpack.packb([2026, 1, 1, 0, 0, 0, 0, 0, "No/Where"])),
    "datetime_zone_escape": ext(5, msgpack.packb([2026, 1, 1, 0, 0, 0, 0, 0, "../../etc/passwd"])),
    "datetime_nested_ext": ext(
        5, msgpack.packb([2026, 1, 1, 0, 0, 0, 0, 0, msgpack.ExtType(6, b"")])
    ),
    "date_str": ext(6, msgpack.packb("2026-01-01")),
    "date_zero": ext(6, msgpack.packb(0)),
    "date_bool": ext(6, msgpack.packb(True)),
    "time_hour_24": ext(7, msgpack.packb([24, 0, 0, 0, 0, None])),
    "timedelta_unnormalized": ext(8, msgpack.packb([0, 86400, 0])),
    "timedelta_too_big": ext(8, msgpack.packb([10**10, 0, 0])),
    "decimal_spaces": ext(9, b" 1.5 "),
    "decimal_underscore": ext(9, b"1_000"),
    "decimal_word": ext(9, b"pickle"),
    "decimal_non_ascii": ext(9, "\u0661".encode()),  # an Arabic-Indic digit one
    "uuid_15_bytes": ext(10, bytes(15)),
    "path_not_normal": ext(13, b"a//b"),
    "path_empty": ext(13, b""),
    "path_bad_utf8": ext(15, b"\xff"),
    "windows_path_here": ext(16, b"C:\\x"),  # WindowsPath cannot be created off Windows
    "counter_of_list": ext(17, msgpack.packb([1, 2])),
    "ordereddict_of_int": ext(18, msgpack.packb(5)),
    "defaultdict_unknown_factory": ext(19, msgpack.packb(["os.system", {}])),
    "defaultdict_lambda_name": ext(19, msgpack.packb(["<lambda>", {}])),
    "defaultdict_short": ext(19, msgpack.packb([None])),
    "defaultdict_of_list": ext(19, msgpack.packb([None, [1]])),
    "deque_over_maxlen": ext(20, msgpack.packb([1, [1, 2]])),
    "deque_negative_maxlen": ext(20, msgpack.packb([-1, []])),
    "deque_float_maxlen": ext(20, msgpack.packb([1.0, []])),
    "deque_of_map": ext(20, msgpack.packb([None, {}])),
    "complex_short": ext(21, bytes(15)),
    "fraction_not_lowest": ext(22, msgpack.packb([2, 4])),
    "fraction_zero_denominator": ext(22, msgpack.packb([1, 0])),
    "fraction_negative_denominator": ext(22, msgpack.packb([1, -3])),
    "fraction_float": ext(22, msgpack.packb([1.5, 2])),
    "ip_address_garbage": ext(23, b"10.0.0.256"),
    "ip_address_leading_zero": ext(23, b"010.0.0.1"),
    "ip_network_host_bits": ext(24, b"10.0.0.1/8"),
    "ip_network_no_prefix_spelled": ext(24, b"10.0.0.0/255.0.0.0"),
    "ip_interface_non_ascii": ext(25, "\u0661.0.0.0/8".encode()),
    "array_object_dtype": array_ext(11, "|O", [1], bytes(8)),
    "array_structured": array_ext(11, "[('a', '<i4')]", [1], bytes(4)),
    "array_subarray": array_ext(11, "(2,)<i4", [1], bytes(8)),
    "array_unknown_dtype": array_ext(11, "<q9", [1], bytes(8)),
    "array_short_data": array_ext(11, "<i8", [2], bytes(8)),
    "array_long_data": array_ext(11, "<i8", [1], bytes(9)),
    "array_huge_shape": array_ext(11, "<i8", [2**40, 2**40], bytes(8)),
    "array_negative_shape": array_ext(11, "<i8", [-1], b""),
    "array_65_dims": array_ext(11, "<i8", [1] * 65, bytes(8)),
    "array_int_order": array_ext(11, "<i8", [1], bytes(8), fortran=1),
    "array_bool_2": array_ext(11, "|b1", [2], b"\x01\x02"),
    "array_header_past_end": ext(11, (1000).to_bytes(4, "little") + b"\x93"),
    "array_no_header": ext(11, b"\x01"),
    "array_header_not_list": ext(11, b"\x01\x00\x00\x00\xc0"),
    "scalar_with_shape": array_ext(12, "<i8", [1], bytes(8)),
}


def nested_tuples(depth: int) -> bytes:
    data = msgpack.packb(None)
    for _ in range(depth):
        data = ext(2, b"\x91" + data)  # a tuple of one item
    return data


CRAFTED["deep_tuples"] = nested_tuples(33)
CRAFTED["very_deep_tuples"] = nested_tuples(5000)  # would overflow the C stack unchecked


@pytest.mark.parametrize("blob", GARBAGE.values(), ids=GARBAGE.keys())
def test_garbage_is_refused(blob: Any) -> None:
    with pytest.raises(CorruptStateError):
        Codec().decode(blob)


@pytest.mark.parametrize("payload", CRAFTED.values(), ids=CRAFTED.keys())
def test_crafted_payload_is_refused(payload: bytes) -> None:
    for codec in (Codec(), Codec(allow_pickle=True)):
        with pytest.raises(CorruptStateError):
            codec.decode(seal(payload))
        if payload:  # the same through the compressed layout
            frame = zstandard.ZstdCompressor().compress(payload)
            with pytest.raises(CorruptStateError):
                codec.decode(seal_zstd(frame, len(payload)))


def test_crafted_helpers_build_valid_blobs() -> None:
    # The refusals above come from the payloads, not from a broken seal.
    assert Codec().decode(seal(nested_tuples(32))) is not None
    assert Codec().decode(seal(array_ext(11, "<i8", [1], bytes(8)))).tolist() == [0]
    frame = zstandard.ZstdCompressor().compress(msgpack.packb([1, 2]))
    assert Codec().decode(seal_zstd(frame, 3)) == [1, 2]


def test_corrupt_state_error_is_a_store_error() -> None:
    with pytest.raises(StoreError, match="checksum"):
        Codec().decode(Codec().encode(1)[:-1] + b"\x02")


# -- limits ----------------------------------------------------------------------------


def zero_frame(size: int, *, content_size: bool) -> bytes:
    """A tiny zstd frame of ``size`` zero bytes: a decompression bomb."""
    compressor = zstandard.ZstdCompressor(level=1, write_content_size=content_size)
    obj = compressor.compressobj(size=size) if content_size else compressor.compressobj()
    chunk = bytes(MIB)
    return b"".join([obj.compress(chunk) for _ in range(size // MIB)] + [obj.flush()])


BOMB_SIZE = 256 * MIB
BOMB = zero_frame(BOMB_SIZE, content_size=True)
BOMB_NO_SIZE = zero_frame(BOMB_SIZE, content_size=False)


@pytest.mark.parametrize(
    ("codec", "blob", "message"),
    [
        (Codec(max_decoded_size=MIB), seal_zstd(BOMB, BOMB_SIZE), "max_decoded_size"),
        (Codec(), seal_zstd(BOMB, 2**40), "max_decoded_size"),
        (Codec(), seal_zstd(BOMB, 2**64 - 1), "max_decoded_size"),
        (Codec(), seal_zstd(BOMB, 1000), "frame holds"),
        (Codec(), seal_zstd(BOMB_NO_SIZE, 1000), "decompress"),
        (Codec(max_decoded_size=MIB), seal_zstd(BOMB_NO_SIZE, MIB), "decompress"),
    ],
    ids=["honest_length", "huge_length", "max_u64", "lying_length", "no_content_size", "capped"],
)
def test_zstd_bomb_is_refused_without_allocating(codec: Codec, blob: bytes, message: str) -> None:
    assert len(blob) < 64 * KIB
    tracemalloc.start()
    try:
        with pytest.raises(CorruptStateError, match=message):
            codec.decode(blob)
        peak = tracemalloc.get_traced_memory()[1]
    finally:
        tracemalloc.stop()
    assert peak < 2 * MIB


def test_decode_limits() -> None:
    blob = Codec().encode(COMPRESSIBLE)
    raw = Codec(compress_threshold=0).encode(COMPRESSIBLE)
    with pytest.raises(CorruptStateError, match="max_blob_size"):
        Codec(max_blob_size=len(blob) - 1).decode(blob)
    for b in (blob, raw):
        with pytest.raises(CorruptStateError, match="max_decoded_size"):
            Codec(max_decoded_size=len(raw) - 7).decode(b)
        with pytest.raises(CorruptStateError, match="max_array_len"):
            Codec(max_items=1999).decode(b)
        assert Codec(max_items=2000, max_decoded_size=len(raw) - 6).decode(b) == COMPRESSIBLE
    small = Codec().encode([0] * 20)
    assert Codec(max_items=20).decode(small) == [0] * 20
    with pytest.raises(CorruptStateError):
        Codec(max_items=19).decode(small)
    with pytest.raises(CorruptStateError):
        Codec(max_items=19).decode(Codec().encode({"k": (0,) * 20}))
    with pytest.raises(CorruptStateError):
        Codec(max_items=5).decode(Codec().encode({i: i for i in range(6)}))
    # The collections containers hold their items in nested payloads: limited alike.
    for container in (
        collections.deque(range(6)),
        collections.Counter(range(6)),
        collections.OrderedDict.fromkeys(range(6)),
        collections.defaultdict(list, dict.fromkeys(range(6))),
    ):
        blob = Codec().encode({"k": container})
        assert same(Codec(max_items=6).decode(blob), {"k": container})
        with pytest.raises(CorruptStateError):
            Codec(max_items=5).decode(blob)


@pytest.mark.parametrize(
    ("codec", "value", "message"),
    [
        (Codec(max_decoded_size=100), b"x" * 101, "max_decoded_size"),
        (Codec(max_decoded_size=100, compress_threshold=0), "x" * 200, "max_decoded_size"),
        (Codec(max_blob_size=100, compress_threshold=0), b"x" * 100, "max_blob_size"),
        (Codec(max_blob_size=100), os.urandom(2000), "max_blob_size"),
        (Codec(max_items=10), list(range(11)), "list of 11 items"),
        (Codec(max_items=10), {"a": [(0,) * 11]}, "tuple of 11 items"),
        (Codec(max_items=10), [{i: None for i in range(11)}], "dict of 11 items"),
        (Codec(max_items=10), frozenset(range(11)), "frozenset of 11 items"),
        (Codec(max_items=10), [collections.deque(range(11))], "deque of 11 items"),
        (Codec(max_items=10), collections.Counter(range(11)), "Counter of 11 items"),
        (Codec(max_items=10), {"o": collections.OrderedDict.fromkeys(range(11))}, "OrderedDict"),
        (
            Codec(max_items=10),
            (collections.defaultdict(int, dict.fromkeys(range(11))),),
            "defaultdict of 11 items",
        ),
    ],
)
def test_encode_limits(codec: Codec, value: Any, message: str) -> None:
    with pytest.raises(SerializationError, match=message):
        codec.encode(value)


def test_encode_within_limits() -> None:
    codec = Codec(max_items=10, max_decoded_size=200, max_blob_size=300)
    for value in ([0] * 10, {"a": (1,) * 10}, b"x" * 150, [b"x" * 50] * 3):
        assert codec.decode(codec.encode(value)) == value


def test_nesting_limits() -> None:
    value: Any = None
    for _ in range(32):
        value = (value,)
    assert round_trip(value) == value
    with pytest.raises(SerializationError, match="32 levels"):
        Codec().encode([(value,)])
    # Every ext that holds values counts as a level.
    wraps: list[Any] = [
        lambda v: collections.deque([v]),
        lambda v: collections.Counter(k=v),
        lambda v: collections.OrderedDict(k=v),
        lambda v: collections.defaultdict(list, k=v),
    ]
    for wrap in wraps:
        value = None
        for _ in range(32):
            value = wrap(value)
        assert same(round_trip(value), value)
        with pytest.raises(SerializationError, match="32 levels"):
            Codec().encode(wrap(value))
    nested = msgpack.packb(None)
    for _ in range(33):
        nested = msgpack.packb(msgpack.ExtType(20, msgpack.packb([None, [0]])[:-1] + nested))
    with pytest.raises(CorruptStateError, match="more than 32 deep"):
        Codec().decode(seal(nested))
    deep: Any = []
    for _ in range(1100):  # msgpack packs and unpacks 1024 levels
        deep = [deep]
    with pytest.raises(SerializationError, match="deep"):
        Codec().encode(deep)
    cycle: list[Any] = []
    cycle.append(cycle)
    with pytest.raises(SerializationError, match="cycle"):
        Codec().encode(cycle)


@pytest.mark.parametrize("value", ["\ud800", {"k": ["a\udcffb"]}, {"\ud800": 1}], ids=ascii)
def test_text_utf8_cannot_encode_is_refused_as_such(value: Any) -> None:
    with pytest.raises(SerializationError, match="lone surrogate") as info:
        Codec().encode(value)
    assert "nest" not in str(info.value)  # not the misleading message of other errors


# -- unsupported types and pickle --------------------------------------------------


def function() -> None:
    pass


UNSUPPORTED: dict[str, tuple[Any, str, str]] = {
    # name: (value, type named in the message, location named in the message)
    "namedtuple": ([0, 1, {"x": Point(1, 2)}], "Point", "(at [2]['x'])"),
    "dict_subclass": (MyDict(a=1), "MyDict", "subclass of dict"),
    "defaultdict_lambda": (
        {"k": collections.defaultdict(lambda: 0)},
        "defaultdict",
        "(at ['k']): its default_factory is <function",
    ),
    "defaultdict_class": (
        [collections.defaultdict(collections.Counter)],
        "defaultdict",
        "only None or a builtin type (list, dict",
    ),
    "counter_subclass": (MyCounter("ab"), "MyCounter", "subclass of Counter"),
    "in_deque": (collections.deque([1, Point(0, 0)]), "Point", "(at [1])"),
    "in_counter": (collections.Counter({Point(0, 0): 1}), "Point", "<dict key #0>"),
    "int_enum": (Color.RED, "Color", "enum"),
    "str_enum": ({"mode": Mode.FAST}, "Mode", "(at ['mode'])"),
    "int_subclass": (MyInt(3), "MyInt", "subclass of int"),
    "str_subclass": ((1, MyStr("s")), "MyStr", "(at [1])"),
    "list_subclass": (MyList(), "MyList", "subclass of list"),
    "object": (object(), "object", "return one of"),
    "class_instance": ([Weird()], "Weird", "(at [0])"),
    "function": (function, "function", "allow_pickle"),
    "lambda": ({"f": lambda: 1}, "function", "(at ['f'])"),
    "type": (int, "type", "return one of"),
    "range_in_ordereddict": (collections.OrderedDict(r=range(2)), "range", "(at ['r'])"),
    "range": (range(3), "range", "return one of"),
    "ellipsis": (..., "ellipsis", "return one of"),
    "in_set": ({(1, Point(0, 0))}, "Point", "<set item>[1]"),
    "dict_key": ({Point(0, 0): 1}, "Point", "<dict key #0>"),
    "custom_tzinfo": (T0.replace(tzinfo=OddZone()), "datetime", "OddZone"),
    "object_array": (np.array([1, "a"], dtype=object), "ndarray", "dtype object"),
    "structured_array": (np.zeros(2, dtype=[("a", "<i4")]), "ndarray", "dtype"),
    "ndarray_subclass": (np.arange(3).view(MyArray), "MyArray", "subclass"),
    "record_scalar": (np.zeros(1, dtype=[("a", "<i4")])[0], "void", "dtype"),
}


@pytest.mark.parametrize(
    ("value", "type_name", "detail"), UNSUPPORTED.values(), ids=UNSUPPORTED.keys()
)
def test_unsupported_type_names_type(value: Any, type_name: str, detail: str) -> None:
    with pytest.raises(SerializationError) as info:
        Codec().encode(value)
    message = str(info.value)
    assert f"type {type_name!r}" in message
    assert detail in message
    assert "allow_pickle=True" in message
    assert isinstance(info.value, TypeError)


@pytest.mark.parametrize(
    "value",
    [
        Point(1, 2),
        {"p": [Point(1, 2)], "o": collections.OrderedDict(a=(1, 2))},
        (Color.RED, Mode.FAST, MyInt(5)),
        [Weird(), {1, 2}],
        T0.replace(tzinfo=OddZone()),
        np.array([1, "a"], dtype=object),
        {"fn": function},
    ],
    ids=["namedtuple", "nested", "enums", "object", "odd_tzinfo", "object_array", "function"],
)
def test_pickle_when_opted_in(value: Any) -> None:
    codec = Codec(allow_pickle=True)
    blob = codec.encode(value)
    result = codec.decode(blob)
    assert type(result) is type(value)
    if isinstance(value, np.ndarray):
        assert result.tolist() == value.tolist()
    else:
        assert result == value
    # A codec without pickle refuses the blob instead of unpickling it.
    with pytest.raises(CorruptStateError, match=r"pickled data.*allow_pickle=False"):
        Codec().decode(blob)


def test_pickle_only_for_unsupported_parts() -> None:
    value = [1, (2, Point(3, 4)), {"d": T0}]
    blob = Codec(allow_pickle=True).encode(value)
    assert blob.count(b"\x80\x05") == 1  # one pickle (protocol 5 opcode), for the Point
    assert Codec(allow_pickle=True).decode(blob) == value
    plain = Codec(allow_pickle=True).encode([1, (2,), {"d": T0}])
    assert plain == Codec().encode([1, (2,), {"d": T0}])


def test_pickle_is_off_by_default(monkeypatch: pytest.MonkeyPatch) -> None:
    def forbidden(*args: Any, **kwargs: Any) -> Any:
        raise AssertionError("pickle used without opt-in")

    monkeypatch.setattr(pickle, "dumps", forbidden)
    monkeypatch.setattr(pickle, "loads", forbidden)
    assert not Codec().allow_pickle
    with pytest.raises(SerializationError, match="allow_pickle=True"):
        Codec().encode(Point(1, 2))
    payload = msgpack.packb([1, msgpack.ExtType(127, b"cos\nsystem\n(S'echo owned'\ntR.")])
    with pytest.raises(CorruptStateError, match="pickle"):
        Codec().decode(seal(payload))


def test_unpicklable_value_with_pickle_on() -> None:
    with pytest.raises(SerializationError, match=r"type 'function' \(at \[1\]\): pickle failed"):
        Codec(allow_pickle=True).encode([1, lambda: 2])
    with pytest.raises(SerializationError, match="lock"):
        Codec(allow_pickle=True).encode({"k": threading.Lock()})


REENTRANT_CODEC = Codec(allow_pickle=True)


class Reentrant:
    """Encodes with the same codec while being pickled, in the middle of a value."""

    def __reduce__(self) -> tuple[Any, ...]:
        inner = REENTRANT_CODEC.decode(REENTRANT_CODEC.encode((1, {2}, [3, (4,)])))
        assert inner == (1, {2}, [3, (4,)])
        return (Reentrant, ())

    def __eq__(self, other: object) -> bool:
        return type(other) is Reentrant

    __hash__ = object.__hash__


def test_encode_reentered_from_pickle() -> None:
    value = [(1, ("a", Reentrant(), (b"z",)), 2), {"k": (3,)}]
    assert REENTRANT_CODEC.decode(REENTRANT_CODEC.encode(value)) == value


def test_bytearray_and_memoryview_are_stored_as_bytes() -> None:
    # msgpack packs these natively, before any hook: documented as a known exception.
    assert same(round_trip([bytearray(b"ab"), memoryview(b"cd")]), [b"ab", b"cd"])


# -- threads -----------------------------------------------------------------------------


def test_threads_share_one_codec() -> None:
    codec = Codec(compress_threshold=256)
    values = [
        {"i": i, "rows": [(i, str(j)) for j in range(i % 50)], "a": np.arange(i % 7)}
        for i in range(400)
    ]

    def work(value: Any) -> bool:
        return same(codec.decode(codec.encode(value)), value)

    with ThreadPoolExecutor(8) as pool:
        assert all(pool.map(work, values * 3))


# -- properties -----------------------------------------------------------------------

HASHABLE = st.recursive(
    st.none()
    | st.booleans()
    | st.integers()
    | st.integers(min_value=-(2**200), max_value=2**200)
    | st.floats(allow_nan=False)
    | st.text(max_size=8)
    | st.binary(max_size=8),
    lambda inner: st.lists(inner, max_size=3).map(tuple) | st.frozensets(inner, max_size=3),
    max_leaves=6,
)
VALUES = st.recursive(
    st.none()
    | st.booleans()
    | st.integers()
    | st.integers(min_value=-(2**200), max_value=2**200)
    | st.floats()
    | st.text()
    | st.binary(),
    lambda inner: (
        st.lists(inner, max_size=6)
        | st.lists(inner, max_size=6).map(tuple)
        | st.dictionaries(HASHABLE, inner, max_size=6)
        | st.dictionaries(st.text(max_size=6), inner, max_size=6)
        | st.sets(HASHABLE, max_size=6)
        | st.frozensets(HASHABLE, max_size=6)
    ),
    max_leaves=30,
)


def ext_depth(value: Any) -> int:
    """How deep tuples, sets and frozensets nest (the codec allows 32)."""
    kind = type(value)
    if kind is dict:
        return max((max(ext_depth(k), ext_depth(v)) for k, v in value.items()), default=0)
    if kind in (list, tuple, set, frozenset):
        inner = max(map(ext_depth, value), default=0)
        return inner if kind is list else inner + 1
    return 0


PROPERTY_SETTINGS = settings(
    max_examples=150, deadline=None, suppress_health_check=[HealthCheck.too_slow]
)


@PROPERTY_SETTINGS
@given(value=VALUES)
@pytest.mark.parametrize("codec", [CODECS["default"], CODECS["always_compress"]], ids=str)
def test_property_round_trip(codec: Codec, value: Any) -> None:
    assume(ext_depth(value) <= 32)
    assert same(codec.decode(codec.encode(value)), value)


@PROPERTY_SETTINGS
@given(value=VALUES, data=st.data())
def test_property_damage_is_caught(value: Any, data: st.DataObject) -> None:
    assume(ext_depth(value) <= 32)
    codec = CODECS["always_compress"] if data.draw(st.booleans()) else CODECS["default"]
    blob = codec.encode(value)
    offset = data.draw(st.integers(0, len(blob) - 1))
    byte = data.draw(st.integers(0, 255).filter(lambda b: b != blob[offset]))
    check_damaged(codec, blob[:offset] + bytes([byte]) + blob[offset + 1 :], value)
    end = data.draw(st.integers(0, len(blob) - 1))
    with pytest.raises(CorruptStateError):
        codec.decode(blob[:end])
