"""The builder and the DAG: decorators, add_node, validation errors, graph and order."""

from __future__ import annotations

import itertools
from collections.abc import Callable
from datetime import timedelta
from typing import Any

import networkx as nx
import pytest

import flowdag
from flowdag import (
    DAG,
    CycleError,
    DAGError,
    DuplicateNodeError,
    FlowdagError,
    MissingDependencyError,
    SignatureError,
    Workflow,
)


def _any(**kwargs: Any) -> int:
    return 1


def _workflow(deps: dict[str, list[str]], order: list[str] | None = None) -> Workflow:
    """A workflow of trivial nodes: name -> deps, added in ``order`` (default: dict order)."""
    wf = Workflow("w")
    for name in order or list(deps):
        wf.add_node(name, _any, deps=deps[name])
    return wf


# -- build-time errors ----------------------------------------------------------------


def _cycle3(wf: Workflow) -> None:
    wf.add_node("a", _any, deps=["c"])
    wf.add_node("b", _any, deps=["a"])
    wf.add_node("c", _any, deps=["b"])


def _cycle3_reversed(wf: Workflow) -> None:
    wf.add_node("c", _any, deps=["b"])
    wf.add_node("b", _any, deps=["a"])
    wf.add_node("a", _any, deps=["c"])


def _cycle_with_tail(wf: Workflow) -> None:
    wf.add_node("root", _any)
    wf.add_node("x", _any, deps=["root", "y"])
    wf.add_node("y", _any, deps=["x"])


def _self_loop(wf: Workflow) -> None:
    wf.add_node("a", _any, deps=["a"])


def _missing(wf: Workflow) -> None:
    wf.add_node("extract", _any)
    wf.add_node("load", _any, deps=["extract", "transform"])


def _duplicate(wf: Workflow) -> None:
    wf.add_node("extract", _any)
    wf.add_node("extract", _any)


def _duplicate_by_decorator(wf: Workflow) -> None:
    @wf.node
    def extract() -> int:
        return 1

    @wf.node(name="extract")
    def other() -> int:
        return 2


BUILD_ERRORS: list[tuple[str, Callable[[Workflow], None], type[DAGError], list[str]]] = [
    ("cycle", _cycle3, CycleError, ["a -> b -> c -> a"]),
    ("cycle-other-order", _cycle3_reversed, CycleError, ["a -> b -> c -> a"]),
    ("cycle-with-tail", _cycle_with_tail, CycleError, ["x -> y -> x"]),
    ("self-loop", _self_loop, CycleError, ["a -> a"]),
    ("missing-dep", _missing, MissingDependencyError, ["'load'", "'transform'"]),
    ("duplicate", _duplicate, DuplicateNodeError, ["'extract'"]),
    ("duplicate-decorator", _duplicate_by_decorator, DuplicateNodeError, ["'extract'"]),
]


@pytest.mark.parametrize(
    ("declare", "error", "culprits"),
    [case[1:] for case in BUILD_ERRORS],
    ids=[case[0] for case in BUILD_ERRORS],
)
def test_build_errors_name_the_culprits(
    declare: Callable[[Workflow], None], error: type[DAGError], culprits: list[str]
) -> None:
    wf = Workflow("w")
    declare(wf)
    with pytest.raises(error) as info:
        wf.build()
    assert type(info.value) is error
    for culprit in culprits:
        assert culprit in str(info.value)


def test_cycle_message_does_not_include_the_tail() -> None:
    wf = Workflow("w")
    _cycle_with_tail(wf)
    with pytest.raises(CycleError) as info:
        wf.build()
    assert "root" not in str(info.value)


def _required_param(x: int) -> int:
    return x


def _required_param_and_kwargs(x: int, **kwargs: Any) -> int:
    return x


def _positional_only_dep(a: int, /) -> int:
    return a


