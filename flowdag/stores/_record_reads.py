"""A run's header and node meta records read back and checked: never trusted, never wrong.

The shapes are those `flowdag.stores._records` writes (see its docstring);
anything else is damage, raised as `CorruptStateError` naming the run and
what is wrong. Cost: `node_state` runs once per node on every load, so it is a
handful of exact type tests and one constructor call; the header is checked
once per load, in time linear in its size.
"""

from __future__ import annotations

import re
from collections.abc import Callable
from datetime import datetime, timedelta
from itertools import chain
from typing import Any

from flowdag.errors import CorruptStateError
from flowdag.refs import collecting, hold
from flowdag.state import AttemptInfo, ErrorInfo, NodeState, NodeStatus
from flowdag.stores._fields import EPOCH as _EPOCH
from flowdag.stores._fields import MAX_MICROS as _MAX_MICROS
from flowdag.stores._fields import MIN_MICROS as _MIN_MICROS
from flowdag.stores._fields import all_str as _all_str
from flowdag.stores._fields import bad_time as _bad_time
from flowdag.stores._fields import moment as _moment
from flowdag.stores._fields import shown as _shown
from flowdag.stores._provenance import read_provenance
from flowdag.stores._records import HEADER_FORMAT, MAX_ATTEMPTS
from flowdag.stores._stored import RunLife, StoredRun

__all__ = ["meta_blobs", "node_state", "run_header", "run_life"]

_HEADER_FORMATS = frozenset({1, 2, 3, 4, 5, HEADER_FORMAT})  # the formats still read
_STATUSES = {status.value: status for status in NodeStatus}
_SHA256 = re.compile(r"[0-9a-f]{64}")
_LIST = {list}


# -- checking what was read -----------------------------------------------------------


def run_header(
    header: Any,
) -> tuple[str, dict[str, Any], dict[str, tuple[str, ...]], timedelta | None]:
    """The workflow, metadata, deps and ttl of a decoded header, checked.

    Raises:
        CorruptStateError: the header is not one `header_record` writes.
    """
    if type(header) is not dict:
        raise CorruptStateError(f"run header is {_shown(header)}, not a dict")
    version = header.get("format")
    if type(version) is not int or version not in _HEADER_FORMATS:  # exact type: True == 1
        raise CorruptStateError(f"unknown run header format {_shown(version)}")
    workflow = header.get("workflow")
    if type(workflow) is not str:
        raise CorruptStateError(f"header: workflow is {_shown(workflow)}, not a str")
    metadata = header.get("metadata")
    if type(metadata) is not dict:
        raise CorruptStateError(f"header: metadata is {_shown(metadata)}, not a dict")
    stored = header.get("deps")
    if type(stored) is not dict:
        raise CorruptStateError(f"header: deps is {_shown(stored)}, not a dict")
    # All the names at once, in C: this runs on every load, over every edge.
    if not (
        _all_str(stored)
        and set(map(type, stored.values())) <= _LIST
        and _all_str(chain.from_iterable(stored.values()))
    ):
        raise CorruptStateError(f"header: {_deps_problem(stored)}")
    ttl = header.get("ttl_us")
    if ttl is not None:
        if type(ttl) is not int or not 0 < ttl <= _MAX_MICROS or version < 3:
            raise CorruptStateError(f"header: ttl_us is {_shown(ttl)}, not a duration")
        ttl = timedelta(microseconds=ttl)
    shared: dict[tuple[str, ...], tuple[str, ...]] = {}  # equal deps, one tuple (a fan-out)
    deps = {n: shared.setdefault(d, d) for n, d in ((n, tuple(d)) for n, d in stored.items())}
    return workflow, metadata, deps, ttl


def node_state(meta: Any, output: Any, deps: tuple[str, ...]) -> NodeState:
    """The `NodeState` of a decoded meta record, checked.

    Raises:
        CorruptStateError: the record is not one `meta_record` writes.
    """
    # Run once per node on every load: exact type tests, one constructor call.
    size = len(meta) if type(meta) is list else 0
    if not 5 <= size <= 8:
        raise CorruptStateError(f"node meta is {_shown(meta)}, not a list of 5 to 8 fields")
    status, attempts, started, finished, error = meta[:5]
    if type(status) is not str or status not in _STATUSES:
        raise CorruptStateError(f"node status is {_shown(status)}, not a node status")
    if type(attempts) is not int or not 0 <= attempts <= MAX_ATTEMPTS:
        raise CorruptStateError(f"node attempts is {_shown(attempts)}, not a count")
    if started is not None:
        if type(started) is not int or not _MIN_MICROS <= started <= _MAX_MICROS:
            raise _bad_time("started_at", started)
        started = _EPOCH + timedelta(0, 0, started)
    if finished is not None:
        if type(finished) is not int or not _MIN_MICROS <= finished <= _MAX_MICROS:
            raise _bad_time("finished_at", finished)
        finished = _EPOCH + timedelta(0, 0, finished)
    if error is not None:
        error = _error_info(error, "node error")
    if size == 7 or (size == 8 and meta[6] is not None):
        meta_blobs(meta)  # checked here too: a load never passes damage on
    provenance = None if size < 8 else read_provenance(meta[7])
    if size == 5 or (size > 6 and meta[5] is None):  # 6 fields: the history is there
        return NodeState(
            _STATUSES[status], attempts, started, finished, output, error, deps, (), provenance
        )
    history = _history(meta[5], started, finished, error)
    return NodeState(
        _STATUSES[status], attempts, started, finished, output, error, deps, history, provenance
    )


