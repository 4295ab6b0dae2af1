"""Binding inputs and constant arguments: ``deps={param: node}``, ``args=``/``kwargs=``,
``inputs="list"``; checked at add_node, counted in the fingerprint, on every executor."""

from __future__ import annotations

import asyncio
import inspect
import socket
import threading
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest
from hypothesis import HealthCheck, event, given, settings
from hypothesis import strategies as st

import flowdag
from flowdag import (
    Context,
    InvalidArgumentError,
    InvalidArgumentTypeError,
    MissingDependencyError,
    SignatureError,
    Workflow,
)
from flowdag._shapes import shape_of
from flowdag.stores.base import Store
from tests.test_provenance_run import KINDS, open_kind

# -- node functions (module level: the processes executor imports them) ----------------


def source() -> int:
    return 10


def leaf(i: int, src: int) -> int:
    return i * src


def scaled(x: int, *, factor: int, offset: int = 0) -> int:
    return x * factor + offset


def by_name(source: int, *, factor: int, offset: int = 0) -> int:
    return source * factor + offset


def labelled(label: str, values: list[int]) -> list[Any]:
    return [label, values]


def total(values: list[int], scale: int = 1) -> int:
    return sum(values) * scale


def with_ctx(a: int, src: int, ctx: Context) -> list[Any]:
    return [a, src, sorted(ctx.inputs), ctx.inputs["source"]]


def variadic(first: int, *rest: int, **named: int) -> list[Any]:
    return [first, list(rest), dict(sorted(named.items()))]


async def async_leaf(i: int, src: int) -> int:
    await asyncio.sleep(0)
    return i + src


async def async_total(values: list[int], k: int) -> int:
    await asyncio.sleep(0)
    return sum(values) + k


@dataclass(frozen=True)
class Rule:
    name: str
    limit: int


def apply_rule(rule: Rule, src: int) -> list[Any]:
    return [rule.name, min(rule.limit, src)]


def big() -> bytes:
    return b"x" * 5000


def ref_size(blob: flowdag.Ref, tag: str) -> list[Any]:
    return [type(blob).__name__, blob.size, tag]


def ref_and_value(ref: flowdag.Ref, value: bytes) -> list[str]:
    return [type(ref).__name__, type(value).__name__]


def value_size(blob: bytes, tag: str) -> list[Any]:
    return [type(blob).__name__, len(blob), tag]


def _run(wf: Workflow, executor: str = "threads", **options: Any) -> dict[str, Any]:
    result = flowdag.run(wf, executor=executor, max_workers=2, **options)
    result.raise_on_failure()
    return dict(result.outputs)


# -- each feature, on every executor ----------------------------------------------------


@dataclass(frozen=True)
class Local:  # stands for a class no worker can import: only cloudpickle sends it
    n: int


Local.__module__ = "__not_importable__"


def features() -> tuple[Workflow, dict[str, Any]]:
    """One workflow using every way of binding, and the outputs it must give."""
    wf = Workflow("features")
    wf.add_node("source", source)
    wf.add_node("other", source)
    for i in range(3):  # leaf(i, src=<source>)
        wf.add_node(f"leaf{i}", leaf, deps={"src": "source"}, args=(i,))
    wf.add_node("plain", scaled, deps={"x": "source"}, kwargs={"factor": 3})
    wf.add_node("named", by_name, deps=["source"], kwargs={"factor": 2, "offset": 1})
    wf.add_node("ordered", labelled, deps=["leaf2", "leaf0", "leaf1"], args=("l",), inputs="list")
    wf.add_node(
        "total", total, deps=["leaf0", "leaf1", "leaf2"], inputs="list", kwargs={"scale": 2}
    )
    wf.add_node("empty", total, inputs="list")
    wf.add_node("ctx", with_ctx, deps={"src": "source", "a": "other"})
    wf.add_node("variadic", variadic, deps={"extra": "source"}, args=(1, 2, 3), kwargs={"k": 4})
    wf.add_node("rule", apply_rule, deps={"src": "source"}, kwargs={"rule": Rule("cap", 7)})
    wf.add_node("local", lambda k, source: k.n + source, deps=["source"], args=(Local(5),))
    wf.add_node("twice", lambda a, b: [a, b], deps={"a": "source", "b": "source"})
    wf.add_node("big", big, inline_limit=100)
    wf.add_node("route", ref_size, deps={"blob": "big"}, kwargs={"tag": "r"})
    wf.add_node("use", value_size, deps={"blob": "big"}, kwargs={"tag": "v"})
    wf.add_node("both", ref_and_value, deps={"ref": "big", "value": "big"})
    expected = {
        "leaf0": 0,
        "leaf1": 10,
        "leaf2": 20,
        "plain": 30,
        "named": 21,
        "ordered": ["l", [20, 0, 10]],
        "total": 60,
        "empty": 0,
        "ctx": [10, 10, ["other", "source"], 10],
        "variadic": [1, [2, 3], {"extra": 10, "k": 4}],
        "rule": ["cap", 7],
        "local": 15,
        "twice": [10, 10],
        "use": ["bytes", 5000, "v"],
        "both": ["Ref", "bytes"],
    }
    return wf, expected


