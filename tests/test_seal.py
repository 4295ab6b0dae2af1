"""Seals (`flowdag._seal`): a completed run run again reads no node, and says the same.

What a user relies on: running a completed run again with the same code gives
the result a full plan gives (status, nodes, data, reasons), calls no node, and
never hides a change: any write to the run drops the seal, code, shape and ttl
changes miss it, and a result read later is the run as it was returned.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import msgpack
import pytest
from hypothesis import HealthCheck, event, given, settings
from hypothesis import strategies as st

import flowdag
from flowdag import Context, NodeStatus, RunChangedError, Workflow
from flowdag._decide import UNCHANGED
from flowdag._fingerprint import node_fingerprints
from flowdag._seal import SealedNodes
from flowdag.resume import plan_call
from flowdag.stores import MemoryStore, Store, generate_key, open_store

KINDS = ["memory", "lmdb", "json", "flatbuffers"]
KEY = generate_key()


@pytest.fixture(params=[*KINDS, "lmdb-encrypted", "json-encrypted"])
def store(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[Store]:
    kind, _, encrypted = request.param.partition("-")
    if kind == "memory":
        opened = open_store("memory://")
    else:
        opened = open_store(f"{kind}://{tmp_path / kind}", key=KEY if encrypted else None)
    with opened:
        yield opened


def job(calls: list[str], *, factor: int = 2, fail: frozenset[str] = frozenset()) -> Workflow:
    wf = Workflow("sealed")

    def called(name: str, value: Callable[..., Any]) -> Callable[..., Any]:
        def node(ctx: Context, **inputs: Any) -> Any:
            calls.append(name)
            if name in fail:
                raise RuntimeError(f"{name} fails")
            ctx.data[f"{name}_seen"] = len(inputs)
            return value(**inputs)

        return node

    wf.add_node("a", called("a", lambda: 3))
    wf.add_node("b", called("b", lambda a: a * factor), deps=["a"])
    wf.add_node("c", called("c", lambda a, b: [a, b]), deps=["a", "b"])
    return wf


def full_plan_reuses_all(store: Store, dag: flowdag.DAG, run_id: str) -> bool:
    """Whether the plan a resume makes without a seal reuses every node unchanged."""
    plan = plan_call(
        dag, store.load(run_id), run_id, allow_changes=False, fingerprints=node_fingerprints(dag)
    )
    return all(verdict is UNCHANGED for verdict in plan.verdicts.values())


def test_a_completed_run_run_again_calls_nothing_and_says_the_same(store: Store) -> None:
    calls: list[str] = []
    dag = job(calls).build()
    first = flowdag.run(dag, run_id="r", store=store)
    assert first.ok and calls == ["a", "b", "c"]
    assert store._sealed("r") is not None
    again = flowdag.run(dag, run_id="r", store=store)
    assert calls == ["a", "b", "c"]
    assert type(again.nodes) is SealedNodes  # nothing read yet
    assert again.ok and again.status is flowdag.RunStatus.COMPLETED
    assert again.node_status == dict.fromkeys(["a", "b", "c"], NodeStatus.COMPLETED)
    assert again.explain() == dict.fromkeys(["a", "b", "c"], UNCHANGED.reason)
    assert len(again.nodes) == 3 and "b" in again.nodes and "z" not in again.nodes
    stored = store.load("r")
    assert dict(again.nodes) == stored.nodes
    assert dict(again.data) == stored.data == {"a_seen": 0, "b_seen": 1, "c_seen": 2}
    assert dict(again.outputs) == {"a": 3, "b": 6, "c": [3, 6]}
    assert again.errors == {}


def test_a_sealed_result_pickles_and_copies_as_what_it_reads(store: Store) -> None:
    import copy
    import pickle

    dag = job([]).build()
    flowdag.run(dag, run_id="r", store=store)
    again = flowdag.run(dag, run_id="r", store=store)
    assert type(again.nodes) is SealedNodes
    for made in (pickle.loads(pickle.dumps(again)), copy.deepcopy(again)):
        assert type(made.nodes) is dict and made.nodes == store.load("r").nodes
        assert made.outputs["c"] == [3, 6] and made.data == again.data


def loads_of(store: Store, call: Callable[[], Any]) -> int:
    """How often ``call`` read a run from ``store``: a plan does, a seal reused does not."""
    counted = [0]
    load = store._load_into

    def counting(*args: Any) -> None:
        counted[0] += 1
        load(*args)

    store._load_into = counting  # type: ignore[method-assign]
    try:
        call()
    finally:
        del store._load_into
    return counted[0]


def test_edited_code_misses_the_seal_and_runs(store: Store) -> None:
    calls: list[str] = []
    flowdag.run(job(calls).build(), run_id="r", store=store)
    calls.clear()
    result = flowdag.run(job(calls, factor=5).build(), run_id="r", store=store)
    assert calls == ["b", "c"] and result.outputs["c"] == [3, 15]
    assert result.explain()["b"].code == "code_changed"
    # Sealed again by that call, with the new code.
    again = flowdag.run(job(calls, factor=5).build(), run_id="r", store=store)
    assert calls == ["b", "c"] and type(again.nodes) is SealedNodes
    assert again.outputs["c"] == [3, 15]


def test_a_failed_run_is_not_sealed_and_its_resume_is(store: Store) -> None:
    calls: list[str] = []
    failed = flowdag.run(job(calls, fail=frozenset({"b"})).build(), run_id="r", store=store)
    assert not failed.ok and store._sealed("r") is None
    flowdag.run(job(calls).build(), run_id="r", store=store)
    assert store._sealed("r") is not None
    assert full_plan_reuses_all(store, job(calls).build(), "r")


@pytest.mark.parametrize(
    "options",
    [
        {"rerun_from": ["b"]},
        {"rerun": "failed"},
        {"refresh": True},
        {"ttl": "30d"},
    ],
    ids=["rerun_from", "rerun", "refresh", "ttl"],
)
def test_options_that_change_the_plan_miss_the_seal(store: Store, options: dict[str, Any]) -> None:
    calls: list[str] = []
    dag = job(calls).build()
    flowdag.run(dag, run_id="r", store=store)
    assert loads_of(store, lambda: flowdag.run(dag, run_id="r", store=store, **options)) == 1
    if "ttl" in options:
        assert store.load("r").ttl == timedelta(days=30)


def test_a_changed_shape_still_raises(store: Store) -> None:
    calls: list[str] = []
    flowdag.run(job(calls).build(), run_id="r", store=store)
    wf = job(calls)
    wf.add_node("d", lambda c: c, deps=["c"])
    with pytest.raises(flowdag.WorkflowChangedError):
        flowdag.run(wf.build(), run_id="r", store=store)


def test_every_write_drops_the_seal(store: Store) -> None:
    calls: list[str] = []
    dag = job(calls).build()
    flowdag.run(dag, run_id="r", store=store)
    assert store._sealed("r") is not None
    flowdag.invalidate(store, "r", "c")
    assert store._sealed("r") is None
    calls.clear()
    flowdag.run(dag, run_id="r", store=store)
    assert calls == ["c"] and store._sealed("r") is not None
    store.save(store.load("r"))
    assert store._sealed("r") is None
    flowdag.run(dag, run_id="r", store=store)  # nothing runs, and it is sealed again
    assert calls == ["c"] and store._sealed("r") is not None
    store.delete("r")
    calls.clear()
    assert flowdag.run(dag, run_id="r", store=store).ok and calls == ["a", "b", "c"]


def test_a_result_not_read_yet_is_read_before_its_run_changes(store: Store) -> None:
    calls: list[str] = []
    dag = job(calls).build()
    flowdag.run(dag, run_id="r", store=store)
    before = flowdag.run(dag, run_id="r", store=store)
    assert type(before.nodes) is SealedNodes
    flowdag.run(job(calls, factor=7).build(), run_id="r", store=store)
    assert before.outputs["c"] == [3, 6]  # as returned, not as stored now
    assert store.load("r").nodes["c"].output == [3, 21]


@pytest.mark.parametrize("kind", ["lmdb", "json", "flatbuffers"])
def test_a_result_not_read_yet_is_read_after_its_store_closes(
    tmp_path: Path, kind: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    calls: list[str] = []
    dag = job(calls).build()
    url = f"{kind}://{tmp_path / kind}"
    loads: list[str] = []
    load = Store.load

    def counted(self: Store, run_id: str) -> Any:
        loads.append(run_id)
        return load(self, run_id)

    monkeypatch.setattr(Store, "load", counted)
    with open_store(url) as store:
        flowdag.run(dag, run_id="r", store=store)
        again = flowdag.run(dag, run_id="r", store=store)
        assert type(again.nodes) is SealedNodes
    assert loads == []  # closing read nothing: the store is opened anew when it is read
    assert again.outputs["c"] == [3, 6] and again.data["b_seen"] == 1
    assert loads == ["r"]
    # Opened from a URL by run() itself, and closed by it.
    assert flowdag.run(dag, run_id="r", store=url).outputs["b"] == 6
    assert calls == ["a", "b", "c"]


def test_a_memory_store_reads_its_unread_results_as_it_closes() -> None:
    dag = job([]).build()
    with MemoryStore() as store:
        flowdag.run(dag, run_id="r", store=store)
        again = flowdag.run(dag, run_id="r", store=store)
        assert type(again.nodes) is SealedNodes
    assert again.outputs["c"] == [3, 6]  # what it held is gone with it, but not from this


@pytest.mark.parametrize("kind", ["lmdb", "json", "flatbuffers"])
def test_a_change_by_another_store_is_refused_not_shown(tmp_path: Path, kind: str) -> None:
    calls: list[str] = []
    dag = job(calls).build()
    url = f"{kind}://{tmp_path / kind}"
    with open_store(url) as ours, open_store(url) as theirs:
        flowdag.run(dag, run_id="r", store=ours)
        again = flowdag.run(dag, run_id="r", store=ours)
        flowdag.run(job(calls, factor=7).build(), run_id="r", store=theirs)
        with pytest.raises(RunChangedError, match=r"changed in .* after the call of run"):
            again.outputs["c"]
        with pytest.raises(RunChangedError):  # the same error every time
            dict(again.data)


def test_an_expired_seal_starts_a_new_run(store: Store) -> None:
    calls: list[str] = []
    dag = job(calls).build()
    flowdag.run(dag, run_id="r", store=store)
    sealed = store._sealed("r")
    assert sealed is not None
    fields = msgpack.unpackb(sealed[1])
    fields["expires"] = (datetime.now(UTC) - timedelta(seconds=1)).timestamp()
    store._put_seal("r", msgpack.packb(fields))
    # The run itself has no ttl: the plan finds it, reuses every node, and seals it anew.
    result = flowdag.run(dag, run_id="r", store=store)
    assert type(result.nodes) is dict and calls == ["a", "b", "c"]
    assert store._sealed("r") is not None


def test_an_unreadable_seal_is_ignored(store: Store) -> None:
    calls: list[str] = []
    dag = job(calls).build()
    flowdag.run(dag, run_id="r", store=store)
    store._put_seal("r", b"\xc1 not msgpack")
    result = flowdag.run(dag, run_id="r", store=store)
    assert result.ok and type(result.nodes) is dict and calls == ["a", "b", "c"]


def test_maps_and_input_nodes_are_never_sealed(store: Store) -> None:
    wf = Workflow("mapped")
    wf.add_node("xs", lambda: [1, 2])
    wf.map("sq", lambda x: x * x, over="xs")
    assert flowdag.run(wf, run_id="m", store=store).ok
    assert store._sealed("m") is None
    asked = Workflow("asked")
    asked.add_input("ok", schema={"type": "boolean"}, default=True, timeout="1s")
    asked.add_node("after", lambda ok: ok, deps=["ok"])
    flowdag.run(asked, run_id="i", store=store)
    assert store._sealed("i") is None


@pytest.mark.parametrize("kind", ["json", "flatbuffers"])
def test_a_journal_seal_goes_with_the_files_and_its_own_format(tmp_path: Path, kind: str) -> None:
    calls: list[str] = []
    dag = job(calls).build()
    url = f"{kind}://{tmp_path / 'shared'}"  # JSON and FlatBuffers stores may share runs/
    other = f"{'flatbuffers' if kind == 'json' else 'json'}://{tmp_path / 'shared'}"
    with open_store(url) as store, open_store(other) as neighbour:
        flowdag.run(dag, run_id="r", store=store)
        flowdag.run(dag, run_id="r", store=neighbour)
        assert store._sealed("r") is not None and neighbour._sealed("r") is not None
        seal = next((tmp_path / "shared" / "runs" / "r").glob(f"seal{store.format.suffix}"))
        assert seal.stat().st_mode & 0o777 == 0o600
        seal.write_bytes(seal.read_bytes()[:-3])  # torn: ignored, planned
        assert store._sealed("r") is None
        assert type(flowdag.run(dag, run_id="r", store=store).nodes) is dict
        assert store._sealed("r") is not None  # sealed anew by that call
        assert calls == ["a", "b", "c"] * 2


# -- a property: a seal is found only where a full plan reuses every node ------------------

Step = tuple[str, int]
steps = st.lists(
    st.tuples(
        st.sampled_from(["run", "edit", "fail", "invalidate", "mark_done", "rerun_from", "save"]),
        st.integers(0, 2),
    ),
    min_size=1,
    max_size=8,
)


@settings(max_examples=40, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(steps=steps)
def test_a_seal_is_used_exactly_when_a_full_plan_reuses_every_node(steps: list[Step]) -> None:
    store = MemoryStore()
    calls: list[str] = []
    factor, names = 2, ["a", "b", "c"]
    for action, k in steps:
        node = names[k]
        if action == "edit":
            factor += 1
        elif action == "invalidate" and store.list_runs():
            flowdag.invalidate(store, "r", node)
        elif action == "mark_done" and store.list_runs():
            flowdag.mark_done(store, "r", node, output=k)
        elif action == "save" and store.list_runs():
            store.save(store.load("r"))
        if action in ("invalidate", "mark_done", "save"):
            continue
        dag = job(calls, factor=factor, fail=frozenset({node}) if action == "fail" else frozenset())
        options: dict[str, Any] = {"rerun_from": [node]} if action == "rerun_from" else {}
        sealed = store._sealed("r") if store.list_runs() else None
        reusable = (
            sealed is not None
            and not options
            and full_plan_reuses_all(store, dag.build(), "r")
            and store.load("r").status == "completed"
        )
        stored = store.load("r") if store.list_runs() else None
        before = len(calls)
        result = flowdag.run(dag.build(), run_id="r", store=store, **options)
        took_seal = type(result.nodes) is SealedNodes
        event(f"seal used: {took_seal}")
        # A seal is used only where the full plan would have run nothing, and then says so.
        assert not took_seal or (reusable and len(calls) == before)
        if took_seal:
            assert stored is not None and dict(result.nodes) == stored.nodes
            assert result.explain() == dict.fromkeys(names, UNCHANGED.reason)
        # A seal present is always the truth about the stored run.
        if store._sealed("r") is not None:
            assert full_plan_reuses_all(store, dag.build(), "r")
            assert store.load("r").status == "completed"
        # A completed run whose full plan reuses every node is sealed (nothing forgotten).
        elif result.ok and not options and action != "fail":
            assert not full_plan_reuses_all(store, dag.build(), "r")


def test_flowdag_run_of_a_large_sealed_run_reads_no_node(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    from flowdag.cli import main

    job_file = tmp_path / "wide.py"
    job_file.write_text(
        "import flowdag\n"
        "wf = flowdag.Workflow('wide')\n"
        "wf.add_node('src', lambda: 1)\n"
        "for i in range(60):\n"
        "    wf.add_node(f'n{i}', lambda src, i=i: src + i, deps=['src'])\n"
    )
    command = ["run", str(job_file), "--run-id", "w", "--store", f"lmdb://{tmp_path / 'db'}"]
    assert main(command) == 0
    capsys.readouterr()
    assert main(command) == 0
    read_all = capsys.readouterr().out

    def no_load(self: Store, run_id: str) -> Any:
        raise AssertionError("a sealed run was read")

    monkeypatch.setattr(Store, "load", no_load)
    assert main(command) == 0
    # The same report, with nothing read: every node completed, too many to list.
    assert capsys.readouterr().out == read_all
    assert "61 completed nodes not shown" in read_all
    assert "61 of 61 nodes were already completed" in read_all


BIG_CALLS: list[int] = []


def test_a_captured_int_past_64_bits_seals_by_its_digest(store: Store) -> None:
    # Its value alone is captured (a template's fingerprint), and msgpack cannot pack it.
    BIG_CALLS.clear()
    wf = Workflow("big-int")
    wf.add_node("big", lambda n=2**70: BIG_CALLS.append(n) or n)
    flowdag.run(wf, run_id="r", store=store)
    again = flowdag.run(wf, run_id="r", store=store)
    assert type(again.nodes) is SealedNodes and again.outputs["big"] == 2**70
    edited = Workflow("big-int")
    edited.add_node("big", lambda n=2**70 + 1: BIG_CALLS.append(n) or n)
    assert flowdag.run(edited, run_id="r", store=store).outputs["big"] == 2**70 + 1
    assert BIG_CALLS == [2**70, 2**70 + 1]
