"""Plain data at the centre: statuses, the state of a run, and one commit record.

`RunState` is what a store saves and loads; `NodeRecord` is what the runner
commits when a node finishes. Each node keeps every attempt it made, over
retries and resumes (`AttemptInfo`, in ``NodeState.history``). Both are plain
dataclasses, and a state moved between any two stores compares equal: ``==``
on `RunState` and `NodeState` compares outputs, ``data`` and ``metadata`` as
stored values (see `flowdag._equality`), so numpy arrays and NaNs inside them
compare as they should.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from datetime import datetime, timedelta
from enum import StrEnum
from types import MappingProxyType
from typing import Any

from flowdag._equality import equal
from flowdag.errors import InvalidArgumentError, InvalidArgumentTypeError

__all__ = [
    "REASON_CODES",
    "AttemptInfo",
    "ErrorInfo",
    "NodeRecord",
    "NodeState",
    "NodeStatus",
    "Override",
    "Provenance",
    "Reason",
    "RunState",
    "RunStatus",
]


class NodeStatus(StrEnum):
    """Where one node stands in a run."""

    PENDING = "pending"
    RUNNING = "running"
    COMPLETED = "completed"
    FAILED = "failed"
    SKIPPED = "skipped"  # not run because an upstream node failed
    WAITING = "waiting"  # an input node waiting for a value (`flowdag.provide_input`)


class RunStatus(StrEnum):
    """Where a whole run stands."""

    PENDING = "pending"  # nothing has finished yet
    RUNNING = "running"  # some nodes finished, others have not (or a crash stopped it)
    COMPLETED = "completed"
    FAILED = "failed"
    SUSPENDED = "suspended"  # input nodes wait for values; nothing else could progress


@dataclass(frozen=True, slots=True)
class ErrorInfo:
    """Why a node failed: the exception's type name, message and traceback text."""

    type: str
    message: str
    traceback: str = ""

    def __str__(self) -> str:
        return f"{self.type}: {self.message}"


@dataclass(frozen=True, slots=True)
class AttemptInfo:
    """One attempt of a node: its number, when it ran, and its error if it failed.

    ``number`` counts the attempts over the run's whole life, as
    ``NodeState.attempts`` and ``ctx.attempt`` do (1 is the first attempt of the
    first call of `flowdag.run`). ``started_at`` and ``finished_at`` are
    timezone-aware datetimes (the runner writes UTC).
    """

    number: int
    started_at: datetime
    finished_at: datetime
    error: ErrorInfo | None = None

    @property
    def duration(self) -> float:
        """Seconds from the attempt's start to its end."""
        return (self.finished_at - self.started_at).total_seconds()


#: Why a node ran or was reused (`Reason.code`); see `flowdag.RunResult.explain`.
REASON_CODES = frozenset(
    {
        "new",  # no completed output to reuse: never ran, or failed or was skipped before
        "code_changed",  # its fingerprint differs: names the function or helper, and its file
        "input_changed",  # a dep's output differs from the one it read: names the dep
        "cached",  # completed from the cross-run cache: names the run
        "forced",  # asked for: rerun=, rerun_from=, invalidate()
        "interrupted",  # an attempt was in flight when the run stopped (a crash)
        "manual",  # completed by mark_done(): says its reason
        "timed_out_default",  # an input wait ran out and its default was taken
        "reused",  # its stored output still holds
    }
)


@dataclass(frozen=True, slots=True)
class Reason:
    """Why a node ran or was reused: a code of `REASON_CODES` and a human sentence."""

    code: str
    detail: str

    def __str__(self) -> str:
        return f"{self.code}: {self.detail}"


@dataclass(frozen=True, slots=True)
class Override:
    """One operator change of a node (``mark_done``, ``invalidate``): the run's audit trail.

    ``by`` is who made it (user@host), ``at`` when (UTC), ``reason`` what they said.
    """

    action: str
    by: str
    at: datetime
    reason: str = ""


