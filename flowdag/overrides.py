"""Operator overrides of a stored run: mark a node done by hand, or send nodes back to pending.

An override works from the stored run alone: `Store.load_statuses` gives every
node's status, attempts, provenance and, from the run's header, its deps; no
output is decoded and the workflow is never imported. It plans its changes
with pure functions (`flowdag._override_plans`: node -> new status)
and makes them durable in one `Store.commit` of node records, under the run's
lock, so a ``kill -9`` at any moment leaves the run as it was or as the
override leaves it, never a mix, and a live process running the run refuses it
(`RunLockedError`).

An output above the inline limit goes to the blob area first (temp file,
fsync, rename: `flowdag._byref.by_reference`, as an attempt does) and the
record holding its `Ref` is committed after: a crash in between leaves an
orphan blob, which gc sweeps, never a record pointing at nothing.

Skipped nodes come back: a skipped node below the changed ones becomes pending
when no failed or skipped node is left above it (it was skipped because of
them). Every node an override rewrites gets one `Override` entry in its
provenance's audit (who, when, what, why): ``flowdag status --json`` collects
them into the run's audit list.
"""

from __future__ import annotations

import getpass
import socket
from collections.abc import Iterator, Mapping, Sequence
from contextlib import ExitStack, contextmanager
from dataclasses import dataclass, field, replace
from datetime import UTC, datetime
from typing import Any

from flowdag._byref import by_reference
from flowdag._commit import commit_batch
from flowdag._digests import output_digest
from flowdag._override_plans import downstream_whys, plan_invalidate, plan_mark_done
from flowdag._units import Size, parse_size
from flowdag.dag import NodeSpec
from flowdag.errors import (
    BlobMissingError,
    InvalidArgumentError,
    InvalidArgumentTypeError,
    RunLockedError,
    SerializationError,
)
from flowdag.refs import collecting
from flowdag.state import (
    NodeRecord,
    NodeState,
    NodeStatus,
    Override,
    Provenance,
    Reason,
    RunState,
)
from flowdag.stores import Store
from flowdag.stores import opened as opened_store
from flowdag.waits import ending_waits

__all__ = [
    "Change",
    "OverrideResult",
    "audit_of",
    "invalidate",
    "mark_done",
    "operator",
    "plan_invalidate",
    "plan_mark_done",
]


@dataclass(frozen=True, slots=True)
class Change:
    """One node an override rewrote (or, with ``dry_run``, would): its status before and after."""

    node: str
    before: NodeStatus
    after: NodeStatus
    #: Why this node changes: ``marked done``, ``invalidated``, ``downstream of 'load'``...
    why: str


@dataclass(frozen=True, slots=True)
class OverrideResult:
    """What `mark_done` or `invalidate` changed in a run (or, with ``dry_run``, would)."""

    run_id: str
    action: str  # "mark_done" or "invalidate"
    #: The nodes rewritten, in the graph's order (deps first).
    changes: tuple[Change, ...]
    by: str  # user@host, as the audit names it
    at: datetime  # when (UTC), as the audit records it
    dry_run: bool = False
    #: The sha256 of the blob an output kept by reference went to (mark_done), else None.
    blob: str | None = field(default=None)

    def __str__(self) -> str:
        lines = [f"{c.node}: {c.before} -> {c.after} ({c.why})" for c in self.changes]
        return "\n".join(lines)


def mark_done(
    store: Store | str,
    run_id: str,
    node: str,
    *,
    output: Any,
    reason: str = "",
    inline_limit: Size | None = "256KiB",
    dry_run: bool = False,
) -> OverrideResult:
    """Record ``node`` of a stored run as completed with ``output``, as if it had run.

    The node is pinned (a change of its code does not run it again; explain
    says ``manual`` with ``reason``), keeps its attempts, and gets an audit
    entry. Its downstream nodes that were skipped because of it become pending,
    so the next `flowdag.run` of the run runs them. One atomic commit, under
    the run's lock; the workflow is not needed.

    Args:
        store: a `Store`, or a store URL (opened, and closed again, here).
        run_id: the stored run.
        node: the node to mark done.
        output: its output, which the store's codec must encode; encoded above
            ``inline_limit`` (as ``run(inline_limit=...)``), it is kept by reference.
        reason: why, in the operator's words (kept in the audit and explain).
        dry_run: plan only: nothing is written.

    Raises:
        RunNotFoundError: no such run (or it expired).
        InvalidArgumentError: ``node`` is not a node of the run.
        InvalidArgumentTypeError: an argument of the wrong type.
        SerializationError: ``output`` cannot be stored.
        BlobMissingError: ``output`` holds a Ref to a blob the store does not have.
        RunLockedError: a live process runs the run; nothing changed.
        StoreError: a store URL where there is no store.
    """
    _check_text(node, "node")
    _check_text(reason, "reason")
    limit = None if inline_limit is None else parse_size(inline_limit, "inline_limit")
    with opened_store(store) as opened:
        state = opened.load_statuses(run_id)
        _check_nodes(state, [node])
        encoded, blobs = _encode(opened, run_id, node, output)
        with _locked(opened, run_id, "mark_done"):
            state = opened.load_statuses(run_id)  # as it is now that no one else writes it
            _check_nodes(state, [node])
            by, at = operator(), datetime.now(UTC)
            after = plan_mark_done(_statuses(state), _deps(state), node)
            why = downstream_whys(_deps(state), after, [node], "marked done")
            blob = None
            value: Any = output
            large = limit is not None and opened.codec.plain_size(encoded) > limit
            if large and not dry_run:
                # The blob is durable before the record that points at it is committed.
                spec = NodeSpec(node, _no_function)
                origin = f"run '{run_id}', node '{node}'"
                value = by_reference(spec, output, encoded, opened.ref_source, origin)
                encoded = opened.codec.encode(value)
                blobs[value.sha256] = value.expires_at
                blob = value.sha256
            records = [
                _marked(
                    node,
                    state.nodes[node],
                    encoded,
                    output_digest(opened.codec, encoded, value),
                    blobs,
                    Override("mark_done", by, at, reason),
                )
                if name == node
                else _pending(
                    name,
                    state.nodes[name],
                    Override("mark_done", by, at, _said(why[name], reason)),
                    None,
                )
                for name in after
            ]
            if not dry_run:
                _commit_ending_waits(opened, run_id, records)
            return replace(_result(state, "mark_done", after, why, by, at, dry_run), blob=blob)


