"""The commit side of the driver loop: records out to the store, answers back in.

`Settler` hands each wake-up's records to the committer thread, or commits them
on the driver's own thread when nothing could be grouped with them, and acts on
the store's answer (see the design note of `flowdag._driver`): an acknowledged
record settles its node in the `Ledger`, publishes its ``ctx.data`` changes and
releases its dependents; a refused batch fails its nodes with the store's error
and stops the run from starting anything new. It shares the driver's state
objects (ledger, schedule, attempts in flight) and runs on the driver's thread.
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Mapping

from flowdag._commit import Commits, commit_batch
from flowdag._ledger import Ledger
from flowdag.attempt import Attempt, failure
from flowdag.runner import EventKind
from flowdag.scheduler import Schedule
from flowdag.state import ErrorInfo, NodeRecord, NodeStatus
from flowdag.stores.base import Store

__all__ = ["Settler"]

logger = logging.getLogger("flowdag")

_RUNNING, _COMPLETED = NodeStatus.RUNNING, NodeStatus.COMPLETED

#: Reports a node's event: kind, node, status, attempt number, error.
Emit = Callable[[EventKind, str, NodeStatus, int, ErrorInfo | None], None]


class Settler:
    """Commits the driver's records and settles their nodes as the store answers."""

    __slots__ = ("commits", "emit", "ledger", "run_id", "running", "schedule", "skip", "store")

    def __init__(
        self,
        store: Store,
        run_id: str,
        commits: Commits,
        ledger: Ledger,
        schedule: Schedule,
        running: Mapping[str, Attempt],
        skip: Callable[[str], list[NodeRecord]],
        emit: Emit | None,
    ) -> None:
        self.store = store
        self.run_id = run_id
        self.commits = commits
        self.ledger = ledger
        self.schedule = schedule
        self.running = running  # the driver's attempts in flight, read only
        self.skip = skip  # the records of the nodes a failure of a node skips
        self.emit = emit  # None: no one listens to events

    def close(self) -> None:
        """Let go of the driver's methods once its loop ended: no cycle then holds the
        run's state (a ledger of every node), freed as soon as `flowdag.run` returns
        rather than at some later full collection, which a caller's code would pay for."""
        self.skip = _ended
        self.emit = None

    def flush(self) -> None:
        """Hand this wake-up's records to the committer (or commit them now)."""
        commits = self.commits
        batch = commits.take()
        # With no attempt in flight, none that could start, and the committer
        # idle, nothing can finish while this commit runs, so there is nothing
        # to group: committing here spares two thread hops per node (a chain's
        # whole overhead). Ready nodes must not wait behind the sync, or a
        # fan-out falls into small batches. The idle committer keeps commits
        # in order.
        idle = (
            not self.running
            and commits.unacknowledged == len(batch)
            and not self.schedule.has_startable()
        )
        if not (commits.inline or idle):
            commits.committer.put(batch)
            return
        try:
            batch = commit_batch(self.store, self.run_id, batch)
        except Exception as exc:
            self.on_commit_failed(batch, exc)
        else:
            self.acknowledge(batch)
            if commits.outbox:  # the skipped dependents of a node whose kv update failed
                self.flush()

    def acknowledge(self, records: list[NodeRecord]) -> None:
        """Records are durable: their nodes are done, and dependents may start."""
        commits = self.commits
        commits.unacknowledged -= len(records)
        outcomes = commits.outcomes
        ledger = self.ledger
        settle = ledger.settle
        done = self.schedule.ready.done
        emit = self.emit
        for record in records:
            status = record.status
            if status is _RUNNING:
                continue  # a start record: nothing waits for it
            name = record.node
            if status is _COMPLETED:
                outcome = outcomes.pop(name)
                settle(record, None, outcome.value)
                if outcome.changes:
                    data = ledger.data
                    for key, (present, value) in outcome.changes.items():
                        if present:
                            data[key] = value
                        else:
                            data.pop(key, None)
                done(name)
            else:
                settle(record, record.error)
                if outcomes.pop(name, None) is not None:  # its kv update failed
                    commits.add(self.skip(name))
            ledger.done += 1
            if emit is not None:
                emit(EventKind.NODE_FINISHED, name, status, record.attempts, record.error)

    def on_commit_failed(self, records: list[NodeRecord], exc: BaseException) -> None:
        """The store refused a batch: fail its nodes, start nothing new."""
        logger.error("run %s: checkpoint failed, stopping the run: %s", self.run_id, exc)
        error = failure(exc).error
        assert error is not None
        self.commits.error = error
        self.schedule.cancel_retries()
        for record in records:
            self.commits.unacknowledged -= 1
            if record.status is NodeStatus.RUNNING:
                attempt = self.running.get(record.node)
                if attempt is None or attempt.number != record.attempts:
                    continue  # that attempt has returned: its finish record decides
                self.commits.refused.add(record.node)
            self.commits.outcomes.pop(record.node, None)
            self.ledger.settle(record, error)
            if self.emit is not None:
                self.emit(
                    EventKind.NODE_FINISHED, record.node, NodeStatus.FAILED, record.attempts, error
                )


def _ended(name: str) -> list[NodeRecord]:
    raise RuntimeError(f"flowdag bug: node '{name}' failed after its run's loop ended")