@dataclass(frozen=True, slots=True)
class Provenance:
    """What a node's stored output was computed from, and why the node ran.

    ``fingerprint`` digests the node's code (`flowdag._fingerprint`), ``source``
    its normalised source alone and ``parts`` each named part, so a change can be
    named; ``output`` digests the stored output (a `flowdag.Ref`'s sha256 when
    kept by reference); ``inputs`` maps each dep to the ``output`` digest it
    read. ``manual`` pins a node completed by ``mark_done``: a code change does
    not run it again. ``audit`` lists the operator changes made to the node.
    Nodes stored by releases before run header format 4 have none (None).
    """

    fingerprint: str | None = None
    source: str | None = None
    parts: Mapping[str, str] = field(default_factory=dict)
    output: str | None = None
    inputs: Mapping[str, str] = field(default_factory=dict)
    reason: Reason | None = None
    manual: bool = False
    audit: tuple[Override, ...] = ()

    def __reduce__(self) -> tuple[type[Provenance], tuple[Any, ...]]:
        # Its mappings may be read-only views (a load shares them) or a view of a
        # fingerprint's parts, neither picklable: pickled as the dicts they show.
        return Provenance, (
            self.fingerprint,
            self.source,
            dict(self.parts),
            self.output,
            dict(self.inputs),
            self.reason,
            self.manual,
            self.audit,
        )


def new_provenance(
    fingerprint: str | None,
    source: str | None,
    parts: Mapping[str, str],
    output: str | None,
    inputs: Mapping[str, str],
    reason: Reason | None,
    manual: bool,
    audit: tuple[Override, ...],
) -> Provenance:
    """``Provenance(...)``, built fast: through the slots' descriptors, as `new_attempt`.

    Once per node on the runner's hot path and on every load.
    """
    made = _NEW_PROVENANCE(Provenance)
    _SET_FINGERPRINT(made, fingerprint)
    _SET_SOURCE(made, source)
    _SET_PARTS(made, parts)
    _SET_OUTPUT(made, output)
    _SET_INPUTS(made, inputs)
    _SET_REASON(made, reason)
    _SET_MANUAL(made, manual)
    _SET_AUDIT(made, audit)
    return made


_NEW_PROVENANCE = Provenance.__new__
(
    _SET_FINGERPRINT,
    _SET_SOURCE,
    _SET_PARTS,
    _SET_OUTPUT,
    _SET_INPUTS,
    _SET_REASON,
    _SET_MANUAL,
    _SET_AUDIT,
) = (vars(Provenance)[name].__set__ for name in Provenance.__slots__)


def new_attempt(number: int, started_at: datetime, finished_at: datetime) -> AttemptInfo:
    """``AttemptInfo(number, started_at, finished_at)``, built fast (the runner's hot path).

    Through the slots' descriptors: a frozen dataclass's ``__init__`` (one
    ``object.__setattr__`` per field) takes about twice as long.
    """
    attempt = _NEW_ATTEMPT(AttemptInfo)
    _SET_NUMBER(attempt, number)
    _SET_STARTED(attempt, started_at)
    _SET_FINISHED(attempt, finished_at)
    _SET_ERROR(attempt, None)
    return attempt


_NEW_ATTEMPT = AttemptInfo.__new__
_SET_NUMBER, _SET_STARTED, _SET_FINISHED, _SET_ERROR = (
    vars(AttemptInfo)[name].__set__ for name in AttemptInfo.__slots__
)


@dataclass(slots=True)
class NodeState:
    """One node of a run as stored: status, attempts, times, output or error.

    ``started_at``, ``finished_at`` and ``error`` are those of the node's last
    attempt; ``history`` holds every attempt the store knows of, in order:
    those that failed and were retried, and those of earlier calls of
    `flowdag.run` when the run was resumed. It is empty for a node that never
    ran, and for nodes stored by a release before it was kept.

    ``started_at`` and ``finished_at`` are timezone-aware datetimes (the runner
    writes UTC). Stores keep them as UTC instants, exact to the microsecond,
    and load them back in UTC. A naive datetime is not normalised, since it
    does not say which zone it is in: `flowdag.stores.Store.save` refuses it
    with `InvalidArgumentError` naming the node and the field.

    ``==`` compares ``output`` as a stored value: numpy arrays by dtype, shape
    and items, NaN equal to NaN (see `RunState`).
    """

    status: NodeStatus = NodeStatus.PENDING
    attempts: int = 0
    started_at: datetime | None = None
    finished_at: datetime | None = None
    output: Any = None
    error: ErrorInfo | None = None
    deps: tuple[str, ...] = ()
    history: tuple[AttemptInfo, ...] = ()
    #: What the output was computed from and why the node ran; None before format 4.
    provenance: Provenance | None = None

    @property
    def output_digest(self) -> str | None:
        """The digest of the output it holds or last held (`Provenance.output`), or None."""
        provenance = self.provenance
        return None if provenance is None else provenance.output

    @property
    def duration(self) -> float | None:
        """Seconds the node ran: the sum of its attempts' durations.

        Retries count, the waits between them do not. A node with no
        ``history`` (stored by an older release) counts its last attempt, from
        ``started_at`` to ``finished_at``; None when either is unknown.
        """
        if self.history:
            return sum(attempt.duration for attempt in self.history)
        if self.started_at is None or self.finished_at is None:
            return None
        return (self.finished_at - self.started_at).total_seconds()

    def __eq__(self, other: object) -> bool:
        if not isinstance(other, NodeState):
            return NotImplemented
        return (
            self.status == other.status
            and self.attempts == other.attempts
            and self.started_at == other.started_at
            and self.finished_at == other.finished_at
            and self.error == other.error
            and self.deps == other.deps
            and self.history == other.history
            and self.provenance == other.provenance
            and equal(self.output, other.output)
        )


