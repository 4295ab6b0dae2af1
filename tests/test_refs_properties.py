"""Property: outputs kept by reference stay right through failures, resumes and lost blobs.

Hypothesis draws a small workflow (nodes returning values whose encoded size is
around the limits, some equal so that they share a blob, some streaming bytes
through ``ctx.output_file()``), a per-node ``inline_limit`` or none, and a
sequence of runs of one run id, each with its own ``run(inline_limit=...)``,
nodes that fail in it, and blobs deleted before it. A plain model of the
store says what each run must do; after every run:

- the nodes called are exactly those the model runs: the pending ones whose
  inputs are there, plus each completed node whose blob is missing and whose
  output a node still to run needs (and, in turn, such nodes it needs);
- each completed node's output loads and equals its value, or raises
  `BlobMissingError` if its blob was deleted and nothing needed it again;
- ``result.refs`` holds exactly the outputs above their node's limit (and the
  streamed ones), each addressed by the hash of its encoded value;
- `Store.life` names exactly the blobs those refs point at.
"""

from __future__ import annotations

import hashlib
import os
import random
import tempfile
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

import flowdag
from flowdag import BlobMissingError, NodeStatus, Ref
from flowdag.dag import RUN_DEFAULT
from flowdag.stores import MemoryStore, generate_key, open_store
from flowdag.stores.base import Store

EXAMPLES = int(os.environ.get("FLOWDAG_PROPERTY_EXAMPLES", "200"))
LIMITS = (64, 512, 2048)
RUN_ID = "prop"


@dataclass(frozen=True)
class NodePlan:
    name: str
    deps: tuple[str, ...]
    stream: bool  # writes its output through ctx.output_file(): always a Ref
    group: int  # seeds the padding: equal groups, sizes and inputs give equal values
    size: int  # bytes of padding: the value's encoded size is around one of LIMITS
    limit: Any  # the node's inline_limit: bytes, None (never), or RUN_DEFAULT (the run's)
    total: int  # its group plus its inputs' totals: what the value carries


def padding(group: int, size: int) -> bytes:
    return random.Random(group).randbytes(size)


def contribution(value: Any) -> int:
    """An input's total: a dict's "sum", or a streamed output's last 8 bytes."""
    return int(value["sum"]) if isinstance(value, dict) else int.from_bytes(value[-8:], "big")


def value_of(plan: NodePlan) -> Any:
    if plan.stream:
        return padding(plan.group, plan.size) + plan.total.to_bytes(8, "big")
    return {"pad": padding(plan.group, plan.size), "sum": plan.total}


def build(plans: list[NodePlan], calls: list[str], failing: set[str]) -> flowdag.Workflow:
    wf = flowdag.Workflow("prop")
    for plan in plans:

        def node(ctx: flowdag.Context, plan: NodePlan = plan) -> Any:
            calls.append(plan.name)
            if plan.name in failing:
                raise RuntimeError(f"{plan.name} fails in this run")
            total = plan.group + sum(contribution(ctx.inputs[dep]) for dep in plan.deps)
            assert total == plan.total, "an input is not what its node returned"
            value = value_of(plan)
            if not plan.stream:
                return value
            with ctx.output_file() as f:
                f.write(value)
            return None

        wf.add_node(plan.name, node, deps=list(plan.deps), inline_limit=plan.limit)
    return wf


CODEC = MemoryStore().codec  # the default codec: padding sizes aim at its encoded sizes


def padding_for(encoded: int, total: int) -> int:
    """The padding that makes a returned value encode to ``encoded`` bytes, or just under."""
    best = 0
    for size in range(max(0, encoded - 64), encoded + 1):
        value = {"pad": bytes(size), "sum": total}
        if len(CODEC.plain(CODEC.encode(value))) <= encoded:
            best = size
    return best