def _check_features(result: flowdag.RunResult, expected: dict[str, Any]) -> None:
    result.raise_on_failure()
    outputs = result.outputs
    assert {name: outputs[name] for name in expected} == expected
    kind, size, tag = outputs["route"]  # annotated flowdag.Ref: the Ref, not the value
    assert (kind, tag) == ("Ref", "r")
    assert size >= 5000  # the encoded value's length


@pytest.mark.parametrize("executor", ["threads", "processes", "asyncio"])
def test_every_binding_on_each_executor(executor: str, tmp_path: Path) -> None:
    wf, expected = features()
    store = f"lmdb://{tmp_path / 'db'}"
    _check_features(flowdag.run(wf, store=store, executor=executor, max_workers=2), expected)


def test_every_binding_on_dask(tmp_path: Path) -> None:
    distributed = pytest.importorskip("distributed")
    from flowdag.executors import DaskExecutor

    wf, expected = features()
    with (
        distributed.LocalCluster(
            processes=False, n_workers=1, threads_per_worker=2, dashboard_address=None
        ) as cluster,
        distributed.Client(cluster) as client,
    ):
        result = flowdag.run(
            wf, store=f"lmdb://{tmp_path / 'db'}", executor=DaskExecutor(client=client)
        )
    _check_features(result, expected)


@pytest.mark.parametrize("executor", ["threads", "asyncio"])
def test_async_functions(executor: str) -> None:
    wf = Workflow("w")
    wf.add_node("source", source)
    wf.add_node("leaf", async_leaf, deps={"src": "source"}, args=(5,))
    wf.add_node("listed", async_total, deps=["source", "leaf"], inputs="list", kwargs={"k": 1})
    outputs = _run(wf, executor)
    assert outputs["leaf"] == 15
    assert outputs["listed"] == 26


def test_cache_key_is_called_with_the_inputs_by_dep_name(tmp_path: Path) -> None:
    seen: list[dict[str, Any]] = []

    def key(**inputs: Any) -> str:
        seen.append(inputs)
        return "same"

    def build(factor: int) -> Workflow:
        wf = Workflow("w")
        wf.add_node("source", source)
        wf.add_node("node", scaled, deps={"x": "source"}, kwargs={"factor": factor}, cache_key=key)
        return wf

    store = f"lmdb://{tmp_path / 'db'}"
    first = flowdag.run(build(2), run_id="a", store=store)
    second = flowdag.run(build(2), run_id="b", store=store)
    third = flowdag.run(build(3), run_id="c", store=store)
    assert seen[0] == {"source": 10}
    assert first.outputs["node"] == second.outputs["node"] == 20
    assert second.explain()["node"].code == "cached"
    # Another constant is another fingerprint: not the cached output of factor=2.
    assert third.explain()["node"].code != "cached"
    assert third.outputs["node"] == 30


# -- what add_node keeps ------------------------------------------------------------------


def test_a_node_without_these_options_has_no_binding() -> None:
    wf = Workflow("w")
    spec = wf.add_node("leaf", lambda source: source, deps=["source"])
    assert spec.binding is None
    assert spec.kwarg_deps == ("source",)


def test_the_spec_of_a_bound_node() -> None:
    wf = Workflow("w")
    spec = wf.add_node("leaf3", leaf, deps={"src": "source"}, args=(3,))
    assert spec.deps == ("source",)
    assert spec.kwarg_deps == ("source",)
    assert spec.binding is not None
    assert spec.binding.args == (3,)
    assert spec.binding.params == (("src", "source"),)
    assert spec.binding.listed is None
    assert [part for part, _ in spec.binding.parts] == ["argument i", "input binding"]


class _CountingSignature:
    """A callable whose signature counts how often it is read."""

    def __init__(self) -> None:
        self.reads = 0

    @property
    def __signature__(self) -> inspect.Signature:
        self.reads += 1
        return inspect.signature(leaf)

    def __call__(self, i: int, src: int) -> int:
        return i * src


