"""Records on their way to the store: the committer thread and the driver's outbox.

The committer makes records durable with `Store.commit`, taking every record
waiting in its queue as one batch: *group commit* (see the design note of
`flowdag._driver`). `Commits` is the driver's side: the records of the current
wake-up, and the count of those handed over but not yet acknowledged.

Two kinds of record travel this way: a node's *finish* record (completed,
failed or skipped), and an attempt's *start* record (status running, no output,
no ``ctx.data``), which lets a later reader tell an attempt in flight at a crash
from a node that never started. Nothing waits for a start record: only finish
records release dependents. A start record that a later record of the same node
supersedes within one batch is dropped before the commit (`latest`); it would
lose to that record in `Store.commit` anyway.

A batch in which some node wrote to ``ctx.kv`` commits as a transaction over
the store's tables too (`commit_batch`): each such node's writes are applied
(its ``update`` functions run) against the latest committed entries, in the
transaction that commits its completion. A node whose writes cannot be applied
(an update function raised) is committed as failed instead, with none of its
writes, and the rest of the batch commits. A batch without kv writes costs
nothing more than before.
"""

from __future__ import annotations

import threading
from collections import deque
from collections.abc import Callable, Mapping, Sequence
from dataclasses import replace
from datetime import UTC, datetime, timedelta
from queue import Empty, SimpleQueue

from flowdag._kv_entries import KVWrites
from flowdag.attempt import Attempt, Outcome, failure
from flowdag.state import ErrorInfo, NodeRecord, NodeStatus
from flowdag.stores._tables import TableTxn
from flowdag.stores.base import Store

__all__ = ["START_RECORD_DELAY", "Commits", "Committer", "Starts", "commit_batch", "latest"]

_RUNNING = NodeStatus.RUNNING
#: An attempt still running this long (seconds) after its launch gets a start
#: record. Quicker ones get none, so small nodes cost no extra record.
START_RECORD_DELAY = 0.05


class Starts:
    """Attempts due a start record once they have run `START_RECORD_DELAY` seconds.

    With ``queued`` (the executor queues attempts, `Capabilities.queues`), an
    attempt whose worker has not taken it yet (no ``started_at``) is not due:
    it is looked at again a delay later.
    """

    __slots__ = ("_queue", "_queued")

    def __init__(self, queued: bool = False) -> None:
        # (due time, launch time, attempt); those that returned meanwhile are dropped
        # lazily. The delay is one constant and launch times never go back (the
        # monotonic clock), so they fall due in the order added: a FIFO, not a heap.
        self._queue: deque[tuple[float, float, Attempt]] = deque()
        self._queued = queued

    def add(self, attempt: Attempt, now: float) -> None:
        self._queue.append((now + START_RECORD_DELAY, now, attempt))

    def next_at(self, running: Mapping[str, Attempt]) -> float | None:
        """When the next attempt in ``running`` is due a start record."""
        queue = self._queue
        while queue and running.get((attempt := queue[0][2]).node) is not attempt:
            queue.popleft()
        return queue[0][0] if queue else None

    def due(self, now: float, running: Mapping[str, Attempt]) -> list[tuple[Attempt, datetime]]:
        """The attempts in ``running`` due a start record by ``now``, with their start times."""
        queue = self._queue
        if not queue or queue[0][0] > now:
            return []
        wall = datetime.now(UTC)
        found = []
        waiting = []
        while queue and queue[0][0] <= now:
            _, launched, attempt = queue.popleft()
            if running.get(attempt.node) is attempt:
                if self._queued and attempt.started_at is None:
                    waiting.append(attempt)  # still queued: nothing ran, nothing to record
                    continue
                started = attempt.started_at or wall - timedelta(seconds=now - launched)
                found.append((attempt, started))
        for attempt in waiting:  # due after every entry left: the FIFO stays in order
            self.add(attempt, now)
        return found


def latest(batch: list[NodeRecord]) -> list[NodeRecord]:
    """``batch`` without the start records a later record of the same node supersedes.

    `Store.commit` lets later records win, and a start record carries no
    ``ctx.data`` changes, so committing the result is committing ``batch``:
    only the encoding of records nobody would read is saved.
    """
    for record in batch:
        if record.status is _RUNNING:
            break
    else:
        return batch  # the usual batch: finish records only
    later: set[str] = set()
    kept: list[NodeRecord] = []
    for record in reversed(batch):
        if record.status is _RUNNING and record.node in later:
            continue
        later.add(record.node)
        kept.append(record)
    kept.reverse()
    return kept


