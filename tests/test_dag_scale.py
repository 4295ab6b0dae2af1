"""What the fast build keeps: networkx's order and graph, cycle messages, specs, signatures.

`DAG` orders nodes with its own Kahn's algorithm and makes its networkx graph on
first use; `flowdag._binding.shape_of` memoises signature shapes per code object; NodeSpec
gets a slot-setting ``__init__``. Each is checked here against what it replaces:
networkx itself, `inspect.signature`, the dataclass's own ``__init__``.
"""

from __future__ import annotations

import dataclasses
import functools
import inspect
import pickle
from typing import Any

import networkx as nx
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from flowdag import CycleError, MissingDependencyError, Workflow
from flowdag._fastinit import slot_init
from flowdag._shapes import _inspect, shape_of
from flowdag.dag import DAG, RUN_DEFAULT, NodeSpec


def _any(**kwargs: Any) -> int:
    return 1


def _dag(deps: dict[str, list[str]]) -> DAG:
    wf = Workflow("w")
    for name, node_deps in deps.items():
        wf.add_node(name, _any, deps=node_deps)
    return wf.build()


def _reference_graph(deps: dict[str, list[str]]) -> nx.DiGraph:
    """The graph as `DAG` made it before: one node per spec, then its edges, in order."""
    graph = nx.DiGraph()
    for name in deps:
        graph.add_node(name)
    for name, node_deps in deps.items():
        graph.add_edges_from((dep, name) for dep in node_deps)
    return graph


NAMES = st.sampled_from([f"{c}{i}" for c in "abz" for i in range(4)])


@st.composite
def graphs(draw: st.DrawFn, acyclic: bool = True) -> dict[str, list[str]]:
    """Node -> deps, in a random insertion order; deps listed twice now and then."""
    names = draw(st.lists(NAMES, min_size=1, max_size=10, unique=True))
    deps: dict[str, list[str]] = {}
    for i, name in enumerate(names):
        pool = names[:i] if acyclic else names
        deps[name] = draw(st.lists(st.sampled_from(pool), max_size=4)) if pool else []
    order = draw(st.permutations(names))
    return {name: deps[name] for name in order}


@settings(max_examples=150, deadline=None)
@given(graphs())
def test_order_dependents_and_graph_are_networkx_s(deps: dict[str, list[str]]) -> None:
    dag = _dag(deps)
    reference = _reference_graph(deps)
    assert dag.nodes == list(nx.lexicographical_topological_sort(reference))
    for name in deps:
        assert dag.dependents(name) == tuple(reference.successors(name))
    assert list(dag.graph.nodes) == list(reference.nodes)
    assert list(dag.graph.edges) == list(reference.edges)
    assert all(dag.graph.nodes[n]["spec"] is dag.specs[n] for n in deps)


@settings(max_examples=150, deadline=None)
@given(graphs(acyclic=False))
def test_a_cycle_is_reported_as_before(deps: dict[str, list[str]]) -> None:
    reference = _reference_graph(deps)
    try:
        cycle = [u for u, _ in nx.find_cycle(reference)]
    except nx.NetworkXNoCycle:
        assert _dag(deps).nodes == list(nx.lexicographical_topological_sort(reference))
        return
    first = cycle.index(min(cycle))
    path = [*cycle[first:], *cycle[:first], cycle[first]]
    with pytest.raises(CycleError, match=r"dependency cycle: (.*); remove") as raised:
        _dag(deps)
    assert str(raised.value).startswith("dependency cycle: " + " -> ".join(path) + ";")


def test_dependents_of_a_leaf_and_of_an_unknown_node() -> None:
    dag = _dag({"a": [], "b": ["a", "a"], "c": ["a"]})
    assert dag.dependents("a") == ("b", "c")  # b listed a twice: one edge
    assert dag.dependents("c") == ()
    with pytest.raises(KeyError):
        dag.dependents("nope")


def test_a_missing_dependency_is_reported_before_a_cycle() -> None:
    with pytest.raises(MissingDependencyError, match="node 'b' depends on unknown node 'x'"):
        _dag({"a": ["b"], "b": ["a", "x"]})


def test_the_graph_is_made_once_on_first_use() -> None:
    dag = _dag({"a": [], "b": ["a"]})
    assert dag.graph is dag.graph


# -- NodeSpec through its slots ------------------------------------------------------


def test_nodespec_init_is_the_dataclass_s() -> None:
    fields = [f.name for f in dataclasses.fields(NodeSpec)]
    assert list(inspect.signature(NodeSpec).parameters) == fields
    spec = NodeSpec("n", _any, ("a",), 2)  # positional, in field order
    assert (spec.name, spec.deps, spec.retries, spec.inline_limit) == ("n", ("a",), 2, RUN_DEFAULT)
    assert spec == NodeSpec(name="n", fn=_any, deps=("a",), retries=2)
    with pytest.raises(dataclasses.FrozenInstanceError):
        spec.name = "m"  # type: ignore[misc]
    assert dataclasses.replace(spec, retries=3).retries == 3
    assert pickle.loads(pickle.dumps(spec)) == spec
    with pytest.raises(TypeError):
        NodeSpec("n")  # type: ignore[call-arg]


def test_slot_init_fills_factories_and_refuses_what_it_cannot_do() -> None:
    @slot_init
    @dataclasses.dataclass(frozen=True, slots=True)
    class Made:
        a: int
        b: list[int] = dataclasses.field(default_factory=list)

    first, second = Made(1), Made(2)
    assert first.b == [] and first.b is not second.b
    assert Made(1, [2]) == Made(a=1, b=[2])

    @dataclasses.dataclass(frozen=True)
    class NoSlots:
        a: int

    with pytest.raises(TypeError, match="not a slots dataclass"):
        slot_init(NoSlots)


# -- signature shapes, once per code object ---------------------------------------------


def _made(n: int) -> list[Any]:
    return [lambda x, i=i: i for i in range(n)]


def test_shape_of_is_the_inspected_shape_for_every_kind_of_callable() -> None:
    def annotated(x: int, *, ctx: Any = None) -> int:
        return x

    @functools.wraps(annotated)
    def wrapped(*args: Any, **kwargs: Any) -> int:
        return annotated(*args, **kwargs)

    async def coroutine(x: int) -> int:
        return x

    kinds = [*_made(3), annotated, wrapped, coroutine, functools.partial(annotated, 1), _any]
    for fn in [*kinds, len, dict.fromkeys]:
        assert shape_of(fn) == _inspect(fn)
    made = _made(2)
    assert shape_of(made[0]) is shape_of(made[1])  # one inspection for one code


def test_functions_of_one_code_with_other_defaults_get_their_own_shape() -> None:
    def make() -> Any:
        def node(a: Any, b: Any = 1, *, c: Any = 2) -> Any:
            return a

        node.__annotations__.clear()  # no annotations: memoised by code
        return node

    plain, no_defaults, no_kwdefaults = make(), make(), make()
    no_defaults.__defaults__ = None
    no_kwdefaults.__kwdefaults__ = None
    for fn in (plain, no_defaults, no_kwdefaults, plain):
        assert shape_of(fn) == _inspect(fn)
    assert shape_of(no_defaults) != shape_of(plain)


def test_a_function_given_a_signature_later_is_not_confused_with_its_code() -> None:
    fns = _made(2)
    fns[1].__signature__ = inspect.Signature()  # type: ignore[attr-defined]
    assert shape_of(fns[0]) == _inspect(fns[0])
    assert shape_of(fns[1]) == _inspect(fns[1]) != shape_of(fns[0])
