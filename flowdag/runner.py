"""`run()`: drive a DAG to the end, making each finished node durable as it goes.

This module holds the public face: argument checks, opening the store and the
executor, planning a resume, and the result. The loop itself, with its design
note (group commit, acknowledgement before release, timers), is in
`flowdag._driver`.
"""

from __future__ import annotations

import logging
import uuid
from collections.abc import Callable, Iterable, Mapping
from contextlib import ExitStack
from contextvars import ContextVar
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from enum import StrEnum
from typing import TYPE_CHECKING, Any

from flowdag._cache import RunCache, check_refresh
from flowdag._fingerprint import Fingerprint, Fingerprinter, each_fingerprint, node_fingerprints
from flowdag._gcpause import cyclic_gc_paused
from flowdag._seal import (
    SealedNodes,
    SealedOutputs,
    reuse_sealed,
    seal_completed,
    sealed_result,
)
from flowdag._units import Duration, Size, parse_duration, parse_size
from flowdag.dag import DAG, check_pools
from flowdag.errors import (
    FlowdagError,
    InvalidArgumentError,
    InvalidArgumentTypeError,
    RunFailedError,
    RunNotFoundError,
    StoreError,
)
from flowdag.executors import Executor, capabilities_of, make_executor
from flowdag.executors.pools import default_workers
from flowdag.refs import LoadedOnRead, Ref
from flowdag.resume import check_rerun, plan_call
from flowdag.state import ErrorInfo, NodeState, NodeStatus, Reason, RunState, RunStatus
from flowdag.stores.base import Store, check_run_id
from flowdag.waits import Wait
from flowdag.workflow import Workflow

if TYPE_CHECKING:
    from flowdag._ledger import Ledger

__all__ = ["EventKind", "RunEvent", "RunResult", "blob_reader", "new_run_id", "run"]

logger = logging.getLogger("flowdag")


class EventKind(StrEnum):
    """What a `RunEvent` reports. Members equal their strings (``"node_started"``...)."""

    NODE_STARTED = "node_started"  # an attempt starts
    NODE_RETRYING = "node_retrying"  # an attempt failed; the node will be retried
    NODE_FINISHED = "node_finished"  # the node completed, failed or was skipped, durably
    NODE_WAITING = "node_waiting"  # an input node waits for a value (`flowdag.provide_input`)


@dataclass(frozen=True, slots=True)
class RunEvent:
    """Progress of a run, passed to ``run(..., on_event=...)`` on the driver thread.

    ``kind`` is an `EventKind` (a `StrEnum`: ``event.kind == "node_started"`` works).
    ``attempt`` counts the node's attempts over the run's whole life, resumes
    included: it is the ``ctx.attempt`` of the attempt that started, failed or
    finished, and equals ``NodeState.attempts`` once the node has finished (for a
    skipped node, the attempts it had before). ``done`` counts finished nodes,
    including those completed before a resume.
    """

    kind: EventKind
    node: str
    status: NodeStatus
    attempt: int
    error: ErrorInfo | None
    done: int
    total: int


