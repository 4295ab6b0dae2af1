"""Checked fields of stored records: times in microseconds, names, and forged values shown.

Shared by the run header and meta records (`flowdag.stores._records`) and the
provenance inside them (`flowdag.stores._provenance`).
"""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from typing import Any

from flowdag.errors import CorruptStateError

__all__ = [
    "EPOCH",
    "MAX_MICROS",
    "MICROSECOND",
    "MIN_MICROS",
    "all_str",
    "bad_time",
    "moment",
    "shown",
    "to_micros",
]

EPOCH = datetime(1970, 1, 1, tzinfo=UTC)
MICROSECOND = timedelta(microseconds=1)
# The microseconds that make a datetime: years 1 to 9999, as `to_micros` writes them.
MIN_MICROS = (datetime.min.replace(tzinfo=UTC) - EPOCH) // MICROSECOND
MAX_MICROS = (datetime.max.replace(tzinfo=UTC) - EPOCH) // MICROSECOND


def to_micros(moment: datetime | None) -> int | None:
    """Whole microseconds since the epoch: exact, unlike a float timestamp."""
    return None if moment is None else (moment - EPOCH) // MICROSECOND


def moment(micros: Any, field: str) -> datetime:
    """The time a stored ``micros`` stands for, checked (``field`` names it in the error)."""
    if type(micros) is not int or not MIN_MICROS <= micros <= MAX_MICROS:
        raise bad_time(field, micros)
    return EPOCH + timedelta(0, 0, micros)


_TEXT = {str}


def all_str(items: Any) -> bool:
    """Whether every item is a str: one pass in C, the set of the items' types."""
    return set(map(type, items)) <= _TEXT


def bad_time(field: str, micros: Any) -> CorruptStateError:
    """The error for a stored time out of range."""
    return CorruptStateError(f"node {field} is {shown(micros)}, not a time in years 1-9999")


def shown(value: Any) -> str:
    """A forged value, briefly: its type and the start of its repr."""
    kind = type(value)
    if kind is int and value.bit_length() > 64:  # repr of a huge int is slow, or refused
        return f"an int of {value.bit_length()} bits"
    text = repr(value) if kind in (int, float, str, bool, type(None)) else ""
    if len(text) > 40:
        text = text[:37] + "..."
    return f"{type(value).__name__} {text}".rstrip()
