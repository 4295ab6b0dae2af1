"""Both codecs' bytes, pinned: stores written by an earlier release must still load.

``tests/fixtures/codec_blobs.json`` holds, for each value below, the blob
`Codec` (hex) and `JSONCodec` (text) wrote when the fixture was made. Each
blob must decode to its value, and encoding the value must give the same
bytes again (for a zstd-compressed blob: the same header and the same payload
once decompressed, since another zstd version may compress differently).
Pickled values are checked one way only: the bytes of a pickle depend on the
Python version.

``PYTHONPATH=$PWD python -m tests.test_codec_blobs`` adds the blobs of values
new to the lists below and never rewrites a pinned one. Re-pin only on purpose
(a new format version: delete the file first), and say why in the commit.
"""

from __future__ import annotations

import functools
import hashlib
import json
import math
import sys
import zlib
from datetime import UTC, date, datetime, time, timedelta, timezone
from decimal import Decimal
from fractions import Fraction
from pathlib import Path
from typing import Any
from uuid import UUID

import numpy as np
import pytest
import zstandard

from flowdag.codec import Codec
from flowdag.json_codec import JSONCodec
from flowdag.refs import Ref
from tests.test_codec import PARIS, STDLIB_VALUES, T0, same

FIXTURE = Path(__file__).parent / "fixtures" / "codec_blobs.json"
MSGPACK = Codec()
JSON = JSONCodec()
MSGPACK_PICKLING = Codec(allow_pickle=True)
JSON_PICKLING = JSONCodec(allow_pickle=True)

VALUES: dict[str, Any] = {
    "none": None,
    "true": True,
    "false": False,
    "int": 42,
    "negative_int": -7,
    "int64_min": -(2**63),
    "uint64_max": 2**64 - 1,
    "int_2**64": 2**64,
    "huge_int": 3**500,
    "huge_negative": -(7**300),
    "giant_int": 2**2100 + 12345,
    "float_whole": 5.0,
    "float": -1.25,
    "negative_zero": -0.0,
    "float_big": 1e300,
    "nan": math.nan,
    "inf": math.inf,
    "minus_inf": -math.inf,
    "str": 'héllo wörld ✓ "quoted" \\ \n tab\t',
    "empty_str": "",
    "bytes": b"\x00\xffbinary",
    "empty_bytes": b"",
    "list": [1, "a", None, 2.5, [b"x"], []],
    "dict": {"a": {"b": [1, 2, {"c": None}]}, "": 0},
    "dollar_keys": {"$tuple": 1, "$$x": [2], "plain": {"$set": None}},
    "int_keys": {1: "one", -2: "two", 2**70: "big"},
    "mixed_keys": {None: 1, True: 2, 2.5: 3, b"k": 4, "k": 5},
    "tuple_keys": {(1, "a"): [1], (2, (3, 4)): {5}},
    "tuple": (1, "two", 3.0),
    "empty_tuple": (),
    "nested_tuple": (1, (2, (3, b"4")), [5, (6,)]),
    "set": {1, 2, 3},
    "empty_set": set(),
    "set_of_tuples": {(1, 2), (3, (4,))},
    "frozenset": frozenset({4, 5, (6,)}),
    "datetime_naive": T0,
    "datetime_utc": T0.replace(tzinfo=UTC),
    "datetime_offset": T0.replace(tzinfo=timezone(timedelta(hours=-5, minutes=-30))),
    "datetime_named_offset": T0.replace(tzinfo=timezone(timedelta(hours=2), "CEST-ish")),
    "datetime_fold": datetime(2026, 1, 1, 1, 30, fold=1),
    "date": date(2026, 11, 22),
    "time": time(23, 59, 59, 999999),
    "time_utc": time(1, 2, 3, tzinfo=UTC),
    "timedelta": timedelta(days=-3, seconds=5, microseconds=7),
    "timedelta_max": timedelta.max,
    "decimal": Decimal("1.10"),
    "decimal_exp": Decimal("-1.5E+30"),
    "decimal_nan": Decimal("NaN"),
    "decimal_snan": Decimal("-sNaN12"),
    "decimal_inf": Decimal("-Infinity"),
    "uuid": UUID("12345678-1234-5678-1234-567812345678"),
    "ndarray_int": np.arange(6, dtype="<i8").reshape(2, 3),
    "ndarray_fortran": np.asfortranarray(np.arange(6, dtype="<f4").reshape(2, 3)),
    "ndarray_big_endian": np.array([1, -2, 300], dtype=">i2"),
    "ndarray_bool": np.array([True, False, True]),
    "ndarray_empty": np.zeros((0, 3), dtype="<f8"),
    "ndarray_0d": np.array(2.5, dtype="<f8"),
    "ndarray_complex": np.array([1 + 2j, -0.5j], dtype="<c16"),
    "ndarray_datetime64": np.array(["2026-01-01", "NaT"], dtype="<M8[D]"),
    "ndarray_unicode": np.array(["ab", "ĉd"], dtype="<U2"),
    "ndarray_bytes": np.array([b"ab", b"c"], dtype="S2"),
    "ndarray_nan": np.array([math.nan, math.inf], dtype="<f8"),
    "npscalar_float32": np.float32(1.5),
    "npscalar_int8": np.int8(-3),
    "npscalar_bool": np.bool_(True),
    "npscalar_datetime64": np.datetime64("2026-01-01T00:00", "m"),
    "rich": {"when": T0, "ids": {7, 8}, "pair": (1, 2), "d": Decimal("3"), "a": np.arange(2)},
    # What the stores write around values: a run header and a node's meta.
    "run_header": {
        "format": 1,
        "workflow": "nightly",
        "metadata": {"started": "2026-11-22T03:04:05+00:00", "tags": ["x"]},
        "deps": {"a": [], "b": ["a"]},
    },
    "node_meta": ["failed", 2, 1795834245123456, 1795834246000000, ["KeyError", "'x'", "tb"]],
    # Above the msgpack codec's compression threshold.
    "compressed": ["same text over and over"] * 200,
    "compressed_array": np.zeros(4096, dtype="<i4"),
    # Standard-library types (msgpack exts 13-25, their JSON tags).
    **{f"stdlib_{name}": value for name, value in STDLIB_VALUES.items()},
    # A large output's ref (msgpack ext 42, the $ref tag): stored in node records.
    "ref": Ref.for_blob(
        hashlib.sha256(b"payload").hexdigest(),
        7,
        20,
        expires_at=datetime(2027, 1, 2, 3, 4, 5, tzinfo=UTC),
        extracted={"rows": 3, "cols": ("a", "b")},
        preview=[1, 2, 3],
        preview_truncated=True,
        encoding="msgpack",
    ),
    "ref_plain": Ref.for_blob(hashlib.sha256(b"").hexdigest(), 0, 5, compression=None),
}
if PARIS is not None:
    VALUES |= {
        "datetime_zoneinfo": T0.replace(tzinfo=PARIS),
        "datetime_zoneinfo_fold": datetime(2026, 10, 25, 2, 30, fold=1, tzinfo=PARIS),
        "time_zoneinfo": time(8, tzinfo=PARIS),
    }

