"""Why each node of a stored run holds what it holds, from the stored records alone.

Design
------
A run's records say, for every node that ran under a release with provenance
(run header format 4), why it last ran: ``Provenance.reason``, a
`flowdag.state.Reason` written with the node's completion (``new``,
``code_changed`` naming the function or helper and its file, ``input_changed``
naming the dep, ``manual`` with the reason given to ``mark_done``, ...). A node
reused by a later call keeps its record, so its reason is the one of the call
that computed its output, and ``finished_at`` says when that was.

Nodes that hold no output are explained by their status, in the codes a
resume would give them (`flowdag.state.REASON_CODES`): a failed or skipped or
never-run node runs again as ``new`` (the detail gives the error line, or the
upstream nodes whose failure skipped it), one stored as running when its
process died as ``interrupted``, an invalidated one as ``forced`` (its stored
reason). A node that a live process runs right now has no code yet.

Nothing here imports the workflow or reads an output: `explain_state` is pure
and works on what `flowdag.stores.Store.load_statuses` returns.

`plan_stored` is the other direction: what `flowdag.run` would do with a
stored run, given the DAG about to run. It goes through the steps of
`flowdag.run` with the same functions (`flowdag.resume.check_rerun`,
`flowdag._fingerprint.node_fingerprints`, `flowdag.resume.plan_call` and the
store's blob reader), minus the run lock and anything that writes, so the plan
is the one the run would make.
"""

from __future__ import annotations

import heapq
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import TYPE_CHECKING, Any

from flowdag.dag import DAG
from flowdag.errors import RunLockedError, RunNotFoundError
from flowdag.state import NodeState, NodeStatus, Reason, RunState, RunStatus
from flowdag.stores.base import Store, check_run_id

if TYPE_CHECKING:
    from flowdag.resume import Plan
    from flowdag.waits import Wait

__all__ = [
    "INTERRUPTED",
    "Explanation",
    "PlannedRun",
    "explain_state",
    "explain_stored",
    "plan_stored",
    "topological",
]

#: The status shown for a node stored as running when no live process holds its run.
INTERRUPTED = "interrupted"

#: The reason of a completed node stored by a release before provenance (format 3 or older).
NO_REASON = Reason("reused", "recorded by an earlier release: no reason stored")


@dataclass(frozen=True, slots=True)
class Explanation:
    """One node of a stored run: its status, why it holds what it holds, and when it ran.

    ``status`` is the stored status, or ``"interrupted"`` for a node stored as
    running in a run no live process holds. ``reason`` is None only for a node a
    live process runs now. ``finished_at`` is when its last attempt ended (None
    if it never did).
    """

    node: str
    status: str
    reason: Reason | None
    finished_at: datetime | None


def explain_state(
    state: RunState, *, live: bool = False, waits: Mapping[str, Wait] | None = None
) -> list[Explanation]:
    """Explain every node of ``state``, in topological order, ties by name (`topological`).

    ``live``: a live process holds the run, so a node stored as running is
    running now (else it was interrupted by a crash). ``waits``: the run's open
    waits by node (`flowdag.list_waits`); a pending node with one waits for
    input (its status ``waiting``), and its detail says since when and until when.
    """
    waits = waits or {}
    explained = []
    for name in topological(state):
        node = state.nodes[name]
        wait = waits.get(name)
        if wait is not None and node.status in (NodeStatus.PENDING, NodeStatus.WAITING):
            explained.append(Explanation(name, "waiting", _waiting(wait), node.finished_at))
        else:
            status = _status(node, live)
            explained.append(
                Explanation(name, status, _reason(state, name, live), node.finished_at)
            )
    return explained


def explain_stored(store: Store, run_id: str) -> dict[str, Reason | None]:
    """``{node: Reason}`` for a stored run, in `topological` order; outputs are not read.

    Raises:
        RunNotFoundError: the store holds no such run, or it expired.
        CorruptStateError: the run's records are damaged.
    """
    from flowdag.waits import list_waits

    state = store.load_statuses(run_id)
    live = store.lock_holder(state.run_id) is not None
    waits = {wait.node: wait for wait in list_waits(store, state.run_id)}
    return {item.node: item.reason for item in explain_state(state, live=live, waits=waits)}


@dataclass(frozen=True, slots=True)
class PlannedRun:
    """What `flowdag.run` would do with a run: its plan, and the run as it was stored.

    ``plan.verdicts`` gives each node's `flowdag._decide.Verdict`;
    ``plan.warnings`` what the run would log. ``status`` is the stored run's
    status as ``flowdag status`` shows it (``interrupted`` when unfinished: no
    live process holds it; None: not stored, the run would start afresh) and
    ``nodes`` each stored node's status and ``finished_at``, read before planning.
    """

    plan: Plan
    status: str | None
    nodes: Mapping[str, tuple[str, datetime | None]]