SIGNATURE_ERRORS: list[tuple[str, object, list[str], list[str]]] = [
    # (id, fn, deps, words the message must contain)
    ("required-param", _required_param, ["a"], ["'n'", "'x'"]),
    ("required-param-no-deps", _required_param, [], ["'n'", "'x'"]),
    ("required-param-with-kwargs", _required_param_and_kwargs, [], ["'n'", "'x'"]),
    ("positional-only-dep", _positional_only_dep, ["a"], ["'n'", "'a'"]),
    ("not-callable", 42, [], ["'n'", "int"]),
    ("not-callable-str", "fn", [], ["'n'", "str"]),
]


@pytest.mark.parametrize(
    ("fn", "deps", "words"),
    [case[1:] for case in SIGNATURE_ERRORS],
    ids=[case[0] for case in SIGNATURE_ERRORS],
)
def test_signature_errors(fn: Any, deps: list[str], words: list[str]) -> None:
    wf = Workflow("w")
    wf.add_node("a", _any)
    with pytest.raises(SignatureError) as info:
        wf.add_node("n", fn, deps=deps)
    assert type(info.value) is SignatureError
    for word in words:
        assert word in str(info.value)


def test_decorating_something_without_a_name_is_a_signature_error() -> None:
    wf = Workflow("w")
    with pytest.raises(SignatureError):
        wf.node(42)  # type: ignore[call-overload]


BAD_OPTIONS: list[tuple[str, dict[str, Any], str]] = [
    ("negative-retries", {"retries": -1}, "retries"),
    ("float-retries", {"retries": 1.5}, "retries"),
    ("bool-retries", {"retries": True}, "retries"),
    ("timeout-zero", {"timeout": 0}, "timeout"),
    ("timeout-negative", {"timeout": -1.0}, "timeout"),
    ("timeout-nan", {"timeout": float("nan")}, "timeout"),
    ("backoff-below-one", {"backoff": 0.5}, "backoff"),
    ("negative-retry-delay", {"retry_delay": -0.1}, "retry_delay"),
    ("negative-max-retry-delay", {"max_retry_delay": -1}, "max_retry_delay"),
    ("dep-not-a-string", {"deps": [1]}, "dependency"),
    ("dep-empty", {"deps": [""]}, "dependency"),
    ("timeout-zero-string", {"timeout": "0s"}, "timeout"),
    ("timeout-not-a-duration", {"timeout": "soon"}, "timeout"),
    ("retry-delay-unknown-unit", {"retry_delay": "5 parsecs"}, "retry_delay"),
    ("max-retry-delay-bytes", {"max_retry_delay": b"60"}, "max_retry_delay"),
]


def test_durations_take_timedeltas_and_strings() -> None:
    wf = Workflow("w")
    spec = wf.add_node(
        "n", _any, retry_delay="250ms", max_retry_delay=timedelta(minutes=2), timeout="1h30m"
    )
    assert (spec.retry_delay, spec.max_retry_delay, spec.timeout) == (0.25, 120.0, 5400.0)


@pytest.mark.parametrize(
    ("options", "option"),
    [case[1:] for case in BAD_OPTIONS],
    ids=[case[0] for case in BAD_OPTIONS],
)
def test_bad_options_raise_dag_error(options: dict[str, Any], option: str) -> None:
    wf = Workflow("w")
    with pytest.raises(DAGError) as info:
        wf.add_node("n", _any, **options)
    assert "'n'" in str(info.value)
    assert option in str(info.value)
    with pytest.raises(DAGError):
        wf.node(**options)(_any)


@pytest.mark.parametrize("name", ["", None, 3])
def test_bad_names_raise_dag_error(name: Any) -> None:
    with pytest.raises(DAGError):
        Workflow(name)
    with pytest.raises(DAGError):
        Workflow("w").add_node(name, _any)


@pytest.mark.parametrize("name", ["\ud800", "a\udcffb"], ids=ascii)
def test_names_no_store_can_keep_raise_dag_error(name: str) -> None:
    # A lone surrogate is no UTF-8: every store would refuse the name at the first save.
    for build in (
        lambda: Workflow(name),
        lambda: Workflow("w").add_node(name, _any),
        lambda: Workflow("w").add_node("n", _any, deps=[name]),
    ):
        with pytest.raises(DAGError, match=r"name .* is not valid: it holds a lone surrogate"):
            build()


