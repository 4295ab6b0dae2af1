"""Plan a run from what the store holds. Pure: no I/O, no threads.

`plan_call` is everything `flowdag.run` decides before any node runs, and
nothing else: ``flowdag explain --plan`` calls it too, so the two agree. It
takes the stored run (or None) and the DAG's code fingerprints, and gives
each node a verdict (`flowdag._decide`): ``run`` (with the reason),
``reuse`` (its stored output holds) or ``provisional`` (completed, but some
node upstream runs: it runs only if an input it read comes out different,
decided when its deps are done: early cutoff).

A stored run must match the DAG it is resumed with; otherwise the outputs it
holds may not mean what the DAG's nodes expect, so the structural differences
are an error unless the caller accepts them (`plan_run`); accepted, they are
reasons to run. A reused output kept by reference whose blob is gone
(deleted, expired) while a node that may run needs it makes its node run
again too.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass, field
from datetime import UTC, datetime

from flowdag._decide import Verdict, decide
from flowdag._fingerprint import Fingerprint
from flowdag._maps import map_of
from flowdag.dag import CODE_CHANGE_POLICIES, DAG
from flowdag.errors import InvalidArgumentError, InvalidArgumentTypeError, WorkflowChangedError
from flowdag.refs import Ref
from flowdag.state import NodeState, NodeStatus, Reason, RunState
from flowdag.stores._refwalk import refs_in

__all__ = ["Plan", "check_rerun", "plan_call", "plan_run"]

#: Every node of a new run runs for this reason (one object, shared).
_NEW_RUN = Verdict("run", Reason("new", "first run of this run id"))


@dataclass(slots=True)
class Plan:
    """What a run starts from."""

    state: RunState
    #: Nodes whose completion is stored: they are not run.
    completed: set[str] = field(default_factory=set)
    #: Differences between the stored run and the DAG (accepted ones).
    changes: list[str] = field(default_factory=list)
    #: Whether ``state`` must be saved whole before any node runs.
    needs_save: bool = False
    #: Nodes whose stored result an accepted structural change makes stale, and why they run.
    structural: dict[str, Reason] = field(default_factory=dict)
    #: Node -> its verdict (`plan_call`): run, reuse or provisional, and why.
    verdicts: Mapping[str, Verdict] = field(default_factory=dict)
    #: What the caller should log: accepted changes, lost blobs, code changes let pass.
    warnings: list[str] = field(default_factory=list)
    #: Node -> its code fingerprint, as recorded with each completion.
    fingerprints: Mapping[str, Fingerprint] = field(default_factory=dict)


def plan_call(
    dag: DAG,
    stored: RunState | None,
    run_id: str,
    *,
    allow_changes: bool,
    fingerprints: Mapping[str, Fingerprint],
    on_code_change: str = "rerun",
    rerun: str | None = None,
    rerun_from: Iterable[str] = (),
    readable: Callable[[Ref], bool] | None = None,
) -> Plan:
    """All `flowdag.run` plans before running anything: verdicts, and what to log. Writes nothing.

    ``plan.completed`` holds the nodes reused (``reuse`` verdicts). ``readable``
    tells whether a Ref's blob can be read (None: every one can).

    Raises:
        InvalidArgumentError: ``on_code_change`` or ``rerun`` is not a value of
            theirs, ``rerun_from`` names an unknown node.
        WorkflowChangedError: as `plan_run`.
    """
    rerun_from = check_rerun(dag, on_code_change, rerun, rerun_from)
    plan = plan_run(dag, run_id, stored, allow_changes=allow_changes)
    plan.fingerprints = fingerprints
    plan.warnings.extend(f"accepted change: {change}" for change in plan.changes)
    if stored is None:
        plan.verdicts = dict.fromkeys(dag.nodes, _NEW_RUN)
        return plan
    # Node -> its policy: its own on_code_change=, else the run's ("rerun" when missing).
    modes = {n: spec.on_code_change for n, spec in dag.specs.items() if spec.on_code_change}
    if on_code_change != "rerun":
        modes = {n: modes.get(n, on_code_change) for n in dag.nodes}
    verdicts = decide(
        dag,
        plan.state,
        fingerprints,
        on_code_change=modes,
        rerun=rerun,
        rerun_from=rerun_from,
        structural=plan.structural,
    )
    if readable is not None:
        # A lost blob is written again by running its node; nothing else changed,
        # so the nodes that read the lost output keep their verdicts (as before
        # provenance): a rerun that gives another output shows on the next resume.
        for name, why in _lost_blobs(dag, plan.state, verdicts, readable):
            verdicts[name] = Verdict("run", Reason("new", why))
            plan.warnings.append(f"node '{name}' runs again: {why}")
    plan.verdicts = verdicts
    plan.completed = {name for name, verdict in verdicts.items() if verdict.action == "reuse"}
    plan.warnings.extend(v.warning for v in verdicts.values() if v.warning is not None)
    return plan


def check_rerun(
    dag: DAG, on_code_change: object, rerun: object, rerun_from: object
) -> tuple[str, ...]:
    """Check ``run()``'s ``on_code_change``, ``rerun`` and ``rerun_from``; the latter as a tuple.

    Raises:
        InvalidArgumentError: a value out of range, or an unknown node.
        InvalidArgumentTypeError: ``rerun_from`` is not node names.
    """
    if on_code_change not in CODE_CHANGE_POLICIES:
        raise InvalidArgumentError(
            f"on_code_change must be one of {', '.join(map(repr, CODE_CHANGE_POLICIES))}, "
            f"not {on_code_change!r}"
        )
    if rerun is not None and rerun != "failed":
        raise InvalidArgumentError(
            f'rerun must be "failed" (run the failed and skipped nodes again) or None, '
            f"not {rerun!r}; to run a node and its descendants again, use rerun_from=[node]"
        )
    names = (rerun_from,) if isinstance(rerun_from, str) else rerun_from
    if not isinstance(names, Iterable):
        raise InvalidArgumentTypeError(
            f"rerun_from must be node names, not {type(rerun_from).__name__}"
        )
    names = tuple(names)
    for name in names:
        if not isinstance(name, str):
            raise InvalidArgumentTypeError(f"rerun_from must hold node names, not {name!r}")
        if name not in dag:
            known = ", ".join(f"'{n}'" for n in dag.nodes[:5])
            more = ", ..." if len(dag) > 5 else ""
            raise InvalidArgumentError(
                f"rerun_from names node '{name}', which workflow '{dag.name}' does not have "
                f"(it has {known}{more})"
            )
    return names


def plan_run(dag: DAG, run_id: str, stored: RunState | None, *, allow_changes: bool) -> Plan:
    """Plan a new run (``stored`` is None) or the resume of a stored one.

    Raises:
        WorkflowChangedError: the stored run belongs to another workflow, or its
            nodes or dependencies differ from the DAG's and ``allow_changes`` is false.
    """
    if stored is None:
        state = RunState(
            run_id,
            dag.name,
            nodes=_pending(dag),
            metadata={"created_at": datetime.now(UTC).isoformat(timespec="seconds")},
        )
        return Plan(state, needs_save=True)
    if stored.workflow != dag.name:
        raise WorkflowChangedError(
            f"run '{run_id}' belongs to workflow '{stored.workflow}', not '{dag.name}'; "
            "use another run id"
        )
    changes, stale = _differences(dag, stored)
    if changes and not allow_changes:
        raise WorkflowChangedError(
            f"run '{run_id}' was stored by a different version of workflow '{dag.name}': "
            + "; ".join(changes)
            + ". Use a new run id, or pass allow_changes=True to accept "
            "the changes: new and changed nodes and their dependents run again, "
            "removed ones are dropped"
        )
    state = stored
    if changes:
        nodes = {
            name: _reset(dag, name, stored.nodes.get(name))
            if name in stale or name not in stored.nodes
            else stored.nodes[name]
            for name in dag.nodes
        }
        if dag.maps:
            # A map's items stay, its map's or not: its expansion reuses those whose
            # item, inputs and code are unchanged, as after any other change.
            nodes.update(
                (name, node)
                for name, node in stored.nodes.items()
                if name not in nodes and map_of(name, dag.maps) is not None
            )
        state = RunState(
            run_id, stored.workflow, nodes=nodes, data=stored.data, metadata=stored.metadata
        )
    completed = {n for n, node in state.nodes.items() if node.status is NodeStatus.COMPLETED}
    return Plan(state, completed, changes, needs_save=bool(changes), structural=stale)


def _pending(dag: DAG) -> dict[str, NodeState]:
    """Node -> its state in a new run: pending, one state shared by the nodes with
    the same deps (a fan-out's leaves share one). Nothing changes a `NodeState`
    in place: a node's next state replaces it, and a result gives each node still
    pending its own (`flowdag._ledger.Ledger.own_pending`)."""
    shared: dict[tuple[str, ...], NodeState] = {}
    nodes = {}
    specs = dag.specs
    for name in dag.nodes:  # in the order the run's states keep
        deps = specs[name].deps
        state = shared.get(deps)
        if state is None:
            state = shared[deps] = NodeState(deps=deps)
        nodes[name] = state
    return nodes


def _reset(dag: DAG, name: str, stored: NodeState | None) -> NodeState:
    """A stale node pending again; its provenance (digests, audit) stays."""
    return NodeState(deps=dag.deps(name), provenance=None if stored is None else stored.provenance)


def _differences(dag: DAG, stored: RunState) -> tuple[list[str], dict[str, Reason]]:
    """Human-readable differences, and the nodes whose stored results are stale, and why.

    A new node runs as ``new``; one whose dependencies changed as
    ``code_changed`` (its declaration is code; the detail names the change);
    every node downstream of those as ``input_changed``, naming its dep on the
    way: its stored output may have been computed from inputs that change.
    """
    changes = []
    stale: dict[str, Reason] = {}
    specs, nodes = dag.specs, stored.nodes
    if len(nodes) != len(specs) or not specs.keys() >= nodes.keys():  # all at once, in C
        for name in nodes:
            # A map's items are stored as nodes, and belong to their map node (`flowdag._maps`).
            if name not in specs and not (dag.maps and map_of(name, dag.maps) is not None):
                changes.append(f"node '{name}' was removed")
    for name in dag.nodes:
        node = nodes.get(name)
        if node is None:
            changes.append(f"node '{name}' is new")
            stale[name] = Reason("new", "a node the stored run did not have (allow_changes=True)")
        elif node.deps != (deps := specs[name].deps) and set(node.deps) != set(deps):
            before = ", ".join(sorted(node.deps)) or "none"
            after = ", ".join(sorted(deps)) or "none"
            changes.append(f"node '{name}' depended on [{before}], now on [{after}]")
            stale[name] = Reason(
                "code_changed",
                f"its dependencies changed from [{before}] to [{after}] (allow_changes=True)",
            )
    if stale:
        # Whatever depends on a changed node may have been computed from stale inputs;
        # dag.nodes is in topological order, so each dep is decided before its dependents.
        for name in dag.nodes:
            if name in stale:
                continue
            dep = next((d for d in dag.deps(name) if d in stale), None)
            if dep is not None:
                stale[name] = Reason(
                    "input_changed",
                    f"its dep '{dep}' runs again after a change of the workflow "
                    "(allow_changes=True)",
                )
    return changes, stale


def _lost_blobs(
    dag: DAG, state: RunState, verdicts: Mapping[str, Verdict], readable: Callable[[Ref], bool]
) -> list[tuple[str, str]]:
    """Reused or provisional nodes whose output's blob is unreadable while a node that
    may run needs it, walking back through the nodes that run: (node, why) each."""
    # Only what a node that may run reads can be needed: none when all is reused.
    running = [name for name, verdict in verdicts.items() if verdict.action != "reuse"]
    if not running:
        return []
    kept = {n for n, v in verdicts.items() if v.action != "run"}
    reused = {n for n, v in verdicts.items() if v.action == "reuse"}
    nodes = state.nodes
    lost: list[tuple[str, str]] = []
    needed = sorted({dep for name in running for dep in dag.deps(name) if dep in kept})
    while needed:
        name = needed.pop()
        if name not in kept:
            continue
        # Refs passed on inside an output count too: the node that wrote the blob
        # is found by walking back through the nodes run again.
        gone = [ref for ref in refs_in(nodes[name].output) if not readable(ref)]
        if not gone:
            continue
        kept.discard(name)
        reused.discard(name)
        waiting = sorted(s for s in dag.dependents(name) if s not in reused)
        lost.append(
            (
                name,
                f"its output's blob {gone[0].uri} is missing or expired, and "
                f"{', '.join(repr(s) for s in waiting[:3])} need it",
            )
        )
        needed.extend(p for p in dict.fromkeys(dag.deps(name)) if p in kept)
    return lost
