"""Cache keys (`flowdag._cache_keys`): typed, order-free where order is not part of the
value, stable across processes, and refusing what cannot be a key, saying where.
"""

from __future__ import annotations

import copy
import enum
import json
import math
import os
import random
import re
import socket
import struct
import subprocess
import sys
from collections import Counter, OrderedDict, defaultdict, deque
from dataclasses import dataclass, fields, is_dataclass
from datetime import UTC, date, datetime, time, timedelta, timezone, tzinfo
from decimal import Decimal, localcontext
from fractions import Fraction
from ipaddress import IPv4Address, IPv4Network, IPv6Address
from pathlib import Path, PurePosixPath, PureWindowsPath
from typing import Any, NamedTuple
from uuid import UUID

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from flowdag import Ref
from flowdag._cache_keys import MAX_DEPTH, canonical
from flowdag._entry_keys import KeyHeads, cache_key, inputs_digest, key_head, user_key_digest
from flowdag.errors import InvalidArgumentError, InvalidArgumentTypeError

ROOT = Path(__file__).resolve().parent.parent


class Color(enum.Enum):
    RED = 1
    GREEN = 2
    CRIMSON = 1  # an alias: the same member as RED


class Level(enum.IntEnum):
    LOW = 1


class Shade(enum.Enum):
    RED = 1  # another class, the same name and value as Color.RED


@dataclass(frozen=True)
class Point:
    x: Any
    y: Any


@dataclass(frozen=True)
class Other:
    x: Any
    y: Any


class Pair(NamedTuple):
    x: Any
    y: Any


def ref(digit: str) -> Ref:
    sha = digit * 64
    return Ref(uri=f"blob:sha256:{sha}", sha256=sha, size=1, stored_size=1)


def nan_with_payload() -> float:
    return float(struct.unpack(">d", b"\x7f\xf8\x00\x00\x00\x00\x00\x01")[0])


# -- distinct and equal values ------------------------------------------------------------------

DISTINCT: list[Any] = [
    # the brief's list
    1, "1", 1.0, True, (1,), [1], b"1", None,
    # zeros and empties
    0, False, 0.0, -0.0, "", b"", (), [], {}, set(), frozenset(), OrderedDict(), Counter(),
    defaultdict(list), defaultdict(None), defaultdict(int), deque(), deque(maxlen=3),
    # numbers
    2, -1, 2**64, -(2**64), 2**64 + 1, 1.5, math.inf, -math.inf, math.nan,
    complex(1, 0), complex(0, 1), complex(-0.0, 0), Decimal("1"), Decimal("1.0"),
    Decimal("-0"), Decimal("NaN"), Decimal("sNaN"), Decimal("Infinity"), Decimal("-Infinity"),
    Decimal("1E+5"), Decimal("100000"), Fraction(1),
    Fraction(1, 2), 0.5,
    # framing: the same characters split another way
    "ab", ("a", "b"), ("ab",), ["a", "b"], [["a"], "b"], [["a", "b"]], b"ab", (b"a", b"b"),
    ("a", ("b",)), (("a",), "b"), "a\x00", ("a", ""), ("", "a"),
    # sets and mappings
    {1}, frozenset({1}), {1, 2}, {1: 2}, {2: 1}, {1: 2, 3: 4}, OrderedDict({1: 2}),
    OrderedDict([(1, 2), (3, 4)]), OrderedDict([(3, 4), (1, 2)]), Counter({1: 2}),
    defaultdict(list, {1: 2}), {"1": 2}, {1.0: 2}, {(1,): 2}, deque([1]), deque([1], maxlen=1),
    # dates and times
    date(2024, 1, 2), datetime(2024, 1, 2), datetime(2024, 1, 2, tzinfo=UTC),
    datetime(2024, 1, 2, 1, tzinfo=timezone(timedelta(hours=1))),
    datetime(2024, 1, 2, tzinfo=timezone(timedelta(0), "Z")), datetime(2024, 1, 2, fold=1),
    time(1), time(1, tzinfo=UTC), timedelta(1), timedelta(seconds=1), timedelta(0),
    # other standard types
    UUID(int=1), UUID(int=2), PurePosixPath("a"), PureWindowsPath("a"), Path("a"),
    PurePosixPath("a/b"), IPv4Address("1.2.3.4"), IPv4Network("1.2.3.0/24"),
    IPv6Address("::1"),
    # user types
    Color.RED, Color.GREEN, Level.LOW, Shade.RED, Point(1, 2), Other(1, 2), Pair(1, 2), (1, 2),
    [1, 2], Point(2, 1), Pair(2, 1),
    # numpy: dtype, shape, scalar or array all count
    np.arange(3, dtype=np.int32), np.arange(3, dtype=np.int64), np.arange(3, dtype=">i8"),
    np.arange(3.0), np.arange(3).reshape(1, 3), np.arange(3).reshape(3, 1), np.int64(1),
    np.float64(1.0), np.array(1), np.bool_(True), np.array([0.0]), np.array([-0.0]),
    np.array([np.nan]), np.array([1 + 0j]), np.array(["1"]), np.array([b"1"]),
    # refs: by their digest
    ref("a"), ref("b"), "a" * 64,
]  # fmt: skip

