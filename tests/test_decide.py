"""Verdicts on a resume (flowdag._decide): examples, and a property test against a model.

The model is the rule the user relies on, stated directly: walking the DAG in
topological order, a node runs iff it has no completed output, or its code
changed (and it is not pinned by ``mark_done`` nor kept by ``on_code_change``),
or a dep's final output differs from the one it read. `decide` must reach the
same set of nodes while knowing the new outputs only as the run produces
them, through its provisional verdicts and `resolve`.
"""

from __future__ import annotations

from datetime import UTC, datetime

from hypothesis import given, settings
from hypothesis import strategies as st

from flowdag import Workflow
from flowdag._decide import Verdict, decide, resolve
from flowdag._fingerprint import Fingerprint
from flowdag.dag import DAG
from flowdag.state import NodeState, NodeStatus, Provenance, Reason, RunState

T0 = datetime(2026, 11, 30, tzinfo=UTC)


def _dag(deps: dict[str, list[str]]) -> DAG:
    wf = Workflow("wf")
    for name, node_deps in deps.items():
        wf.add_node(name, lambda **_: None, deps=node_deps)
    return wf.build()


def _fp(code: str, source: str | None = None) -> Fingerprint:
    return Fingerprint(code, source or code, {"function": code})


def _done(
    code: str, output: str, inputs: dict[str, str], deps: tuple[str, ...] = (), **extra: object
) -> NodeState:
    provenance = Provenance(code, code, {"function": code}, output, inputs, **extra)  # type: ignore[arg-type]
    return NodeState(NodeStatus.COMPLETED, 1, T0, T0, output, deps=deps, provenance=provenance)


def _chain_state() -> tuple[DAG, RunState]:
    dag = _dag({"a": [], "b": ["a"], "c": ["b"]})
    state = RunState("r", "wf")
    state.nodes["a"] = _done("fa", "oa", {})
    state.nodes["b"] = _done("fb", "ob", {"a": "oa"}, ("a",))
    state.nodes["c"] = _done("fc", "oc", {"b": "ob"}, ("b",))
    return dag, state


SAME = {"a": _fp("fa"), "b": _fp("fb"), "c": _fp("fc")}


def test_nothing_changed_reuses_everything() -> None:
    dag, state = _chain_state()
    verdicts = decide(dag, state, SAME)
    assert {n: v.action for n, v in verdicts.items()} == dict.fromkeys("abc", "reuse")
    assert verdicts["c"].reason == Reason("reused", "its code and inputs are unchanged")


def test_code_change_runs_the_node_and_makes_its_dependents_provisional() -> None:
    dag, state = _chain_state()
    verdicts = decide(dag, state, {**SAME, "a": _fp("fa2")})
    assert verdicts["a"].action == "run"
    assert verdicts["a"].reason.code == "code_changed"
    assert "function" in verdicts["a"].reason.detail
    assert verdicts["b"].action == verdicts["c"].action == "provisional"
    # Early cutoff: a came back with the output b read.
    assert resolve("b", state.nodes["b"], {"a": "oa"}).action == "reuse"
    again = resolve("b", state.nodes["b"], {"a": "oa2"})
    assert again.action == "run"
    assert again.reason == Reason("input_changed", "'a' ran again and its output changed")


def test_the_changed_part_is_named() -> None:
    dag, state = _chain_state()
    helper = "helper clean (etl/helpers.py)"
    state.nodes["a"] = NodeState(
        NodeStatus.COMPLETED,
        1,
        T0,
        T0,
        1,
        provenance=Provenance("fa", "fa", {"function": "x", helper: "1"}, "oa"),
    )
    now = Fingerprint("fa2", "fa2", {"function": "x", helper: "2", "global RATE": "3"})
    reason = decide(dag, state, {**SAME, "a": now})["a"].reason
    assert reason.code == "code_changed"
    assert helper in reason.detail
    assert "module global RATE (new)" in reason.detail
    assert "function" not in reason.detail.replace("function <lambda>", "")


