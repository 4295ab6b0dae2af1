"""The driver: the loop behind `run()`, and the committer thread that feeds the store.

Design
------
One *driver* loop, on the caller's thread, owns all run state: the `ReadySet`,
outputs, ``ctx.data``, attempts, timers. It blocks on one queue fed by future
callbacks, the committer and attempt starts, and never polls; it wakes early
only for a timer (a retry that is due, an attempt's deadline).

Each node goes through the same steps: start an attempt on the executor; when
it returns, either schedule a retry or build one `NodeRecord` (status, attempts,
times, output or error, ``ctx.data`` changes) and hand it to the *committer*.
Outputs are encoded once, in the worker, so the driver only moves bytes.

The committer is a thread that makes records durable with `Store.commit`. It
takes every record waiting in its queue as one batch, so while one commit (one
fsync) is in flight, the nodes finishing meanwhile are gathered into the next:
*group commit*, one sync per batch rather than per node. Only when a record's
commit is acknowledged does the driver count the node done, publish its
``ctx.data`` changes and release its dependents: no node ever starts on an
output a crash could still lose. A crash between a node's return and that
acknowledgement loses the attempt, not the store: the node runs again on
resume (at-least-once; see ``ctx.idempotency_key``).

If a commit fails, the nodes of that batch are reported failed with the store's
error, nothing new is started, and the run ends once its attempts return; the
store still loads and a later resume finishes the run.
"""

from __future__ import annotations

import heapq
import logging
import random
import threading
import time
from collections import deque
from collections.abc import Callable, Mapping
from datetime import UTC, datetime
from queue import Empty, SimpleQueue
from typing import Any

from flowdag.attempt import Attempt, Launcher, Outcome, failure
from flowdag.dag import DAG
from flowdag.errors import NodeTimeoutError
from flowdag.executors import Executor
from flowdag.resume import Plan
from flowdag.runner import RunEvent, RunResult
from flowdag.scheduler import ReadySet
from flowdag.state import ErrorInfo, NodeRecord, NodeState, NodeStatus, RunStatus
from flowdag.stores.base import Store

logger = logging.getLogger("flowdag")

_JITTER = 0.1  # retry delays vary by +-10% so that retries of many nodes spread out


# -- the driver ---------------------------------------------------------------

# Event kinds on the driver's queue, and timer kinds on its heap.
_RESULT, _STARTED, _COMMITTED, _COMMIT_FAILED = range(4)
_RETRY_DUE, _DEADLINE = range(2)
_LOST_ATTEMPT_RETRIES = 3  # retries of attempts an executor lost (a worker died)


