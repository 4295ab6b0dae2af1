"""Property test of overrides: random DAGs, random stored statuses, random override sequences.

A run is stored with statuses a run could leave (a node below a failed or
skipped one is skipped; below a pending one, pending), then a random sequence
of `flowdag.mark_done` and `flowdag.invalidate` is applied to the store and to
a model written here from the rules alone. After every override:

- every status is the model's, and so is every change the override reports;
- a skipped node always has a failed node above it (nothing is left skipped
  for no reason), and mark_done leaves no skipped node below the marked one
  whose every ancestor completed;
- the marked node holds its output, pinned; an invalidated node holds no
  output but keeps its output digest;
- each node's audit grows by one per override that changed it, in time order,
  and nodes the override did not change are exactly as they were.
"""

from __future__ import annotations

import tempfile
from dataclasses import dataclass, field
from pathlib import Path

import networkx as nx
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

import flowdag
from flowdag import NodeState, NodeStatus, RunState
from flowdag.stores.base import Store
from tests.gc_stores import open_kind

C, P, F, S = NodeStatus.COMPLETED, NodeStatus.PENDING, NodeStatus.FAILED, NodeStatus.SKIPPED


@dataclass
class Case:
    deps: dict[str, tuple[str, ...]]
    statuses: dict[str, NodeStatus]
    overrides: list[tuple[str, list[str], bool, int]] = field(default_factory=list)


@st.composite
def cases(draw: st.DrawFn) -> Case:
    size = draw(st.integers(1, 8))
    names = [f"n{i}" for i in range(size)]
    deps = {
        name: tuple(
            dep for dep in names[:i] if draw(st.booleans()) and draw(st.booleans())
        )  # about one earlier node in four
        for i, name in enumerate(names)
    }
    statuses: dict[str, NodeStatus] = {}
    for name in names:  # in order: deps first
        above = {statuses[dep] for dep in deps[name]}
        if above & {F, S}:
            statuses[name] = S
        elif P in above:
            statuses[name] = P
        else:
            statuses[name] = draw(st.sampled_from([C, C, F, P]))
    overrides = draw(
        st.lists(
            st.tuples(
                st.sampled_from(["mark_done", "invalidate"]),
                st.lists(st.sampled_from(names), min_size=1, max_size=3),
                st.booleans(),
                st.integers(0, 1000),
            ),
            min_size=1,
            max_size=6,
        )
    )
    return Case(deps, statuses, overrides)


def stored(store: Store, case: Case) -> None:
    state = RunState("r", "random")
    for name, status in case.statuses.items():
        node = NodeState(status=status, deps=case.deps[name])
        if status is not P:
            node.attempts = 0 if status is S else 1
        if status is C:
            node.output = f"{name} ran"
        state.nodes[name] = node
    store.save(state)


def model_unskip(graph: nx.DiGraph, new: dict[str, NodeStatus], roots: list[str]) -> set[str]:
    below = set().union(*(nx.descendants(graph, r) for r in roots)) - set(roots)
    freed = set()
    for name in nx.topological_sort(graph):
        blocked = any(new[a] in (F, S) for a in nx.ancestors(graph, name))
        if name in below and new[name] is S and not blocked:
            new[name] = P
            freed.add(name)
    return freed


def check_case(store: Store, case: Case) -> None:
    graph: nx.DiGraph = nx.DiGraph()
    graph.add_nodes_from(case.deps)
    graph.add_edges_from((d, n) for n, ds in case.deps.items() for d in ds)
    model = dict(case.statuses)
    audits = dict.fromkeys(model, 0)
    stored(store, case)
    for action, nodes, downstream, value in case.overrides:
        before = store.load("r")
        new = dict(model)
        if action == "mark_done":
            target = nodes[0]
            result = flowdag.mark_done(store, "r", target, output=value, reason=f"r{value}")
            new[target] = C
            changed = {target} | model_unskip(graph, new, [target])
        else:
            names = list(dict.fromkeys(nodes))
            result = flowdag.invalidate(store, "r", nodes, downstream=downstream)
            changed = set(names)
            for name in names:
                new[name] = P
            if downstream:
                below = set().union(*(nx.descendants(graph, n) for n in names))
                for name in below - set(names):
                    if new[name] is not P:
                        new[name] = P
                        changed.add(name)
            changed |= model_unskip(graph, new, names)
        after = store.load("r")
        assert {n: s.status for n, s in after.nodes.items()} == new
        assert {(c.node, c.before, c.after) for c in result.changes} == {
            (n, model[n], new[n]) for n in changed
        }
        for name in changed:
            audits[name] += 1
        for name, node in after.nodes.items():
            audit = () if node.provenance is None else node.provenance.audit
            assert len(audit) == audits[name], name
            assert [e.at for e in audit] == sorted(e.at for e in audit)
            if name not in changed:
                assert node == before.nodes[name], name
            if node.status is S:  # skipped for a reason: a failed node above it
                assert any(new[a] is F for a in nx.ancestors(graph, name)), name
        if action == "mark_done":
            marked = after.nodes[nodes[0]]
            assert marked.output == value and marked.provenance is not None
            assert marked.provenance.manual
            for name in nx.descendants(graph, nodes[0]):
                ancestors = nx.ancestors(graph, name)
                assert not (new[name] is S and all(new[a] is C for a in ancestors)), name
        else:
            for name in changed:
                node, was = after.nodes[name], before.nodes[name]
                assert node.output is None and not node.provenance.manual  # type: ignore[union-attr]
                if was.provenance is not None:
                    assert node.provenance.output == was.provenance.output  # type: ignore[union-attr]
        model = new


@settings(max_examples=150, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(cases())
def test_overrides_keep_the_run_consistent_in_memory(case: Case) -> None:
    check_case(flowdag.MemoryStore(), case)


@settings(max_examples=20, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(cases())
def test_overrides_keep_the_run_consistent_on_disk(case: Case) -> None:
    with tempfile.TemporaryDirectory() as root, open_kind("json", Path(root)) as store:
        check_case(store, case)