@pytest.mark.parametrize(
    "error",
    [CycleError, MissingDependencyError, DuplicateNodeError, SignatureError],
)
def test_build_errors_derive_from_dag_error(error: type[Exception]) -> None:
    assert issubclass(error, DAGError)
    assert issubclass(error, FlowdagError)
    assert issubclass(DAGError, FlowdagError)


# -- registering nodes ----------------------------------------------------------------


def test_bare_decorator_returns_the_function_unchanged() -> None:
    wf = Workflow("w")

    def extract() -> int:
        return 1

    assert wf.node(extract) is extract
    assert wf.build().specs["extract"].fn is extract


def test_decorator_with_options_returns_the_function_unchanged() -> None:
    wf = Workflow("w")

    def extract() -> int:
        return 1

    def transform(extract: int) -> int:
        return extract

    assert wf.node()(extract) is extract
    assert wf.node(deps=["extract"], retries=2, timeout=1.0)(transform) is transform
    spec = wf.build().specs["transform"]
    assert spec.fn is transform
    assert spec.deps == ("extract",)
    assert spec.retries == 2
    assert spec.timeout == 1.0


def test_decorator_name_option() -> None:
    wf = Workflow("w")

    @wf.node(name="load-data")
    def load() -> int:
        return 1

    assert wf.build().nodes == ["load-data"]
    assert load() == 1


def test_add_node_registers_lambdas_and_options() -> None:
    wf = Workflow("w")
    wf.add_node("a", lambda: 1)
    spec = wf.add_node(
        "b", lambda a: a, deps=["a"], retries=3, retry_delay=0.5, backoff=3, timeout=2
    )
    assert spec.retries == 3
    assert spec.retry_delay == 0.5
    assert spec.backoff == 3.0
    assert spec.timeout == 2.0
    dag = wf.build()
    assert isinstance(dag, DAG)
    assert dag.nodes == ["a", "b"]
    assert dag.deps("b") == ("a",)


def test_default_options() -> None:
    wf = Workflow("w")
    spec = wf.add_node("a", _any)
    assert (spec.retries, spec.retry_delay, spec.backoff, spec.timeout) == (0, 0.0, 2.0, None)


def test_string_deps_mean_one_dependency() -> None:
    wf = Workflow("w")
    wf.add_node("extract", _any)
    wf.add_node("load", _any, deps="extract")
    dag = wf.build()
    assert dag.deps("load") == ("extract",)
    assert list(dag.graph.edges) == [("extract", "load")]


def test_ctx_and_kwargs_binding() -> None:
    wf = Workflow("w")
    wf.add_node("a", _any)
    wf.add_node("b", _any)
    only_a = wf.add_node("only_a", lambda a: a, deps=["a", "b"])
    with_ctx = wf.add_node("with_ctx", lambda a, ctx: a, deps=["a"])
    kwargs = wf.add_node("kwargs", _any, deps=["a", "b"])
    defaulted = wf.add_node("defaulted", lambda a, extra=1: a, deps=["a"])
    assert (only_a.kwarg_deps, only_a.wants_ctx) == (("a",), False)
    assert (with_ctx.kwarg_deps, with_ctx.wants_ctx) == (("a",), True)
    assert (kwargs.kwarg_deps, kwargs.wants_ctx) == (("a", "b"), False)
    assert defaulted.kwarg_deps == ("a",)


def test_specs_keep_insertion_order() -> None:
    wf = _workflow({"b": [], "a": []})
    assert [s.name for s in wf.specs] == ["b", "a"]
    assert repr(wf) == "Workflow('w', nodes=2)"


# -- the DAG --------------------------------------------------------------------------

DIAMOND = {"extract": [], "clean": ["extract"], "stats": ["extract"], "load": ["clean", "stats"]}


def test_graph_is_a_digraph_with_edges_from_dep_to_node() -> None:
    dag = _workflow(DIAMOND).build()
    assert isinstance(dag.graph, nx.DiGraph)
    assert set(dag.graph.nodes) == set(DIAMOND)
    assert set(dag.graph.edges) == {
        ("extract", "clean"),
        ("extract", "stats"),
        ("clean", "load"),
        ("stats", "load"),
    }
    assert dag.graph.nodes["load"]["spec"].deps == ("clean", "stats")
    assert len(dag) == 4
    assert "load" in dag
    assert "nope" not in dag