def test_the_signature_is_inspected_once_per_function() -> None:
    fn = _CountingSignature()
    wf = Workflow("w")
    wf.add_node("source", source)
    for i in range(200):
        wf.add_node(f"leaf{i}", fn, deps={"src": "source"}, args=(i,))
    for i in range(200):
        wf.add_node(f"plain{i}", fn, deps=["src"], kwargs={"i": i})
    assert fn.reads == 1
    assert shape_of(fn) is shape_of(fn)


def test_an_unhashable_callable_is_bound_too() -> None:
    @dataclass
    class Unhashable:  # eq without frozen: __hash__ is None
        n: int

        def __call__(self, src: int) -> int:
            return self.n + src

    wf = Workflow("w")
    wf.add_node("source", source)
    wf.add_node("a", Unhashable(1), deps={"src": "source"})
    wf.add_node("b", Unhashable(2), deps={"src": "source"})
    assert _run(wf)["b"] == 12


# -- bad input: each a clear error at add_node or build ------------------------------------


def _add(**options: Any) -> Callable[[], Any]:
    def add() -> Any:
        wf = Workflow("w")
        wf.add_node("source", source)
        wf.add_node("node", options.pop("fn", leaf), **options)
        return wf.build()

    return add


BAD = [
    (
        "unknown mapped node",
        _add(deps={"src": "sourse"}, args=(1,)),
        MissingDependencyError,
        "node 'node' depends on unknown node 'sourse' (did you mean 'source'?)",
    ),
    (
        "a parameter the function does not take",
        _add(deps={"src": "source", "nope": "source"}, args=(1,)),
        SignatureError,
        "deps (node 'source') binds parameter 'nope', which leaf does not take "
        "(its parameters: i, src)",
    ),
    (
        "an unknown keyword constant",
        _add(deps={"src": "source"}, kwargs={"i": 1, "j": 2}),
        SignatureError,
        "kwargs binds parameter 'j', which leaf does not take",
    ),
    (
        "bound in the mapping and in kwargs",
        _add(deps={"src": "source", "i": "source"}, kwargs={"i": 1}),
        SignatureError,
        "parameter 'i' is bound twice, by deps (node 'source') and by kwargs",
    ),
    (
        "bound by args and by a mapped dep",
        _add(deps={"i": "source", "src": "source"}, args=(1,)),
        SignatureError,
        "parameter 'i' is bound twice, by args[0] and by deps (node 'source')",
    ),
    (
        "bound by args and by a dep of its name",
        _add(fn=lambda source, src: 0, deps=["source"], args=(1,)),
        SignatureError,
        "parameter 'source' is bound twice, by args[0] and by deps",
    ),
    (
        "too many positional constants",
        _add(deps={"src": "source"}, args=(1, 2, 3)),
        SignatureError,
        "args[2] has no parameter to go to: leaf takes 2 positional parameter(s) (i, src)",
    ),
    (
        "the input list has no parameter",
        _add(fn=source, deps=["source"], inputs="list"),
        SignatureError,
        "the input list (inputs='list') has no parameter to go to",
    ),
    (
        "a required parameter left unbound",
        _add(deps={"src": "source"}),
        SignatureError,
        "parameter 'i' gets no value; bind it with deps={'i': NODE}, args= or kwargs=",
    ),
    (
        "a keyword-only parameter left unbound",
        _add(fn=scaled, args=(1,)),
        SignatureError,
        "parameter 'factor' gets no value",
    ),
    (
        "a positional-only parameter by keyword",
        _add(fn=lambda a, /, src: 0, deps={"src": "source"}, kwargs={"a": 1}),
        SignatureError,
        "kwargs binds parameter 'a' by keyword, but it is positional-only (before '/')",
    ),
    (
        "ctx bound by a mapping",
        _add(fn=with_ctx, deps={"ctx": "source"}, args=(1, 2)),
        SignatureError,
        "binds parameter 'ctx', which is reserved for the Context",
    ),
    (
        "ctx filled by args",
        _add(fn=lambda ctx, x: 0, args=(1, 2)),
        SignatureError,
        "parameter 'ctx' is bound twice, by args[0] and by the Context (ctx)",
    ),
    (
        "a key that is no parameter name",
        _add(deps={"my-src": "source"}),
        SignatureError,
        "deps key 'my-src' is not a valid parameter name",
    ),
    (
        "a key that is not a str",
        _add(kwargs={1: 2}),
        InvalidArgumentTypeError,
        "kwargs keys must be parameter names (str), not 1",
    ),
    (
        "kwargs not a mapping",
        _add(kwargs=[("i", 1)]),
        InvalidArgumentTypeError,
        "kwargs must be a mapping of parameter names",
    ),
    (
        "args not a tuple",
        _add(args=3, deps={"src": "source"}),
        InvalidArgumentTypeError,
        "args must be a tuple of constant arguments, e.g. args=(3,), not int",
    ),
    (
        "an unknown inputs mode",
        _add(deps=["source"], inputs="dict"),
        InvalidArgumentError,
        "inputs must be one of 'kwargs', 'list', not 'dict'",
    ),
    (
        "inputs='list' with a mapping",
        _add(fn=total, deps={"values": "source"}, inputs="list"),
        InvalidArgumentError,
        "inputs='list' passes the deps' outputs as one list in declared order",
    ),
    (
        "a constant that cannot be digested",
        _add(deps={"src": "source"}, args=(threading.Lock(),)),
        InvalidArgumentTypeError,
        "constant args[0] is a lock, which cannot be part of the node's code fingerprint",
    ),
    (
        "a constant holding something that cannot be digested",
        _add(deps={"src": "source"}, kwargs={"i": {"conn": socket.socket}}),
        InvalidArgumentTypeError,
        "constant kwargs['i']['conn'] is a type",
    ),
    (
        "a mapped dep name that is not a str",
        _add(deps={"src": 3}, args=(1,)),
        flowdag.DAGError,
        "dependency names must be non-empty strings: 3",
    ),
]


