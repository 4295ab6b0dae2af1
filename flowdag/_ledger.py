"""The ledger: what one call of `run()` knows of its run's nodes.

Node states, the outputs downstream nodes take, ``ctx.data``, and the count
and history of each node's attempts. Only the driver's thread touches it.

Every attempt that returns (or overruns its timeout, or is lost with its worker)
is kept in the node's history: the driver gathers this call's failed attempts
per node and commits them, after the attempts of earlier calls, with the node's
finish record, and with any start record (which replaces the node's stored
state too); a durable store also gets a failed attempt that will be retried at
once, as the running node's record, so a crash while the retry waits keeps it.
An attempt a crash interrupts has no end, so it is not in the history; its
start record counts it, so its number is not given again on resume.

Attempts are counted over the run's whole life (``ctx.attempt`` and
``NodeState.attempts`` agree across resumes, an interrupted attempt included),
while the retry budget counts the attempts of this call only (``tries``).

Each completed node's state holds its output's digest (``NodeState.output_digest``:
stored ones from their provenance, new ones as made by their attempt): a node's
record names the digest of every input it read, and early cutoff compares them.

A ledger that *forgets* (on a store on disk, `Store._reads_back`) keeps no state
of a node completed in this call that no other node reads, once its record is
stored: `FORGOTTEN` stands in for it (completed, nothing else known), and the
result reads it back from the store (`flowdag.runner`). A run of a million
leaves would otherwise hold a million states, each about a kilobyte, until it
ends. `recall` puts the stored states back in place of `FORGOTTEN`.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import replace
from datetime import datetime
from typing import Any

from flowdag._decide import resolve
from flowdag.attempt import Attempt
from flowdag.dag import DAG
from flowdag.resume import Plan
from flowdag.state import (
    AttemptInfo,
    ErrorInfo,
    NodeRecord,
    NodeState,
    NodeStatus,
    Override,
    Provenance,
    Reason,
    RunState,
    new_provenance,
)

__all__ = ["FORGOTTEN", "Ledger"]

_SETTLED = frozenset({NodeStatus.COMPLETED, NodeStatus.FAILED, NodeStatus.SKIPPED})
_COMPLETED, _FAILED, _PENDING = NodeStatus.COMPLETED, NodeStatus.FAILED, NodeStatus.PENDING
_NO_INPUTS: dict[str, str] = {}  # shared by the records of nodes with no deps; never changed

#: The state of a node a forgetting ledger let go of: completed, its record stored.
#: `flowdag._decide.decide` finds it unchanged (no provenance to compare, no deps).
FORGOTTEN = NodeState(NodeStatus.COMPLETED)


class Ledger:
    """What the run knows: each node's state, the outputs, ``ctx.data``, attempt counts."""

    __slots__ = (
        "_dependents",
        "_last_inputs",
        "_specs",
        "data",
        "done",
        "failed",
        "fingerprints",
        "forgets",
        "forgotten",
        "items",
        "lost",
        "outputs",
        "reasons",
        "states",
        "tries",
    )

    def __init__(self, plan: Plan, dag: DAG, *, forgets: bool = False) -> None:
        # The plan's own: made for this call (a new run's, or the run as just loaded),
        # so taken, not copied: a state replaced here is freed, not kept by the plan.
        self.states = states = plan.state.nodes
        self._specs, self._dependents = dag.specs, dag.dependents
        # The outputs nodes read, apart from the states for the hot path: those of the
        # nodes with dependents (and of map items). A sink's is in its state alone.
        self.outputs = {name: states[name].output for name in plan.completed if self.read(name)}
        self.data = dict(plan.state.data)
        self.done = len(plan.completed)  # finished nodes, those of earlier calls included
        self.forgets = forgets  # see the module docstring
        self.forgotten = 0  # nodes whose state is `FORGOTTEN`
        self.fingerprints = plan.fingerprints
        # Why each node runs or was reused in this call: cut-offs and skips update it.
        self.reasons: dict[str, Reason] = {name: v.reason for name, v in plan.verdicts.items()}
        # Attempts made in this call of run(): each call gives a node its retries
        # afresh. Lifetime numbers add the attempts the store already counts.
        self.tries: dict[str, int] = {}
        self.lost: dict[str, int] = {}  # attempts the executor lost (a worker died)
        # This call's failed attempts of nodes still retrying: most nodes never have one.
        self.failed: dict[str, tuple[AttemptInfo, ...]] = {}
        # Map items (`flowdag._map_run`) -> the digest of their item, their input from
        # the map's ``over`` (not ``over``'s whole output).
        self.items: dict[str, tuple[str, str]] = {}
        # The inputs the last node read, and a read-only copy the next may share.
        self._last_inputs: tuple[dict[str, str], Mapping[str, str] | None] = ({}, None)

    def read(self, name: str) -> bool:
        """Whether another node may read ``name``'s output: it has dependents, or it
        is a map's item (not the DAG's: its map reads it)."""
        return name not in self._specs or bool(self._dependents(name))

    def next_attempt(self, name: str) -> int:
        """Count a new attempt of ``name``; return its number over the run's life."""
        tries = self.tries[name] = self.tries.get(name, 0) + 1
        # states[name] is the stored state until the node ends: its attempts are
        # those of earlier calls of run().
        return self.states[name].attempts + tries

    def provenance(self, name: str, deps: tuple[str, ...], output: str | None) -> Provenance:
        """What ``name``'s output was computed from, for its record: its code, the
        digests of the inputs it read (from the deps that have one), why it ran.

        ``output`` is the new output's digest; None (a failure) keeps the stored
        one, as `flowdag.invalidate` does: a later output equal to it still cuts
        off below. The stored audit trail is kept: a commit replaces the node's
        whole state.
        """
        fingerprint = self.fingerprints[name]
        states = self.states  # its deps are done: their states hold the outputs it read
        inputs: Mapping[str, str]
        if deps:
            read_now: dict[str, str] = {}
            for dep in deps:
                read = states[dep].provenance  # as `NodeState.output_digest`, inlined
                if read is not None and (digest := read.output) is not None:
                    read_now[dep] = digest
            # The nodes of a fan-out read the same inputs: those of the node before
            # are shared (a copy, never changed, as `_NO_INPUTS`), not kept once per
            # node. A plain dict: a result's states still pickle and deep-copy.
            last = self._last_inputs
            if read_now == last[0]:
                shared = last[1]
                if shared is None:
                    shared = dict(read_now)
                    self._last_inputs = (last[0], shared)
                inputs = shared
            else:
                inputs = read_now
                self._last_inputs = (read_now, None)
        else:
            inputs = _NO_INPUTS
        if self.items and name in self.items:
            over, digest = self.items[name]
            inputs = {**inputs, over: digest}
        stored = states[name].provenance
        if stored is None:
            audit: tuple[Override, ...] = ()
        else:
            audit = stored.audit
            if output is None:
                output = stored.output
        # No dict of parts kept per node: a view of them (`Fingerprint.parts_view`).
        digest, source, parts = fingerprint.recorded(keep=not self.forgets)
        return new_provenance(
            digest,
            source,
            parts,
            output,
            inputs,
            self.reasons[name],
            False,
            audit,
        )

    def cut_off(self, name: str) -> NodeState | None:
        """Resolve provisional ``name`` (`flowdag._decide.resolve`), its deps done.

        Reused: it counts as done from its stored state, which is returned; else None.
        """
        stored = self.states[name]
        states = self.states
        verdict = resolve(name, stored, {dep: states[dep].output_digest for dep in stored.deps})
        self.reasons[name] = verdict.reason
        if verdict.action != "reuse":
            return None
        if self.read(name):
            self.outputs[name] = stored.output
        self.done += 1
        return stored

    def skipped(self, name: str, failed: str) -> NodeRecord:
        """The record of ``name``, skipped as ``failed`` failed upstream; its reason says so."""
        was = self.reasons.get(name)
        self.reasons[name] = Reason(
            "new" if was is None else was.code,
            f"skipped: upstream node '{failed}' failed"
            + ("" if was is None else f" (planned: {was.detail})"),
        )
        # A commit replaces a node's whole state: keep the attempts of earlier
        # calls, and the provenance (digests, audit trail).
        stored = self.states[name]
        return NodeRecord(
            name,
            NodeStatus.SKIPPED,
            stored.attempts,
            history=stored.history,
            provenance=stored.provenance,
        )

    def running_record(self, attempt: Attempt, started_at: datetime) -> NodeRecord:
        """A record of the node as running: no output, no ``ctx.data``.

        Both an attempt in flight (a start record) and a failed attempt whose
        retry waits are stored this way; nothing waits for either.
        """
        # A commit replaces the node's whole stored state: what of it must survive
        # a crash mid-attempt goes in here too (see the module docstring).
        return NodeRecord(
            attempt.node,
            NodeStatus.RUNNING,
            attempt.number,
            started_at,
            history=self.history(attempt.node),  # read only: the finish record takes them
            # Its stored digests and audit trail, which a crash now must not lose.
            provenance=self.states[attempt.node].provenance,
        )

    def history(self, name: str, last: AttemptInfo | None = None) -> tuple[AttemptInfo, ...]:
        """The attempts of ``name`` so far (stored, then this call's), and ``last``.

        Every record of a node carries this: a commit replaces the node's whole
        stored state, so a record without it would drop the earlier attempts.
        With ``last``, the node's final attempt, this call's failed attempts are
        handed over and forgotten here.
        """
        # states[name] is the stored state until the node ends, as in next_attempt.
        earlier = self.states[name].history
        if self.failed:
            failed = self.failed.pop(name, ()) if last is not None else self.failed.get(name, ())
            earlier += failed
        if last is None:
            return earlier
        return (*earlier, last) if earlier else (last,)

    def settle(self, record: NodeRecord, error: ErrorInfo | None, value: Any = None) -> None:
        """Set a node's state from its acknowledged (or refused) record."""
        name = record.node
        status = _FAILED if error is not None else record.status
        # Its attempts are counted in its state now: only nodes in flight keep a count.
        self.tries.pop(name, None)
        if status is _COMPLETED:
            if name not in self._specs or self._dependents(name):  # `read`, inlined
                self.outputs[name] = value
            elif self.forgets:  # stored, and nothing reads it: see the module docstring
                self.states[name] = FORGOTTEN
                self.forgotten += 1
                return
        state = NodeState(
            status,
            record.attempts,
            record.started_at,
            record.finished_at,
            None,
            error,
            self.states[name].deps,
            record.history,
            record.provenance,
        )
        if status is _COMPLETED:
            state.output = value
        self.states[name] = state

    def recall(self, stored: RunState | None) -> None:
        """Put back the states of forgotten nodes, from the run as ``stored`` now;
        None (the store could not read it): each a completed state of its own."""
        states, specs = self.states, self._specs
        for name, state in states.items():
            if state is FORGOTTEN:
                states[name] = (
                    NodeState(_COMPLETED, deps=specs[name].deps)
                    if stored is None
                    else stored.nodes[name]
                )
        self.forgotten = 0

    def own_pending(self) -> None:
        """Give each node still pending a state of its own: a new run's nodes share
        one per deps (`flowdag.resume`), which a caller changing one state of a
        result must not see change in another."""
        states = self.states
        for name, state in states.items():
            if state.status is _PENDING:
                states[name] = replace(state)

    def unsettled(self) -> list[str]:
        """Nodes neither completed, failed nor skipped."""
        return [name for name, state in self.states.items() if state.status not in _SETTLED]