PICKLED: dict[str, Any] = {
    "pickle_fraction": Fraction(1, 3),
    "pickle_in_list": [1, Fraction(-2, 7), "x"],
}


@functools.cache
def _fixture() -> dict[str, dict[str, str]]:
    data: dict[str, dict[str, str]] = json.loads(FIXTURE.read_text("utf-8"))
    return data


def _msgpack_parts(blob: bytes) -> tuple[int, bytes]:
    """The flags byte and the msgpack payload, decompressed if need be."""
    if blob[1] == 1:
        return 1, zstandard.ZstdDecompressor().decompress(blob[14:])
    return blob[1], blob[6:]


def test_fixture_covers_every_value() -> None:
    names = set(_fixture())
    assert set(VALUES) | set(PICKLED) <= names
    assert names - set(VALUES) - set(PICKLED) <= {
        "datetime_zoneinfo",
        "datetime_zoneinfo_fold",
        "time_zoneinfo",
    }


@pytest.mark.parametrize("name", VALUES)
def test_msgpack_bytes_are_pinned(name: str) -> None:
    pinned = _fixture()[name]["msgpack"]
    blob = bytes.fromhex(pinned)
    value = VALUES[name]
    assert same(MSGPACK.decode(blob), value)
    encoded = MSGPACK.encode(value)
    if blob[1] == 0:
        assert encoded.hex() == pinned
    else:  # another zstd may compress differently; the payload must not change
        assert encoded[:2] == blob[:2]
        assert _msgpack_parts(encoded) == _msgpack_parts(blob)
        assert zlib.crc32(encoded[1:2] + encoded[6:]) == int.from_bytes(encoded[2:6], "little")


@pytest.mark.parametrize("name", VALUES)
def test_json_bytes_are_pinned(name: str) -> None:
    pinned = _fixture()[name]["json"]
    blob = pinned.encode("utf-8")
    value = VALUES[name]
    assert same(JSON.decode(blob), value)
    assert JSON.encode(value).decode("utf-8") == pinned


@pytest.mark.parametrize("name", PICKLED)
def test_msgpack_pickled_blobs_still_load(name: str) -> None:
    pinned = _fixture()[name]["msgpack"]
    value = PICKLED[name]
    assert same(MSGPACK_PICKLING.decode(bytes.fromhex(pinned)), value)
    assert same(MSGPACK_PICKLING.decode(MSGPACK_PICKLING.encode(value)), value)


@pytest.mark.parametrize("name", PICKLED)
def test_json_pickled_blobs_still_load(name: str) -> None:
    pinned = _fixture()[name]["json"]
    value = PICKLED[name]
    assert same(JSON_PICKLING.decode(pinned.encode("utf-8")), value)
    assert same(JSON_PICKLING.decode(JSON_PICKLING.encode(value)), value)


def _write_fixture() -> None:
    if PARIS is None:
        sys.exit("regenerate the fixture on a machine with the IANA time zone database")
    # Pinned blobs stay as they are: only values new to the lists are added.
    fixture: dict[str, dict[str, str]] = _fixture() if FIXTURE.exists() else {}
    for name, value in VALUES.items():
        if name in fixture:
            continue
        fixture[name] = {
            "msgpack": MSGPACK.encode(value).hex(),
            "json": JSON.encode(value).decode("utf-8"),
        }
    for name, value in PICKLED.items():
        if name in fixture:
            continue
        fixture[name] = {
            "msgpack": MSGPACK_PICKLING.encode(value).hex(),
            "json": JSON_PICKLING.encode(value).decode("utf-8"),
        }
    FIXTURE.parent.mkdir(exist_ok=True)
    text = json.dumps(fixture, indent=1, ensure_ascii=False)
    FIXTURE.write_text(text + "\n", "utf-8")


if __name__ == "__main__":
    _write_fixture()
