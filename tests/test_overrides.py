"""Operator overrides on every store kind: mark_done and invalidate on chains and diamonds.

Runs are made by real `flowdag.run` calls (a node fails on purpose), changed by
`flowdag.mark_done` / `flowdag.invalidate`, and resumed by `flowdag.run` again:
a node marked done is never called, the nodes it freed run, invalidated nodes
run again. Refusals (unknown node or run, an output that does not encode, a
live process holding the run) change nothing. The command line is in
``test_overrides_cli.py``.
"""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

import flowdag
from flowdag import NodeStatus, Ref, Workflow
from flowdag.errors import (
    InvalidArgumentError,
    InvalidArgumentTypeError,
    RunLockedError,
    RunNotFoundError,
    SerializationError,
)
from flowdag.overrides import Change, plan_invalidate, plan_mark_done
from flowdag.state import RunState
from flowdag.stores.base import Store
from tests.gc_stores import DISK_KINDS, KINDS, held_elsewhere, open_kind

C, P, F, S = NodeStatus.COMPLETED, NodeStatus.PENDING, NodeStatus.FAILED, NodeStatus.SKIPPED

#: The shapes: node -> deps. The diamond: a -> b, c -> d; the chain: a -> b -> c -> d.
SHAPES = {
    "diamond": {"a": (), "b": ("a",), "c": ("a",), "d": ("b", "c")},
    "chain": {"a": (), "b": ("a",), "c": ("b",), "d": ("c",)},
}


def workflow(
    shape: str, calls: list[str], fail: set[str] | frozenset[str] = frozenset()
) -> Workflow:
    """The shape as a workflow: each node adds 1 to the sum of its inputs (a returns 1);
    the nodes in ``fail`` raise; every call is noted in ``calls``."""
    wf = Workflow(shape)
    for name, deps in SHAPES[shape].items():

        def fn(_name: str = name, **inputs: int) -> int:
            calls.append(_name)
            if _name in fail:
                raise RuntimeError(f"{_name} broke")
            return 1 + sum(inputs.values())

        fn.__name__ = name
        wf.add_node(name, fn, deps=deps)
    return wf