@pytest.mark.parametrize(
    ("make", "error", "message"), [case[1:] for case in BAD], ids=[case[0] for case in BAD]
)
def test_bad_input(make: Callable[[], Any], error: type[Exception], message: str) -> None:
    with pytest.raises(error) as raised:
        make()
    assert message in str(raised.value)
    assert "node 'node'" in str(raised.value)


def test_the_decorator_takes_the_same_options() -> None:
    wf = Workflow("w")
    wf.add_node("source", source)

    @wf.node(deps={"src": "source"}, args=(2,))
    def doubled(i: int, src: int) -> int:
        return i * src

    with pytest.raises(SignatureError, match="parameter 'i' is bound twice"):

        @wf.node(deps={"src": "source"}, args=(2,), kwargs={"i": 3})
        def twice(i: int, src: int) -> int:
            return i

    assert _run(wf)["doubled"] == 20


# -- change-aware resume: a changed constant reruns that node -------------------------------


def _constants(factor: int, swap: bool = False) -> Workflow:
    wf = Workflow("consts")
    wf.add_node("a", source)
    wf.add_node("b", lambda: 3)
    wf.add_node("scaled", scaled, deps={"x": "a"}, kwargs={"factor": factor})
    wf.add_node("other", scaled, deps={"x": "a"}, kwargs={"factor": 5})
    binding = {"i": "b", "src": "a"} if not swap else {"i": "a", "src": "b"}
    wf.add_node("leaf", leaf, deps=binding)
    wf.add_node("sink", total, deps=["scaled", "other"], inputs="list")
    return wf