class _Driver:
    """The loop that runs one DAG; see the module docstring."""

    def __init__(
        self,
        dag: DAG,
        plan: Plan,
        store: Store,
        executor: Executor,
        limit: int,
        pools: Mapping[str, int],
        on_event: Callable[[RunEvent], None] | None,
    ) -> None:
        self.dag = dag
        self.run_id = plan.state.run_id
        self.store = store
        self.codec = store.codec
        self.executor = executor
        self.lost_attempts: dict[str, int] = {}
        self.limit = limit
        self.pools = dict(pools)
        self.pool_running = dict.fromkeys(self.pools, 0)
        self.parked: dict[str, deque[str]] = {pool: deque() for pool in self.pools}
        self.pool_freed: set[str] = set()
        self.on_event = on_event
        self.events: SimpleQueue[tuple[Any, ...]] = SimpleQueue()
        put = self.events.put
        # Starts attempts as the executor's capabilities allow; each outcome, and the
        # real start of an attempt with a timeout, come back on the events queue.
        self.launcher = Launcher(
            executor,
            self.codec,
            lambda attempt, outcome: put((_RESULT, attempt, outcome)),
            lambda attempt: put((_STARTED, attempt, time.monotonic(), datetime.now(UTC))),
        )
        self.ready = ReadySet(dag, plan.completed)
        self.states = dict(plan.state.nodes)
        self.outputs = {name: self.states[name].output for name in plan.completed}
        self.data = dict(plan.state.data)
        self.running: dict[str, Attempt] = {}
        self.attempts: dict[str, int] = {}  # attempts made in this call of run()
        self.retries_due: deque[str] = deque()
        self.retries_waiting = 0
        self.timers: list[tuple[float, int, int, Any]] = []  # (when, seq, kind, what)
        self.seq = 0
        self.unacknowledged = 0
        self.outbox: list[NodeRecord] = []  # records of this wake-up, committed together
        # A store that keeps nothing on disk commits at once; a background commit
        # would only add a thread hop per batch.
        self.commit_inline = not store.durable
        self.finished_values: dict[str, Outcome] = {}
        self.done = len(plan.completed)
        self.commit_error: ErrorInfo | None = None
        self.committer = _Committer(store, self.run_id, self.events.put)

    # -- loop ---------------------------------------------------------------

    def drive(self) -> None:
        self.committer.start()
        try:
            self.dispatch()
            while self.running or self.retries_waiting or self.unacknowledged:
                self.wait_and_handle()
                self.dispatch()
        finally:
            # Records already handed over are committed even if we stop early:
            # they are finished work, and committing them spares a re-run.
            self.committer.close()

    def wait_and_handle(self) -> None:
        events = self.events
        try:
            event = events.get(timeout=self.seconds_to_next_timer())
        except Empty:
            event = None
        while event is not None:
            self.handle(event)
            try:
                event = events.get_nowait()
            except Empty:
                break
        self.fire_timers()
        if self.outbox:
            self.flush()

    def handle(self, event: tuple[Any, ...]) -> None:
        kind = event[0]
        if kind == _RESULT:
            self.on_result(event[1], event[2])
        elif kind == _COMMITTED:
            for record in event[1]:
                self.acknowledge(record)
        elif kind == _STARTED:
            attempt = event[1]
            if self.is_running(attempt):
                attempt.started_at = event[3]
                timeout = self.dag.specs[attempt.node].timeout
                self.add_timer(event[2] + timeout, _DEADLINE, attempt)
        else:
            self.on_commit_failed(event[1], event[2])

    def dispatch(self) -> None:
        if self.commit_error is not None:
            return
        free = self.limit - len(self.running)
        # Retries that are due go first, then nodes a full pool held back, then new ones.
        while free > 0 and self.retries_due:
            free -= self.start_or_park(self.retries_due.popleft())
        if self.pool_freed:
            for pool in self.pool_freed:
                parked = self.parked[pool]
                while free > 0 and parked and self.pool_running[pool] < self.pools[pool]:
                    free -= self.start_or_park(parked.popleft())
            self.pool_freed.clear()
        while free > 0 and self.ready.has_ready():
            for name in self.ready.take(free):
                free -= self.start_or_park(name)

    def start_or_park(self, name: str) -> int:
        """Start ``name`` unless its pool is full (then park it); 1 if started."""
        pool = self.dag.specs[name].pool
        if pool is not None and pool in self.pools:
            if self.pool_running[pool] >= self.pools[pool]:
                self.parked[pool].append(name)
                return 0
            self.pool_running[pool] += 1
        self.start(name)
        return 1

    def release_pool(self, name: str) -> None:
        pool = self.dag.specs[name].pool
        if pool is not None and pool in self.pools:
            self.pool_running[pool] -= 1
            if self.parked[pool]:
                self.pool_freed.add(pool)

    # -- attempts -------------------------------------------------------------

    def start(self, name: str) -> None:
        number = self.attempts.get(name, 0) + 1
        self.attempts[name] = number
        spec = self.dag.specs[name]
        outputs = self.outputs
        inputs = {dep: outputs[dep] for dep in spec.deps}
        attempt = Attempt(spec, self.run_id, number, inputs, self.data, self.codec)
        self.running[name] = attempt
        if self.on_event is not None:
            self.emit("node_started", name, NodeStatus.RUNNING, number, None)
        self.launcher.launch(attempt)

    def on_result(self, attempt: Attempt, outcome: Outcome) -> None:
        if not self.is_running(attempt):
            return  # an abandoned (timed-out) attempt: its result is discarded
        del self.running[attempt.node]
        self.release_pool(attempt.node)
        if outcome.error is not None:
            self.on_failed_attempt(attempt, outcome)
            return
        self.finished_values[attempt.node] = outcome
        self.commit(
            [
                NodeRecord(
                    attempt.node,
                    NodeStatus.COMPLETED,
                    self.total_attempts(attempt.node),
                    outcome.started_at,
                    outcome.finished_at,
                    None,
                    outcome.output,
                    outcome.encoded_changes,
                )
            ]
        )

    def on_failed_attempt(self, attempt: Attempt, outcome: Outcome) -> None:
        spec = self.dag.specs[attempt.node]
        error = outcome.error
        retry = outcome.retryable and self.commit_error is None
        if retry and outcome.infrastructure:
            # The executor lost the attempt (a worker died): not the node's fault,
            # so it does not use up the node's retries, within a bound of its own.
            lost = self.lost_attempts[spec.name] = self.lost_attempts.get(spec.name, 0) + 1
            retry = lost <= _LOST_ATTEMPT_RETRIES
            if retry:  # the retry takes the lost attempt's number
                self.attempts[spec.name] -= 1
            wait = 0.0
        else:
            retry = retry and attempt.number <= spec.retries
            wait = spec.retry_wait(attempt.number) * random.uniform(1 - _JITTER, 1 + _JITTER)
        if retry:
            logger.info(
                "node %s attempt %d failed (%s); retry in %.3fs",
                spec.name,
                attempt.number,
                error,
                wait,
            )
            self.retries_waiting += 1
            self.add_timer(time.monotonic() + wait, _RETRY_DUE, attempt.node)
            if self.on_event is not None:
                self.emit("node_retrying", spec.name, NodeStatus.RUNNING, attempt.number, error)
            return
        logger.info("node %s failed: %s", spec.name, error)
        records = [
            NodeRecord(
                spec.name,
                NodeStatus.FAILED,
                self.total_attempts(spec.name),
                outcome.started_at,
                outcome.finished_at,
                error,
            )
        ]
        for name in self.ready.fail(spec.name):
            records.append(NodeRecord(name, NodeStatus.SKIPPED, self.states[name].attempts))
        self.commit(records)

    def total_attempts(self, name: str) -> int:
        """Attempts over the run's whole life: earlier calls of run() included."""
        return self.states[name].attempts + self.attempts.get(name, 0)

    # -- timers -------------------------------------------------------------

    def add_timer(self, when: float, kind: int, what: Any) -> None:
        self.seq += 1
        heapq.heappush(self.timers, (when, self.seq, kind, what))

    def seconds_to_next_timer(self) -> float | None:
        timers = self.timers
        # Deadlines of attempts that already returned are dropped lazily, here.
        while timers and timers[0][2] == _DEADLINE and not self.is_running(timers[0][3]):
            heapq.heappop(timers)
        return max(0.0, timers[0][0] - time.monotonic()) if timers else None

    def is_running(self, attempt: Attempt) -> bool:
        return self.running.get(attempt.node) is attempt

    def fire_timers(self) -> None:
        timers = self.timers
        now = time.monotonic()
        while timers and timers[0][0] <= now:
            _, _, kind, what = heapq.heappop(timers)
            if kind == _RETRY_DUE:
                self.retries_waiting -= 1
                if self.commit_error is None:
                    self.retries_due.append(what)
            elif self.is_running(what):  # an attempt overran its timeout
                self.abandon(what)

    def abandon(self, attempt: Attempt) -> None:
        """Fail an attempt that overran its timeout, and stop it where the executor can."""
        del self.running[attempt.node]
        self.release_pool(attempt.node)
        # A process pool terminates the worker, asyncio cancels the task, Dask
        # cancels it; a thread cannot be stopped and runs on, its result discarded.
        stopped = attempt.future is not None and attempt.future.cancel()
        timeout = self.dag.specs[attempt.node].timeout
        what = "it was cancelled" if stopped else "it was abandoned and runs on until it returns"
        error = NodeTimeoutError(
            f"node '{attempt.node}' attempt {attempt.number} exceeded its timeout of "
            f"{timeout}s; {what}"
        )
        self.on_failed_attempt(attempt, failure(error, attempt.started_at))

    # -- commits ------------------------------------------------------------

    def commit(self, records: list[NodeRecord]) -> None:
        self.unacknowledged += len(records)
        self.outbox.extend(records)

    def flush(self) -> None:
        """Hand this wake-up's records to the committer (or commit them now)."""
        batch, self.outbox = self.outbox, []
        # With no attempt in flight, none that could start, and the committer
        # idle, nothing can finish while this commit runs, so there is nothing
        # to group: committing here spares two thread hops per node (a chain's
        # whole overhead). Ready nodes must not wait behind the sync, or a
        # fan-out falls into small batches. The idle committer keeps commits
        # in order.
        idle = (
            not self.running
            and not self.ready.has_ready()
            and not self.retries_due
            and self.unacknowledged == len(batch)
        )
        if not (self.commit_inline or idle):
            self.committer.put(batch)
            return
        try:
            self.store.commit(self.run_id, batch)
        except Exception as exc:
            self.on_commit_failed(batch, exc)
        else:
            for record in batch:
                self.acknowledge(record)

    def acknowledge(self, record: NodeRecord) -> None:
        """A record is durable: the node is done, and dependents may start."""
        self.unacknowledged -= 1
        name = record.node
        state = NodeState(
            record.status,
            record.attempts,
            record.started_at,
            record.finished_at,
            None,
            record.error,
            self.states[name].deps,
        )
        if record.status is NodeStatus.COMPLETED:
            outcome = self.finished_values.pop(name)
            state.output = self.outputs[name] = outcome.value
            for key, (present, value) in outcome.changes.items():
                if present:
                    self.data[key] = value
                else:
                    self.data.pop(key, None)
            self.ready.done(name)
        self.states[name] = state
        self.done += 1
        if self.on_event is not None:
            self.emit(
                "node_finished", name, record.status, self.attempts.get(name, 0), record.error
            )

    def on_commit_failed(self, records: list[NodeRecord], exc: BaseException) -> None:
        """The store refused a batch: fail its nodes, start nothing new."""
        logger.error("run %s: checkpoint failed, stopping the run: %s", self.run_id, exc)
        error = failure(exc).error
        self.commit_error = error
        self.retries_due.clear()
        for record in records:
            self.unacknowledged -= 1
            self.finished_values.pop(record.node, None)
            node = self.states[record.node]
            self.states[record.node] = NodeState(
                NodeStatus.FAILED,
                record.attempts,
                record.started_at,
                record.finished_at,
                None,
                error,
                node.deps,
            )
            if self.on_event is not None:
                self.emit("node_finished", record.node, NodeStatus.FAILED, record.attempts, error)

    # -- reporting ----------------------------------------------------------

    def emit(
        self, kind: str, node: str, status: NodeStatus, attempt: int, error: ErrorInfo | None
    ) -> None:
        assert self.on_event is not None
        self.on_event(RunEvent(kind, node, status, attempt, error, self.done, len(self.dag)))

    def result(self) -> RunResult:
        statuses = {state.status for state in self.states.values()}
        status = RunStatus.COMPLETED if statuses <= {NodeStatus.COMPLETED} else RunStatus.FAILED
        return RunResult(self.run_id, self.dag.name, status, self.states, self.data)


class _Committer:
    """The thread that makes records durable, a batch per transaction."""

    def __init__(self, store: Store, run_id: str, report: Callable[[tuple[Any, ...]], None]):
        self._store = store
        self._run_id = run_id
        self._report = report
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
                self._store.commit(self._run_id, batch)
            except Exception as exc:
                self._report((_COMMIT_FAILED, batch, exc))
            else:
                self._report((_COMMITTED, batch))