def commit_batch(store: Store, run_id: str, batch: list[NodeRecord]) -> list[NodeRecord]:
    """Commit ``batch`` (see `latest`) with the table writes its records carry (a cached
    node's new entry, a node's ``ctx.kv`` writes) in the same transaction; the batch
    as committed.

    A completed node whose ``ctx.kv`` writes could not be applied is committed
    failed: the batch returned holds that record in place of its own.
    """
    records = latest(batch)
    for record in records:
        if record.kv or record.tables:
            break
    else:  # the usual batch: no table writes
        store.commit(run_id, records)
        return batch
    source = store.ref_source
    failed: dict[int, NodeRecord] = {}  # id of a record -> the failure committed instead
    writes_kv = any(record.kv for record in records)  # else: cache entries only

    def tables(txn: TableTxn, records: Sequence[NodeRecord]) -> list[NodeRecord]:
        failed.clear()  # a backend may run this again (a retried transaction)
        kv = KVWrites(txn, source, datetime.now(UTC)) if writes_kv else None
        committed = []
        for record in records:
            if kv is not None and record.kv and record.status is NodeStatus.COMPLETED:
                mine = KVWrites(kv, source, kv.now)  # kept only if all of them apply
                try:
                    mine.apply(record.kv, run_id, record.node)
                except Exception as exc:
                    failed[id(record)] = record = _kv_failure(record, exc)
                else:
                    kv.changed.update(mine.changed)
            for (table, key), value in (record.tables or {}).items():
                if value is None:
                    txn.delete(table, key)
                else:
                    txn.put(table, key, value)
            committed.append(record)
        if kv is not None:
            kv.flush(txn)
        return committed

    store.commit(run_id, records, tables=tables)
    return [failed.get(id(record), record) for record in batch] if failed else batch


def _kv_failure(record: NodeRecord, exc: Exception) -> NodeRecord:
    """``record`` failed with ``exc``: no output, no ``ctx.data`` changes, no kv or cache writes."""
    error = failure(exc, record.started_at).error
    history = record.history
    if history:
        history = (*history[:-1], replace(history[-1], error=error))
    return replace(
        record,
        status=NodeStatus.FAILED,
        error=error,
        output=None,
        data={},
        history=history,
        blobs=None,
        kv=None,
        tables=None,
    )


class Commits:
    """Records on their way to the store: this wake-up's batch, and those in flight."""

    __slots__ = (
        "committer",
        "error",
        "inline",
        "outbox",
        "outcomes",
        "refused",
        "unacknowledged",
    )

    def __init__(self, store: Store, committer: Committer) -> None:
        self.outbox: list[NodeRecord] = []  # records of this wake-up, committed together
        self.unacknowledged = 0  # records handed over (or in the outbox), not yet durable
        self.outcomes: dict[str, Outcome] = {}  # completed nodes' values, until durable
        # A store that keeps nothing on disk commits at once; a background commit
        # would only add a thread hop per batch.
        self.inline = not store.durable
        self.error: ErrorInfo | None = None  # set when the store refused a batch
        # Nodes whose start record the store refused: failed with its error, their
        # attempt's result is discarded when it returns.
        self.refused: set[str] = set()
        self.committer = committer

    def add(self, records: list[NodeRecord]) -> None:
        self.unacknowledged += len(records)
        self.outbox.extend(records)

    def take(self) -> list[NodeRecord]:
        """This wake-up's batch; the outbox starts anew."""
        batch, self.outbox = self.outbox, []
        return batch


class Committer:
    """The thread that makes records durable, a batch per transaction."""

    def __init__(
        self,
        store: Store,
        run_id: str,
        committed: Callable[[list[NodeRecord]], None],
        failed: Callable[[list[NodeRecord], BaseException], None],
    ) -> None:
        self._store = store
        self._run_id = run_id
        self._committed = committed  # called on the committer thread
        self._failed = failed
        self._queue: SimpleQueue[list[NodeRecord] | None] = SimpleQueue()
        self._thread = threading.Thread(target=self._serve, name="flowdag-commit", daemon=True)

    def start(self) -> None:
        self._thread.start()

    def put(self, records: list[NodeRecord]) -> None:
        self._queue.put(records)

    def close(self) -> None:
        """Commit what was handed over, then stop."""
        self._queue.put(None)
        self._thread.join()

    def _serve(self) -> None:
        queue = self._queue
        stop = False
        while not stop:
            batch: list[NodeRecord] = []
            item = queue.get()
            while True:  # everything that arrived meanwhile joins this batch
                if item is None:
                    stop = True
                else:
                    batch.extend(item)
                try:
                    item = queue.get_nowait()
                except Empty:
                    break
            if not batch:
                continue
            try:
                # The callbacks get the whole batch: dropped start records are
                # acknowledged (or refused) with the records that superseded them.
                batch = commit_batch(self._store, self._run_id, batch)
            except BaseException as exc:  # whatever it is: the driver waits for word
                self._failed(batch, exc)
            else:
                self._committed(batch)