@dataclass(slots=True)
class RunState:
    """Everything a store keeps about one run.

    ``==`` holds for a state and the same state saved by one store and loaded
    by another. Outputs, ``data`` and ``metadata`` compare as stored values:
    as with ``==`` for plain values (``1 == 1.0``), but a NaN (float, Decimal
    or numpy) equals another NaN, numpy arrays and scalars equal only numpy
    values of the same dtype and shape whose items are equal (NaN and NaT equal
    themselves), and this holds inside lists, tuples, dicts and sets too.
    """

    run_id: str
    workflow: str
    nodes: dict[str, NodeState] = field(default_factory=dict)
    data: dict[str, Any] = field(default_factory=dict)
    metadata: dict[str, Any] = field(default_factory=dict)
    #: How long after it finishes the run expires (``run(ttl=...)``); None: never.
    ttl: timedelta | None = None

    @property
    def finished_at(self) -> datetime | None:
        """When the run last finished a node: the latest ``finished_at``, or None."""
        times = [node.finished_at for node in self.nodes.values() if node.finished_at is not None]
        return max(times) if times else None

    @property
    def expires_at(self) -> datetime | None:
        """When the run expires: ``ttl`` after `finished_at`; None when it never does."""
        finished = self.finished_at
        if self.ttl is None or finished is None:
            return None
        return finished + self.ttl

    @property
    def status(self) -> RunStatus:
        """The run's status, derived from its nodes' statuses."""
        statuses = {node.status for node in self.nodes.values()}
        if statuses <= {NodeStatus.COMPLETED}:
            return RunStatus.COMPLETED
        if statuses <= {NodeStatus.PENDING}:
            return RunStatus.PENDING
        if NodeStatus.PENDING in statuses or NodeStatus.RUNNING in statuses:
            return RunStatus.RUNNING
        return RunStatus.FAILED

    def __eq__(self, other: object) -> bool:
        if not isinstance(other, RunState):
            return NotImplemented
        return (
            self.run_id == other.run_id
            and self.workflow == other.workflow
            and self.ttl == other.ttl
            and self.nodes == other.nodes
            and equal(self.data, other.data)
            and equal(self.metadata, other.metadata)
        )


def check_times(state: RunState) -> None:
    """Refuse a state whose node times a store cannot keep exactly.

    Called by `flowdag.stores.Store.save` before anything is encoded.

    Raises:
        InvalidArgumentTypeError: a time that is not a datetime (or None).
        InvalidArgumentError: a naive datetime (no UTC offset).
    """
    for name, node in state.nodes.items():
        moments = [("started_at", node.started_at), ("finished_at", node.finished_at)]
        if node.history and type(node.history) is tuple:  # else refused by the store, by type
            for i, attempt in enumerate(node.history):
                if isinstance(attempt, AttemptInfo):
                    moments.append((f"history[{i}].started_at", attempt.started_at))
                    moments.append((f"history[{i}].finished_at", attempt.finished_at))
        for label, moment in moments:
            if moment is None:
                continue
            where = f"run {state.run_id!r}: node {name!r} has"
            if not isinstance(moment, datetime):
                raise InvalidArgumentTypeError(
                    f"{where} {label}={moment!r}; node times must be timezone-aware "
                    "datetimes or None"
                )
            if moment.utcoffset() is None:
                raise InvalidArgumentError(
                    f"{where} a naive {label} ({moment.isoformat()}); node times must be "
                    "timezone-aware: use UTC, e.g. datetime.now(UTC)"
                )


