"""A node's provenance as its meta record's eighth field: written, and checked back.

See `flowdag.stores._records` for the record around it and
`flowdag.state.Provenance` for what each field means.
"""

from __future__ import annotations

from collections.abc import Mapping
from datetime import datetime
from itertools import chain
from types import MappingProxyType
from typing import Any

from flowdag.errors import CorruptStateError, InvalidArgumentError, InvalidArgumentTypeError
from flowdag.state import Override, Provenance, Reason, new_provenance
from flowdag.stores._fields import all_str as _all_str
from flowdag.stores._fields import moment as _moment
from flowdag.stores._fields import shown as _shown
from flowdag.stores._fields import to_micros

__all__ = ["provenance_record", "read_provenance"]


def provenance_record(provenance: Provenance) -> dict[str, Any]:
    """A node's provenance as its meta record's eighth field (see the module docstring).

    Raises:
        InvalidArgumentTypeError: a field of the wrong type.
    """
    if type(provenance) is not Provenance:
        raise InvalidArgumentTypeError(
            f"node provenance must be a Provenance, not {type(provenance).__name__}"
        )
    record: dict[str, Any] = {}
    for key, value in (
        ("fp", provenance.fingerprint),
        ("src", provenance.source),
        ("out", provenance.output),
    ):
        if value is not None:
            if type(value) is not str:
                raise InvalidArgumentTypeError(f"provenance {key} must be a str, not {value!r}")
            record[key] = value
    for key, mapping in (("parts", provenance.parts), ("in", provenance.inputs)):
        if mapping:
            if not _all_str(mapping) or not _all_str(mapping.values()):
                raise InvalidArgumentTypeError(f"provenance {key} must map str to str")
            record[key] = dict(mapping)
    reason = provenance.reason
    if reason is not None:
        if type(reason) is not Reason or not _all_str((reason.code, reason.detail)):
            raise InvalidArgumentTypeError(f"provenance reason must be a Reason, not {reason!r}")
        record["why"] = [reason.code, reason.detail]
    if provenance.manual:
        record["pin"] = True
    if provenance.audit:
        entries = []
        for entry in provenance.audit:
            if type(entry) is not Override or not _all_str((entry.action, entry.by, entry.reason)):
                raise InvalidArgumentTypeError(f"provenance audit holds {entry!r}, not an Override")
            if not isinstance(entry.at, datetime) or entry.at.utcoffset() is None:
                raise InvalidArgumentError(
                    f"override time must be timezone-aware, not {entry.at!r}"
                )
            entries.append([entry.action, entry.by, to_micros(entry.at), entry.reason])
        record["audit"] = entries
    return record


_PROVENANCE_KEYS = frozenset({"fp", "src", "parts", "out", "in", "why", "pin", "audit"})
_TEXT_OR_NONE = frozenset({str, type(None)})
_NO_MAPPING: Mapping[str, str] = MappingProxyType({})
_MAPPINGS = frozenset({dict, MappingProxyType})
_REASON_TYPES = frozenset({list, tuple})  # tuple: none stored
# Many nodes share a reason ("first run of this run id"): one object each, not one per node.
_REASONS: dict[tuple[str, str], Reason] = {}
_MAX_REASONS = 10_000


def read_provenance(record: Any) -> Provenance:
    """The provenance of a decoded meta record, checked (see `provenance_record`).

    Once per completed node on every load: a few set tests and no dataclass
    ``__init__`` (its frozen field setters were a third of a 100k-node load).
    """
    if type(record) is not dict or not record.keys() <= _PROVENANCE_KEYS:
        raise CorruptStateError(f"node provenance is {_shown(record)}, not a provenance record")
    get = record.get
    fingerprint, source, output = get("fp"), get("src"), get("out")
    if not {type(fingerprint), type(source), type(output)} <= _TEXT_OR_NONE:
        key, value = next(
            (k, get(k)) for k in ("fp", "src", "out") if type(get(k)) not in _TEXT_OR_NONE
        )
        raise CorruptStateError(f"node provenance {key} is {_shown(value)}, not a str")
    parts, inputs, why = get("parts", _NO_MAPPING), get("in", _NO_MAPPING), get("why", ())
    if (
        type(parts) not in _MAPPINGS
        or type(inputs) not in _MAPPINGS
        or type(why) not in _REASON_TYPES
        or len(why) not in (0, 2)
        or not _all_str(chain(parts, parts.values(), inputs, inputs.values(), why))
    ):
        _provenance_problem(parts, inputs, why)
    reason = None
    if why:
        pair = (why[0], why[1])
        reason = _REASONS.get(pair)
        if reason is None:
            reason = Reason(*pair)
            if len(_REASONS) < _MAX_REASONS:
                _REASONS[pair] = reason
    pinned = get("pin", False)
    if type(pinned) is not bool:
        raise CorruptStateError(f"node provenance pin is {_shown(pinned)}, not a bool")
    audit = get("audit")
    overrides = () if audit is None else _overrides(audit)
    return new_provenance(fingerprint, source, parts, output, inputs, reason, pinned, overrides)


def _provenance_problem(parts: Any, inputs: Any, why: Any) -> None:
    """Raise for the first damaged field of these (known to hold one)."""
    for key, mapping in (("parts", parts), ("in", inputs)):
        if type(mapping) not in _MAPPINGS or not (_all_str(mapping) and _all_str(mapping.values())):
            raise CorruptStateError(f"node provenance {key} is {_shown(mapping)}, not str -> str")
    raise CorruptStateError(f"node provenance why is {_shown(why)}, not [code, detail]")


def _overrides(audit: Any) -> tuple[Override, ...]:
    if type(audit) is not list:
        raise CorruptStateError(f"node provenance audit is {_shown(audit)}, not a list")
    overrides = []
    for entry in audit:
        if (
            type(entry) is not list
            or len(entry) != 4
            or not _all_str((entry[0], entry[1], entry[3]))
        ):
            raise CorruptStateError(
                f"node provenance audit holds {_shown(entry)}, not [action, by, at_us, reason]"
            )
        overrides.append(Override(entry[0], entry[1], _moment(entry[2], "override at"), entry[3]))
    return tuple(overrides)