@dataclass(slots=True)
class RunResult:
    """What a run ended with. `run` returns it instead of raising for node failures."""

    run_id: str
    workflow: str
    status: RunStatus
    #: Node -> its state. On a store on disk, a run that completes reads them from
    #: the store when first read (run again with the same code and options, its
    #: ``data`` too), as they were returned: `RunChangedError` if another process
    #: or store wrote the run meanwhile.
    nodes: Mapping[str, NodeState]
    data: Mapping[str, Any] = field(default_factory=dict)
    #: Node -> why it ran or was reused in this call (see `explain`).
    reasons: dict[str, Reason] = field(default_factory=dict)
    #: Input node -> its open `flowdag.Wait` (status ``SUSPENDED``); the key is
    #: set only for a wait that started in this call.
    waits: dict[str, Wait] = field(default_factory=dict)
    _outputs: LoadedOnRead | None = field(default=None, init=False, repr=False, compare=False)

    @property
    def ok(self) -> bool:
        """True when every node completed."""
        return self.status is RunStatus.COMPLETED

    @property
    def outputs(self) -> Mapping[str, Any]:
        """Completed node -> its output; one kept by reference is loaded when first read."""
        if self._outputs is None:
            nodes = self.nodes
            self._outputs = LoadedOnRead(
                SealedOutputs(nodes)  # each read from the store when first read
                if type(nodes) is SealedNodes
                else {n: s.output for n, s in nodes.items() if s.status is NodeStatus.COMPLETED}
            )
        return self._outputs

    @property
    def refs(self) -> dict[str, Ref]:
        """Node -> the `flowdag.Ref` of its output, for outputs kept by reference; reads no blob."""
        return {
            n: s.output
            for n, s in self.nodes.items()
            if s.status is NodeStatus.COMPLETED and type(s.output) is Ref
        }

    @property
    def node_status(self) -> dict[str, NodeStatus]:
        """Node -> its status."""
        if type(self.nodes) is SealedNodes:  # all completed: no need to read them
            return self.nodes.statuses()
        return {n: s.status for n, s in self.nodes.items()}

    @property
    def errors(self) -> dict[str, ErrorInfo]:
        """Failed node -> why (type name, message, traceback text)."""
        return {n: s.error for n, s in self.nodes.items() if s.error is not None}

    def explain(self) -> dict[str, Reason]:
        """Node -> why it ran or was reused in this call, as a `Reason` (code, detail).

        A node that never got to run because a dep failed says so in its detail.
        """
        return dict(self.reasons)

    def raise_on_failure(self) -> None:
        """Raise `RunFailedError` naming the failed nodes, if any node failed.

        A run that completed, or is suspended with no node failed, raises nothing.
        """
        if self.ok:
            return
        failed = [n for n, s in self.nodes.items() if s.status is NodeStatus.FAILED]
        if not failed and self.status is RunStatus.SUSPENDED:
            return
        detail = "; ".join(f"{n}: {self.nodes[n].error}" for n in failed[:5])
        more = f" and {len(failed) - 5} more" if len(failed) > 5 else ""
        raise RunFailedError(
            f"run '{self.run_id}' of workflow '{self.workflow}' failed: {detail}{more}; "
            "fix the cause and run again with the same run id to resume"
        )


#: Set by ``flowdag run FILE`` while it imports FILE: every run finished meanwhile is
#: added, so the CLI can tell that the file ran its workflow itself (a module-level
#: `run` with no ``if __name__ == "__main__":`` guard) and not run it a second time.
runs_at_import: ContextVar[list[RunResult] | None] = ContextVar("runs_at_import", default=None)


def new_run_id() -> str:
    """A fresh, sortable, unique run id such as ``20261122T195300Z-1a2b3c4d``."""
    return f"{datetime.now(UTC):%Y%m%dT%H%M%SZ}-{uuid.uuid4().hex[:8]}"