def test_on_code_change_warn_and_ignore_keep_the_output() -> None:
    dag, state = _chain_state()
    for mode in ("warn", "ignore"):
        verdict = decide(dag, state, {**SAME, "b": _fp("fb2")}, on_code_change={"b": mode})["b"]
        assert verdict.action == "reuse"
        assert f"on_code_change={mode!r}" in verdict.reason.detail
        assert (verdict.warning is not None) == (mode == "warn")


def test_a_new_python_bytecode_alone_is_kept_with_a_note() -> None:
    dag, state = _chain_state()
    verdict = decide(dag, state, {**SAME, "b": _fp("fb-py314", source="fb")})["b"]
    assert verdict.action == "reuse"
    assert "bytecode differs" in verdict.reason.detail


def test_a_manual_node_is_pinned_even_when_its_code_and_inputs_change() -> None:
    dag, state = _chain_state()
    state.nodes["b"] = _done(
        "fb", "manual", {}, ("a",), manual=True, reason=Reason("manual", "loaded by hand")
    )
    verdicts = decide(dag, state, {"a": _fp("fa2"), "b": _fp("fb2"), "c": SAME["c"]})
    assert verdicts["b"] == Verdict("reuse", Reason("manual", "loaded by hand"))
    # c read b's old output, not the one marked done: it runs.
    assert verdicts["c"].action == "run"
    assert verdicts["c"].reason.code == "input_changed"
    assert "'b'" in verdicts["c"].reason.detail and "operator" in verdicts["c"].reason.detail


def test_unfinished_nodes_say_why_they_run() -> None:
    dag, state = _chain_state()
    state.nodes["a"] = NodeState(NodeStatus.RUNNING, 2, T0)
    state.nodes["b"] = NodeState(NodeStatus.SKIPPED, 0, deps=("a",))
    state.nodes["c"] = NodeState(deps=("b",))
    verdicts = decide(dag, state, SAME)
    assert [verdicts[n].reason.code for n in "abc"] == ["interrupted", "new", "new"]
    assert verdicts["c"].reason.detail == "it never ran"
    failed = decide(dag, state, SAME, rerun="failed")
    assert failed["b"].reason.code == "forced"


def test_rerun_failed_keeps_completed_nodes_whose_code_changed() -> None:
    dag, state = _chain_state()
    verdicts = decide(dag, state, {**SAME, "a": _fp("fa2")}, rerun="failed")
    assert {n: v.action for n, v in verdicts.items()} == dict.fromkeys("abc", "reuse")
    assert "rerun='failed'" in verdicts["a"].reason.detail


def test_rerun_from_forces_the_node_and_its_descendants() -> None:
    dag, state = _chain_state()
    verdicts = decide(dag, state, SAME, rerun_from=["b"])
    assert verdicts["a"].action == "reuse"
    assert verdicts["b"].reason == Reason("forced", "rerun_from names 'b'")
    assert verdicts["c"].action == "run" and verdicts["c"].reason.code == "forced"


def test_records_without_provenance_count_as_unchanged_until_a_dep_runs() -> None:
    dag, state = _chain_state()
    for name in "abc":
        node = state.nodes[name]
        state.nodes[name] = NodeState(node.status, 1, T0, T0, node.output, deps=node.deps)
    verdicts = decide(dag, state, {**SAME, "a": _fp("other")})
    assert verdicts["a"].action == "reuse"  # nothing recorded to compare with
    state.nodes["a"] = NodeState()  # a runs again: b cannot tell its old input from the new
    verdicts = decide(dag, state, SAME)
    assert verdicts["b"].action == "provisional"
    assert resolve("b", state.nodes["b"], {"a": "oa"}).action == "run"  # nothing to compare


# -- the property ------------------------------------------------------------------------


