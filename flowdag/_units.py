"""Durations and sizes as users write them: ``90``, ``timedelta(hours=4)``, ``"4h"``, ``"256KiB"``.

Every option of the next wing that takes a duration (``ttl``, ``grace``,
``timeout``, ``cache_ttl``...) or a size (``inline_limit``) goes through
`parse_duration` or `parse_size`, so they all accept the same spellings and
refuse bad ones with the same message: what the option is, what was given,
and an example of a valid value. Pure: no I/O, no clock.
"""

from __future__ import annotations

import math
import re
from datetime import timedelta
from decimal import Decimal

from flowdag.errors import InvalidArgumentError, InvalidArgumentTypeError

__all__ = ["Duration", "Size", "parse_duration", "parse_size"]

#: What a duration option takes: seconds, a timedelta, or a string such as "90s".
Duration = int | float | timedelta | str
#: What a size option takes: bytes, or a string such as "256KiB".
Size = int | str

_SECONDS = {"ms": 0.001, "s": 1, "m": 60, "h": 3600, "d": 86400, "w": 604800}
_BYTES = {
    "b": 1,
    "kb": 10**3,
    "mb": 10**6,
    "gb": 10**9,
    "tb": 10**12,
    "kib": 2**10,
    "mib": 2**20,
    "gib": 2**30,
    "tib": 2**40,
}
_NUMBER = r"(\d+(?:\.\d*)?|\.\d+)"
# "90s", "1h30m", "1.5d", "2 h": one or more number-unit parts, largest first or not.
_DURATION_PART = re.compile(rf"\s*{_NUMBER}\s*(ms|s|m|h|d|w)\s*", re.IGNORECASE)
_PLAIN = re.compile(rf"\s*{_NUMBER}\s*")
_SIZE = re.compile(rf"\s*{_NUMBER}\s*([kmgt]i?b|b)?\s*", re.IGNORECASE)
#: Longer than any run or lifetime anyone means (10,000 years): a typo, not a wish.
_MAX_SECONDS = 10_000 * 365.25 * 86400


def parse_duration(value: object, option: str) -> float:
    """Seconds in ``value``: a number of seconds, a `timedelta`, or a string like ``"90s"``.

    Strings are one or more parts of a number and a unit, ``ms``, ``s``, ``m``,
    ``h``, ``d`` or ``w`` (``"30m"``, ``"1h30m"``, ``"1.5d"``), or a bare number
    of seconds (``"90"``, as a command line gives it); case and spaces do not
    matter. Zero is allowed; negative, NaN and infinite are not.

    Raises:
        InvalidArgumentTypeError: ``value`` is none of those types (a bool included).
        InvalidArgumentError: a string that does not parse, or a value out of range.
    """
    if isinstance(value, bool) or not isinstance(value, int | float | timedelta | str):
        raise InvalidArgumentTypeError(
            f"{option} must be a duration (seconds, a timedelta or a string such as "
            f"'90s', '30m', '4h' or '7d'), not {type(value).__name__} {value!r}"
        )
    if isinstance(value, timedelta):
        seconds = value.total_seconds()
    elif isinstance(value, str):
        seconds = _duration_string(value, option)
    else:
        seconds = float(value)
    if math.isnan(seconds) or not 0 <= seconds <= _MAX_SECONDS:
        raise InvalidArgumentError(
            f"{option} must be a duration from 0 to 10,000 years, not {value!r}; e.g. '7d'"
        )
    return seconds


def parse_size(value: object, option: str) -> int:
    """Bytes in ``value``: an int, or a string like ``"256KiB"`` or ``"10MB"``.

    Units are ``B``, decimal ``KB``/``MB``/``GB``/``TB`` (powers of 1000) and
    binary ``KiB``/``MiB``/``GiB``/``TiB`` (powers of 1024), in any case; a
    string without a unit is bytes. A fraction of a byte is rounded down.

    Raises:
        InvalidArgumentTypeError: ``value`` is neither an int nor a str (a bool included).
        InvalidArgumentError: a string that does not parse, or a negative size.
    """
    if isinstance(value, bool) or not isinstance(value, int | str):
        raise InvalidArgumentTypeError(
            f"{option} must be a size (bytes as an int, or a string such as '256KiB' "
            f"or '10MB'), not {type(value).__name__} {value!r}"
        )
    if isinstance(value, str):
        match = _SIZE.fullmatch(value)
        if match is None:
            raise InvalidArgumentError(
                f"{option}={value!r} is not a size; write bytes as an int or a string "
                "such as '256KiB', '10MB' or '1.5GiB'"
            )
        number, unit = match.groups()
        size = int(Decimal(number) * _BYTES[(unit or "b").lower()])  # exact: '0.29KB' is 290
    else:
        size = value
    if size < 0:
        raise InvalidArgumentError(f"{option} must not be negative, not {value!r}; e.g. '256KiB'")
    return size


def _duration_string(text: str, option: str) -> float:
    if _PLAIN.fullmatch(text):  # "90" from a command line: seconds, as a number would be
        return float(text)
    seconds = 0.0
    position = 0
    while position < len(text):
        match = _DURATION_PART.match(text, position)
        if match is None:
            break
        number, unit = match.groups()
        seconds += float(number) * _SECONDS[unit.lower()]
        position = match.end()
    if position == 0 or position < len(text):
        raise InvalidArgumentError(
            f"{option}={text!r} is not a duration; write seconds as a number or a string "
            "such as '90s', '30m', '4h', '7d' or '1h30m'"
        )
    return seconds