def invalidate(
    store: Store | str,
    run_id: str,
    nodes: str | Sequence[str],
    *,
    downstream: bool = True,
    reason: str = "",
    dry_run: bool = False,
) -> OverrideResult:
    """Send nodes of a stored run back to pending, so that the next run runs them.

    Each node keeps the digests of its provenance (code fingerprint, output,
    inputs), so the next run can tell whether its new output changed anything
    (early cutoff); its stored output is dropped (gc may then reclaim its
    blob), and it gets the reason ``forced`` and an audit entry. With
    ``downstream`` every node below them becomes pending too; without, those
    stay as they are (a completed one then runs again only if an input it read
    changed), but skipped ones with no failed or skipped node left above
    them become pending. One atomic commit, under the run's lock.

    Args:
        store: a `Store`, or a store URL (opened, and closed again, here).
        run_id: the stored run.
        nodes: a node name, or a list of them.
        downstream: the nodes below them too.
        reason: why, in the operator's words (kept in the audit and explain).
        dry_run: plan only: nothing is written.

    Raises:
        RunNotFoundError: no such run (or it expired).
        InvalidArgumentError: a name that is not a node of the run, or no name.
        InvalidArgumentTypeError: an argument of the wrong type.
        RunLockedError: a live process runs the run; nothing changed.
        StoreError: a store URL where there is no store.
    """
    names = _node_list(nodes)
    if type(downstream) is not bool:
        raise InvalidArgumentTypeError(f"downstream must be True or False, not {downstream!r}")
    _check_text(reason, "reason")
    with opened_store(store) as opened:
        _check_nodes(opened.load_statuses(run_id), names)
        with _locked(opened, run_id, "invalidate"):
            state = opened.load_statuses(run_id)
            _check_nodes(state, names)
            by, at = operator(), datetime.now(UTC)
            after = plan_invalidate(_statuses(state), _deps(state), names, downstream=downstream)
            why = downstream_whys(_deps(state), after, names, "invalidated")
            records = []
            for name in after:
                detail = f"invalidated by {by}" + ("" if name in names else f", {why[name]}")
                forced = Reason("forced", _said(detail, reason))
                said = reason if name in names else _said(why[name], reason)
                entry = Override("invalidate", by, at, said)
                records.append(_pending(name, state.nodes[name], entry, forced))
            if not dry_run:
                _commit_ending_waits(opened, run_id, records)
            return _result(state, "invalidate", after, why, by, at, dry_run)


def _commit_ending_waits(store: Store, run_id: str, records: list[NodeRecord]) -> None:
    """Commit ``records``; a node among them that waits for input waits no more (same commit)."""
    ending = ending_waits(store, run_id, (record.node for record in records))
    if ending:
        records = [
            replace(record, tables=ending[record.node]) if record.node in ending else record
            for record in records
        ]
    commit_batch(store, run_id, records)


# -- audit -------------------------------------------------------------------------------


def operator() -> str:
    """Who makes an override: ``user@host``; ``unknown`` stands in for what cannot be found."""
    try:
        user = getpass.getuser()
    except Exception:  # no login name, no USER variable (a container): OSError, KeyError
        user = "unknown"
    try:
        host = socket.gethostname()
    except OSError:
        host = "unknown"
    return f"{user or 'unknown'}@{host or 'unknown'}"


