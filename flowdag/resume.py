"""Plan a run from what the store holds. Pure: no I/O, no threads.

A node whose completion the store holds is never run again: its output comes
from the store; unless that output was kept by reference, its blob is gone
(deleted, expired) and a node still to run needs it (`rerun_missing_blobs`).
Every other node (pending, running at a crash, failed, skipped) runs. A stored
run must match the DAG it is resumed with; otherwise the outputs it holds may
not mean what the DAG's nodes expect, so the differences are an error unless
the caller accepts them.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import UTC, datetime

import networkx as nx

from flowdag.dag import DAG
from flowdag.errors import WorkflowChangedError
from flowdag.refs import Ref
from flowdag.state import NodeState, NodeStatus, RunState
from flowdag.stores._refwalk import refs_in

__all__ = ["Plan", "plan_run", "rerun_missing_blobs"]


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
            nodes={name: NodeState(deps=dag.deps(name)) for name in dag.nodes},
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
        state = RunState(
            run_id,
            stored.workflow,
            nodes={
                name: NodeState(deps=dag.deps(name))
                if name in stale or name not in stored.nodes
                else stored.nodes[name]
                for name in dag.nodes
            },
            data=stored.data,
            metadata=stored.metadata,
        )
    completed = {n for n, node in state.nodes.items() if node.status is NodeStatus.COMPLETED}
    return Plan(state, completed, changes, needs_save=bool(changes))


def rerun_missing_blobs(
    dag: DAG, plan: Plan, readable: Callable[[Ref], bool]
) -> list[tuple[str, str]]:
    """Mark for running again each completed node whose Ref output is not ``readable``
    and whose output a node still to run needs; return those nodes and why.

    A node run again needs its own inputs, so their blobs are checked in turn.
    The node keeps its attempts and history (its attempt numbers go on).
    """
    graph = dag.graph
    completed = plan.completed
    nodes = plan.state.nodes
    rerun: list[tuple[str, str]] = []
    needed = [n for n in sorted(completed) if any(s not in completed for s in graph.succ[n])]
    while needed:
        name = needed.pop()
        if name not in completed:
            continue
        # Refs passed on inside an output count too: the node that wrote the blob
        # is found by walking back through the nodes run again.
        lost = [ref for ref in refs_in(nodes[name].output) if not readable(ref)]
        if not lost:
            continue
        completed.discard(name)
        stored = nodes[name]
        nodes[name] = NodeState(attempts=stored.attempts, deps=stored.deps, history=stored.history)
        waiting = sorted(s for s in graph.succ[name] if s not in completed)
        rerun.append(
            (
                name,
                f"its output's blob {lost[0].uri} is missing or expired, and "
                f"{', '.join(repr(s) for s in waiting[:3])} need it",
            )
        )
        needed.extend(p for p in graph.pred[name] if p in completed)
    return rerun


def _differences(dag: DAG, stored: RunState) -> tuple[list[str], set[str]]:
    """Human-readable differences, and the nodes whose stored results are stale."""
    changes = []
    changed: set[str] = set()
    for name in stored.nodes:
        if name not in dag:
            changes.append(f"node '{name}' was removed")
    for name in dag.nodes:
        node = stored.nodes.get(name)
        if node is None:
            changes.append(f"node '{name}' is new")
            changed.add(name)
        elif set(node.deps) != set(dag.deps(name)):
            before = ", ".join(sorted(node.deps)) or "none"
            after = ", ".join(sorted(dag.deps(name))) or "none"
            changes.append(f"node '{name}' depended on [{before}], now on [{after}]")
            changed.add(name)
    # Whatever depends on a changed node may have been computed from stale inputs.
    stale = set(changed)
    for name in changed:
        stale.update(nx.descendants(dag.graph, name))
    return changes, stale
