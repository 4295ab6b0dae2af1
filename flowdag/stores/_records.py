"""A run's header and node meta records: their shapes, and writing them.

A store keeps each run as a header (workflow, metadata, every node's deps) and
per node a small meta record (status, attempts, times, error, attempt history),
each one value encoded by the store's codec (see `flowdag.stores.base`).

The meta record is a list::

    [status, attempts, started_us, finished_us, error]                    no history
    [status, attempts, started_us, finished_us, error, history]           with one
    [status, attempts, started_us, finished_us, error, history, blobs]    output holds refs
    [status, attempts, started_us, finished_us, error, history, blobs, provenance]

Times are whole microseconds since the epoch (UTC), an error is ``[type,
message, traceback]``. ``history`` is a non-empty list of attempts, each
``[number, started_us, finished_us, error]``, except that the last may be just
its ``number`` when its times and error are the node's own (the usual case: a
node's last attempt is the one its status comes from), so a node that ran once
costs one small int more than before. ``blobs`` lists the blobs the node's
output refers to (`flowdag.Ref`), each ``[sha256, expires_us]`` (None: never),
so that gc marks what is live from meta records alone; with it, ``history`` may
be None (no attempts). ``provenance`` (`flowdag.state.Provenance`) is ``[code,
context, out]`` (see ``_provenance.py``: the code digests and the inputs,
reason, pin and audit as two small documents many nodes share, then the output
digest); with it, ``history`` and ``blobs`` may be None. Header format 6 (this
release) may hold any of the four, and so may format 5 (the release before),
which kept the digests in the provenance as hex text; format 4 wrote the
provenance as one dict; format 3 the first three and an optional ``ttl_us``
(the run's ttl); format 2 the first two; format 1 (which kept no history) only
the first, which loads with an empty history. A checksum, or on an encrypted
store the key, vouches that a blob is the one written; neither vouches for its
shape, since anyone who can write a plain store (or holds the key) can write a
well-formed blob of any value. So every decoded record is checked
(`flowdag.stores._record_reads`) before it becomes a `RunState`: a value out of
shape (a status that is no status, ``attempts = inf``, a time past year 9999,
``deps`` as a list, ``workflow = None``) raises `CorruptStateError`, which the
store words with the run and its file. Decoding never trusts a field's type by
calling it.

What is checked on the way back is also refused on the way in (`check_state`,
`meta_record`), so a store never writes a run it would call damaged.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from dataclasses import replace
from datetime import datetime, timedelta
from typing import Any

from flowdag._values import text_problem
from flowdag.errors import (
    InvalidArgumentError,
    InvalidArgumentTypeError,
    SerializationError,
)
from flowdag.state import (
    NO_BLOBS,
    AttemptInfo,
    ErrorInfo,
    NodeRecord,
    NodeState,
    NodeStatus,
    RunState,
)
from flowdag.stores._fields import EPOCH as _EPOCH
from flowdag.stores._fields import MICROSECOND as _MICROSECOND
from flowdag.stores._fields import to_micros
from flowdag.stores._provenance import provenance_record

__all__ = [
    "MAX_ATTEMPTS",
    "check_names",
    "check_state",
    "encode_meta",
    "header_record",
    "meta_record",
    "provenance_record",
    "to_micros",
]

#: Version of the run header and of the meta records under it: 6 keeps the
#: provenance's digests as bytes, 5 made the provenance a list of shared
#: documents (see ``_provenance.py``), 4 added each node's provenance, 3 the
#: run's ttl and the blobs of refs, 2 the attempt history; 1 to 5 are still read.
HEADER_FORMAT = 6
MAX_ATTEMPTS = 2**63 - 1  # what msgpack holds without an extension type

_STATUSES = {status.value: status for status in NodeStatus}


# -- writing --------------------------------------------------------------------------


def check_names(run_id: str, names: Any, what: str) -> None:
    """Refuse names and keys no store can keep (see `text_problem`), as every store must.

    Raises:
        SerializationError: a name that is not a str, or not text UTF-8 can encode.
    """
    for name in names:
        if type(name) is not str:
            raise SerializationError(
                f"run '{run_id}': {what} {name!r} cannot be stored: it must be a str, "
                f"not {type(name).__name__}"
            )
        problem = text_problem(name)
        if problem is not None:
            raise SerializationError(
                f"run '{run_id}': {what} {name!r} cannot be stored: {problem}; "
                "use text UTF-8 can encode"
            )


def check_state(state: RunState) -> None:
    """Refuse a state whose header no load would accept (node times: `check_times`).

    Raises:
        InvalidArgumentTypeError: ``workflow`` is not a str or ``metadata`` not a dict.
        SerializationError: a node name, dependency or ``data`` key no store can keep.
    """
    run_id = state.run_id
    if type(state.workflow) is not str:
        raise InvalidArgumentTypeError(
            f"run {run_id!r}: workflow must be a str, not {type(state.workflow).__name__}"
        )
    if type(state.metadata) is not dict:
        raise InvalidArgumentTypeError(
            f"run {run_id!r}: metadata must be a dict, not {type(state.metadata).__name__}"
        )
    check_names(run_id, state.nodes, "node name")
    for node in state.nodes.values():
        check_names(run_id, node.deps, "dependency name")
    check_names(run_id, state.data, "ctx.data key")
    ttl = state.ttl
    if ttl is not None and (type(ttl) is not timedelta or ttl <= timedelta(0)):
        raise InvalidArgumentTypeError(
            f"run {run_id!r}: ttl must be a timedelta above zero or None, not {ttl!r}"
        )


def header_record(state: RunState) -> dict[str, Any]:
    """The header of ``state``, as its codec encodes it."""
    header = {
        "format": HEADER_FORMAT,
        "workflow": state.workflow,
        "metadata": state.metadata,
        "deps": {name: list(node.deps) for name, node in state.nodes.items()},
    }
    if state.ttl is not None:
        header["ttl_us"] = state.ttl // _MICROSECOND
    return header


def meta_record(
    node: NodeRecord | NodeState,
    blobs: Mapping[str, datetime | None] | None = NO_BLOBS,
    *,
    short_errors: bool = False,
) -> list[Any]:
    """The meta record of one node, as its codec encodes it (see the module docstring).

    ``blobs`` are those the node's output refers to: sha256 -> expiry (None: never).

    With ``short_errors``, every error keeps its type and the start of its
    message but no traceback: for a record the codec refused as too large.

    Raises:
        InvalidArgumentError: a status that is no `NodeStatus`, attempts or an
            attempt number that are not a whole number in range, or a naive time
            in ``history``.
        InvalidArgumentTypeError: ``history`` is not a tuple of `AttemptInfo`,
            or one holds a time that is not a datetime or an error that is not
            an `ErrorInfo`.
    """
    attempts = node.attempts
    # Exact types: a bool or a float would come back as something else.
    if type(attempts) is not int or not 0 <= attempts <= MAX_ATTEMPTS:
        raise InvalidArgumentError(
            f"node attempts must be a whole number from 0 to {MAX_ATTEMPTS}, not {attempts!r}"
        )
    if node.status not in _STATUSES:
        raise InvalidArgumentError(f"node status must be a NodeStatus, not {node.status!r}")
    started, finished, error = node.started_at, node.finished_at, node.error
    meta = [
        str(node.status),
        attempts,
        None if started is None else (started - _EPOCH) // _MICROSECOND,  # `to_micros`
        None if finished is None else (finished - _EPOCH) // _MICROSECOND,
        None if error is None else _error_record(error, short_errors),
    ]
    history = node.history
    if history:
        last = history[-1]
        if (
            len(history) == 1
            and type(history) is tuple
            and type(last) is AttemptInfo
            and last.started_at is started
            and last.finished_at is finished
            and last.error is error
            and type(last.number) is int
            and 0 < last.number <= MAX_ATTEMPTS
            and started is not None
        ):
            # Fast path of `_history_record`: a node that ran once, its one attempt
            # built from the very objects of the record (as the runner does).
            meta.append([last.number])
        else:
            meta.append(_history_record(history, started, finished, error, short_errors))
    elif type(history) is not tuple:
        raise InvalidArgumentTypeError(
            f"node history must be a tuple of AttemptInfo, not {type(history).__name__}"
        )
    provenance = node.provenance
    if blobs or provenance is not None:
        if not history:
            meta.append(None)
        meta.append(
            [[sha256, to_micros(expires)] for sha256, expires in sorted(blobs.items())]
            if blobs
            else None
        )
    if provenance is not None:
        meta.append(provenance_record(provenance))
    return meta


def encode_meta(
    encode: Callable[[Any], bytes],
    node: NodeRecord | NodeState,
    blobs: Mapping[str, datetime | None] | None = NO_BLOBS,
) -> bytes:
    """``node``'s meta record encoded with ``encode`` (a codec's), errors shortened if need be.

    A failure must be recordable even when its tracebacks are over the codec's
    limits (a small max_blob_size): keep each error's type and the start of its
    message, for the node and every attempt alike; if the attempts are still too
    many, keep the last one only (README: "Every attempt is kept").
    """
    try:
        return encode(meta_record(node, blobs))
    except SerializationError:
        if node.error is None and all(a.error is None for a in node.history):
            raise
    try:
        return encode(meta_record(node, blobs, short_errors=True))
    except SerializationError:
        if len(node.history) <= 1:
            raise
    shorter = replace(node, history=node.history[-1:])
    return encode(meta_record(shorter, blobs, short_errors=True))


def _history_record(
    history: Any,
    started: datetime | None,
    finished: datetime | None,
    error: ErrorInfo | None,
    short_errors: bool,
) -> list[Any]:
    """A node's history as its meta record's sixth field (see the module docstring)."""
    if type(history) is not tuple:
        raise InvalidArgumentTypeError(
            f"node history must be a tuple of AttemptInfo, not {type(history).__name__}"
        )
    last = history[-1]
    # The usual last attempt is the node's own: its number says it all. Fast
    # path: the runner builds it from the very objects of the record.
    own = type(last) is AttemptInfo and (
        (last.started_at is started and last.finished_at is finished and last.error is error)
        or (
            started is not None
            and finished is not None
            and last.started_at == started
            and last.finished_at == finished
            and last.error == error
        )
    )
    if not own:
        return [_attempt_record(attempt, short_errors) for attempt in history]
    number = last.number
    if type(number) is not int or not 0 < number <= MAX_ATTEMPTS or started is None:
        return [_attempt_record(attempt, short_errors) for attempt in history]  # it raises
    if len(history) == 1:
        return [number]
    return [*(_attempt_record(attempt, short_errors) for attempt in history[:-1]), number]


#: Characters of an error message kept by ``short_errors``.
SHORT_MESSAGE = 500
#: The traceback of an error kept by ``short_errors``.
TRACEBACK_DROPPED = "(traceback not stored: the error record was over the codec's limits)"


def _attempt_number(number: Any) -> int:
    if type(number) is not int or not 1 <= number <= MAX_ATTEMPTS:
        raise InvalidArgumentError(
            f"attempt numbers must be whole numbers from 1 to {MAX_ATTEMPTS}, not {number!r}"
        )
    return number


def _error_record(error: ErrorInfo | None, short: bool) -> list[str] | None:
    if error is None:
        return None
    if short:
        return [error.type[:200], error.message[:SHORT_MESSAGE], TRACEBACK_DROPPED]
    return [error.type, error.message, error.traceback]


def _attempt_record(attempt: Any, short_errors: bool) -> list[Any]:
    """One attempt of ``history`` as a list, its types checked (exact, as loads check)."""
    if type(attempt) is not AttemptInfo:
        raise InvalidArgumentTypeError(
            f"node history holds {type(attempt).__name__}, not AttemptInfo"
        )
    number = _attempt_number(attempt.number)
    error = attempt.error
    if error is not None and type(error) is not ErrorInfo:
        raise InvalidArgumentTypeError(
            f"attempt {number}: error must be an ErrorInfo or None, not {type(error).__name__}"
        )
    times = []
    for label, moment in (("started_at", attempt.started_at), ("finished_at", attempt.finished_at)):
        if not isinstance(moment, datetime):
            raise InvalidArgumentTypeError(
                f"attempt {number}: {label} must be a datetime, not {type(moment).__name__}"
            )
        if moment.utcoffset() is None:
            raise InvalidArgumentError(
                f"attempt {number}: {label} is naive ({moment.isoformat()}); use UTC, "
                "e.g. datetime.now(UTC)"
            )
        times.append(to_micros(moment))
    return [number, times[0], times[1], _error_record(error, short_errors)]