@pytest.fixture(params=KINDS)
def store(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[Store]:
    with open_kind(request.param, tmp_path) as opened:
        yield opened


def started(store: Store, shape: str, fail: set[str]) -> list[str]:
    calls: list[str] = []
    result = flowdag.run(workflow(shape, calls, fail), run_id="r", store=store)
    assert not result.ok
    return calls


def statuses(store: Store) -> dict[str, NodeStatus]:
    return {n: s.status for n, s in store.load("r").nodes.items()}


def audit(store: Store, node: str) -> list[tuple[str, str]]:
    provenance = store.load("r").nodes[node].provenance
    assert provenance is not None
    return [(entry.action, entry.reason) for entry in provenance.audit]


# -- mark_done ---------------------------------------------------------------------------


@pytest.mark.parametrize("shape", SHAPES)
def test_mark_done_frees_the_skipped_and_the_next_run_finishes(store: Store, shape: str) -> None:
    started(store, shape, {"b"})
    before = store.load("r")
    assert before.nodes["b"].status is F and before.nodes["d"].status is S
    result = flowdag.mark_done(store, "r", "b", output=40, reason="loaded by hand")
    freed = ["c", "d"] if shape == "chain" else ["d"]
    assert result.changes == (
        Change("b", F, C, "marked done"),
        *(Change(n, S, P, "downstream of 'b'") for n in freed),
    )
    assert result.action == "mark_done" and not result.dry_run and "@" in result.by
    state = store.load("r")
    b = state.nodes["b"]
    assert (b.status, b.output, b.attempts, b.error) == (C, 40, 1, None)
    assert b.started_at == b.finished_at == result.at
    assert b.provenance is not None and b.provenance.manual
    assert b.provenance.reason is not None and b.provenance.reason.code == "manual"
    assert "loaded by hand" in b.provenance.reason.detail
    assert len(b.history) == 1 and b.history[0].error is not None  # its attempt stays
    assert audit(store, "b") == [("mark_done", "loaded by hand")]
    assert all(state.nodes[n].status is P for n in freed)
    assert audit(store, "d") == [("mark_done", "downstream of 'b': loaded by hand")]
    assert state.nodes["a"] == before.nodes["a"]  # untouched

    calls: list[str] = []
    resumed = flowdag.run(workflow(shape, calls, {"b"}), run_id="r", store=store)
    assert resumed.ok, resumed.errors
    assert calls == freed  # b, still broken, is never called: it was marked done
    expected_d = 1 + 40 + 2 if shape == "diamond" else 1 + (1 + 40)
    assert resumed.outputs["d"] == expected_d


def test_mark_done_leaves_skipped_what_another_failure_still_blocks(store: Store) -> None:
    started(store, "diamond", {"b", "c"})
    result = flowdag.mark_done(store, "r", "b", output=2)
    assert [(c.node, c.after) for c in result.changes] == [("b", C)]
    assert statuses(store) == {"a": C, "b": C, "c": F, "d": S}
    result = flowdag.mark_done(store, "r", "c", output=3)
    assert [(c.node, c.before, c.after) for c in result.changes] == [("c", F, C), ("d", S, P)]
    calls: list[str] = []
    resumed = flowdag.run(workflow("diamond", calls, {"b", "c"}), run_id="r", store=store)
    assert resumed.ok and calls == ["d"] and resumed.outputs["d"] == 6


def test_mark_done_of_a_completed_node_replaces_its_output(store: Store) -> None:
    flowdag.run(workflow("chain", []), run_id="r", store=store)
    result = flowdag.mark_done(store, "r", "d", output={"rows": [1, 2]}, reason="fixed")
    assert result.changes == (Change("d", C, C, "marked done"),)
    assert store.load("r").nodes["d"].output == {"rows": [1, 2]}
    flowdag.mark_done(store, "r", "d", output=None, reason="again")
    assert store.load("r").nodes["d"].output is None
    assert audit(store, "d") == [("mark_done", "fixed"), ("mark_done", "again")]


def test_a_large_output_is_kept_by_reference(store: Store) -> None:
    started(store, "chain", {"b"})
    big = list(range(100_000))  # encoded above 256 KiB
    result = flowdag.mark_done(store, "r", "b", output=big)
    b = store.load("r").nodes["b"]
    assert type(b.output) is Ref and b.output.sha256 == result.blob
    assert b.output.load() == big
    assert b.provenance is not None and b.provenance.output == b.output.sha256
    assert store.blobs.exists(b.output.sha256)
    assert set(store.life("r").blobs) == {b.output.sha256}  # gc sees it held
    inline = flowdag.mark_done(store, "r", "c", output=big, inline_limit="1MiB")
    assert inline.blob is None and store.load("r").nodes["c"].output == big
    flowdag.mark_done(store, "r", "c", output=5, inline_limit=None)
    assert store.load("r").nodes["c"].output == 5
    calls: list[str] = []
    resumed = flowdag.run(workflow("chain", calls, {"b"}), run_id="r", store=store)
    assert resumed.ok and calls == ["d"]
    # Invalidated, it no longer holds its blob: gc may reclaim it.
    flowdag.invalidate(store, "r", "b")
    assert store.load("r").nodes["b"].output is None
    assert store.life("r").blobs == {}


def test_an_output_inside_holding_a_ref_keeps_its_blob(store: Store) -> None:
    started(store, "chain", {"b"})
    flowdag.mark_done(store, "r", "b", output=list(range(100_000)))
    ref = store.load("r").nodes["b"].output
    flowdag.mark_done(store, "r", "c", output={"from b": ref})
    assert store.load("r").nodes["c"].output["from b"].load() == list(range(100_000))
    assert set(store.life("r").blobs) == {ref.sha256}


# -- invalidate --------------------------------------------------------------------------


@pytest.mark.parametrize("shape", SHAPES)
def test_invalidate_with_downstream_runs_them_all_again(store: Store, shape: str) -> None:
    flowdag.run(workflow(shape, []), run_id="r", store=store)
    flowdag.mark_done(store, "r", "b", output=7, reason="by hand")
    digest = store.load("r").nodes["b"].provenance.output  # type: ignore[union-attr]
    result = flowdag.invalidate(store, "r", ["b"], reason="bad rows")
    below = ["c", "d"] if shape == "chain" else ["d"]
    assert result.changes == (
        Change("b", C, P, "invalidated"),
        *(Change(n, C, P, "downstream of 'b'") for n in below),
    )
    state = store.load("r")
    b = state.nodes["b"]
    assert (b.status, b.output, b.attempts) == (P, None, 1)
    assert b.provenance is not None and b.provenance.output == digest  # kept: early cutoff
    assert not b.provenance.manual  # no longer pinned
    assert b.provenance.reason is not None and b.provenance.reason.code == "forced"
    assert "bad rows" in b.provenance.reason.detail
    assert audit(store, "b") == [("mark_done", "by hand"), ("invalidate", "bad rows")]
    assert [state.nodes[n].status for n in below] == [P] * len(below)
    assert state.nodes["a"].status is C
    calls: list[str] = []
    resumed = flowdag.run(workflow(shape, calls), run_id="r", store=store)
    assert resumed.ok and calls == ["b", *below]
    assert resumed.outputs["d"] == (5 if shape == "diamond" else 4)


@pytest.mark.parametrize("shape", SHAPES)
def test_invalidate_without_downstream_leaves_the_nodes_below(store: Store, shape: str) -> None:
    flowdag.run(workflow(shape, []), run_id="r", store=store)
    result = flowdag.invalidate(store, "r", "a", downstream=False)
    assert result.changes == (Change("a", C, P, "invalidated"),)
    assert statuses(store) == {"a": P, "b": C, "c": C, "d": C}
    assert store.load("r").nodes["b"].output == 2
    calls: list[str] = []
    resumed = flowdag.run(workflow(shape, calls), run_id="r", store=store)
    # a's new output equals its old one: the nodes below keep theirs.
    assert resumed.ok and calls == ["a"]


def test_invalidate_without_downstream_frees_what_only_it_blocked(store: Store) -> None:
    started(store, "chain", {"a"})
    assert statuses(store) == {"a": F, "b": S, "c": S, "d": S}
    result = flowdag.invalidate(store, "r", "a", downstream=False)
    assert [(c.node, c.before, c.after) for c in result.changes] == [
        ("a", F, P),
        ("b", S, P),
        ("c", S, P),
        ("d", S, P),
    ]
    calls: list[str] = []
    assert flowdag.run(workflow("chain", calls), run_id="r", store=store).ok
    assert calls == ["a", "b", "c", "d"]


def test_invalidate_several_nodes_at_once(store: Store) -> None:
    flowdag.run(workflow("diamond", []), run_id="r", store=store)
    result = flowdag.invalidate(store, "r", ["c", "b", "c"], downstream=False)
    assert [(c.node, c.after) for c in result.changes] == [("b", P), ("c", P)]
    assert statuses(store) == {"a": C, "b": P, "c": P, "d": C}
    result = flowdag.invalidate(store, "r", ("b", "c"))  # b, c pending already: d goes too
    assert [c.node for c in result.changes] == ["b", "c", "d"]
    assert len(audit(store, "b")) == 2 and len(audit(store, "d")) == 1


# -- dry runs, audit -----------------------------------------------------------------------


def test_a_dry_run_plans_and_changes_nothing(store: Store) -> None:
    started(store, "diamond", {"b"})
    before = store.load("r")
    planned = flowdag.mark_done(store, "r", "b", output=list(range(100_000)), dry_run=True)
    assert planned.dry_run and planned.blob is None
    assert store.load("r") == before and list(store.blobs.entries()) == []
    done = flowdag.mark_done(store, "r", "b", output=list(range(100_000)))
    assert done.changes == planned.changes
    after = store.load("r")
    planned = flowdag.invalidate(store, "r", "a", dry_run=True)
    assert store.load("r") == after
    assert planned.changes == flowdag.invalidate(store, "r", "a").changes


def test_the_audit_names_who_when_and_why(store: Store) -> None:
    started(store, "chain", {"b"})
    first = flowdag.mark_done(store, "r", "b", output=1, reason="one")
    second = flowdag.invalidate(store, "r", "b", reason="two")
    (entry1, entry2) = store.load("r").nodes["b"].provenance.audit  # type: ignore[union-attr]
    assert (entry1.action, entry1.reason, entry1.at, entry1.by) == (
        "mark_done",
        "one",
        first.at,
        first.by,
    )
    assert (entry2.action, entry2.reason, entry2.at) == ("invalidate", "two", second.at)
    assert entry1.at <= entry2.at and entry1.at.utcoffset() is not None


# -- refusals ------------------------------------------------------------------------------


def refused(store: Store, kind: type[Exception], *words: str, call: Any) -> None:
    before = store.load("r")
    with pytest.raises(kind) as info:
        call()
    assert isinstance(info.value, flowdag.FlowdagError)
    for word in words:
        assert word in str(info.value)
    assert store.load("r") == before  # nothing changed


def test_refusals_name_the_culprit_and_change_nothing(store: Store) -> None:
    started(store, "diamond", {"b"})
    refused(
        store,
        InvalidArgumentError,
        "'nope'",
        "'a', 'b'",
        call=lambda: flowdag.mark_done(store, "r", "nope", output=1),
    )
    refused(
        store,
        InvalidArgumentError,
        "'zz'",
        call=lambda: flowdag.invalidate(store, "r", ["a", "zz"]),
    )
    refused(
        store,
        SerializationError,
        "node 'b'",
        "output",
        call=lambda: flowdag.mark_done(store, "r", "b", output=object()),
    )
    refused(
        store,
        InvalidArgumentTypeError,
        "nodes",
        call=lambda: flowdag.invalidate(store, "r", 3),  # type: ignore[arg-type]
    )
    refused(
        store,
        InvalidArgumentTypeError,
        "nodes",
        call=lambda: flowdag.invalidate(store, "r", ["a", 1]),  # type: ignore[list-item]
    )
    refused(store, InvalidArgumentError, "nodes", call=lambda: flowdag.invalidate(store, "r", []))
    refused(
        store,
        InvalidArgumentTypeError,
        "reason",
        call=lambda: flowdag.mark_done(store, "r", "b", output=1, reason=None),  # type: ignore[arg-type]
    )
    refused(
        store,
        InvalidArgumentTypeError,
        "node",
        call=lambda: flowdag.mark_done(store, "r", ["b"], output=1),  # type: ignore[arg-type]
    )
    refused(
        store,
        InvalidArgumentTypeError,
        "store",
        call=lambda: flowdag.invalidate(3, "r", "a"),  # type: ignore[arg-type]
    )
    with pytest.raises(RunNotFoundError, match="'other'"):
        flowdag.mark_done(store, "other", "b", output=1)
    with pytest.raises(RunNotFoundError, match="'other'"):
        flowdag.invalidate(store, "other", "b")


def test_refused_while_this_process_runs_the_run(store: Store) -> None:
    started(store, "diamond", {"b"})
    with store.lock("r"):
        refused(
            store,
            RunLockedError,
            "'r'",
            "mark_done",
            call=lambda: flowdag.mark_done(store, "r", "b", output=1),
        )
        refused(
            store, RunLockedError, "invalidate", call=lambda: flowdag.invalidate(store, "r", "a")
        )
    flowdag.mark_done(store, "r", "b", output=1)  # released: it goes through


@pytest.mark.parametrize("kind", DISK_KINDS)
def test_refused_while_another_process_holds_the_run(tmp_path: Path, kind: str) -> None:
    with open_kind(kind, tmp_path) as store:
        started(store, "diamond", {"b"})
        with held_elsewhere(kind, tmp_path, "r") as pid:
            refused(
                store,
                RunLockedError,
                f"pid {pid}",
                "wait",
                call=lambda: flowdag.mark_done(store, "r", "b", output=1),
            )
            refused(
                store,
                RunLockedError,
                f"pid {pid}",
                call=lambda: flowdag.invalidate(store, "r", "a"),
            )
        # The holder is gone (killed): the lock went with it.
        assert flowdag.mark_done(store, "r", "b", output=1).changes[0].after is C


def test_a_store_url_is_opened_and_closed(tmp_path: Path) -> None:
    url = f"json://{tmp_path / 's'}"
    flowdag.run(workflow("chain", [], {"c"}), run_id="r", store=url)
    result = flowdag.mark_done(url, "r", "c", output=3)
    assert [c.node for c in result.changes] == ["c", "d"]
    assert flowdag.invalidate(url, "r", "d", downstream=False).changes[0].before is P
    with pytest.raises(flowdag.StoreError, match="no store"):
        flowdag.mark_done(f"json://{tmp_path / 'none'}", "r", "c", output=3)
    assert not (tmp_path / "none").exists()


def test_works_on_a_run_whose_workflow_is_gone(tmp_path: Path) -> None:
    """Only the stored run is read: a saved run of a workflow no one can import."""
    with open_kind("lmdb", tmp_path) as store:
        state = RunState("r", "lost.module:wf")
        state.nodes = {
            name: flowdag.NodeState(status=F if name == "a" else S, deps=deps)
            for name, deps in SHAPES["chain"].items()
        }
        store.save(state)
        flowdag.mark_done(store, "r", "a", output=1)
        assert statuses(store) == {"a": C, "b": P, "c": P, "d": P}


# -- the plans, pure -------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("before", "node", "after"),
    [
        # diamond a -> b, c -> d
        ({"a": C, "b": F, "c": C, "d": S}, "b", {"b": C, "d": P}),
        ({"a": C, "b": F, "c": F, "d": S}, "b", {"b": C}),
        ({"a": F, "b": S, "c": S, "d": S}, "a", {"a": C, "b": P, "c": P, "d": P}),
        ({"a": F, "b": S, "c": S, "d": S}, "b", {"b": C}),  # a still failed above d
        ({"a": C, "b": C, "c": C, "d": C}, "d", {"d": C}),
        ({"a": P, "b": P, "c": P, "d": P}, "c", {"c": C}),
    ],
)
def test_plan_mark_done(
    before: dict[str, NodeStatus], node: str, after: dict[str, NodeStatus]
) -> None:
    assert plan_mark_done(before, SHAPES["diamond"], node) == after


@pytest.mark.parametrize(
    ("before", "nodes", "downstream", "after"),
    [
        ({"a": C, "b": C, "c": C, "d": C}, ["b"], True, {"b": P, "d": P}),
        ({"a": C, "b": C, "c": C, "d": C}, ["b"], False, {"b": P}),
        ({"a": C, "b": C, "c": P, "d": C}, ["a"], True, {"a": P, "b": P, "d": P}),
        ({"a": C, "b": F, "c": C, "d": S}, ["b"], False, {"b": P, "d": P}),
        ({"a": C, "b": F, "c": F, "d": S}, ["b"], False, {"b": P}),
        ({"a": F, "b": S, "c": S, "d": S}, ["a"], False, {"a": P, "b": P, "c": P, "d": P}),
    ],
)
def test_plan_invalidate(
    before: dict[str, NodeStatus],
    nodes: list[str],
    downstream: bool,
    after: dict[str, NodeStatus],
) -> None:
    assert plan_invalidate(before, SHAPES["diamond"], nodes, downstream=downstream) == after