EQUAL: list[tuple[Any, Any]] = [
    ({1, 2, 3}, {3, 2, 1}),
    (frozenset("abc"), frozenset("cba")),
    ({"a": 1, "b": 2}, {"b": 2, "a": 1}),
    (Counter("abca"), Counter("acab")),
    (defaultdict(list, a=1, b=2), defaultdict(list, b=2, a=1)),
    (math.nan, nan_with_payload()),
    (math.nan, -math.nan),
    (complex(math.nan, 1), complex(-math.nan, 1)),
    (Decimal("NaN"), Decimal("-NaN123")),
    (bytearray(b"x"), b"x"),
    (memoryview(b"x"), b"x"),
    (Color.CRIMSON, Color.RED),
    (Point(1, [2]), Point(1, [2])),
    (np.arange(6.0).reshape(2, 3), np.asfortranarray(np.arange(6.0).reshape(2, 3))),
    (np.array([np.nan, 1.0]), np.array([nan_with_payload(), 1.0])),
    (np.array([complex(np.nan, 2.0)]), np.array([complex(-np.nan, 2.0)])),
    (ref("a"), Ref(uri="blob:sha256:" + "a" * 64, sha256="a" * 64, size=9, stored_size=3)),
    ({"k": {1, 2}}, {"k": {2, 1}}),
]


def test_the_distinct_values_are_distinct() -> None:
    encoded: dict[bytes, Any] = {}
    for value in DISTINCT:
        key = canonical(value)
        assert key not in encoded, f"{value!r} encodes as {encoded[key]!r} does"
        encoded[key] = value


@pytest.mark.parametrize(
    ("a", "b"), EQUAL, ids=[f"{i}-{type(a).__name__}" for i, (a, _) in enumerate(EQUAL)]
)
def test_equal_values_encode_alike(a: Any, b: Any) -> None:
    assert canonical(a) == canonical(b)


def test_decimals_do_not_follow_the_context() -> None:
    key = canonical([Decimal("1E+5"), Decimal("-Infinity")])
    with localcontext() as context:
        context.capitals = 0  # str() would now write 1e+5
        assert canonical([Decimal("1E+5"), Decimal("-Infinity")]) == key


def test_numpy_is_not_imported_for_plain_values() -> None:
    code = (
        "import sys; from flowdag._cache_keys import canonical; "
        "canonical([1, {'a': (2.0, None)}]); print('numpy' in sys.modules)"
    )
    out = subprocess.run(
        [sys.executable, "-c", code], capture_output=True, text=True, check=True, env=_env("0")
    )
    assert out.stdout.strip() == "False"


# -- refusals ------------------------------------------------------------------------------------


class MyInt(int):
    pass


def _closed_socket() -> socket.socket:
    sock = socket.socket()
    sock.close()
    return sock


def _cyclic_list() -> Any:
    a: list[Any] = [1]
    a.append({"x": a})
    return a


def _nested(depth: int) -> Any:
    value: Any = 1
    for _ in range(depth):
        value = [value]
    return value


class Naive(tzinfo):  # any tzinfo but timezone and ZoneInfo
    def utcoffset(self, dt: Any) -> timedelta:
        return timedelta(0)


BAD: list[tuple[Any, str, str]] = [
    (lambda: [1, 2, {"x": _closed_socket()}], "key[2]['x']", "socket;"),
    (lambda: (1, {"a": [object()]}), "key[1]['a'][0]", "object"),
    (lambda: {1, MyInt(2)}, "key<set item>", "MyInt.*subclass of int"),
    (lambda: {(1, 2): "\ud800"}, "key[(1, 2)]", "str.*surrogate"),
    (lambda: {MyInt(1): 2}, "key<dict key #0>", "MyInt"),
    (lambda: Point(1, [lambda: 0]), "key.y[0]", "function"),
    (lambda: Pair(1, object()), "key.y", "object"),
    (_cyclic_list, "key[1]['x']", "list.*holds itself"),
    (lambda: _nested(MAX_DEPTH + 5), "key" + "[0]" * MAX_DEPTH, "list.*levels deep"),
    (lambda: defaultdict(lambda: 0), "key", "defaultdict.*default_factory"),
    (lambda: [datetime(2024, 1, 1, tzinfo=Naive())], "key[0]", "datetime.*tzinfo"),
    (lambda: np.array([object()]), "key", "ndarray.*dtype object"),
    (lambda: [1, range(3)], "key[1]", "range"),
]