@st.composite
def node_plans(draw: st.DrawFn) -> list[NodePlan]:
    plans: list[NodePlan] = []
    totals: dict[str, int] = {}
    for i in range(draw(st.integers(2, 8))):
        deps = (
            tuple(sorted(draw(st.lists(st.sampled_from(sorted(totals)), max_size=3, unique=True))))
            if totals
            else ()
        )
        group = draw(st.integers(0, 2))
        total = group + sum(totals[d] for d in deps)
        # Just under, at, just over a limit, or near it.
        near = draw(st.one_of(st.sampled_from([-1, 0, 1]), st.integers(-40, 40)))
        encoded = max(0, draw(st.sampled_from(LIMITS)) + near)
        plan = NodePlan(
            f"n{i}",
            deps,
            draw(st.integers(0, 4)) == 0,
            group,
            padding_for(encoded, total),
            draw(st.sampled_from([RUN_DEFAULT, RUN_DEFAULT, RUN_DEFAULT, None, *LIMITS])),
            total,
        )
        totals[plan.name] = total
        plans.append(plan)
    return plans


# -- the model ---------------------------------------------------------------------------


@dataclass
class Kept:
    """A completed node as the model holds it: its value and its blob (None: inline)."""

    value: Any
    sha256: str | None


def kept(plan: NodePlan, value: Any, run_limit: int | None, store: Store) -> Kept:
    if plan.stream:
        return Kept(value, hashlib.sha256(value).hexdigest())
    limit = run_limit if plan.limit is RUN_DEFAULT else plan.limit
    encoded = store.codec.plain(store.codec.encode(value))
    if limit is None or len(encoded) <= limit:  # the limit compares the size before compression
        return Kept(value, None)
    return Kept(value, hashlib.sha256(encoded).hexdigest())


def held(plans: list[NodePlan], completed: dict[str, Kept]) -> set[str]:
    """Completed nodes that wait for a dep that runs, transitively (plans are in
    topological order): each may have to run too, so it may need its inputs."""
    waiting: set[str] = set()
    for plan in plans:
        if plan.name in completed and any(d not in completed or d in waiting for d in plan.deps):
            waiting.add(plan.name)
    return waiting


def reruns(plans: list[NodePlan], completed: dict[str, Kept], present: set[str]) -> set[str]:
    """Completed nodes whose blob is gone and whose output a node that may run needs,
    transitively. A node run again only to write its lost blob does not make its
    dependents wait, but it needs its own inputs."""
    may_run = held(plans, completed)
    again: set[str] = set()
    grew = True
    while grew:
        grew = False
        for plan in plans:
            if plan.name in completed and plan.name not in again | may_run:
                continue  # stays completed: needs no input
            for dep in plan.deps:
                blob = completed[dep].sha256 if dep in completed else None
                if blob is not None and blob not in present and dep not in again:
                    again.add(dep)
                    grew = True
    return again


# -- the property --------------------------------------------------------------------------


@contextmanager
def store_of(kind: str) -> Iterator[Store]:
    if kind == "memory":
        with MemoryStore() as store:
            yield store
        return
    scheme, _, encrypted = kind.partition("-")
    with tempfile.TemporaryDirectory() as directory:
        url = f"{scheme}://{Path(directory) / 'store'}"
        with open_store(url, key=generate_key()) if encrypted else open_store(url) as store:
            yield store


