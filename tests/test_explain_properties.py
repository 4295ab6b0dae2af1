"""`flowdag.explain.plan_stored` against `flowdag.run`, over random edit scripts.

A random DAG runs once; then each step edits nodes at random (its code, as
the node's ``version=``, with or without a change of its output; failing or
mended) and picks ``on_code_change``, ``rerun`` and ``rerun_from`` at random. The plan made
before each step must agree with what the run then does, read back with
`flowdag.explain.explain_state`: a node planned to run ran, recording the
planned reason (or was skipped below a failure); a reused node's record is
untouched; a provisional node either kept its record (early cutoff) or ran
because an input changed.
"""

from __future__ import annotations

import logging
from collections.abc import Iterator
from typing import Any

import pytest
from hypothesis import HealthCheck, event, given, settings
from hypothesis import strategies as st

import flowdag
import flowdag.resume
from flowdag.explain import Explanation, explain_state, plan_stored
from flowdag.state import Reason
from flowdag.stores import MemoryStore

pytestmark = pytest.mark.skipif(
    not hasattr(flowdag.resume, "plan_call"), reason="needs the planning of run() (plan_call)"
)

#: What each node adds to the sum of its inputs, and which nodes raise: edited by the steps.
VALUES: dict[str, int] = {}
FAILING: set[str] = set()


def step(ctx: flowdag.Context) -> int:
    if ctx.node in FAILING:
        raise RuntimeError(f"{ctx.node} fails")
    return VALUES[ctx.node] + sum(ctx.inputs.values())


@pytest.fixture(autouse=True)
def _quiet(caplog: pytest.LogCaptureFixture) -> Iterator[None]:
    # VALUES and FAILING count by type in the fingerprint (warned once); code changes
    # here are version bumps. Warnings of code changes let pass are expected too.
    caplog.set_level(logging.ERROR, logger="flowdag")
    yield


def build(deps: dict[str, list[str]], versions: dict[str, int]) -> flowdag.Workflow:
    wf = flowdag.Workflow("edits")
    for name, needs in deps.items():
        wf.add_node(name, step, deps=needs, version=versions[name])
    return wf


def agree(planned: Any, before: dict[str, Explanation], after: dict[str, Explanation]) -> None:
    for name, verdict in planned.plan.verdicts.items():
        old, new = before.get(name), after[name]
        same = old is not None and new == old
        ran = not same and new.status in ("completed", "failed")
        if new.status == "skipped":  # below a node that failed in this call
            assert verdict.action != "reuse", name
            continue
        if verdict.action == "run":
            event(f"run: {verdict.reason.code}")
            assert ran and why(new) == verdict.reason, (name, verdict, old, new)
        elif verdict.action == "reuse":
            assert same, (name, verdict, old, new)
        else:
            assert verdict.action == "provisional", (name, verdict)
            event("early cutoff" if same else "provisional ran")
            assert same or (ran and why(new).code == "input_changed"), (name, verdict, old, new)


def why(node: Explanation) -> Reason:
    """Why the node ran: its reason; a failed node's explanation quotes it in brackets."""
    assert node.reason is not None
    if node.status == "completed":
        return node.reason
    quoted = node.reason.detail.partition(" (it ran: ")[2].removesuffix(")")
    code, _, detail = quoted.partition(": ")
    return Reason(code, detail)


#: "code": its code changes, its output does not; "output": both change.
EDITS = st.sampled_from(
    ["same", "same", "same", "same", "code", "code", "output", "output", "fail", "mend"]
)


@settings(
    max_examples=100,
    deadline=None,
    suppress_health_check=[HealthCheck.too_slow, HealthCheck.function_scoped_fixture],
)
@given(data=st.data())
def test_the_plan_agrees_with_the_run(data: st.DataObject) -> None:
    size = data.draw(st.integers(2, 6), label="nodes")
    names = [f"n{i}" for i in range(size)]
    deps = {  # every node but the first has deps: edits reach downstream
        name: sorted(data.draw(st.sets(st.sampled_from(names[:i]), min_size=1)) if i else [])
        for i, name in enumerate(names)
    }
    versions = dict.fromkeys(names, 0)
    VALUES.clear()
    VALUES.update(dict.fromkeys(names, 1))
    FAILING.clear()
    store = MemoryStore()
    for _ in range(data.draw(st.integers(2, 5), label="calls")):  # the first one: a new run
        for name in names:
            edit = data.draw(EDITS, label=f"edit {name}")
            if edit in ("code", "output"):
                versions[name] += 1
            if edit == "output":
                VALUES[name] += 1
            if edit == "fail":
                FAILING.add(name)
            if edit == "mend":
                FAILING.discard(name)
        options: dict[str, Any] = {
            "on_code_change": data.draw(st.sampled_from(["rerun", "rerun", "warn", "ignore"])),
            "rerun": data.draw(st.sampled_from([None, None, None, None, "failed"])),
            # One call in five names a node (st.one_of would pick its branches evenly).
            "rerun_from": (data.draw(st.sampled_from(names)),)
            if data.draw(st.integers(0, 4)) == 0
            else (),
        }
        dag = build(deps, versions).build()
        try:
            before = {e.node: e for e in explain_state(store.load_statuses("r"))}
        except flowdag.RunNotFoundError:
            before = {}
        planned = plan_stored(dag, store, "r", **options)
        flowdag.run(dag, run_id="r", store=store, max_workers=1, **options)
        after = {e.node: e for e in explain_state(store.load_statuses("r"))}
        agree(planned, before, after)
