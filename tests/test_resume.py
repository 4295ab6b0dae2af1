"""plan_run: what a new or resumed run starts from. Pure: built from RunStates by hand."""

from __future__ import annotations

from datetime import UTC, datetime
from typing import Any

import pytest

from flowdag import (
    DAG,
    ErrorInfo,
    NodeState,
    NodeStatus,
    RunState,
    Workflow,
    WorkflowChangedError,
)
from flowdag.resume import plan_run

C, F, S, P, R = (
    NodeStatus.COMPLETED,
    NodeStatus.FAILED,
    NodeStatus.SKIPPED,
    NodeStatus.PENDING,
    NodeStatus.RUNNING,
)

# extract -> clean -> load -> report, and extract -> stats -> load
DEPS = {
    "extract": [],
    "clean": ["extract"],
    "stats": ["extract"],
    "load": ["clean", "stats"],
    "report": ["load"],
}


def _any(**kwargs: Any) -> int:
    return 1


def _dag(deps: dict[str, list[str]], name: str = "etl") -> DAG:
    wf = Workflow(name)
    for node, node_deps in deps.items():
        wf.add_node(node, _any, deps=node_deps)
    return wf.build()


def _stored(
    statuses: dict[str, NodeStatus],
    deps: dict[str, list[str]] = DEPS,
    workflow: str = "etl",
) -> RunState:
    nodes = {}
    for name, status in statuses.items():
        node = NodeState(
            status=status, attempts=0 if status in (P, S) else 1, deps=tuple(deps[name])
        )
        if status is C:
            node.output = f"out-{name}"
            node.finished_at = datetime(2026, 11, 22, tzinfo=UTC)
        if status is F:
            node.error = ErrorInfo("RuntimeError", "boom")
        nodes[name] = node
    return RunState("r1", workflow, nodes, data={"k": 1}, metadata={"created_at": "x"})


def test_new_run() -> None:
    dag = _dag(DEPS)
    plan = plan_run(dag, "r1", None, allow_changes=False)
    assert plan.needs_save
    assert plan.completed == set()
    assert plan.changes == []
    state = plan.state
    assert (state.run_id, state.workflow) == ("r1", "etl")
    assert list(state.nodes) == dag.nodes
    for name, node in state.nodes.items():
        assert node.status is P
        assert node.attempts == 0
        assert node.output is None
        assert node.deps == tuple(DEPS[name])
    assert state.data == {}
    assert "created_at" in state.metadata


STORED_CASES: list[tuple[str, dict[str, NodeStatus], set[str]]] = [
    # (id, stored statuses, nodes that count as completed: not run again)
    ("all-pending", dict.fromkeys(DEPS, P), set()),
    (
        "crashed-mid-run",
        {"extract": C, "clean": C, "stats": R, "load": P, "report": P},
        {"extract", "clean"},
    ),
    (
        "failed-and-skipped",
        {"extract": C, "clean": F, "stats": C, "load": S, "report": S},
        {"extract", "stats"},
    ),
    ("all-completed", dict.fromkeys(DEPS, C), set(DEPS)),
    ("root-failed", {"extract": F, "clean": S, "stats": S, "load": S, "report": S}, set()),
]


@pytest.mark.parametrize(
    ("statuses", "completed"),
    [case[1:] for case in STORED_CASES],
    ids=[case[0] for case in STORED_CASES],
)
def test_stored_run_only_completed_nodes_are_kept(
    statuses: dict[str, NodeStatus], completed: set[str]
) -> None:
    stored = _stored(statuses)
    plan = plan_run(_dag(DEPS), "r1", stored, allow_changes=False)
    assert plan.completed == completed
    assert plan.changes == []
    assert not plan.needs_save  # nothing changed: the stored run is the plan's state
    assert plan.state is stored
    for name in completed:
        assert plan.state.nodes[name].output == f"out-{name}"
    assert plan.state.data == {"k": 1}


def test_stored_deps_in_another_order_are_not_a_change() -> None:
    deps = {**DEPS, "load": ["stats", "clean"]}
    plan = plan_run(_dag(DEPS), "r1", _stored(dict.fromkeys(DEPS, C), deps), allow_changes=False)
    assert plan.changes == []
    assert plan.completed == set(DEPS)


@pytest.mark.parametrize("allow_changes", [False, True])
def test_other_workflow_name_is_refused(allow_changes: bool) -> None:
    stored = _stored(dict.fromkeys(DEPS, C), workflow="other")
    with pytest.raises(WorkflowChangedError) as info:
        plan_run(_dag(DEPS), "r1", stored, allow_changes=allow_changes)
    message = str(info.value)
    assert "'other'" in message
    assert "'etl'" in message
    assert "'r1'" in message