@pytest.mark.parametrize(("make", "path", "what"), BAD, ids=[b[1] + " " + b[2] for b in BAD])
def test_bad_values_are_refused_naming_type_and_place(make: Any, path: str, what: str) -> None:
    value = make()
    with pytest.raises(InvalidArgumentTypeError) as info:
        canonical(value)
    message = str(info.value)
    assert message.startswith(path + ": cannot make a cache key of a "), message
    assert re.search(what, message), message
    assert "return a str, or a tuple of plain values" in message


def test_a_refused_value_is_named_as_the_caller_says() -> None:
    with pytest.raises(InvalidArgumentTypeError, match=r"^cache_key\(\) of 'report'\[0\]: "):
        canonical([object()], name="cache_key() of 'report'")


# -- entry keys ----------------------------------------------------------------------------------

PARTS = ("wf", "node", "f" * 64, "1")


def test_entry_keys_are_hex_sha256_and_order_free() -> None:
    key = cache_key(*PARTS, {"a": "1" * 64, "b": "2" * 64}, None)
    assert re.fullmatch(r"[0-9a-f]{64}", key)
    assert key == cache_key(*PARTS, {"b": "2" * 64, "a": "1" * 64}, None)
    # Pinned: a change of framing would silently turn every stored entry into a miss.
    assert cache_key("wf", "n", "fp", "1", None, canonical(("day", 1))) == (
        "a577ccc36a17134dc5f279ce34496bed70cb95610089dcbd93a2740c21b7dc52"
    )


def test_entry_keys_differ_in_every_part_and_form() -> None:
    cases = [
        cache_key(*PARTS, {}, None),
        cache_key(*PARTS, None, b""),
        cache_key(*PARTS, None, canonical(None)),
        cache_key(*PARTS, {"a": "x"}, None),
        cache_key(*PARTS, {"a": "y"}, None),
        cache_key(*PARTS, {"b": "x"}, None),
        cache_key(*PARTS, {"a": "x", "b": "x"}, None),
        cache_key(*PARTS, {"ax": ""}, None),
        cache_key("w", "fnode", *PARTS[2:], {}, None),
        cache_key("wfn", "ode", *PARTS[2:], {}, None),
        cache_key("wf", "node", "e" * 64, "1", {}, None),
        cache_key("wf", "node", "f" * 64, "2", {}, None),
        cache_key("wf", "node", "f" * 64, "", {}, None),
        cache_key("wf", "node", "f" * 64 + "1", "", {}, None),
    ]
    assert len(set(cases)) == len(cases)


@pytest.mark.parametrize(
    ("args", "error", "match"),
    [
        ((*PARTS, None, None), InvalidArgumentError, "exactly one"),
        ((*PARTS, {}, b""), InvalidArgumentError, "exactly one"),
        ((*PARTS, None, "x"), InvalidArgumentTypeError, "user_key must be bytes"),
        ((*PARTS, [("a", "x")], None), InvalidArgumentTypeError, "inputs must be a mapping"),
        ((*PARTS, {"a": 1}, None), InvalidArgumentTypeError, "digest of 'a' must be a str"),
        (("wf", 1, "f", "1", {}, None), InvalidArgumentTypeError, "node must be a str"),
        (("wf", "n", "f", None, {}, None), InvalidArgumentTypeError, "version must be a str"),
    ],
)
def test_entry_key_arguments_are_checked(args: Any, error: type, match: str) -> None:
    with pytest.raises(error, match=match):
        cache_key(*args)


# -- properties ----------------------------------------------------------------------------------