SHAPES = {
    "diamond": DIAMOND,
    "wide": {"root": [], "z": ["root"], "m": ["root"], "a": ["root"], "b": []},
    "chains": {"c1": [], "c2": ["c1"], "b1": [], "b2": ["b1"], "a1": ["c2", "b2"]},
}


@pytest.mark.parametrize("shape", list(SHAPES))
def test_node_order_is_topological_and_independent_of_insertion_order(shape: str) -> None:
    deps = SHAPES[shape]
    orders = {
        tuple(_workflow(deps, list(order)).build().nodes) for order in itertools.permutations(deps)
    }
    assert len(orders) == 1
    (nodes,) = orders
    position = {name: i for i, name in enumerate(nodes)}
    for name, node_deps in deps.items():
        assert all(position[dep] < position[name] for dep in node_deps)


def test_ties_are_broken_by_name() -> None:
    dag = _workflow(SHAPES["wide"]).build()
    assert dag.nodes == ["b", "root", "a", "m", "z"]
    assert _workflow(DIAMOND).build().nodes == ["extract", "clean", "stats", "load"]


def test_workflow_is_reusable_and_builds_equal_dags() -> None:
    wf = _workflow(DIAMOND)
    first, second = wf.build(), wf.build()
    assert first.nodes == second.nodes
    assert first.name == second.name == "w"


def test_run_accepts_a_workflow() -> None:
    wf = Workflow("w")
    wf.add_node("a", lambda: 2)
    assert flowdag.run(wf).outputs == {"a": 2}


def test_node_decorator_passes_every_option_and_refuses_unknown_ones() -> None:
    wf = Workflow("w")

    @wf.node(
        deps=[], retries=2, retry_delay=0.5, backoff=3, max_retry_delay=9, timeout=4, pool="db"
    )
    def a() -> int:
        return 1

    spec = wf.specs[0]
    assert (spec.retries, spec.retry_delay, spec.backoff, spec.max_retry_delay) == (2, 0.5, 3, 9)
    assert (spec.timeout, spec.pool) == (4.0, "db")
    with pytest.raises(TypeError, match="'retrys'"):
        wf.node(retrys=1)  # type: ignore[call-overload]


# -- Workflow(pools=) --------------------------------------------------------------------


def test_workflow_pools_are_checked_like_runs() -> None:
    from flowdag.errors import InvalidArgumentError, InvalidArgumentTypeError

    with pytest.raises(InvalidArgumentError, match=r"pools\['api'\] must be a whole number"):
        Workflow("x", pools={"api": 0})
    with pytest.raises(InvalidArgumentTypeError, match="pools must map pool names"):
        Workflow("x", pools=[("api", 2)])  # type: ignore[arg-type]
    with pytest.raises(InvalidArgumentTypeError, match="pool names must be strings"):
        Workflow("x", pools={1: 2})  # type: ignore[dict-item]
    assert Workflow("x", pools={"api": 2}).build().pools == {"api": 2}


def test_run_pools_override_the_workflows_per_pool() -> None:
    import threading
    import time

    import flowdag

    lock = threading.Lock()
    busy = {"a": 0, "b": 0}
    peaks = {"a": 0, "b": 0}

    def work(pool: str) -> None:
        with lock:
            busy[pool] += 1
            peaks[pool] = max(peaks[pool], busy[pool])
        time.sleep(0.2)
        with lock:
            busy[pool] -= 1

    wf = Workflow("pooled", pools={"a": 1, "b": 1})
    for i in range(3):
        wf.add_node(f"a{i}", lambda: work("a"), pool="a")
        wf.add_node(f"b{i}", lambda: work("b"), pool="b")
    assert flowdag.run(wf, max_workers=6, pools={"b": 3}).ok
    assert peaks == {"a": 1, "b": 3}
