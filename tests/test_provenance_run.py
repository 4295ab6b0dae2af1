"""run() records provenance and acts on the verdicts of a resume.

Each test changes a workflow's code between two calls of `flowdag.run` in
this process: another function object with another body under the same node
name, a closure built with another value, a bumped ``version=``. The nodes
log their calls, so a test sees which ran and which were reused.
"""

from __future__ import annotations

import logging
import os
import signal
import subprocess
import sys
import textwrap
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest

import flowdag
from flowdag import (
    InvalidArgumentError,
    InvalidArgumentTypeError,
    NodeStatus,
    Reason,
    Ref,
    Workflow,
)
from flowdag._digests import output_digest
from flowdag._fingerprint import Fingerprinter, node_fingerprints
from flowdag.resume import plan_call
from flowdag.stores import generate_key, open_store
from flowdag.stores.base import Store

CALLS: list[str] = []  # the nodes called, in order (a global the nodes append to)
KINDS = ["memory", "lmdb", "json", "flatbuffers", "lmdb-encrypted"]


def open_kind(kind: str, root: Path) -> Store:
    scheme, _, encrypted = kind.partition("-")
    if scheme == "memory":
        return open_store("memory://")
    return open_store(f"{scheme}://{root}", **({"key": generate_key()} if encrypted else {}))