_leaves = st.one_of(
    st.none(),
    st.booleans(),
    st.integers(-2, 2) | st.sampled_from([2**70, -(2**70)]),
    st.sampled_from([0.0, -0.0, 1.0, 2.0, math.inf, math.nan, -math.nan, nan_with_payload()])
    | st.floats(),
    st.sampled_from([complex(1, 0), complex(0, -0.0), complex(math.nan, 1)]),
    st.text("ab\x00é", max_size=2),
    st.binary(max_size=2),
    st.sampled_from(["1", "1.0", "-0", "0", "NaN", "-NaN"]).map(Decimal),
    st.sampled_from([Fraction(1), Fraction(1, 2), Fraction(-3, 2)]),
    st.sampled_from([date(2024, 1, 1), date(2024, 1, 2)]),
    st.sampled_from([datetime(2024, 1, 1), datetime(2024, 1, 1, tzinfo=UTC)]),
    st.sampled_from([time(0), time(0, tzinfo=UTC), timedelta(0), timedelta(1)]),
    st.sampled_from([UUID(int=0), UUID(int=1)]),
    st.sampled_from([PurePosixPath("a"), PureWindowsPath("a"), PurePosixPath("b")]),
    st.sampled_from([IPv4Address("1.2.3.4"), IPv6Address("::1")]),
    st.sampled_from([Color.RED, Color.GREEN, Level.LOW, Shade.RED]),
)
_hashables = st.recursive(
    _leaves,
    lambda inner: st.tuples(inner, inner) | st.frozensets(inner, max_size=3),
    max_leaves=6,
)
_dtypes = st.sampled_from(["int32", "int64", "float64", ">f8"])
_arrays = st.builds(
    lambda items, dtype: np.array(
        items if "f" in dtype else [0 if x != x else x for x in items], dtype=dtype
    ),
    st.lists(st.sampled_from([0.0, -0.0, 1.0, math.nan, nan_with_payload()]), max_size=3),
    _dtypes,
)
_unhashables = _arrays | st.just(Decimal("sNaN"))  # a signalling NaN cannot be hashed
_values = st.recursive(
    _hashables | _unhashables,
    lambda inner: st.one_of(
        st.lists(inner, max_size=3),
        st.tuples(inner),
        st.dictionaries(_hashables, inner, max_size=3),
        st.dictionaries(_hashables, inner, max_size=3).map(OrderedDict),
        st.dictionaries(_hashables, st.integers(0, 2), max_size=3).map(Counter),
        st.sets(_hashables, max_size=3),
        st.builds(Point, inner, inner),
        st.builds(Pair, inner, inner),
        st.lists(inner, max_size=2).map(deque),
    ),
    max_leaves=10,
)


def same(a: Any, b: Any) -> bool:
    """The reference: type-strict equality, floats by their bits (one NaN), written out."""
    kind = type(a)
    if kind is not type(b):
        return False
    if kind is float:
        return (a != a and b != b) or struct.pack(">d", a) == struct.pack(">d", b)
    if kind is complex:
        return same(a.real, b.real) and same(a.imag, b.imag)
    if kind is Decimal:
        if a.is_nan() or b.is_nan():
            return a.is_nan() and b.is_nan() and a.is_snan() == b.is_snan()
        return str(a) == str(b)
    if kind is datetime or kind is time:
        return a.replace(tzinfo=None) == b.replace(tzinfo=None) and a.tzinfo == b.tzinfo
    if kind is np.ndarray:
        if a.dtype.str != b.dtype.str or a.shape != b.shape:
            return False
        return all(same(x, y) for x, y in zip(a.tolist(), b.tolist(), strict=True))
    if kind in (list, tuple, Pair, deque):
        return len(a) == len(b) and all(map(same, a, b))
    if kind is OrderedDict:
        return same(list(a.items()), list(b.items()))
    if kind in (dict, Counter):
        return _matched(list(a.items()), list(b.items()))
    if kind in (set, frozenset):
        return _matched(list(a), list(b))
    if is_dataclass(a):
        return all(same(getattr(a, f.name), getattr(b, f.name)) for f in fields(a))
    if isinstance(a, enum.Enum):
        return a is b
    return bool(a == b)


def _matched(left: list[Any], right: list[Any]) -> bool:
    """Each of ``left`` pairs with a different one of ``right`` by `same` (an equivalence)."""
    if len(left) != len(right):
        return False
    rest = list(right)
    for item in left:
        for i, other in enumerate(rest):
            if same(item, other):
                del rest[i]
                break
        else:
            return False
    return True