def run(
    dag_or_workflow: DAG | Workflow,
    *,
    run_id: str | None = None,
    store: Store | str | None = None,
    max_workers: int | None = None,
    executor: str | Executor = "threads",
    allow_changes: bool = False,
    pools: Mapping[str, int] | None = None,
    on_event: Callable[[RunEvent], None] | None = None,
    inline_limit: Size | None = "256KiB",
    ttl: Duration | None = None,
    on_code_change: str = "rerun",
    rerun: str | None = None,
    rerun_from: Iterable[str] = (),
    refresh: bool | Iterable[str] = False,
) -> RunResult:
    """Run a DAG, or resume it when ``store`` already holds ``run_id``.

    Attempts are numbered over the run's life (a resume goes on counting), and
    each call gives every node its ``retries`` afresh.

    Args:
        dag_or_workflow: a built `DAG`, or a `Workflow` to build.
        run_id: the run's id; None makes a new one (see `RunResult.run_id`).
        store: where checkpoints go: a `Store`, a store URL, or None for memory.
        max_workers: attempts in flight at once (default: the executor's).
        executor: ``"threads"``, ``"processes"``, ``"asyncio"``, ``"dask"`` (a local
            Dask cluster), or an `Executor` instance such as `DaskExecutor`.
        allow_changes: resume even if the DAG differs from the stored run.
        pools: pool name -> how many nodes tagged ``pool=`` that name may run at once;
            each overrides the cap of that pool in ``Workflow(name, pools=...)``.
        on_event: called with a `RunEvent` as nodes start, are retried and finish.
        inline_limit: outputs whose encoded size is above this (bytes, or a string
            such as ``"256KiB"``) are kept in the store's blob area, the node's
            record holding a `flowdag.Ref`; None keeps every output inline. A
            node's own ``inline_limit=`` overrides it.
        ttl: the run expires this long after it finishes (a duration such as
            ``"30d"``); expired, it is gone for every reader and `flowdag.gc`
            deletes it. None: it never expires. Each call sets it anew.
        on_code_change: what a resume does with a completed node whose code
            changed since it ran: ``"rerun"`` it, reuse its output with a
            warning (``"warn"``), or reuse it silently (``"ignore"``). A node's
            own ``on_code_change=`` overrides it.
        rerun: ``"failed"`` runs the failed and skipped nodes again and reuses
            every completed one, even one whose code changed.
        rerun_from: node names: these and all their descendants run again.
        refresh: True, or names of cached nodes: they run without looking in the
            cross-run cache, and their new outputs replace its entries.

    Returns:
        The `RunResult`; node failures are in it, not raised.

    Raises:
        InvalidArgumentTypeError: an argument of the wrong type (``dag_or_workflow``,
            ``store``, ``pools``).
        InvalidArgumentError: an argument out of range (``max_workers``, a pool cap,
            ``on_code_change``, ``rerun``), or ``rerun_from`` names an unknown node.
        DAGError: the workflow is not a valid DAG.
        InvalidRunIdError, RunLockedError, StoreError: the store refused the run.
        WorkflowChangedError: the stored run differs from the DAG.
    """
    # Imported here: flowdag._driver imports RunEvent and RunResult from this module.
    from flowdag._driver import _Driver
    from flowdag._run_waits import RunWaits

    dag = dag_or_workflow.build() if isinstance(dag_or_workflow, Workflow) else dag_or_workflow
    if not isinstance(dag, DAG):
        raise InvalidArgumentTypeError(f"run() needs a DAG or a Workflow, not {type(dag).__name__}")
    run_id = new_run_id() if run_id is None else check_run_id(run_id)
    if max_workers is not None and (
        isinstance(max_workers, bool) or not isinstance(max_workers, int) or max_workers < 1
    ):
        raise InvalidArgumentError(f"max_workers must be a whole number >= 1, not {max_workers!r}")
    pools = {**dag.pools, **check_pools(pools)}  # run's caps override the workflow's, per pool
    limit = None if inline_limit is None else parse_size(inline_limit, "inline_limit")
    lifetime = None if ttl is None else _ttl(ttl)
    check_rerun(dag, on_code_change, rerun, rerun_from)
    refreshed = check_refresh(dag, refresh)
    # Whatever is opened here is closed on the way out, even when the next step fails.
    with ExitStack() as opened:
        run_store = _open(store)
        if store is not None and not isinstance(store, Store):
            opened.callback(run_store.close)  # opened from a URL: ours to close
        with run_store.lock(run_id):
            with cyclic_gc_paused():  # a few acyclic objects per node (see flowdag._gcpause)
                fingerprinter = Fingerprinter()  # one per call
                if rerun is None and not rerun_from and not refreshed:
                    # A completed run sealed with this code: nothing to load or plan. Its
                    # fingerprints are made as the seal's digest takes them, none kept.
                    each = each_fingerprint(dag, fingerprinter)
                    sealed = reuse_sealed(run_store, dag, run_id, each, lifetime)
                    if sealed is not None:  # (a store closed on the way out reads it first)
                        return _returned(sealed)
                fingerprints = node_fingerprints(dag, fingerprinter)
                pool = (
                    make_executor(executor, max_workers) if isinstance(executor, str) else executor
                )
                if isinstance(executor, str):
                    opened.callback(pool.shutdown, wait=False)
                workers = max_workers or capabilities_of(pool).max_workers or default_workers()
                stored = _load_or_none(run_store, run_id, fingerprints)
                plan = plan_call(
                    dag,
                    stored,
                    run_id,
                    allow_changes=allow_changes,
                    fingerprints=fingerprints,
                    on_code_change=on_code_change,
                    rerun=rerun,
                    rerun_from=rerun_from,
                    readable=blob_reader(run_store),
                )
                for warning in plan.warnings:
                    logger.warning("run %s: %s", run_id, warning)
                if plan.state.ttl != lifetime:
                    plan.state.ttl = lifetime
                    plan.needs_save = True
                specs = dag.specs.values()
                # Before the save: a new run drops the waits a deleted run of its id left;
                # with accepted changes too: a removed input node's wait is dropped.
                waits = (
                    RunWaits(dag, run_store, run_id, frozenset(plan.completed), stored is None)
                    if plan.changes or dag.inputs
                    else None
                )
                if plan.needs_save:
                    run_store.save(plan.state)
                cache = (
                    RunCache(dag, run_store, run_id, plan.fingerprints, refreshed)
                    if any(spec.cache is not None for spec in specs)
                    else None
                )
                driver = _Driver(
                    dag, plan, run_store, pool, workers, pools, on_event, limit, cache, waits
                )
                # The driver has what it needs of them; the plan's verdicts and the
                # stored run would be kept for the whole run, a few dicts of every node.
                del plan, stored
            driver.drive()
            result = driver.result()
            ledger = driver.ledger
            if not result.ok:  # some node may be pending still: its state, its own
                ledger.own_pending()
            # A store of this call only (store=None) is gone with it: nothing to seal.
            made = None  # (token, expiry) of the seal this call made
            if result.ok and store is not None and driver.commits.error is None:
                made = _seal(run_store, dag, run_id, lifetime, fingerprints, ledger)
            if ledger.forgotten:  # states it let go of (`flowdag._ledger`): read back
                if made is not None:  # when first read, as a sealed run's are
                    reasons, data = ledger.reasons, ledger.data
                    result = sealed_result(run_store, dag, run_id, made, reasons, data)
                else:
                    ledger.recall(_read_back(run_store, run_id, ledger.forgotten))
    if store is None and result.waits:
        logger.warning(
            "run %s is suspended on an in-memory store that is gone now, with its waits; "
            "pass store= (e.g. flowdag.LMDBStore(DIR)) to answer them later",
            run_id,
        )
    return _returned(result)