def plan_stored(
    dag: DAG,
    store: Store | None,
    run_id: str,
    *,
    allow_changes: bool = False,
    on_code_change: str = "rerun",
    rerun: str | None = None,
    rerun_from: Iterable[str] = (),
) -> PlannedRun:
    """What ``flowdag.run(dag, run_id=run_id, store=store, ...)`` would run and why.

    Runs nothing and writes nothing; ``store`` None: there is no store yet.
    The options are those of `flowdag.run`.

    Raises:
        InvalidRunIdError: ``run_id`` is not a valid run id.
        RunLockedError: a live process runs the run now (run would be refused).
        WorkflowChangedError, InvalidArgumentError, InvalidArgumentTypeError:
            as `flowdag.run` raises them.
    """
    # Imported here: the runner's machinery, which the rest of this module does not need.
    from flowdag._fingerprint import Fingerprinter, node_fingerprints
    from flowdag.resume import check_rerun, plan_call
    from flowdag.runner import blob_reader

    run_id = check_run_id(run_id)
    options: dict[str, Any] = {
        "allow_changes": allow_changes,
        "fingerprints": node_fingerprints(dag, Fingerprinter()),
        "on_code_change": on_code_change,
        "rerun": rerun,
        "rerun_from": check_rerun(dag, on_code_change, rerun, rerun_from),
    }
    if store is None:
        return PlannedRun(plan_call(dag, None, run_id, **options), None, {})
    try:
        stored: RunState | None = store.load(run_id)  # as run() loads it
    except RunNotFoundError:
        stored = None
    holder = store.lock_holder(run_id)
    if holder is not None:
        who = f"pid {holder}" if holder else "another process"
        raise RunLockedError(
            f"run {run_id!r} is running now ({who}), so flowdag run would be refused; "
            f"flowdag explain {run_id} shows where it stands"
        )
    if stored is None:
        status, nodes = None, {}
    else:  # read before planning, which may reset nodes of the state it is given
        # As flowdag status shows it: unfinished with no live process, it was interrupted.
        unfinished = stored.status in (RunStatus.PENDING, RunStatus.RUNNING)
        status = INTERRUPTED if unfinished else str(stored.status)
        nodes = {name: (str(node.status), node.finished_at) for name, node in stored.nodes.items()}
    plan = plan_call(dag, stored, run_id, readable=blob_reader(store), **options)
    return PlannedRun(plan, status, nodes)


def topological(state: RunState) -> list[str]:
    """The run's nodes, each after its deps (from the stored header), ties by name.

    By name, not in stored order, which differs between store kinds: one run
    reads the same from every store. Deps the run does not hold are ignored;
    nodes on a cycle (never in a stored run, but a damaged one must still be
    shown) come last, by name.
    """
    nodes = state.nodes
    waiting = {name: {d for d in node.deps if d in nodes} for name, node in nodes.items()}
    users: dict[str, list[str]] = {name: [] for name in nodes}
    for name, deps in waiting.items():
        for dep in deps:
            users[dep].append(name)
    ready = [name for name, deps in waiting.items() if not deps]
    heapq.heapify(ready)
    order: list[str] = []
    while ready:
        name = heapq.heappop(ready)
        order.append(name)
        for user in users[name]:
            waiting[user].discard(name)
            if not waiting[user]:
                heapq.heappush(ready, user)
    if len(order) < len(nodes):
        placed = set(order)
        order.extend(sorted(name for name in nodes if name not in placed))
    return order


def _status(node: NodeState, live: bool) -> str:
    if node.status is NodeStatus.RUNNING and not live:
        return INTERRUPTED
    return str(node.status)


def _reason(state: RunState, name: str, live: bool) -> Reason | None:
    node = state.nodes[name]
    stored = node.provenance.reason if node.provenance is not None else None
    status = node.status
    if status is NodeStatus.COMPLETED:
        return stored or NO_REASON
    if status is NodeStatus.RUNNING:
        if live:
            return None  # its reason is committed with it
        return Reason(
            "interrupted",
            f"attempt {node.attempts} was in flight when the run stopped (a crash or a kill)",
        )
    if status is NodeStatus.FAILED:
        error = "no error stored" if node.error is None else _one_line(str(node.error))
        # Its record says why that call ran it (a skipped or running record's is stale).
        ran = "" if stored is None else f" (it ran: {stored.code}: {stored.detail})"
        return Reason("new", f"failed at attempt {node.attempts}: {error}{ran}")
    if status is NodeStatus.SKIPPED:
        culprits = _failed_upstream(state, name)
        if not culprits:
            return Reason("new", "skipped: an upstream node failed")
        listed = ", ".join(repr(c) for c in culprits)
        nodes = "node" if len(culprits) == 1 else "nodes"
        return Reason("new", f"skipped: upstream {nodes} {listed} failed")
    # Pending: invalidated (its stored reason says by whom), or never run.
    if stored is not None and stored.code == "forced":
        return stored
    # Worded as flowdag._decide words them for the next resume.
    if node.attempts:
        return Reason("new", "it has no completed output")
    return Reason("new", "it never ran")


def _waiting(wait: Wait) -> Reason:
    """An input node waiting for a value: since when, and what its deadline does."""
    since = f"waiting for input since {_utc(wait.started_at)}"
    if wait.provided_at is not None:
        return Reason(
            "new", f"{since}; a value came at {_utc(wait.provided_at)}: the next run takes it"
        )
    if wait.expires_at is None:
        return Reason("new", f"{since}; no deadline (flowdag provide answers it)")
    then = "it takes its default" if wait.has_default else "it fails (InputTimeoutError)"
    return Reason("new", f"{since}; deadline {_utc(wait.expires_at)}, then {then}")


def _utc(moment: datetime) -> str:
    return moment.astimezone(UTC).strftime("%Y-%m-%d %H:%M:%S UTC")


def _failed_upstream(state: RunState, name: str) -> list[str]:
    """The failed nodes upstream of a skipped node, through skipped nodes, by name."""
    nodes = state.nodes
    seen: set[str] = set()
    failed: set[str] = set()
    stack = list(nodes[name].deps)
    while stack:
        dep = stack.pop()
        if dep in seen or dep not in nodes:
            continue
        seen.add(dep)
        status = nodes[dep].status
        if status is NodeStatus.FAILED:
            failed.add(dep)
        elif status is NodeStatus.SKIPPED:
            stack.extend(nodes[dep].deps)
    return sorted(failed)


def _one_line(text: str) -> str:
    return "; ".join(line.strip() for line in text.splitlines() if line.strip())