def twin(value: Any) -> Any:
    """An equal value built anew: every NaN another NaN, sets and dicts in reverse order."""
    kind = type(value)
    if kind is float and value != value:
        other = nan_with_payload()
        return other if struct.pack(">d", value) != struct.pack(">d", other) else -math.nan
    if kind is complex:
        return complex(twin(value.real), twin(value.imag))
    if kind is Decimal and value.is_qnan():
        return Decimal("-NaN7")
    if kind in (list, tuple, set, frozenset):
        items = [twin(item) for item in value]
        return kind(reversed(items) if kind in (set, frozenset) else items)
    if kind is deque:
        return deque(map(twin, value), value.maxlen)
    if kind in (Pair, Point):
        return kind(twin(value.x), twin(value.y))
    if kind in (dict, Counter, OrderedDict):
        pairs = [(twin(k), twin(v)) for k, v in value.items()]
        return kind(dict(pairs if kind is OrderedDict else reversed(pairs)))
    if kind is np.ndarray:
        copied = value.copy()
        if copied.dtype.kind == "f":
            copied[np.isnan(copied)] = nan_with_payload()
        return copied
    return value


@settings(max_examples=300, deadline=None)
@given(_values, _values, st.sampled_from(["other", "copy", "twin"]))
def test_equal_bytes_iff_the_same_value(a: Any, other: Any, how: str) -> None:
    b = {"other": other, "copy": copy.deepcopy(a), "twin": twin(a)}[how]
    assert (canonical(a) == canonical(b)) == same(a, b), (a, b)
    if how == "twin":
        assert same(a, b)  # the reference agrees that twins are equal


@settings(max_examples=100, deadline=None)
@given(st.lists(st.tuples(_hashables, _values), max_size=6), st.randoms(use_true_random=False))
def test_insertion_order_does_not_count(items: list[tuple[Any, Any]], rnd: random.Random) -> None:
    mapping = dict(items)  # unique keys, so any order holds the same key objects
    pairs = list(mapping.items())
    rnd.shuffle(pairs)
    assert canonical(dict(pairs)) == canonical(mapping)
    assert canonical(Counter(dict(pairs))) == canonical(Counter(mapping))
    keys = set(mapping)
    shuffled = list(keys)
    rnd.shuffle(shuffled)
    assert canonical(set(shuffled)) == canonical(keys)
    assert canonical(frozenset(shuffled)) == canonical(frozenset(keys))


# -- stability across processes ------------------------------------------------------------------


def stable_values() -> list[Any]:
    """Values whose encoding must not depend on the process (sets of str iterate by hash)."""
    return [
        {"alpha", "beta", "gamma", "delta", "epsilon"},
        frozenset({("a", 1), ("b", 2), ("c", 3)}),
        {"z": {"y", "x"}, "a": [1, 2.5, None], "m": b"\x00"},
        Counter("mississippi"),
        (Color.RED, Point("p", {"q", "r"}), datetime(2024, 5, 6, tzinfo=UTC)),
        np.arange(4, dtype=np.int16).reshape(2, 2),
    ]


def _encode_all() -> list[str]:
    return [canonical(v).hex() for v in stable_values()]


def _env(seed: str) -> dict[str, str]:
    return {**os.environ, "PYTHONHASHSEED": seed, "PYTHONPATH": str(ROOT)}


def test_keys_are_stable_across_processes_and_hash_seeds() -> None:
    code = "import json; from tests.test_cache_keys import _encode_all as e; print(json.dumps(e()))"
    seed = "4242" if os.environ.get("PYTHONHASHSEED") != "4242" else "17"
    out = subprocess.run(
        [sys.executable, "-c", code],
        capture_output=True,
        text=True,
        check=True,
        cwd=ROOT,
        env=_env(seed),
    )
    assert json.loads(out.stdout) == _encode_all()


def test_a_run_makes_the_keys_cache_key_makes() -> None:
    # RunCache frames the parts nodes share once (KeyHeads): the same bytes, so the same keys.
    heads = KeyHeads("wf")
    inputs = {"b": "2" * 64, "a": "1" * 64, "é": "3"}
    for node, fingerprint in (("n", "f" * 64), ("m", "f" * 64), ("n", "e" * 64)):
        head = heads.head(node, fingerprint, "1")
        assert head == key_head("wf", node, fingerprint, "1")
        names = heads.names(tuple(inputs))
        assert inputs_digest(head, names, inputs) == cache_key(
            "wf", node, fingerprint, "1", inputs, None
        )
        user = canonical(("day", 1))
        assert user_key_digest(head, user) == cache_key("wf", node, fingerprint, "1", None, user)
    with pytest.raises(InvalidArgumentTypeError, match="digest of 'a' must be a str"):
        inputs_digest(heads.head("n", "f", "1"), heads.names(("a",)), {"a": 1})  # type: ignore[dict-item]