#: The blobs of an output that refers to none (shared: it never changes).
NO_BLOBS: Mapping[str, datetime | None] = MappingProxyType({})


@dataclass(frozen=True, slots=True)
class NodeRecord:
    """One finished node as the runner commits it: durable all together or not at all.

    ``output`` and the values in ``data`` are already encoded by the store's codec
    (encoding happens once, off the driver thread); ``output`` is None when the node
    has none (failed or skipped). ``data`` holds the node's changes to ``ctx.data``:
    key -> encoded value, or None where the node deleted the key. ``history``
    is every attempt of the node, earlier calls of `flowdag.run` included, the
    last one included: a commit replaces the node's whole stored state.
    ``blobs`` names the blobs ``output`` refers to (sha256 -> when that ref
    expires, or None for never; None when it refers to none): the store lists
    them in the node's meta record, so gc finds what is live without decoding
    outputs. ``provenance`` is what the output was computed from and why the
    node ran (None: nothing known, as for a skipped node). ``kv`` is what the
    node wrote to ``ctx.kv``, committed in the same transaction (None: nothing).
    """

    node: str
    status: NodeStatus
    attempts: int = 0
    started_at: datetime | None = None
    finished_at: datetime | None = None
    error: ErrorInfo | None = None
    output: bytes | None = None
    data: Mapping[str, bytes | None] = field(default_factory=dict)
    history: tuple[AttemptInfo, ...] = ()
    blobs: Mapping[str, datetime | None] | None = None
    provenance: Provenance | None = None
    #: Writes to the store's tables that commit with the record, (table, key) ->
    #: entry bytes (None deletes): a cached node's new cache entry.
    tables: Mapping[tuple[str, str], bytes | None] | None = None
    kv: Sequence[Any] | None = None


def new_record(
    node: str,
    status: NodeStatus,
    attempts: int,
    started_at: datetime | None,
    finished_at: datetime | None,
    output: bytes | None,
    data: Mapping[str, bytes | None],
    history: tuple[AttemptInfo, ...],
    blobs: Mapping[str, datetime | None] | None,
    provenance: Provenance | None,
    tables: Mapping[tuple[str, str], bytes | None] | None,
    kv: Sequence[Any] | None,
) -> NodeRecord:
    """``NodeRecord(...)`` of a node that did not fail (no error), built fast, as
    `new_attempt`: once per completed node on the runner's hot path, where the
    frozen dataclass's ``__init__`` (an ``object.__setattr__`` per field) took
    three times as long."""
    record = _NEW_RECORD(NodeRecord)
    _SET_NODE(record, node)
    _SET_STATUS(record, status)
    _SET_ATTEMPTS(record, attempts)
    _SET_RECORD_STARTED(record, started_at)
    _SET_RECORD_FINISHED(record, finished_at)
    _SET_RECORD_ERROR(record, None)
    _SET_RECORD_OUTPUT(record, output)
    _SET_RECORD_DATA(record, data)
    _SET_RECORD_HISTORY(record, history)
    _SET_RECORD_BLOBS(record, blobs)
    _SET_RECORD_PROVENANCE(record, provenance)
    _SET_RECORD_TABLES(record, tables)
    _SET_RECORD_KV(record, kv)
    return record


_NEW_RECORD = NodeRecord.__new__
(
    _SET_NODE,
    _SET_STATUS,
    _SET_ATTEMPTS,
    _SET_RECORD_STARTED,
    _SET_RECORD_FINISHED,
    _SET_RECORD_ERROR,
    _SET_RECORD_OUTPUT,
    _SET_RECORD_DATA,
    _SET_RECORD_HISTORY,
    _SET_RECORD_BLOBS,
    _SET_RECORD_PROVENANCE,
    _SET_RECORD_TABLES,
    _SET_RECORD_KV,
) = (vars(NodeRecord)[name].__set__ for name in NodeRecord.__slots__)