@pytest.fixture(params=KINDS)
def store(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[Store]:
    with open_kind(request.param, tmp_path) as opened:
        yield opened


@pytest.fixture(autouse=True)
def _calls() -> Iterator[None]:
    CALLS.clear()
    yield
    CALLS.clear()


# Versions of the diamond's top node: the first two compute the same output.
def top_one() -> int:
    CALLS.append("top")
    return 1


def top_one_edited() -> int:
    CALLS.append("top")
    one = 3 - 2
    return one


def top_two() -> int:
    CALLS.append("top")
    return 2


def left(top: int) -> int:
    CALLS.append("left")
    return top * 10


def right(top: int) -> bool:
    CALLS.append("right")
    return top > 0  # the same for 1 and 2: early cutoff below it


def join(left: int, right: bool) -> list[Any]:
    CALLS.append("join")
    return [left, right]


def after_right(right: bool) -> str:
    CALLS.append("after_right")
    return f"right is {right}"


def diamond(top: Callable[[], int] = top_one, **top_options: Any) -> Workflow:
    """top -> left, right -> join; right -> after_right."""
    wf = Workflow("diamond")
    wf.add_node("top", top, **top_options)
    wf.add_node("left", left, deps=["top"])
    wf.add_node("right", right, deps=["top"])
    wf.add_node("join", join, deps=["left", "right"])
    wf.add_node("after_right", after_right, deps=["right"])
    return wf


def codes(result: flowdag.RunResult) -> dict[str, str]:
    return {node: reason.code for node, reason in result.explain().items()}


# -- what is recorded -------------------------------------------------------------------------


def test_every_completed_record_carries_its_provenance(store: Store) -> None:
    wf = diamond()
    result = flowdag.run(wf, run_id="r", store=store)
    assert result.ok
    fingerprints = node_fingerprints(wf.build(), Fingerprinter())
    stored = store.load("r")
    digests = {}
    for name, node in stored.nodes.items():
        provenance = node.provenance
        assert provenance is not None
        assert provenance.fingerprint == fingerprints[name].digest
        assert provenance.source == fingerprints[name].source_digest
        assert dict(provenance.parts) == fingerprints[name].parts
        assert provenance.output == output_digest(
            store.codec, store.codec.encode(node.output), node.output
        )
        assert provenance.reason == Reason("new", "first run of this run id")
        assert not provenance.manual and provenance.audit == ()
        digests[name] = provenance.output
        assert result.nodes[name].provenance == provenance
    for node in stored.nodes.values():
        assert node.provenance is not None
        assert dict(node.provenance.inputs) == {dep: digests[dep] for dep in node.deps}
    assert codes(result) == dict.fromkeys(wf.build().nodes, "new")


@pytest.mark.parametrize("kind", ["memory", "lmdb"])
def test_an_output_kept_by_reference_is_digested_by_its_ref(kind: str, tmp_path: Path) -> None:
    wf = Workflow("refs")
    wf.add_node("big", lambda: list(range(1000)), inline_limit=64)
    wf.add_node("size", lambda big: len(big), deps=["big"])
    wf.add_node("handle", lambda big: big.size, deps=["big"])  # takes the Ref: no annotation
    with open_kind(kind, tmp_path) as store:
        result = flowdag.run(wf, run_id="r", store=store)
        ref = result.refs["big"]
        assert type(ref) is Ref
        stored = store.load("r")
    big = stored.nodes["big"].provenance
    assert big is not None and big.output == ref.sha256
    size = stored.nodes["size"].provenance
    assert size is not None and dict(size.inputs) == {"big": ref.sha256}


def test_an_output_digests_the_same_inline_and_by_reference() -> None:
    def workflow(version: int) -> Workflow:
        wf = Workflow("limits")  # big: above the codec's compression threshold
        wf.add_node("big", lambda: list(range(1000)), version=version)
        wf.add_node("size", lambda big: CALLS.append("size") or len(big), deps=["big"])
        return wf

    store = open_store("memory://")
    inline = flowdag.run(workflow(1), run_id="r", store=store, inline_limit=None)
    assert inline.refs == {}
    CALLS.clear()
    again = flowdag.run(workflow(2), run_id="r", store=store, inline_limit=64)
    assert type(again.nodes["big"].output) is Ref
    assert CALLS == []  # size read the same digest: cut off
    assert codes(again) == {"big": "code_changed", "size": "reused"}
    before, after = inline.nodes["big"].provenance, again.nodes["big"].provenance
    assert before is not None and after is not None and before.output == after.output


def test_records_of_a_failure_and_its_skips_keep_the_reason() -> None:
    wf = Workflow("fails")
    wf.add_node("boom", lambda: 1 / 0)
    wf.add_node("below", lambda boom: boom, deps=["boom"])
    result = flowdag.run(wf, run_id="r")
    assert result.nodes["boom"].status is NodeStatus.FAILED
    failed = result.nodes["boom"].provenance
    assert failed is not None and failed.reason == Reason("new", "first run of this run id")
    assert failed.output is None
    skip = result.explain()["below"]
    assert skip.code == "new" and "'boom' failed" in skip.detail


def test_outputs_made_in_worker_processes_are_digested_there() -> None:
    # A memory store's blob area is out of the workers' reach: the big output
    # comes back as bytes and is kept by reference here (its digest: the Ref's).
    wf = Workflow("remote")
    wf.add_node("big", lambda: list(range(1000)), inline_limit=64)
    wf.add_node("small", lambda big: len(big), deps=["big"])
    store = open_store("memory://")
    result = flowdag.run(wf, run_id="r", store=store, executor="processes", max_workers=1)
    assert result.ok, result.errors
    big, small = result.nodes["big"].provenance, result.nodes["small"].provenance
    assert big is not None and small is not None
    assert big.output == result.refs["big"].sha256
    assert small.output == output_digest(store.codec, store.codec.encode(1000), 1000)
    assert dict(small.inputs) == {"big": big.output}


def test_accepted_structural_changes_are_reasons() -> None:
    store = open_store("memory://")
    flowdag.run(diamond(), run_id="r", store=store)
    wf = diamond()
    wf.add_node("extra", lambda left: left, deps=["left"])
    changed = Workflow("diamond")
    for spec in wf.specs:
        if spec.name == "after_right":  # reads left too now
            changed.add_node(spec.name, lambda right, left: [right, left], deps=["right", "left"])
        else:
            changed.add_node(spec.name, spec.fn, deps=spec.deps)
    CALLS.clear()
    result = flowdag.run(changed, run_id="r", store=store, allow_changes=True)
    assert result.ok
    explained = result.explain()
    assert explained["extra"].code == "new"
    assert explained["after_right"].code == "code_changed"
    assert "from [right] to [left, right]" in explained["after_right"].detail
    assert {n: explained[n].code for n in ["top", "left", "right", "join"]} == dict.fromkeys(
        ["top", "left", "right", "join"], "reused"
    )


# -- early cutoff -----------------------------------------------------------------------------


def test_an_edit_that_keeps_the_output_reruns_only_the_edited_node(store: Store) -> None:
    flowdag.run(diamond(), run_id="r", store=store)
    before = store.load("r")
    CALLS.clear()
    result = flowdag.run(diamond(top_one_edited), run_id="r", store=store)
    assert result.ok
    assert CALLS == ["top"]
    assert codes(result) == {
        "top": "code_changed",
        "left": "reused",
        "right": "reused",
        "join": "reused",
        "after_right": "reused",
    }
    assert "function" in result.explain()["top"].detail
    after = store.load("r")
    for name in ["left", "right", "join", "after_right"]:  # cut off: not committed again
        assert after.nodes[name] == before.nodes[name]
    assert after.nodes["top"].provenance != before.nodes["top"].provenance
    # Nothing changed since: a third call reuses everything, with no commit.
    CALLS.clear()
    again = flowdag.run(diamond(top_one_edited), run_id="r", store=store)
    assert CALLS == []
    assert set(codes(again).values()) == {"reused"}


def test_a_changed_output_reruns_what_read_it_and_no_further(store: Store) -> None:
    flowdag.run(diamond(), run_id="r", store=store)
    CALLS.clear()
    result = flowdag.run(diamond(top_two), run_id="r", store=store)
    assert result.ok
    assert sorted(CALLS) == ["join", "left", "right", "top"]  # after_right cut off
    explained = result.explain()
    assert explained["top"].code == "code_changed"
    for name in ["left", "right"]:
        assert explained[name].code == "input_changed"
        assert "'top'" in explained[name].detail
    assert explained["join"].code == "input_changed" and "'left'" in explained["join"].detail
    assert explained["after_right"].code == "reused"
    assert result.outputs == {
        "top": 2,
        "left": 20,
        "right": True,
        "join": [20, True],
        "after_right": "right is True",
    }
    # The records read what they read: join's inputs are the digests stored now.
    stored = store.load("r")
    join_inputs = stored.nodes["join"].provenance.inputs  # type: ignore[union-attr]
    assert join_inputs == {
        dep: stored.nodes[dep].provenance.output  # type: ignore[union-attr]
        for dep in ["left", "right"]
    }


def test_a_provisional_node_below_a_failure_is_skipped() -> None:
    store = open_store("memory://")
    flowdag.run(diamond(), run_id="r", store=store)

    def top_broken() -> int:
        raise RuntimeError("broken")

    result = flowdag.run(diamond(top_broken), run_id="r", store=store)
    assert result.nodes["top"].status is NodeStatus.FAILED
    for name in ["left", "right", "join", "after_right"]:
        assert result.nodes[name].status is NodeStatus.SKIPPED
        assert "'top' failed" in result.explain()[name].detail
    CALLS.clear()
    fixed = flowdag.run(diamond(), run_id="r", store=store)
    assert fixed.ok and sorted(CALLS) == sorted(["top", "left", "right", "join", "after_right"])


def test_closures_with_other_values_differ() -> None:
    def make(k: int) -> Callable[[], int]:
        def scale() -> int:
            CALLS.append("scale")
            return 7 * k

        return scale

    def workflow(k: int) -> Workflow:
        wf = Workflow("closures")
        wf.add_node("scale", make(k))
        wf.add_node("show", lambda scale: CALLS.append("show") or scale, deps=["scale"])
        return wf

    store = open_store("memory://")
    flowdag.run(workflow(2), run_id="r", store=store)
    CALLS.clear()
    assert set(codes(flowdag.run(workflow(2), run_id="r", store=store)).values()) == {"reused"}
    assert CALLS == []
    result = flowdag.run(workflow(3), run_id="r", store=store)
    assert CALLS == ["scale", "show"]
    assert result.outputs["show"] == 21
    assert "closure variable k" in result.explain()["scale"].detail


def test_a_version_bump_reruns_the_node() -> None:
    store = open_store("memory://")
    flowdag.run(diamond(version=1), run_id="r", store=store)
    CALLS.clear()
    flowdag.run(diamond(version=1), run_id="r", store=store)
    assert CALLS == []
    result = flowdag.run(diamond(version="2"), run_id="r", store=store)
    assert CALLS == ["top"]  # same output: the rest cuts off
    assert result.explain()["top"].code == "code_changed"
    assert "version" in result.explain()["top"].detail


# -- policies and overrides ------------------------------------------------------------------


def test_on_code_change_per_run(caplog: pytest.LogCaptureFixture) -> None:
    store = open_store("memory://")
    flowdag.run(diamond(), run_id="r", store=store)
    CALLS.clear()
    ignored = flowdag.run(diamond(top_two), run_id="r", store=store, on_code_change="ignore")
    assert CALLS == [] and ignored.outputs["top"] == 1
    assert set(codes(ignored).values()) == {"reused"}
    with caplog.at_level(logging.WARNING, logger="flowdag"):
        warned = flowdag.run(diamond(top_two), run_id="r", store=store, on_code_change="warn")
    assert CALLS == [] and warned.outputs["top"] == 1
    about_top = [r for r in caplog.records if "'top'" in r.getMessage()]
    assert len(about_top) == 1, [r.getMessage() for r in caplog.records]
    result = flowdag.run(diamond(top_two), run_id="r", store=store)  # "rerun", the default
    assert result.outputs["top"] == 2
    assert codes(result)["top"] == "code_changed"


def test_on_code_change_per_node_overrides_the_run() -> None:
    store = open_store("memory://")
    flowdag.run(diamond(), run_id="r", store=store)
    CALLS.clear()
    kept = flowdag.run(diamond(top_two, on_code_change="ignore"), run_id="r", store=store)
    assert CALLS == [] and kept.outputs["top"] == 1
    rerun = flowdag.run(
        diamond(top_two, on_code_change="rerun"), run_id="r", store=store, on_code_change="ignore"
    )
    assert rerun.outputs["top"] == 2


def failing_chain(fail: set[str], changed: bool = False) -> Workflow:
    """first -> second -> third, and side; ``second`` fails while in ``fail``."""

    def second(first: int) -> int:
        CALLS.append("second")
        if "second" in fail:
            raise RuntimeError("second is broken")
        return first + 1

    def side() -> str:
        CALLS.append("side")
        return "edited" if changed else "side"

    wf = Workflow("chain")
    wf.add_node("first", lambda: CALLS.append("first") or 1)
    wf.add_node("second", second, deps=["first"])
    wf.add_node("third", lambda second: CALLS.append("third") or second * 2, deps=["second"])
    wf.add_node("side", side)
    return wf


def test_rerun_failed_runs_failed_and_skipped_nodes_only() -> None:
    store = open_store("memory://")
    fail = {"second"}
    flowdag.run(failing_chain(fail), run_id="r", store=store)
    fail.clear()
    CALLS.clear()
    result = flowdag.run(failing_chain(fail, changed=True), run_id="r", store=store, rerun="failed")
    assert result.ok
    assert sorted(CALLS) == ["second", "third"]  # side's code changed, yet it is kept
    assert codes(result) == {
        "first": "reused",
        "second": "forced",
        "third": "forced",
        "side": "reused",
    }
    assert "rerun='failed'" in result.explain()["side"].detail
    assert result.outputs["side"] == "side"


def test_rerun_from_runs_the_nodes_and_their_descendants() -> None:
    store = open_store("memory://")
    flowdag.run(diamond(), run_id="r", store=store)
    CALLS.clear()
    result = flowdag.run(diamond(), run_id="r", store=store, rerun_from=["right"])
    assert sorted(CALLS) == ["after_right", "join", "right"]
    assert codes(result) == {
        "top": "reused",
        "left": "reused",
        "right": "forced",
        "join": "forced",
        "after_right": "forced",
    }


def test_plan_call_agrees_with_run() -> None:
    store = open_store("memory://")
    flowdag.run(diamond(), run_id="r", store=store)
    dag = diamond(top_one_edited).build()
    plan = plan_call(
        dag,
        store.load("r"),
        "r",
        allow_changes=False,
        fingerprints=node_fingerprints(dag),
    )
    assert {n: v.action for n, v in plan.verdicts.items()} == {
        "top": "run",
        "left": "provisional",
        "right": "provisional",
        "join": "provisional",
        "after_right": "provisional",
    }
    assert plan.completed == set()
    result = flowdag.run(dag, run_id="r", store=store)
    assert result.explain()["top"] == plan.verdicts["top"].reason


# -- bad input --------------------------------------------------------------------------------


@pytest.mark.parametrize("version", [1.5, True, b"1", [1]])
def test_a_version_that_is_not_a_str_or_int_is_refused(version: Any) -> None:
    wf = Workflow("w")
    with pytest.raises(InvalidArgumentTypeError, match=r"node 'n'.*version"):
        wf.add_node("n", lambda: 1, version=version)


def test_bad_run_options_are_refused_naming_the_culprit() -> None:
    wf = diamond()
    with pytest.raises(InvalidArgumentError, match=r"node 'top'.*on_code_change"):
        Workflow("w").add_node("top", top_one, on_code_change="sometimes")
    with pytest.raises(InvalidArgumentError, match=r"on_code_change.*'sometimes'"):
        flowdag.run(wf, on_code_change="sometimes")
    with pytest.raises(InvalidArgumentError, match=r"rerun.*'all'"):
        flowdag.run(wf, rerun="all")
    with pytest.raises(InvalidArgumentError, match=r"'nope'.*'top'"):
        flowdag.run(wf, rerun_from=["left", "nope"])
    with pytest.raises(InvalidArgumentTypeError, match="rerun_from"):
        flowdag.run(wf, rerun_from=[3])  # type: ignore[list-item]
    assert CALLS == []  # refused before anything ran


def test_a_global_counted_by_type_is_warned_about_once(caplog: pytest.LogCaptureFixture) -> None:
    def reads_calls() -> int:
        return len(CALLS)

    with caplog.at_level(logging.WARNING, logger="flowdag"):
        Fingerprinter().fingerprint(reads_calls)
        Fingerprinter().fingerprint(reads_calls)
    warnings = [r.getMessage() for r in caplog.records if "reads_calls" in r.getMessage()]
    assert len(warnings) == 1
    assert "global CALLS" in warnings[0] and "list" in warnings[0]


# -- a crash while provisional nodes wait -----------------------------------------------------

WORKFLOW = textwrap.dedent(
    """
    import os, signal, sys
    import flowdag

    def log(name):
        with open(os.environ["CALLS"], "a") as f:
            f.write(name + "\\n")

    if os.environ["TOP"] == "1":
        def top():
            log("top")
            return 1
    else:
        def top():
            log("top")
            return 2

    def left(top):
        log("left")
        if os.environ.get("KILL") == "left":
            os.kill(os.getpid(), signal.SIGKILL)
        return top * 10

    def right(top):
        log("right")
        return top > 0

    def below(right):
        log("below")
        return [right]

    def join(left, below):
        log("join")
        return [left, below]

    wf = flowdag.Workflow("killed")
    wf.add_node("top", top)
    wf.add_node("left", left, deps=["top"])
    wf.add_node("right", right, deps=["top"])
    wf.add_node("below", below, deps=["right"])
    wf.add_node("join", join, deps=["left", "below"])

    if __name__ == "__main__":
        result = flowdag.run(wf, run_id="r", store=sys.argv[1], max_workers=1)
        sys.exit(0 if result.ok else 1)
    """
)


def test_a_kill_while_nodes_are_provisional_then_resume(tmp_path: Path) -> None:
    script = tmp_path / "killed.py"
    script.write_text(WORKFLOW)
    calls = tmp_path / "calls.txt"
    url = f"lmdb://{tmp_path / 'store'}"

    def step(top: str, kill: str = "") -> tuple[int, list[str]]:
        calls.write_text("")
        env = {**os.environ, "CALLS": str(calls), "TOP": top, "KILL": kill}
        done = subprocess.run([sys.executable, str(script), url], env=env, timeout=60)
        return done.returncode, calls.read_text().split()

    assert step("1") == (0, ["top", "left", "right", "below", "join"])
    code, called = step("2", kill="left")  # top's output changes; left dies as it runs
    assert code == -signal.SIGKILL
    assert "left" in called and "join" not in called
    code, called = step("2")
    assert code == 0
    assert "top" not in called and "below" not in called  # below was cut off, top kept
    assert "left" in called and "join" in called
    with open_store(url) as store:
        stored = store.load("r")
    assert {n: s.output for n, s in stored.nodes.items()} == {
        "top": 2,
        "left": 20,
        "right": True,
        "below": [True],
        "join": [20, [True]],
    }


def test_a_fan_out_s_states_record_the_inputs_each_read_and_pickle() -> None:
    # The leaves of a fan-out share one mapping of the inputs they read: equal to
    # what each read, and the result's states still pickle and copy as plain data.
    import copy
    import pickle

    wf = Workflow("fan")
    wf.add_node("source", lambda: 1)
    for i in range(5):
        wf.add_node(f"leaf{i}", lambda source, i=i: source + i, deps=["source"])
    result = flowdag.run(wf.build(), store="memory://")
    nodes = dict(result.nodes)
    source = nodes["source"].provenance
    assert source is not None and source.output is not None
    read = {"source": source.output}
    for i in range(5):
        provenance = nodes[f"leaf{i}"].provenance
        assert provenance is not None and dict(provenance.inputs) == read
    assert pickle.loads(pickle.dumps(nodes)) == nodes == copy.deepcopy(nodes)