def meta_blobs(meta: Any) -> dict[str, datetime | None]:
    """The blobs a decoded meta record lists: sha256 -> expiry (None: never), checked.

    Raises:
        CorruptStateError: the record or its blobs field is not one `meta_record` writes.
    """
    if type(meta) is not list or not 5 <= len(meta) <= 8:
        raise CorruptStateError(f"node meta is {_shown(meta)}, not a list of 5 to 8 fields")
    if len(meta) < 7 or (len(meta) == 8 and meta[6] is None):  # 7 fields: blobs are there
        return {}
    entries = meta[6]
    if type(entries) is not list or not entries:
        raise CorruptStateError(f"node blobs are {_shown(entries)}, not a non-empty list")
    blobs: dict[str, datetime | None] = {}
    for entry in entries:
        if (
            type(entry) is not list
            or len(entry) != 2
            or type(entry[0]) is not str
            or not _SHA256.fullmatch(entry[0])
        ):
            raise CorruptStateError(f"node blobs hold {_shown(entry)}, not [sha256, expires_us]")
        blobs[entry[0]] = None if entry[1] is None else _moment(entry[1], "blob expires_at")
    return blobs


def _error_info(error: Any, what: str) -> ErrorInfo:
    if type(error) is not list or len(error) != 3 or not _all_str(error):
        raise CorruptStateError(f"{what} is {_shown(error)}, not [type, message, traceback]")
    return ErrorInfo(*error)


def _history(
    entries: Any, started: datetime | None, finished: datetime | None, error: ErrorInfo | None
) -> tuple[AttemptInfo, ...]:
    """The history of a decoded meta record, checked; see the module docstring."""
    if type(entries) is not list or not entries:
        raise CorruptStateError(f"node history is {_shown(entries)}, not a non-empty list")
    if len(entries) == 1 and started is not None and finished is not None:  # the usual: [1]
        number = entries[0]
        if type(number) is int and 1 <= number <= MAX_ATTEMPTS:
            return (AttemptInfo(number, started, finished, error),)
    history = []
    last = len(entries) - 1
    for i, entry in enumerate(entries):
        if type(entry) is int and i == last:  # the node's own attempt, by its number
            if started is None or finished is None:
                raise CorruptStateError(
                    "node history ends with the node's own attempt, but the node has no times"
                )
            history.append(AttemptInfo(_stored_number(entry, i), started, finished, error))
            continue
        if type(entry) is not list or len(entry) != 4:
            raise CorruptStateError(
                f"node history[{i}] is {_shown(entry)}, "
                "not [number, started_us, finished_us, error]"
            )
        number, begun, ended, failed = entry
        history.append(
            AttemptInfo(
                _stored_number(number, i),
                _moment(begun, f"history[{i}] started_at"),
                _moment(ended, f"history[{i}] finished_at"),
                None if failed is None else _error_info(failed, f"node history[{i}] error"),
            )
        )
    return tuple(history)


def _stored_number(number: Any, i: int) -> int:
    if type(number) is not int or not 1 <= number <= MAX_ATTEMPTS:
        raise CorruptStateError(f"node history[{i}] number is {_shown(number)}, not a count")
    return number


def _deps_problem(deps: dict[Any, Any]) -> str:
    """What is wrong with a header's deps (known to be wrong): the first culprit."""
    for name, node_deps in deps.items():
        if type(name) is not str:
            return f"node name {_shown(name)} is not a str"
        if type(node_deps) is not list or not _all_str(node_deps):
            return f"deps of node {name!r} are {_shown(node_deps)}, not a list of names"
    return "deps are not a dict of node name -> list of names"  # pragma: no cover


def run_life(run: StoredRun, decode: Callable[[bytes], Any]) -> RunLife:
    """`Store.life` of a run's bytes: when it expires, the blobs its records hold.

    Raises:
        CorruptStateError, KeyError, TypeError, ValueError: a damaged record.
    """
    ttl = run_header(decode(run.header))[3]
    last: datetime | None = None
    with collecting() as blobs:  # a ctx.data value may hold refs too
        for value in run.data.values():
            decode(value)
    for node in run.nodes.values():
        meta = decode(node.meta)
        for sha256, expires_at in meta_blobs(meta).items():
            hold(blobs, sha256, expires_at)
        finished = node_state(meta, None, ()).finished_at
        if finished is not None and (last is None or finished > last):
            last = finished
    return RunLife(None if ttl is None or last is None else last + ttl, blobs)
