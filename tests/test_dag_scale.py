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

from flowdag import CycleError, DAGError, MissingDependencyError, SignatureError, Workflow
from flowdag._fastinit import slot_init
from flowdag._shapes import _inspect, shape_of
from flowdag.dag import DAG, RUN_DEFAULT, NodeSpec, _new_spec
from flowdag.errors import InvalidArgumentTypeError


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


# -- a wide graph's order: runs of ready nodes, placed by slices -------------------------

WIDE_NAMES = st.sampled_from([f"{c}{i}" for c in "abmz" for i in range(15)])


@st.composite
def wide_graphs(draw: st.DrawFn) -> dict[str, list[str]]:
    """12 to 60 nodes: a few hubs, and nodes that need one or two of them
    and that nothing needs: runs longer than 8 of nodes without dependents."""
    names = draw(st.lists(WIDE_NAMES, min_size=12, max_size=60, unique=True))
    hubs = names[: draw(st.integers(1, 4))]
    deps: dict[str, list[str]] = {
        hub: draw(st.lists(st.sampled_from(hubs[:i]), max_size=1)) if i else []
        for i, hub in enumerate(hubs)
    }
    for name in names[len(hubs) :]:
        deps[name] = draw(st.lists(st.sampled_from(hubs), min_size=1, max_size=2))
    order = draw(st.permutations(names))
    return {name: deps[name] for name in order}


@settings(max_examples=80, deadline=None)
@given(wide_graphs())
def test_the_order_of_a_wide_graph_is_networkx_s(deps: dict[str, list[str]]) -> None:
    reference = _reference_graph(deps)
    assert _dag(deps).nodes == list(nx.lexicographical_topological_sort(reference))


def test_a_fan_out_in_and_out_is_ordered_as_networkx_orders_it() -> None:
    deps: dict[str, list[str]] = {"root": [], "sink": [f"n{i}" for i in range(50)]}
    deps.update((f"n{i}", ["root"]) for i in range(50))
    deps.update((f"late{i}", []) for i in range(20))  # a second run of roots, interleaved
    expected = list(nx.lexicographical_topological_sort(_reference_graph(deps)))
    assert _dag(deps).nodes == expected


# -- options checked once per distinct set, errors for every node --------------------------


def test_nodes_with_the_same_options_share_their_checked_objects() -> None:
    wf = Workflow("w")
    first = wf.add_node("a", _any, cache=True, cache_ttl="1d", ttl="2h", retry_delay="5s")
    again = wf.add_node("b", _any, cache=True, cache_ttl="1d", ttl="2h", retry_delay="5s")
    assert again.cache is first.cache and again.ttl is first.ttl
    assert (again.retry_delay, again.name) == (5.0, "b")


@pytest.mark.parametrize(
    ("good", "bad", "error"),
    [
        ({"retries": 1}, {"retries": True}, DAGError),  # equal to 1, but a bool
        ({"retries": 0}, {"retries": 0.0}, DAGError),
        ({"version": 1}, {"version": True}, InvalidArgumentTypeError),
        ({"cache": False}, {"cache": 0}, InvalidArgumentTypeError),
        ({"backoff": 2.0}, {"backoff": float("nan")}, DAGError),
    ],
)
def test_an_option_equal_to_a_checked_one_but_not_valid_is_refused(
    good: dict[str, Any], bad: dict[str, Any], error: type[Exception]
) -> None:
    wf = Workflow("w")
    wf.add_node("a", _any, **good)
    with pytest.raises(error, match="node 'b'"):
        wf.add_node("b", _any, **bad)


def test_equal_options_of_other_types_are_normalised_alike() -> None:
    wf = Workflow("w")
    one = wf.add_node("a", _any, retry_delay=1, backoff=3)
    other = wf.add_node("b", _any, retry_delay=1.0, backoff=3.0)
    assert (one.retry_delay, one.backoff) == (other.retry_delay, other.backoff) == (1.0, 3.0)
    assert type(one.backoff) is float


def test_a_refused_node_is_refused_again_naming_each_node() -> None:
    wf = Workflow("w")
    for name in ("a", "b"):
        with pytest.raises(DAGError, match=f"node '{name}': retries"):
            wf.add_node(name, _any, retries=-1)
        with pytest.raises(DAGError, match=f"node '{name}': dependency names"):
            wf.add_node(name, _any, deps=["ok", ""])
        with pytest.raises(SignatureError, match=f"node '{name}': parameter 'x'"):
            wf.add_node(name, lambda x: x, deps=["source"])
    wf.add_node("source", _any)
    wf.add_node("c", lambda source: source, deps=["source"])
    assert wf.build().nodes == ["source", "c"]


def test_slot_new_makes_the_same_spec_as_the_class() -> None:
    fields = [f.name for f in dataclasses.fields(NodeSpec)]
    values = [f"v{i}" for i in range(len(fields))]
    made = _new_spec(*values)
    assert type(made) is NodeSpec and made == NodeSpec(*values)
    with pytest.raises(dataclasses.FrozenInstanceError):
        made.name = "m"  # type: ignore[misc]
    assert pickle.loads(pickle.dumps(made)) == made


def test_a_subclass_of_a_slot_init_class_keeps_its_own_class() -> None:
    @slot_init
    @dataclasses.dataclass(frozen=True, slots=True)
    class Base:
        a: int
        b: list[int] = dataclasses.field(default_factory=list)

    class Sub(Base):  # not a dataclass: Base's __init__, on another layout
        __slots__ = ("extra",)

    made = Sub(1)
    assert type(made) is Sub and (made.a, made.b) == (1, [])
    assert type(Base(2)) is Base and Base(2) == Base(2, [])


def test_a_lambda_per_node_gets_no_dict_of_its_own_from_the_build() -> None:
    import gc

    fns = [lambda source, i=i: i + source for i in range(3)]
    wf = Workflow("no-dicts")
    wf.add_node("source", lambda: 1)
    for i, fn in enumerate(fns):
        wf.add_node(f"leaf{i}", fn, deps=["source"])
    wf.build()
    # An empty __dict__ or __annotations__ read into being would be referred to by fn
    # (the first of a code is read by inspect.signature once, for them all).
    shared = (fns[0].__globals__, fns[0].__builtins__)
    owned = [r for fn in fns[1:] for r in gc.get_referents(fn) if type(r) is dict]
    assert not [r for r in owned if all(r is not d for d in shared)]


def test_what_inspect_follows_instead_of_the_code_still_counts() -> None:
    def inner(source: int) -> int:
        return source

    @functools.wraps(inner)
    def wrapper(*args: Any, **kwargs: Any) -> int:
        return inner(*args, **kwargs)

    assert shape_of(wrapper) == _inspect(wrapper)
    assert shape_of(wrapper).params != shape_of(lambda *args, **kwargs: 0).params
    told = lambda *args: 0  # noqa: E731
    told.__signature__ = inspect.signature(inner)  # type: ignore[attr-defined]
    assert shape_of(told) == _inspect(told) == shape_of(inner)
