"""Durations and sizes: every spelling API.md promises, and a clear error for the rest."""

from __future__ import annotations

from datetime import timedelta

import pytest
from hypothesis import given
from hypothesis import strategies as st

from flowdag import FlowdagError, InvalidArgumentError, InvalidArgumentTypeError
from flowdag._units import parse_duration, parse_size


@pytest.mark.parametrize(
    ("value", "seconds"),
    [
        (90, 90.0),
        (2.5, 2.5),
        (0, 0.0),
        (timedelta(hours=4), 14400.0),
        ("90s", 90.0),
        ("30m", 1800.0),
        ("4h", 14400.0),
        ("7d", 604800.0),
        ("2w", 1209600.0),
        ("250ms", 0.25),
        ("1h30m", 5400.0),
        ("1h 30m 15s", 5415.0),
        ("1.5d", 129600.0),
        ("4H", 14400.0),
        (" 90 ", 90.0),
        ("90", 90.0),
    ],
)
def test_durations_in_every_documented_spelling(value: object, seconds: float) -> None:
    assert parse_duration(value, "ttl") == seconds


@pytest.mark.parametrize(
    ("value", "size"),
    [
        (0, 0),
        (1024, 1024),
        ("256KiB", 256 * 1024),
        ("10MB", 10_000_000),
        ("1.5GiB", 3 * 2**29),
        ("0.29KB", 290),  # exact decimal arithmetic, not 289
        ("1tib", 2**40),
        (" 12 b ", 12),
        ("4096", 4096),
    ],
)
def test_sizes_in_every_documented_spelling(value: object, size: int) -> None:
    assert parse_size(value, "inline_limit") == size


@pytest.mark.parametrize("value", ["", "abc", "5 parsecs", "1h x", "-3s", "h", "3 d d", "1e3s"])
def test_a_duration_that_does_not_parse_names_the_option_and_an_example(value: str) -> None:
    with pytest.raises(InvalidArgumentError, match=r"ttl=.* is not a duration.*'7d'"):
        parse_duration(value, "ttl")


@pytest.mark.parametrize("value", [-1, float("nan"), float("inf"), timedelta(seconds=-1), 1e300])
def test_a_duration_out_of_range_is_refused(value: object) -> None:
    with pytest.raises(InvalidArgumentError, match="grace must be a duration from 0"):
        parse_duration(value, "grace")


@pytest.mark.parametrize("value", [True, None, b"5s", [5]])
def test_a_duration_of_the_wrong_type_is_a_type_error(value: object) -> None:
    with pytest.raises(InvalidArgumentTypeError, match="ttl must be a duration") as caught:
        parse_duration(value, "ttl")
    assert isinstance(caught.value, TypeError) and isinstance(caught.value, FlowdagError)


@pytest.mark.parametrize("value", ["", "big", "5 KiBs", "-1KB", "1e3", "KB", "10 MB x"])
def test_a_size_that_does_not_parse_names_the_option_and_an_example(value: str) -> None:
    with pytest.raises(InvalidArgumentError, match=r"inline_limit=.* is not a size.*'256KiB'"):
        parse_size(value, "inline_limit")


@pytest.mark.parametrize("value", [True, 1.5, None, b"1KB"])
def test_a_size_of_the_wrong_type_is_a_type_error(value: object) -> None:
    with pytest.raises(InvalidArgumentTypeError, match="inline_limit must be a size"):
        parse_size(value, "inline_limit")


def test_a_negative_size_is_refused() -> None:
    with pytest.raises(InvalidArgumentError, match="must not be negative"):
        parse_size(-1, "inline_limit")


@given(
    st.lists(
        st.tuples(st.integers(0, 10_000), st.sampled_from(["s", "m", "h", "d", "w"])),
        min_size=1,
        max_size=4,
    )
)
def test_a_duration_of_parts_is_their_sum(parts: list[tuple[int, str]]) -> None:
    unit = {"s": 1, "m": 60, "h": 3600, "d": 86400, "w": 604800}
    text = "".join(f"{number}{name}" for number, name in parts)
    assert parse_duration(text, "ttl") == sum(number * unit[name] for number, name in parts)


@given(
    st.integers(0, 10**6),
    st.sampled_from(["B", "KB", "MB", "GB", "KiB", "MiB", "GiB", "kib", "mb"]),
)
def test_a_whole_size_is_exact(number: int, name: str) -> None:
    factor = {"b": 1, "kb": 10**3, "mb": 10**6, "gb": 10**9, "kib": 2**10, "mib": 2**20}
    factor["gib"] = 2**30
    assert parse_size(f"{number}{name}", "inline_limit") == number * factor[name.lower()]