def check_runs(data: st.DataObject, kind: str) -> None:
    plans = data.draw(node_plans(), label="nodes")
    order = [p.name for p in plans]
    values = {p.name: value_of(p) for p in plans}
    completed: dict[str, Kept] = {}
    with store_of(kind) as store:
        area = store.blobs
        for run in range(data.draw(st.integers(1, 4), label="runs")):
            names = sorted(entry.name for entry in area.entries())
            if run:  # between runs: lose some blobs (each about every other time)
                for name in names:
                    if data.draw(st.booleans(), label=f"delete {name[:8]}"):
                        area.delete(name)
            present = {k.sha256 for k in completed.values() if k.sha256 and area.exists(k.sha256)}
            run_limit = data.draw(st.sampled_from([None, 64, *LIMITS]), label="run inline_limit")
            failing = {n for n in order if data.draw(st.integers(0, 2), f"{n} fails") == 0}

            # What the model says this run does.
            again = reruns(plans, completed, present)
            # A completed node with a dep that runs waits for it: kept if the dep
            # completes (values are deterministic, so its output comes back the
            # same: early cutoff), skipped if it does not.
            waits = {name: completed[name] for name in held(plans, completed) - again}
            for name in again | set(waits):
                del completed[name]
            expected_calls: set[str] = set()
            for plan in plans:
                if plan.name in completed or not all(d in completed for d in plan.deps):
                    continue
                if plan.name in waits:
                    completed[plan.name] = waits[plan.name]
                    continue
                expected_calls.add(plan.name)
                if plan.name not in failing:
                    new = completed[plan.name] = kept(plan, values[plan.name], run_limit, store)
                    if new.sha256 is not None:
                        present.add(new.sha256)

            calls: list[str] = []
            result = flowdag.run(
                build(plans, calls, failing),
                run_id=RUN_ID,
                store=store,
                inline_limit=run_limit,
                max_workers=2,
            )
            assert sorted(calls) == sorted(expected_calls), (run, again)
            done = {n for n, s in result.nodes.items() if s.status is NodeStatus.COMPLETED}
            assert done == set(completed)
            refs = result.refs
            assert {n: r.sha256 for n, r in refs.items()} == {
                n: k.sha256 for n, k in completed.items() if k.sha256
            }
            assert set(store.life(RUN_ID).blobs) == {r.sha256 for r in refs.values()}
            state = store.load(RUN_ID)
            for name, k in completed.items():
                stored = state.nodes[name].output
                assert (type(stored) is Ref) == (k.sha256 is not None), name
                if k.sha256 is not None and k.sha256 not in present:
                    with pytest.raises(BlobMissingError):
                        result.outputs[name]
                    continue
                assert result.outputs[name] == k.value, name
                assert (stored.load() if type(stored) is Ref else stored) == k.value, name


SETTINGS = {
    "deadline": None,
    "suppress_health_check": [HealthCheck.too_slow, HealthCheck.function_scoped_fixture],
}


@settings(max_examples=EXAMPLES, **SETTINGS)  # type: ignore[arg-type]
@given(st.data())
def test_refs_through_failures_resumes_and_lost_blobs_memory(data: st.DataObject) -> None:
    check_runs(data, "memory")


@pytest.mark.parametrize("kind", ["json", "lmdb-encrypted"])
@settings(max_examples=max(1, EXAMPLES // 10), **SETTINGS)  # type: ignore[arg-type]
@given(data=st.data())
def test_refs_through_failures_resumes_and_lost_blobs_disk(kind: str, data: st.DataObject) -> None:
    check_runs(data, kind)


# -- refs passed on ------------------------------------------------------------------------


def test_a_resume_rewrites_a_lost_blob_that_was_passed_on() -> None:
    big = list(range(100_000))
    failing = [True]
    wf = flowdag.Workflow("passed-on")

    @wf.node
    def source() -> list[int]:
        return big

    @wf.node(deps=["source"])
    def nest(source: Ref) -> dict[str, Ref]:
        return {"ref": source}  # small: inline, holding source's ref

    @wf.node(deps=["nest"])
    def passed(nest: dict[str, Ref]) -> Ref:
        return nest["ref"]  # the same ref, as this node's output

    @wf.node(deps=["nest", "passed"])
    def use(nest: dict[str, Ref], passed: list[int]) -> int:
        if failing[0]:
            raise RuntimeError("first time")
        return sum(nest["ref"].load()) + len(passed)

    with MemoryStore() as store:
        first = flowdag.run(wf, run_id="r", store=store)
        assert first.node_status["use"] is NodeStatus.FAILED
        for ref in first.refs.values():
            store.blobs.delete(store.blobs.name_of(ref.sha256))
        failing[0] = False
        second = flowdag.run(wf, run_id="r", store=store)
        assert second.ok, second.errors
        assert second.outputs["use"] == sum(big) + len(big)