def audit_of(state: RunState) -> list[tuple[str, Override]]:
    """Every override made to the run: (node, entry), oldest first."""
    entries = [
        (name, entry)
        for name, node in state.nodes.items()
        if node.provenance is not None
        for entry in node.provenance.audit
    ]
    return sorted(entries, key=lambda item: (item[1].at, item[0]))


# -- helpers -----------------------------------------------------------------------------


@contextmanager
def _locked(store: Store, run_id: str, action: str) -> Iterator[None]:
    """The run's lock, with a message for an operator when a live process holds it."""
    with ExitStack() as held:
        try:
            held.enter_context(store.lock(run_id))
        except RunLockedError:
            holder = store.lock_holder(run_id)
            who = f"pid {holder}" if holder else "a live process"
            raise RunLockedError(
                f"run '{run_id}' is running ({who} holds its lock): {action} changes a run "
                "only while no process runs it; wait for that run to end, or stop it, "
                "then try again"
            ) from None
        yield


def _encode(store: Store, run_id: str, node: str, output: Any) -> tuple[bytes, dict[str, Any]]:
    """``output`` encoded by the store's codec, and the blobs of the refs inside it."""
    try:
        with collecting() as blobs:
            encoded = store.codec.encode(output)
    except SerializationError as exc:
        raise SerializationError(
            f"run '{run_id}', node '{node}': output is not storable: {exc}; mark it done "
            "with a value the store's codec can encode"
        ) from None
    for sha256 in blobs:  # a Ref given as the output, or inside it: its blob must be here
        if not store.blobs.exists(sha256):
            raise BlobMissingError(
                f"run '{run_id}', node '{node}': the output holds a ref to blob {sha256}, "
                "which this store does not have; load the value and mark it done with it"
            )
    return encoded, dict(blobs)


def _marked(
    name: str,
    old: NodeState,
    encoded: bytes,
    digest: str,
    blobs: Mapping[str, datetime | None],
    entry: Override,
) -> NodeRecord:
    """The record of ``old`` marked done: completed now with ``encoded``, pinned, attempts kept."""
    provenance = Provenance(
        output=digest,
        reason=Reason("manual", _said(f"marked done by {entry.by}", entry.reason)),
        manual=True,
        audit=(*_audit(old), entry),
    )
    return NodeRecord(
        name,
        NodeStatus.COMPLETED,
        old.attempts,
        entry.at,
        entry.at,
        output=encoded,
        history=old.history,
        blobs=blobs or None,
        provenance=provenance,
    )


def _pending(name: str, old: NodeState, entry: Override, reason: Reason | None) -> NodeRecord:
    """The record of ``old`` back to pending: attempts, history and digests kept, output dropped."""
    provenance = old.provenance or Provenance()
    provenance = replace(
        provenance,
        reason=reason if reason is not None else provenance.reason,
        manual=False,
        audit=(*provenance.audit, entry),
    )
    return NodeRecord(
        name, NodeStatus.PENDING, old.attempts, history=old.history, provenance=provenance
    )


def _audit(node: NodeState) -> tuple[Override, ...]:
    return () if node.provenance is None else node.provenance.audit


def _result(
    state: RunState,
    action: str,
    after: Mapping[str, NodeStatus],
    why: Mapping[str, str],
    by: str,
    at: datetime,
    dry_run: bool,
) -> OverrideResult:
    changes = tuple(
        Change(name, state.nodes[name].status, status, why[name]) for name, status in after.items()
    )
    return OverrideResult(state.run_id, action, changes, by, at, dry_run)


def _statuses(state: RunState) -> dict[str, NodeStatus]:
    return {name: node.status for name, node in state.nodes.items()}


def _deps(state: RunState) -> dict[str, tuple[str, ...]]:
    return {name: node.deps for name, node in state.nodes.items()}


def _said(text: str, reason: str) -> str:
    return f"{text}: {reason}" if reason else text


def _check_text(value: object, what: str) -> None:
    if type(value) is not str:
        raise InvalidArgumentTypeError(f"{what} must be a str, not {type(value).__name__}")


def _node_list(nodes: object) -> list[str]:
    if type(nodes) is str:
        return [nodes]
    if not isinstance(nodes, list | tuple) or not all(type(n) is str for n in nodes):
        raise InvalidArgumentTypeError(
            f"nodes must be a node name or a list of node names, not {nodes!r:.80}"
        )
    if not nodes:
        raise InvalidArgumentError("nodes is empty; name at least one node to invalidate")
    return list(dict.fromkeys(nodes))


def _check_nodes(state: RunState, names: Sequence[str]) -> None:
    unknown = [name for name in names if name not in state.nodes]
    if unknown:
        known = sorted(state.nodes)
        shown = ", ".join(repr(n) for n in known[:5]) + (", ..." if len(known) > 5 else "")
        raise InvalidArgumentError(
            f"run '{state.run_id}' has no node {unknown[0]!r} (its nodes: {shown or 'none'}); "
            "check the name with flowdag status"
        )


def _no_function() -> None:
    """Stands in for the node's function, which an override never needs (nor imports)."""
