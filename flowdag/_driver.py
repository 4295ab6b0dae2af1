"""The driver: the loop behind `run()`, and the committer thread that feeds the store.

Design
------
One *driver* loop, on the caller's thread, owns all run state. It blocks on one
queue fed by future callbacks, the committer and attempt starts, and never
polls; it wakes early only for a timer (a retry that is due, an attempt's
deadline). Its state is in a few objects, each with one job:

- `Schedule` (pure, `flowdag.scheduler`): what may start next: due retries,
  then nodes a full pool parked, then newly ready ones;
- ``running`` and ``deadlines``: the attempts in flight and when they overrun;
- `Ledger` (`flowdag._ledger`): what the run knows: node states, outputs,
  ``ctx.data``, attempts (over the run's life) and their history;
- `Commits` and the `Committer` thread (`flowdag._commit`): records on their
  way to the store;
- `Settler` (`flowdag._settle`): the commit side of the loop: hands records
  to the committer and, as the store answers, settles or fails their nodes.

At most ``max_workers`` attempts run at once. An executor that queues them
(`Capabilities.queues`: a run's own thread pool) holds `_AHEAD` times as many
more, so a worker that finishes one takes the next at once instead of sleeping
until the driver hands it one; their timeouts and start records count from then.

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

An attempt still running a moment after it started also gets a *start
record* (`flowdag._commit.Starts`), so a durable store tells an attempt in
flight at a crash (*interrupted*) from a node that never started.

On a resume, reused nodes (`flowdag.resume.plan_call`) start out done; a
*provisional* node waits for its deps, then runs only if an input it read came
out different (`cut_off`). A cached node, once ready, is looked up in the
cross-run cache (`flowdag._cache`): a hit completes it with no attempt. Every
completed record carries its `Provenance` (code and data digests, reason).

If a commit fails, the nodes of that batch fail with the store's error (for a
start record, the node still running: its result is discarded), nothing new
starts, and the run ends once its attempts return; a later resume finishes it.
Otherwise a run ends with every node completed, failed or skipped; anything
else is a driver bug, raised as such rather than returned as a silent failure.
"""

from __future__ import annotations

import logging
import random
import time
from collections.abc import Callable, Mapping
from datetime import UTC, datetime
from queue import Empty, SimpleQueue
from typing import Any

from flowdag._cache import RunCache
from flowdag._commit import Commits, Committer, Starts
from flowdag._kv_readers import kv_reader
from flowdag._ledger import Ledger
from flowdag._map_run import Expansion, MapHooks, stored_items
from flowdag._ready_hooks import ReadyHooks
from flowdag._run_waits import RunWaits
from flowdag._settle import Settler
from flowdag.attempt import Attempt, Outcome, failure
from flowdag.dag import DAG, RUN_DEFAULT
from flowdag.errors import NodeTimeoutError
from flowdag.executors import Executor
from flowdag.launcher import Launcher
from flowdag.resume import Plan
from flowdag.runner import EventKind, RunEvent, RunResult
from flowdag.scheduler import PoolGate, ReadySet, Schedule, TimerHeap
from flowdag.state import (
    AttemptInfo,
    ErrorInfo,
    NodeRecord,
    NodeStatus,
    RunStatus,
    new_attempt,
    new_record,
)
from flowdag.stores.base import Store

logger = logging.getLogger("flowdag")

_JITTER = 0.1  # retry delays vary by +-10% so that retries of many nodes spread out


# -- the driver ---------------------------------------------------------------

# Event kinds on the driver's queue.
_RESULT, _STARTED, _COMMITTED, _COMMIT_FAILED = range(4)
_LOST_ATTEMPT_RETRIES = 3  # retries of attempts an executor lost (a worker died)
_COMPLETED = NodeStatus.COMPLETED
_AHEAD = 3  # attempts queued ahead per worker, in an executor that queues them