@pytest.fixture(params=KINDS)
def store(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[Store]:
    with open_kind(request.param, tmp_path) as opened:
        yield opened


def test_a_changed_constant_reruns_just_that_node(store: Store) -> None:
    first = flowdag.run(_constants(2), run_id="r", store=store)
    assert first.outputs["sink"] == 70
    again = flowdag.run(_constants(2), run_id="r", store=store)
    assert {r.code for r in again.explain().values()} == {"reused"}
    changed = flowdag.run(_constants(4), run_id="r", store=store)
    reasons = changed.explain()
    assert reasons["scaled"].code == "code_changed"
    assert reasons["scaled"].detail == "code changed: argument factor"
    assert reasons["sink"].code == "input_changed"
    assert {reasons[n].code for n in ("a", "b", "other", "leaf")} == {"reused"}
    assert changed.outputs["sink"] == 90


def test_a_changed_binding_reruns_that_node(store: Store) -> None:
    flowdag.run(_constants(2), run_id="r", store=store)
    swapped = flowdag.run(_constants(2, swap=True), run_id="r", store=store)
    reasons = swapped.explain()
    assert reasons["leaf"].code == "code_changed"
    assert reasons["leaf"].detail == "code changed: input binding"
    assert {reasons[n].code for n in ("a", "b", "scaled", "other", "sink")} == {"reused"}
    assert swapped.outputs["leaf"] == 30


def test_nodes_without_constants_keep_their_fingerprint() -> None:
    from flowdag._fingerprint import node_fingerprints

    wf = Workflow("w")
    wf.add_node("a", source)
    wf.add_node("plain", scaled, deps={"x": "a"}, kwargs={"factor": 1})
    wf.add_node("bare", source)
    prints = node_fingerprints(wf.build())
    assert prints["a"] == prints["bare"]
    assert set(prints["plain"].parts) >= {"argument factor", "input binding"}
    assert prints["plain"].digest != prints["a"].digest


# -- property: add_node binds as Python would, or refuses --------------------------------

_KINDS = [
    inspect.Parameter.POSITIONAL_ONLY,
    inspect.Parameter.POSITIONAL_OR_KEYWORD,
    inspect.Parameter.KEYWORD_ONLY,
]
NODES = {"n0": 100, "n1": 200, "n2": 300}


@st.composite
def _signatures(draw: st.DrawFn) -> inspect.Signature:
    kinds = sorted(draw(st.lists(st.sampled_from(_KINDS), max_size=4)))
    params = []
    defaulted = False
    for i, kind in enumerate(kinds):
        if kind is inspect.Parameter.KEYWORD_ONLY:
            default = draw(st.booleans())
        else:  # positional defaults are trailing
            defaulted = defaulted or draw(st.booleans())
            default = defaulted
        params.append(
            inspect.Parameter(f"p{i}", kind, default=-i if default else inspect.Parameter.empty)
        )
    if draw(st.booleans()):
        at = sum(1 for p in params if p.kind is not inspect.Parameter.KEYWORD_ONLY)
        params.insert(at, inspect.Parameter("rest", inspect.Parameter.VAR_POSITIONAL))
    if draw(st.booleans()):
        params.append(inspect.Parameter("named", inspect.Parameter.VAR_KEYWORD))
    return inspect.Signature(params)


def _function(signature: inspect.Signature) -> Callable[..., Any]:
    """A function of ``signature`` that returns every parameter's value."""
    names = list(signature.parameters)
    body = ", ".join(f"{n!r}: {n}" for n in names)
    namespace: dict[str, Any] = {}
    exec(f"def fn{signature}:\n    return {{{body}}}", namespace)
    fn: Callable[..., Any] = namespace["fn"]
    return fn


# Mostly names a signature has; sometimes a variadic's name, or one no signature has.
_NAMES = st.sampled_from(["p0", "p1", "p2", "p3"] * 3 + ["rest", "named", "q"])


@settings(max_examples=200, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(
    signature=_signatures(),
    mapping=st.dictionaries(_NAMES, st.sampled_from(sorted(NODES)), max_size=2),
    args=st.lists(st.integers(1, 9), max_size=3),
    kwargs=st.dictionaries(_NAMES, st.integers(10, 99), max_size=2),
    listed=st.none() | st.none() | st.lists(st.sampled_from(sorted(NODES)), max_size=3),
)
def test_binding_is_pythons_or_a_signature_error(
    signature: inspect.Signature,
    mapping: dict[str, str],
    args: list[int],
    kwargs: dict[str, int],
    listed: list[str] | None,
) -> None:
    fn = _function(signature)
    positional: list[Any] = list(args)
    keywords: dict[str, Any] = dict(kwargs)
    if listed is not None:
        deps: Any = listed
        options: dict[str, Any] = {"inputs": "list"}
        positional.append([NODES[n] for n in listed])
    else:
        deps, options = mapping, {}
    expected: dict[str, Any] | None
    if listed is None and mapping.keys() & kwargs.keys():
        expected = None  # Python: "got multiple values for keyword argument"
    else:
        if listed is None:
            keywords.update({param: NODES[node] for param, node in mapping.items()})
        try:  # the function only returns its arguments: a TypeError is Python refusing the call
            expected = fn(*positional, **keywords)
        except TypeError:
            expected = None
    event("refused" if expected is None else "bound")
    wf = Workflow("prop")
    for node, value in NODES.items():
        wf.add_node(node, (lambda v: lambda: v)(value))
    if expected is None:
        with pytest.raises(SignatureError):
            wf.add_node("node", fn, deps=deps, args=tuple(args), kwargs=kwargs, **options)
        return
    wf.add_node("node", fn, deps=deps, args=tuple(args), kwargs=kwargs, **options)
    got = flowdag.run(wf).outputs["node"]
    assert got == expected