@st.composite
def resumes(draw: st.DrawFn) -> dict[str, object]:
    """A random DAG, a stored run of it, code edits and the outputs re-runs produce."""
    size = draw(st.integers(1, 8))
    names = [f"n{i}" for i in range(size)]
    deps = {
        name: sorted(draw(st.sets(st.sampled_from(names[:i]), max_size=3)) if i else [])
        for i, name in enumerate(names)
    }
    statuses = {
        name: draw(st.sampled_from(["completed"] * 4 + ["pending", "failed", "running"]))
        for name in names
    }
    stored_output = {name: f"o{draw(st.integers(0, 2))}" for name in names}
    # What each node read: usually its dep's stored output, sometimes an older one.
    read = {
        name: {dep: draw(st.sampled_from([stored_output[dep], "older"])) for dep in deps[name]}
        for name in names
    }
    edited = {name: draw(st.booleans()) for name in names}
    new_output = {name: draw(st.sampled_from([stored_output[name], "new"])) for name in names}
    manual = {name: draw(st.integers(0, 9)) == 0 for name in names}
    mode = {name: draw(st.sampled_from(["rerun", "rerun", "warn", "ignore"])) for name in names}
    return {
        "names": names,
        "deps": deps,
        "statuses": statuses,
        "stored_output": stored_output,
        "read": read,
        "edited": edited,
        "new_output": new_output,
        "manual": manual,
        "mode": mode,
    }


def _model(case: dict[str, object]) -> set[str]:
    """The nodes that must run: the rule the module docstring states, applied directly."""
    names: list[str] = case["names"]  # type: ignore[assignment]
    deps: dict[str, list[str]] = case["deps"]  # type: ignore[assignment]
    final: dict[str, str] = {}
    ran = set()
    for name in names:  # names are in a topological order
        completed = case["statuses"][name] == "completed"  # type: ignore[index]
        pinned = completed and case["manual"][name]  # type: ignore[index]
        edited = case["edited"][name] and case["mode"][name] == "rerun"  # type: ignore[index]
        read = case["read"][name]  # type: ignore[index]
        inputs_moved = any(final[dep] != read[dep] for dep in deps[name])
        if not pinned and (not completed or edited or inputs_moved):
            ran.add(name)
            final[name] = case["new_output"][name]  # type: ignore[index]
        else:
            final[name] = case["stored_output"][name]  # type: ignore[index]
    return ran


@settings(max_examples=300, deadline=None)
@given(resumes())
def test_verdicts_and_early_cutoff_run_exactly_the_nodes_the_model_runs(
    case: dict[str, object],
) -> None:
    names: list[str] = case["names"]  # type: ignore[assignment]
    deps: dict[str, list[str]] = case["deps"]  # type: ignore[assignment]
    dag = _dag(deps)
    state = RunState("r", "wf")
    fingerprints = {}
    for name in names:
        status = NodeStatus(case["statuses"][name])  # type: ignore[index]
        output = case["stored_output"][name]  # type: ignore[index]
        provenance = Provenance(
            f"f-{name}",
            f"f-{name}",
            {"function": f"f-{name}"},
            output,
            case["read"][name],  # type: ignore[index]
            manual=case["manual"][name],  # type: ignore[index]
        )
        if status is NodeStatus.COMPLETED:
            state.nodes[name] = NodeState(
                status, 1, T0, T0, output, deps=tuple(deps[name]), provenance=provenance
            )
        else:
            state.nodes[name] = NodeState(status, 1, T0, deps=tuple(deps[name]))
        code = f"f-{name}-edited" if case["edited"][name] else f"f-{name}"  # type: ignore[index]
        fingerprints[name] = Fingerprint(code, code, {"function": code})
    verdicts = decide(dag, state, fingerprints, on_code_change=case["mode"])  # type: ignore[arg-type]

    # Run it as the driver does: provisional nodes are resolved once their deps are done.
    final: dict[str, str] = {}
    ran = set()
    for name in dag.nodes:
        verdict = verdicts[name]
        if verdict.action == "provisional":
            verdict = resolve(name, state.nodes[name], {dep: final[dep] for dep in deps[name]})
        if verdict.action == "run":
            ran.add(name)
            final[name] = case["new_output"][name]  # type: ignore[index]
        else:
            assert state.nodes[name].status is NodeStatus.COMPLETED, (name, verdict)
            final[name] = case["stored_output"][name]  # type: ignore[index]
        assert verdict.reason.code in {
            "new",
            "interrupted",
            "code_changed",
            "input_changed",
            "manual",
            "reused",
        }
    assert ran == _model(case)
    # A verdict made before the run is never contradicted by it.
    assert {n for n, v in verdicts.items() if v.action == "run"} <= ran
    assert not {n for n, v in verdicts.items() if v.action == "reuse"} & ran