def _returned(result: RunResult) -> RunResult:
    watching = runs_at_import.get()
    if watching is not None:
        watching.append(result)
    return result


def _seal(
    store: Store,
    dag: DAG,
    run_id: str,
    ttl: timedelta | None,
    fingerprints: Mapping[str, Fingerprint],
    ledger: Ledger,
) -> tuple[bytes, float | None] | None:
    """Seal a run that completed (`flowdag._seal`): the seal's token and expiry, or
    None if it was not sealed; a store that cannot changes nothing."""
    state = RunState(run_id, dag.name, ledger.states, ledger.data, ttl=ttl)
    try:
        return seal_completed(store, dag, state, fingerprints)
    except StoreError as exc:  # the run is complete and durable; the next call plans it
        logger.debug("run %s: not sealed: %s", run_id, exc)
        return None


def _read_back(store: Store, run_id: str, forgotten: int) -> RunState | None:
    """The run as it ended, for the states its ledger let go of; None if the store
    cannot read it (the run failed with it, say: the result still says how)."""
    try:
        # A short ttl may have run out since: the result is the run as it ended.
        return store._load_known(run_id, {}, expired=True)
    except FlowdagError as exc:
        logger.warning(
            "run %s: %d completed nodes are in the store but could not be read back into "
            "the result (%s); their result states hold no output: load the run to see them",
            run_id,
            forgotten,
            exc,
        )
        return None


def _ttl(value: Duration) -> timedelta:
    seconds = parse_duration(value, "ttl")
    if seconds <= 0:
        raise InvalidArgumentError(f"ttl must be above 0 or None, not {value!r}; e.g. '30d'")
    return timedelta(seconds=seconds)


def blob_reader(store: Store) -> Callable[[Ref], bool]:
    """Whether a Ref's blob can be read from ``store`` now (present, not expired)."""
    now = datetime.now(UTC)

    def readable(ref: Ref) -> bool:
        if ref.expires_at is not None and now >= ref.expires_at:
            return False
        return store.blobs.exists(ref.sha256)

    return readable


def _open(store: Store | str | None) -> Store:
    from flowdag.stores import MemoryStore, open_store

    if store is None:
        return MemoryStore()
    if isinstance(store, str):
        return open_store(store)
    if not isinstance(store, Store):
        raise InvalidArgumentTypeError(
            f"store must be a Store or a store URL, not {type(store).__name__}"
        )
    return store


def _load_or_none(
    store: Store, run_id: str, fingerprints: Mapping[str, Fingerprint]
) -> RunState | None:
    try:
        # The stored provenance of unchanged code shares the fingerprints' strings.
        return store._load_known(run_id, fingerprints)
    except RunNotFoundError:
        return None
