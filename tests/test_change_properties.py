"""Change-aware resume against a model: random DAGs, random edit scripts.

Every node's function comes from one template whose captured values vary:
``code`` (an edit that keeps the output), ``out`` (an edit that changes it),
``fails`` (the node raises). Each run builds new function objects, as a fresh
process importing edited files does; a captured value counts by value in the
node's fingerprint, so a changed ``code`` or ``out`` is a changed node.

The model: in topological order, a node whose dep failed or was skipped is
skipped; otherwise it runs when ``rerun_from`` names it or an ancestor
(``forced``), when it has no completed output (``new``, or ``forced`` under
``rerun="failed"``), when its code changed, ``on_code_change`` is ``"rerun"``
and ``rerun`` is not ``"failed"`` (``code_changed``), or when a dep's final
output in this run differs from the one it read (``input_changed``); else it
is ``reused`` with its stored output. The nodes whose functions were called
must be exactly those, with those reasons and outputs; and the plan made
before each run (as ``flowdag explain --plan`` makes it) must agree.
"""

from __future__ import annotations

import tempfile
import warnings
from collections.abc import Callable
from dataclasses import dataclass, field, replace
from typing import Any

from hypothesis import HealthCheck, event, given, settings
from hypothesis import strategies as st

import flowdag
from flowdag.stores import MemoryStore, Store

NAMES = ["alpha", "bravo", "charlie", "delta", "echo", "foxtrot", "golf", "hotel"]


@dataclass(frozen=True, slots=True)
class Version:
    """One version of a node's code."""

    code: int = 0
    out: int = 0
    fails: bool = False


@dataclass(frozen=True, slots=True)
class Options:
    """The options of one `flowdag.run` call."""

    on_code_change: str = "rerun"
    rerun: str | None = None
    rerun_from: tuple[str, ...] = ()

    def kwargs(self) -> dict[str, Any]:
        return {
            "on_code_change": self.on_code_change,
            "rerun": self.rerun,
            "rerun_from": list(self.rerun_from),
        }


@dataclass(frozen=True, slots=True)
class Script:
    deps: dict[str, list[str]]  # in topological order
    passes: dict[str, bool]  # whether the node's output carries its inputs
    runs: list[tuple[dict[str, Version], Options]]  # each run: its versions, its options


def template(
    code: int, out: int, fails: bool, passes: bool, calls: list[str]
) -> Callable[[Any], Any]:
    """A node function: ``code`` changes its code, ``out`` and its inputs its output."""

    def node(ctx: Any) -> Any:
        calls.append(ctx.node)
        if code < 0:  # never: code is here to be part of the fingerprint only
            raise AssertionError(code)
        if fails:
            raise RuntimeError(f"{ctx.node} fails")
        if passes:
            return [out, [[dep, ctx.inputs[dep]] for dep in sorted(ctx.inputs)]]
        return [out]

    return node


def build(script: Script, versions: dict[str, Version], calls: list[str]) -> flowdag.DAG:
    wf = flowdag.Workflow("edits")
    for name, deps in script.deps.items():
        v = versions[name]
        wf.add_node(name, template(v.code, v.out, v.fails, script.passes[name], calls), deps=deps)
    return wf.build()


@dataclass(slots=True)
class Stored:
    version: Version
    output: Any
    inputs: dict[str, Any]


@dataclass(slots=True)
class Expected:
    ran: set[str] = field(default_factory=set)
    statuses: dict[str, str] = field(default_factory=dict)
    reasons: dict[str, tuple[str, set[str]]] = field(default_factory=dict)  # code, deps (one named)
    outputs: dict[str, Any] = field(default_factory=dict)


class Model:
    """What a resume should do, from the versions each node last completed with."""

    def __init__(self, script: Script) -> None:
        self.script = script
        self.stored: dict[str, Stored | None] = dict.fromkeys(script.deps)

    def step(self, versions: dict[str, Version], options: Options) -> Expected:
        want = Expected()
        forced = set(options.rerun_from)
        for name, deps in self.script.deps.items():
            stored, version = self.stored[name], versions[name]
            if any(d in forced for d in deps):
                forced.add(name)  # a descendant of a node of rerun_from
            if any(want.statuses[d] != "completed" for d in deps):
                want.statuses[name] = "skipped"
                self.stored[name] = None
                continue
            inputs = {d: want.outputs[d] for d in deps}
            code_counts = options.on_code_change == "rerun" and options.rerun is None
            if name in forced:
                reason: tuple[str, set[str]] = ("forced", set())
            elif stored is None:
                reason = ("forced" if options.rerun else "new", set())
            elif stored.version != version and code_counts:
                reason = ("code_changed", set())
            elif stored.inputs != inputs:
                reason = ("input_changed", {d for d in deps if stored.inputs[d] != inputs[d]})
            else:
                want.reasons[name] = ("reused", set())
                want.statuses[name] = "completed"
                want.outputs[name] = stored.output
                continue
            want.reasons[name] = reason
            want.ran.add(name)
            if version.fails:
                want.statuses[name] = "failed"
                self.stored[name] = None
                continue
            output: Any = [version.out]
            if self.script.passes[name]:
                output.append([[d, inputs[d]] for d in sorted(deps)])
            want.statuses[name] = "completed"
            want.outputs[name] = output
            self.stored[name] = Stored(version, output, inputs)
        return want