class _Driver(ReadyHooks, MapHooks):
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
        inline_limit: int | None,
        cache: RunCache | None = None,
        waits: RunWaits | None = None,
    ) -> None:
        self.dag = dag
        self.specs = dag.specs  # and map items, once a map node expands (`flowdag._map_run`)
        self.cache = cache  # None: no node is cached
        self.waits = waits  # None: the DAG has no input node
        self.run_id = plan.state.run_id
        self.store = store
        self.codec = store.codec
        self.inline_limit = inline_limit
        self.ref_source = store.ref_source
        self.kv_read = kv_reader(store)
        self.on_event = on_event
        self.events: SimpleQueue[tuple[Any, ...]] = SimpleQueue()
        gate = PoolGate(pools, {name: dag.specs[name].pool for name in dag.nodes} if pools else {})
        self.schedule = Schedule(ReadySet(dag, plan.completed), gate)
        self.running: dict[str, Attempt] = {}
        self.deadlines: TimerHeap[Attempt] = TimerHeap()  # stale ones are dropped lazily
        self.ledger = Ledger(plan, dag, forgets=store._reads_back)
        self.expansions: dict[str, Expansion] = {}
        self.stored = stored_items(dag, self.ledger.states, plan.completed) if dag.maps else {}
        if dag.maps:
            self.specs = dict(dag.specs)
        # Nodes whose verdict waits for their deps' new outputs (see `cut_off`).
        self.provisional = {n for n, v in plan.verdicts.items() if v.action == "provisional"}
        # Every ready node just starts (`dispatch`): none is provisional, a map, an input, cached.
        self.plain = not (self.provisional or dag.maps or waits is not None or cache is not None)
        put = self.events.put
        # Starts attempts as the executor's capabilities allow; each outcome, and the
        # real start of an attempt with a timeout, come back on the events queue.
        self.launcher = Launcher(
            executor,
            self.codec,
            lambda attempt, outcome: put((_RESULT, attempt, outcome)),
            lambda attempt: put((_STARTED, attempt, time.monotonic(), datetime.now(UTC))),
        )
        queues = self.launcher.capabilities.queues
        self.slots = limit * (1 + _AHEAD) if queues else limit  # in flight: see the docstring
        self.starts = Starts(queues) if store.durable else None  # a store in memory gets none
        committer = Committer(
            store,
            self.run_id,
            lambda batch: put((_COMMITTED, batch)),
            lambda batch, exc: put((_COMMIT_FAILED, batch, exc)),
        )
        self.commits = Commits(store, committer)
        self.settler = Settler(
            store,
            self.run_id,
            self.commits,
            self.ledger,
            self.schedule,
            self.running,
            self.skip_downstream,
            None if on_event is None else self.emit,
        )

    # -- loop ---------------------------------------------------------------

    def drive(self) -> None:
        self.commits.committer.start()
        try:
            self.dispatch()
            while (
                self.running
                or self.schedule.retries
                or self.commits.unacknowledged
                or self.settled_waits()
            ):
                self.wait_and_handle()
                self.dispatch()
        finally:
            # Records already handed over are committed even if we stop early:
            # they are finished work, and committing them spares a re-run.
            self.commits.committer.close()
            self.settler.close()
        waiting = self.waits is not None and self.waits.open  # their dependents wait too
        if self.commits.error is None and not waiting and (stuck := self.ledger.unsettled()):
            raise RuntimeError(  # never a silent FAILED with no error: see the docstring
                f"flowdag bug: run '{self.run_id}' has nothing left in flight, yet nodes "
                f"{', '.join(stuck[:10])} neither ran nor failed; their state in the store "
                "is consistent and a resume runs them. Please report this"
            )

    def wait_and_handle(self) -> None:
        if self.commits.outbox:  # records dispatch made (cache hits): nothing to wait for
            self.settler.flush()
            return
        events = self.events
        try:
            event = events.get(timeout=self.seconds_to_next_timer())
        except Empty:
            event = None
        if event is not None:
            self.handle(event)
            while not events.empty():  # only this thread takes: no Empty to raise and catch
                self.handle(events.get_nowait())
        self.fire_timers()
        if self.commits.outbox:
            self.settler.flush()

    def handle(self, event: tuple[Any, ...]) -> None:
        kind = event[0]
        if kind == _RESULT:
            self.on_result(event[1], event[2])
        elif kind == _COMMITTED:
            self.settler.acknowledge(event[1])
        elif kind == _STARTED:
            attempt = event[1]
            if self.is_running(attempt):
                attempt.started_at = event[3]
                timeout = self.specs[attempt.node].timeout
                self.deadlines.push(event[2] + timeout, attempt)
        else:
            self.settler.on_commit_failed(event[1], event[2])

    def dispatch(self) -> None:
        if self.commits.error is not None:
            return
        free = self.slots - len(self.running)
        while free > 0:
            names = self.schedule.take(free)
            if not names:
                return
            if self.plain:  # no node may end without an attempt: start them all
                for name in names:
                    self.start(name)
                return
            started = 0
            for name in names:
                if self.provisional and name in self.provisional and self.cut_off(name):
                    continue  # done without running: it may have made more nodes ready
                if self.dag.maps and name in self.dag.maps:
                    self.on_map_ready(name)
                    continue  # expanded into its items, or ended with their results
                if self.waits is not None and name in self.waits.inputs:
                    self.take_input(name)
                    continue  # it waits, or settled with no attempt to run
                if self.cache is not None and name in self.cache.nodes and self.cached(name):
                    continue  # completed from the cache, or its cache_key failed it
                self.start(name)
                started += 1
            if started == len(names):
                return  # the usual case: every slot given out; nothing new became ready
            free -= started

    # -- attempts -------------------------------------------------------------

    def start(self, name: str) -> None:
        attempt = self.running[name] = self.attempt(name)
        if self.starts is not None:
            self.starts.add(attempt, time.monotonic())
        if self.on_event is not None:
            self.emit(EventKind.NODE_STARTED, name, NodeStatus.RUNNING, attempt.number, None)
        self.launcher.launch(attempt)

    def attempt(self, name: str) -> Attempt:
        """A new attempt of ``name``, counted and numbered, not yet started."""
        number = self.ledger.next_attempt(name)
        spec = self.specs[name]
        outputs = self.ledger.outputs
        inputs = {dep: outputs[dep] for dep in spec.deps}
        if spec.map_over is not None:  # a map's item: its item, not over's whole list
            inputs[spec.map_over] = self.item_value(name)
        limit = spec.inline_limit
        if limit is RUN_DEFAULT:
            limit = self.inline_limit
        return Attempt(
            spec,
            self.run_id,
            number,
            inputs,
            self.ledger.data,
            self.codec,
            None,
            None,
            None,
            limit,
            self.ref_source,
            self.kv_read,
        )

    def on_result(self, attempt: Attempt, outcome: Outcome) -> None:
        # Once per node: `is_running` inlined, the record built fast.
        name = attempt.spec.name
        running = self.running
        if running.get(name) is not attempt:
            return  # an abandoned (timed-out) attempt: its result is discarded
        del running[name]
        if self.schedule.gate.capped:  # else release() frees nothing
            self.schedule.gate.release(name)
        commits = self.commits
        if commits.error is not None and name in commits.refused:
            return  # its start record was refused: the node failed with the store's error
        if outcome.error is not None:
            self.on_failed_attempt(attempt, outcome)
            return
        commits.outcomes[name] = outcome
        started_at, finished_at = outcome.started_at, outcome.finished_at
        last = new_attempt(attempt.number, started_at, finished_at)
        ledger = self.ledger
        # Fast path: a node's first attempt, run once and never failed.
        history = (
            ledger.history(name, last) if ledger.failed or ledger.states[name].history else (last,)
        )
        provenance = ledger.provenance(name, attempt.spec.deps, outcome.digest)
        tables = None
        cache = self.cache
        if cache is not None and name in cache.keys:
            tables = cache.entry_for(name, outcome.output, outcome.digest, outcome.blobs)
        waits = self.waits
        if waits is not None and name in waits.ending:
            tables = waits.clearing(name)  # input nodes are never cached
        commits.unacknowledged += 1
        commits.outbox.append(
            new_record(
                name,
                _COMPLETED,
                attempt.number,
                started_at,
                finished_at,
                outcome.output,
                outcome.encoded_changes,
                history,
                outcome.blobs,
                provenance,
                tables,
                outcome.kv,
            )
        )
        if cache is not None and cache.parked:  # items that share its key complete now
            self.release_parked(name)

    def on_failed_attempt(self, attempt: Attempt, outcome: Outcome) -> None:
        spec = self.specs[attempt.node]
        error = outcome.error
        ledger = self.ledger
        # Kept whether or not it is retried; a lost attempt too, under the number
        # its retry takes again.
        tried = AttemptInfo(attempt.number, outcome.started_at, outcome.finished_at, error)
        retry = outcome.retryable and self.commits.error is None
        if retry and outcome.infrastructure:
            # The executor lost the attempt (a worker died): not the node's fault,
            # so it does not use up the node's retries, within a bound of its own.
            lost = ledger.lost[spec.name] = ledger.lost.get(spec.name, 0) + 1
            retry = lost <= _LOST_ATTEMPT_RETRIES
            if retry:  # the retry takes the lost attempt's number
                ledger.tries[spec.name] -= 1
            wait = 0.0
        else:
            tries = ledger.tries[spec.name]  # this call's: each call of run() retries afresh
            retry = retry and tries <= spec.retries
            wait = spec.retry_wait(tries) * random.uniform(1 - _JITTER, 1 + _JITTER)
        if retry:
            logger.info(
                "node %s attempt %d failed (%s); retry in %.3fs",
                spec.name,
                attempt.number,
                error,
                wait,
            )
            ledger.failed[spec.name] = (*ledger.failed.get(spec.name, ()), tried)
            if self.starts is not None:
                # A durable store learns of the failed attempt now, as a running
                # node's record (waited for by nothing): a crash before the next
                # attempt's records keeps it in the history. Failures are rare.
                self.commits.add([ledger.running_record(attempt, outcome.started_at)])
            self.schedule.retry(spec.name, time.monotonic() + wait)
            if self.on_event is not None:
                self.emit(
                    EventKind.NODE_RETRYING, spec.name, NodeStatus.RUNNING, attempt.number, error
                )
            return
        logger.info("node %s failed: %s", spec.name, error)
        records = [
            NodeRecord(
                spec.name,
                NodeStatus.FAILED,
                attempt.number,
                outcome.started_at,
                outcome.finished_at,
                error,
                history=ledger.history(spec.name, tried),
                provenance=ledger.provenance(spec.name, spec.deps, None),
                tables=self.failed_tables(spec.name),
            )
        ]
        self.commits.add(records + self.skip_downstream(spec.name))

    def skip_downstream(self, failed: str) -> list[NodeRecord]:
        """The records of the nodes that a failure of ``failed`` skips."""
        if self.expansions and self.item_ended(failed):
            return []  # a map's item: its map ends once all its items have
        skipped = self.schedule.ready.fail(failed)
        self.provisional.difference_update(skipped)
        return [self.ledger.skipped(name, failed) for name in skipped]

    # -- timers -------------------------------------------------------------

    def seconds_to_next_timer(self) -> float | None:
        deadlines = self.deadlines
        # Deadlines of attempts that already returned are dropped lazily, here.
        while deadlines and not self.is_running(deadlines.first()):
            deadlines.pop()
        soonest = deadlines.next_at()  # once per wake-up: no lists built
        at = self.schedule.retries.next_at()
        if at is not None and (soonest is None or at < soonest):
            soonest = at
        if self.starts is not None:
            at = self.starts.next_at(self.running)
            if at is not None and (soonest is None or at < soonest):
                soonest = at
        if soonest is None:
            return None
        return max(0.0, soonest - time.monotonic())

    def is_running(self, attempt: Attempt) -> bool:
        return self.running.get(attempt.node) is attempt

    def fire_timers(self) -> None:
        now = time.monotonic()
        self.schedule.fire(now)
        if self.deadlines:
            for attempt in self.deadlines.pop_due(now):
                if self.is_running(attempt):  # an attempt overran its timeout
                    self.abandon(attempt)
        # Start records of the attempts still running; a store that failed gets no more.
        if self.starts is not None and self.commits.error is None:
            due = self.starts.due(now, self.running)
            if due:
                self.commits.add([self.ledger.running_record(*item) for item in due])

    def abandon(self, attempt: Attempt) -> None:
        """Fail an attempt that overran its timeout, and stop it where the executor can."""
        del self.running[attempt.node]  # as on_result takes a returned attempt off
        self.schedule.gate.release(attempt.node)
        # The store refused its start record: the node already failed with the store's error.
        counts = self.commits.error is None or attempt.node not in self.commits.refused
        # A process pool terminates the worker, asyncio cancels the task, Dask
        # cancels it; a thread cannot be stopped and runs on, its result discarded.
        future = attempt.future  # read once: it is let go of as it finishes (launcher)
        stopped = future is not None and future.cancel()
        if not stopped:
            self.launcher.abandoned()  # a pool that queues must not queue behind it
        timeout = self.specs[attempt.node].timeout
        what = "it was cancelled" if stopped else "it was abandoned and runs on until it returns"
        error = NodeTimeoutError(
            f"node '{attempt.node}' attempt {attempt.number} exceeded its timeout of "
            f"{timeout}s; {what}"
        )
        if counts:
            self.on_failed_attempt(attempt, failure(error, attempt.started_at))

    # -- reporting ----------------------------------------------------------

    def emit(
        self,
        kind: EventKind,
        node: str,
        status: NodeStatus,
        attempt: int,
        error: ErrorInfo | None,
    ) -> None:
        assert self.on_event is not None
        done = self.ledger.done
        self.on_event(RunEvent(kind, node, status, attempt, error, done, len(self.specs)))

    def result(self) -> RunResult:
        states = self.ledger.states
        statuses = {state.status for state in states.values()}
        status = RunStatus.COMPLETED if statuses <= {NodeStatus.COMPLETED} else RunStatus.FAILED
        waits = {} if self.waits is None else dict(self.waits.open)
        if waits and self.commits.error is None:
            status = RunStatus.SUSPENDED
        return RunResult(
            self.run_id, self.dag.name, status, states, self.ledger.data, self.ledger.reasons, waits
        )