# The DAG the run is resumed with, against the stored DEPS (all completed).
CHANGE_CASES: list[tuple[str, dict[str, list[str]], list[str], set[str]]] = [
    # (id, new deps, words in the error (one per difference), nodes to re-run)
    (
        "removed-node",
        {"extract": [], "clean": ["extract"], "load": ["clean"], "report": ["load"]},
        ["'stats' was removed", "'load' depended on [clean, stats], now on [clean]"],
        {"load", "report"},
    ),
    (
        "new-leaf",
        {**DEPS, "audit": ["extract"]},
        ["'audit' is new"],
        {"audit"},
    ),
    (
        "new-node-in-the-middle",
        {**DEPS, "dedupe": ["clean"], "load": ["dedupe", "stats"]},
        ["'dedupe' is new", "'load' depended on [clean, stats], now on [dedupe, stats]"],
        {"dedupe", "load", "report"},
    ),
    (
        "changed-deps",
        {**DEPS, "stats": ["clean"]},
        ["'stats' depended on [extract], now on [clean]"],
        {"stats", "load", "report"},
    ),
    (
        "dep-dropped-to-none",
        {**DEPS, "clean": []},
        ["'clean' depended on [extract], now on [none]"],
        {"clean", "load", "report"},
    ),
    (
        "removed-and-new-and-changed",
        {"extract": [], "clean": ["extract"], "load": ["clean"], "audit": ["load"]},
        [
            "'stats' was removed",
            "'report' was removed",
            "'load' depended on [clean, stats], now on [clean]",
            "'audit' is new",
        ],
        {"load", "audit"},
    ),
]


@pytest.mark.parametrize(
    ("new_deps", "differences", "rerun"),
    [case[1:] for case in CHANGE_CASES],
    ids=[case[0] for case in CHANGE_CASES],
)
def test_changed_dag_is_refused_listing_each_difference(
    new_deps: dict[str, list[str]], differences: list[str], rerun: set[str]
) -> None:
    stored = _stored(dict.fromkeys(DEPS, C))
    with pytest.raises(WorkflowChangedError) as info:
        plan_run(_dag(new_deps), "r1", stored, allow_changes=False)
    message = str(info.value)
    for difference in differences:
        assert difference in message
    assert "pass allow_changes=True" in message
    assert "--" not in message  # a library message names no CLI flag (the CLI adds it)
    # The stored run is untouched by a refused plan.
    assert set(stored.nodes) == set(DEPS)


@pytest.mark.parametrize(
    ("new_deps", "differences", "rerun"),
    [case[1:] for case in CHANGE_CASES],
    ids=[case[0] for case in CHANGE_CASES],
)
def test_allow_changes_reruns_new_and_changed_nodes_and_their_descendants(
    new_deps: dict[str, list[str]], differences: list[str], rerun: set[str]
) -> None:
    stored = _stored(dict.fromkeys(DEPS, C))
    dag = _dag(new_deps)
    plan = plan_run(dag, "r1", stored, allow_changes=True)
    assert len(plan.changes) == len(differences)
    for difference in differences:
        assert any(difference in change for change in plan.changes)
    assert plan.needs_save
    state = plan.state
    assert list(state.nodes) == dag.nodes  # removed nodes are dropped
    assert plan.completed == set(new_deps) - rerun
    for name, node in state.nodes.items():
        assert node.deps == tuple(new_deps[name])
        if name in rerun:
            assert node.status is P
            assert node.output is None
        else:
            assert node.status is C
            assert node.output == f"out-{name}"
    assert state.data == {"k": 1}
    assert state.metadata == {"created_at": "x"}


def test_allow_changes_keeps_failed_nodes_to_rerun() -> None:
    stored = _stored({"extract": C, "clean": F, "stats": C, "load": S, "report": S})
    plan = plan_run(_dag({**DEPS, "audit": ["stats"]}), "r1", stored, allow_changes=True)
    assert plan.completed == {"extract", "stats"}
    assert plan.state.nodes["clean"].status is F  # still to run: not completed
    assert plan.state.nodes["audit"].status is P


def test_allow_changes_without_changes_is_a_plain_resume() -> None:
    stored = _stored({"extract": C, "clean": C, "stats": P, "load": P, "report": P})
    plan = plan_run(_dag(DEPS), "r1", stored, allow_changes=True)
    assert plan.changes == []
    assert not plan.needs_save
    assert plan.completed == {"extract", "clean"}