EDITS = ["code", "code", "output", "output", "output", "fail", "fix"]
ON_CODE_CHANGE = ["rerun", "rerun", "rerun", "warn", "ignore"]


def edit(version: Version, action: str) -> Version:
    if action == "code":  # other code, same output
        return replace(version, code=version.code + 1)
    if action == "output":
        return replace(version, code=version.code + 1, out=version.out + 1)
    if action in ("fail", "fix"):
        return replace(version, fails=action == "fail")
    return version  # a new function object of the same code: a no-op edit


@st.composite
def scripts(draw: st.DrawFn) -> Script:
    names = NAMES[: draw(st.integers(3, 8))]
    deps: dict[str, list[str]] = {}
    for i, name in enumerate(names):
        earlier = st.sampled_from(names[:i]) if i else st.nothing()
        deps[name] = sorted(draw(st.sets(earlier, min_size=min(i, 1), max_size=min(i, 3))))
    passes = {name: draw(st.booleans()) for name in names}
    first = {name: Version(fails=draw(st.integers(0, 9)) == 0) for name in names}
    runs = [(first, Options())]
    for _ in range(draw(st.integers(1, 3))):
        before = runs[-1][0]
        # A few nodes edited; the others are rebuilt as they were (no-op edits).
        edited = draw(st.dictionaries(st.sampled_from(names), st.sampled_from(EDITS), max_size=3))
        versions = {n: edit(before[n], edited.get(n, "same")) for n in names}
        options = Options(draw(st.sampled_from(ON_CODE_CHANGE)))
        asked = draw(st.sampled_from(["", "", "", "", "failed", "from"]))
        if asked == "failed":
            options = replace(options, rerun="failed")
        elif asked == "from":
            options = replace(options, rerun_from=(draw(st.sampled_from(names)),))
        runs.append((versions, options))
    return Script(deps, passes, runs)


def replay(script: Script, *, plan: bool, store: Store | None = None) -> None:
    """Run every version of ``script`` in turn and hold each run to the model.

    With ``plan``, each run is first planned as ``flowdag explain --plan`` does,
    and the plan must agree: nodes to run ran (unless an upstream failure
    skipped them), nodes to reuse did not, provisional nodes ran iff one of
    their inputs came back changed.

    By default on a memory store: the records go through the codec as on disk,
    without fsyncs (the disk stores are the end-to-end tests', in
    tests/test_change_edits.py). On a store on disk, each result must also be
    the run as stored: the runner keeps no state of a node that nothing reads,
    and the result reads it back (`flowdag._ledger`).
    """
    model = Model(script)
    calls: list[str] = []
    on_disk = store is not None
    with store or MemoryStore() as store:
        for i, (versions, options) in enumerate(script.runs):
            calls.clear()
            want = model.step(versions, options)
            dag = build(script, versions, calls)
            where = f"run {i} ({options}) of {script}"
            verdicts = planned(dag, store, options) if plan else {}
            with warnings.catch_warnings():
                warnings.simplefilter("ignore")  # "warn" warns: not what this test is about
                result = flowdag.run(dag, run_id="r", store=store, **options.kwargs())
            assert sorted(calls) == sorted(want.ran), where
            if on_disk:
                assert dict(result.nodes) == store.load("r").nodes, where
            assert {n: str(s) for n, s in result.node_status.items()} == want.statuses, where
            assert {n: result.outputs[n] for n in want.outputs} == want.outputs, where
            reasons = result.explain()
            for name, (code, names) in want.reasons.items():
                event(f"a node {code}")  # --hypothesis-show-statistics: what was covered
                if code == "reused" and any(d in want.ran for d in script.deps[name]):
                    event("early cutoff")
                got = reasons[name]
                assert got.code == code, f"{name}: {got} in {where}"
                assert not names or any(d in got.detail for d in names), f"{name}: {got} in {where}"
            for name, verdict in verdicts.items():
                said = f"{name}: planned {verdict}, ran {reasons[name]} in {where}"
                skipped = want.statuses[name] == "skipped"
                if verdict.action == "run":
                    assert name in calls or skipped, said
                    assert skipped or verdict.reason == reasons[name], said
                elif verdict.action == "reuse":
                    assert name not in calls, said
                    assert verdict.reason == reasons[name], said
                else:
                    assert verdict.action == "provisional", said
                    changed = not skipped and want.reasons[name][0] == "input_changed"
                    assert (name in calls) == changed, said


def planned(dag: flowdag.DAG, store: Store, options: Options) -> dict[str, Any]:
    """The verdicts `flowdag.run` would follow, planned from the store without running."""
    from flowdag._fingerprint import node_fingerprints
    from flowdag.resume import plan_call

    stored = store.load("r") if "r" in store.list_runs() else None
    plan = plan_call(
        dag,
        stored,
        "r",
        allow_changes=False,
        fingerprints=node_fingerprints(dag),
        **options.kwargs(),
    )
    return dict(plan.verdicts)


@settings(
    max_examples=100,
    deadline=None,
    suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large],
)
@given(script=scripts())
def test_resume_runs_what_the_model_and_the_plan_say(script: Script) -> None:
    replay(script, plan=True)


@settings(
    max_examples=25,
    deadline=None,
    suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large],
)
@given(script=scripts())
def test_results_on_disk_read_back_what_the_model_says(script: Script) -> None:
    with tempfile.TemporaryDirectory() as where:
        replay(script, plan=False, store=flowdag.LMDBStore(where))
