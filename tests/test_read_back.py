"""On a store on disk, a run holds no state of a node nothing reads; its result reads it back.

What a user relies on: the result of a run is the run as stored when the call
returned, whatever the run's outcome, read now (a failed run) or when first
read (a completed run, as a sealed run run again is), from a store closed
meanwhile too; a change by another store is refused, never shown. The ledger
(`flowdag._ledger`) lets go of the state of a completed node that no other
node reads once its record is stored, and keeps every state another node needs.
"""

from __future__ import annotations

import contextlib
import tempfile
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

import flowdag
from flowdag import CorruptStateError, NodeStatus, RunChangedError, Workflow, _seal
from flowdag._fingerprint import node_fingerprints
from flowdag._ledger import FORGOTTEN, Ledger
from flowdag._seal import SealedNodes
from flowdag.resume import plan_call
from flowdag.state import NodeRecord, RunState
from flowdag.stores import Store, generate_key, open_store

KEY = generate_key()


@pytest.fixture(params=["lmdb", "json", "flatbuffers", "lmdb-encrypted"])
def store(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[Store]:
    kind, _, encrypted = request.param.partition("-")
    with open_store(f"{kind}://{tmp_path / kind}", key=KEY if encrypted else None) as opened:
        yield opened


def fan(fail: str = "", x_factor: int = 3) -> Workflow:
    """``root`` read by three leaves (one may fail) and a ``sink`` that reads ``x``."""
    wf = Workflow("fan")
    wf.add_node("root", lambda: 2)

    def leaf(name: str, factor: int) -> Any:
        def run(ctx: flowdag.Context, root: int) -> int:
            if name == fail:
                raise RuntimeError(f"{name} fails")
            ctx.data[name] = factor
            return root * factor

        return run

    for name, factor in (("x", x_factor), ("y", 5), ("z", 7)):
        wf.add_node(name, leaf(name, factor), deps=["root"])
    wf.add_node("sink", lambda x: [x], deps=["x"])
    return wf


def test_a_completed_run_reads_its_nodes_back_when_first_read(store: Store) -> None:
    result = flowdag.run(fan(), run_id="r", store=store)
    assert result.ok and type(result.nodes) is SealedNodes
    assert result.node_status == dict.fromkeys(["root", "x", "y", "z", "sink"], "completed")
    assert dict(result.outputs) == {"root": 2, "x": 6, "y": 10, "z": 14, "sink": [6]}
    assert dict(result.nodes) == store.load("r").nodes
    assert dict(result.data) == {"x": 3, "y": 5, "z": 7}
    assert {name: reason.code for name, reason in result.explain().items()} == dict.fromkeys(
        ["root", "x", "y", "z", "sink"], "new"
    )


def test_a_failed_run_holds_every_state_as_stored(store: Store) -> None:
    result = flowdag.run(fan(fail="y"), run_id="r", store=store)
    assert not result.ok and type(result.nodes) is dict
    assert result.nodes == store.load("r").nodes
    assert result.node_status["z"] is NodeStatus.COMPLETED and result.outputs["z"] == 14
    assert result.node_status["y"] is NodeStatus.FAILED and "y fails" in result.errors["y"].message
    assert result.outputs["sink"] == [6]


def test_a_failed_run_whose_ttl_ran_out_still_holds_every_state(store: Store) -> None:
    result = flowdag.run(fan(fail="y"), run_id="r", store=store, ttl="1ms")
    time.sleep(0.01)
    with pytest.raises(flowdag.RunNotFoundError, match="expired"):
        store.load("r")  # gone for every reader now, but the call returned it whole
    assert result.outputs["z"] == 14 and result.node_status["y"] is NodeStatus.FAILED


class _UnreadableAfterTheRun(flowdag.LMDBStore):
    """A real LMDB store that fails for good at the commit of node ``y``: that
    commit and every read of the run after it raise `StoreError`."""

    gone = False

    def _commit(self, run_id: str, *args: Any, **kwargs: Any) -> None:
        nodes = args[0] if args else kwargs["nodes"]
        if "y" in nodes:
            self.gone = True
        if self.gone:
            raise flowdag.StoreError("disk gone")
        super()._commit(run_id, *args, **kwargs)

    def _load_into(self, run_id: str, decoder: Any) -> None:
        if self.gone:
            raise flowdag.StoreError("disk gone")
        super()._load_into(run_id, decoder)


def test_a_run_that_cannot_be_read_back_still_returns_its_outcome(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    wf = Workflow("w")
    wf.add_node("root", lambda: 2)
    wf.add_node("x", lambda root: root, deps=["root"])  # nothing reads it: let go of
    wf.add_node("y", lambda root: time.sleep(0.2), deps=["root"])  # stored after x
    with _UnreadableAfterTheRun(tmp_path / "s") as store:
        result = flowdag.run(wf, run_id="r", store=store, max_workers=1)
    assert not result.ok and result.node_status["y"] is NodeStatus.FAILED
    assert "disk gone" in result.errors["y"].message
    assert result.nodes["root"].output == 2  # read by x and y: kept
    assert result.nodes["x"].status is NodeStatus.COMPLETED and result.nodes["x"].output is None
    assert result.nodes["x"].deps == ("root",)
    assert "could not be read back" in caplog.text and "disk gone" in caplog.text


def test_a_completed_run_that_is_not_sealed_holds_every_state(store: Store) -> None:
    flowdag.run(fan(), run_id="r", store=store)
    flowdag.invalidate(store, "r", "z")
    # x's code changed and is kept: a plan would not reuse it unchanged, so no seal.
    result = flowdag.run(fan(x_factor=4), run_id="r", store=store, on_code_change="ignore")
    assert result.ok and store._sealed("r") is None and type(result.nodes) is dict
    assert result.nodes == store.load("r").nodes
    assert result.outputs["z"] == 14 and result.outputs["x"] == 6


def test_a_result_is_read_from_a_store_closed_meanwhile(tmp_path: Path) -> None:
    url = f"lmdb://{tmp_path / 'store'}"
    result = flowdag.run(fan(), run_id="r", store=url)  # opened and closed by run()
    assert type(result.nodes) is SealedNodes
    assert result.outputs["z"] == 14 and result.nodes["sink"].output == [6]


def test_a_change_by_another_store_is_refused(tmp_path: Path) -> None:
    url = f"lmdb://{tmp_path / 'store'}"
    with open_store(url) as ours, open_store(url) as theirs:
        result = flowdag.run(fan(), run_id="r", store=ours)
        flowdag.invalidate(theirs, "r", "z")
        with pytest.raises(RunChangedError, match=r"changed in .* after the call of run"):
            result.outputs["z"]


def test_a_write_by_the_same_store_reads_the_result_first(store: Store) -> None:
    result = flowdag.run(fan(), run_id="r", store=store)
    flowdag.invalidate(store, "r", "z")
    assert result.node_status["z"] is NodeStatus.COMPLETED and result.outputs["z"] == 14
    assert store.load("r").nodes["z"].status is NodeStatus.PENDING


# -- one node read alone (LMDB) ---------------------------------------------------------


def loads(store: Store) -> list[str]:
    """The run ids ``store`` reads whole from now on (`Store._load_into`)."""
    seen: list[str] = []
    load = store._load_into

    def counted(run_id: str, decoder: Any) -> None:
        seen.append(run_id)
        load(run_id, decoder)

    store._load_into = counted  # type: ignore[method-assign]
    return seen


@pytest.mark.parametrize("encrypted", [False, True])
def test_one_node_or_output_is_read_alone(
    tmp_path: Path, encrypted: bool, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(_seal, "READ_ALONE", 8)
    key = {"key": KEY} if encrypted else {}
    with open_store(f"lmdb://{tmp_path / 'store'}", **key) as store:
        result = flowdag.run(fan(), run_id="r", store=store)
        seen = loads(store)
        assert result.outputs["sink"] == [6] and result.outputs["z"] == 14
        assert result.nodes["y"].output == 10 and result.nodes["y"].deps == ("root",)
        assert "x" in result.outputs and len(result.outputs) == 5
        with pytest.raises(KeyError):
            result.outputs["nope"]
        stored = store.load("r").nodes
        assert result.nodes["z"] == stored["z"] and result.nodes["sink"] == stored["sink"]
        assert seen == ["r"]  # that load only: six nodes were read alone
        assert dict(result.outputs) == {"root": 2, "x": 6, "y": 10, "z": 14, "sink": [6]}
        assert dict(result.nodes) == stored
        assert seen == ["r", "r"]  # past 8 nodes read alone: the whole run, once


def test_a_large_output_read_alone_loads_its_blob(tmp_path: Path) -> None:
    wf = Workflow("big")
    wf.add_node("root", lambda: 1)
    wf.add_node("big", lambda root: b"x" * 4096 + bytes([root]), deps=["root"])
    with open_store(f"lmdb://{tmp_path / 'store'}") as store:
        result = flowdag.run(wf, run_id="r", store=store, inline_limit=1024)
        assert isinstance(result.nodes["big"].output, flowdag.Ref)
        assert result.outputs["big"] == b"x" * 4096 + b"\x01"
        assert sorted(result.refs) == ["big"]


def test_a_node_read_alone_after_a_change_is_refused(tmp_path: Path) -> None:
    url = f"lmdb://{tmp_path / 'store'}"
    with open_store(url) as ours, open_store(url) as theirs:
        result = flowdag.run(fan(), run_id="r", store=ours)
        assert result.outputs["x"] == 6
        flowdag.invalidate(theirs, "r", "z")
        with pytest.raises(RunChangedError):
            result.outputs["z"]
        with pytest.raises(RunChangedError):
            result.nodes["sink"]


def test_a_node_read_alone_after_the_run_expired_is_refused(tmp_path: Path) -> None:
    with open_store(f"lmdb://{tmp_path / 'store'}") as store:
        result = flowdag.run(fan(), run_id="r", store=store, ttl="200ms")
        time.sleep(0.3)
        with pytest.raises(RunChangedError):
            result.outputs["z"]


def test_a_damaged_entry_read_alone_is_damage(tmp_path: Path) -> None:
    from flowdag.stores._lmdb_keys import entry_key, run_prefix

    with open_store(f"lmdb://{tmp_path / 'store'}") as store:
        result = flowdag.run(fan(), run_id="r", store=store)
        number = store._numbers["r"].nodes["z"]  # type: ignore[attr-defined]
        key = entry_key(run_prefix("r"), number)
        store._transact(  # type: ignore[attr-defined]
            "r", lambda txn, env: txn.put(key, b"\xc1 garbage", db=env.nodes), write=True
        )
        with pytest.raises(CorruptStateError, match="damaged"):
            result.outputs["z"]


# -- the ledger itself -------------------------------------------------------------------


def test_the_ledger_lets_go_of_what_no_node_reads_and_recalls_it() -> None:
    dag = fan().build()
    plan = plan_call(dag, None, "r", allow_changes=False, fingerprints=node_fingerprints(dag))
    ledger = Ledger(plan, dag, forgets=True)
    for name, value in (("root", 2), ("x", 6), ("z", 14), ("sink", [6])):
        ledger.settle(NodeRecord(name, NodeStatus.COMPLETED, 1), None, value)
    ledger.settle(NodeRecord("y", NodeStatus.COMPLETED, 1), flowdag.ErrorInfo("E", "m", ""))
    # Read by others: kept, with their outputs. Nothing reads z or sink: let go of.
    assert ledger.states["root"].output == 2 and ledger.states["x"].output == 6
    assert ledger.outputs == {"root": 2, "x": 6}
    assert ledger.states["z"] is FORGOTTEN and ledger.states["sink"] is FORGOTTEN
    assert ledger.states["y"].status is NodeStatus.FAILED  # only completed nodes
    assert ledger.forgotten == 2 and ledger.unsettled() == []
    stored = {name: flowdag.NodeState(NodeStatus.COMPLETED, 1, output=name) for name in dag.nodes}
    ledger.recall(RunState("r", dag.name, stored))
    assert ledger.states["z"].output == "z" and ledger.states["sink"].output == "sink"
    assert ledger.states["root"].output == 2 and ledger.forgotten == 0


def test_a_ledger_that_does_not_forget_keeps_every_state() -> None:
    dag = fan().build()
    plan = plan_call(dag, None, "r", allow_changes=False, fingerprints=node_fingerprints(dag))
    ledger = Ledger(plan, dag)
    ledger.settle(NodeRecord("z", NodeStatus.COMPLETED, 1), None, 14)
    assert ledger.states["z"].output == 14 and ledger.forgotten == 0


# -- a property: a lazy result is the run as returned, or refuses to be read ---------------

NODES = ["root", "x", "y", "z", "sink"]
Op = tuple[str, str]
ops = st.lists(
    st.tuples(st.sampled_from(["node", "output", "all", "ours", "theirs"]), st.sampled_from(NODES)),
    max_size=12,
)


@settings(max_examples=60, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(steps=ops, alone=st.integers(0, 4))
def test_reads_of_a_lazy_result_show_the_run_as_returned_or_refuse(
    steps: list[Op], alone: int
) -> None:
    """Reads of one node or output (alone, up to READ_ALONE of them), reads of all,
    writes by the result's own store (which read it first) and by another store
    (after which what was not read yet is refused), in any order."""
    with tempfile.TemporaryDirectory() as where, _read_alone(alone):
        url = f"lmdb://{where}"
        with open_store(url) as ours, open_store(url) as theirs:
            result = flowdag.run(fan(), run_id="r", store=ours)
            assert type(result.nodes) is SealedNodes
            want = ours.load("r").nodes
            whole = failed = changed = False
            read_alone = 0
            kept: set[str] = set()  # outputs read: `SealedOutputs` keeps them

            def read_now() -> bool:
                """Model one read of the run: whether it succeeds."""
                nonlocal whole, failed, read_alone
                if not (whole or failed) and read_alone < alone:
                    read_alone += 1
                    if not changed:
                        return True  # read alone
                if whole or failed:
                    return whole
                whole, failed = not changed, changed  # read whole now
                return whole

            for op, name in steps:
                if op == "ours":  # the store reads the result whole before it writes
                    if not (whole or failed):
                        whole, failed = not changed, changed
                    flowdag.invalidate(ours, "r", name)
                    continue
                if op == "theirs":
                    flowdag.invalidate(theirs, "r", name)
                    changed = True
                    continue
                if op == "output" and name in kept:
                    assert result.outputs[name] == want[name].output
                    continue
                if op == "all":
                    ok = whole or (not failed and not changed)
                    whole, failed = whole or ok, failed or not ok
                else:
                    ok = read_now()
                if not ok:
                    with pytest.raises(RunChangedError):
                        _read(result, op, name)
                    continue
                assert _read(result, op, name) == (
                    want if op == "all" else want[name] if op == "node" else want[name].output
                )
                if op == "output":
                    kept.add(name)


def _read(result: flowdag.RunResult, op: str, name: str) -> Any:
    if op == "all":
        return dict(result.nodes)
    return result.nodes[name] if op == "node" else result.outputs[name]


@contextlib.contextmanager
def _read_alone(count: int) -> Iterator[None]:
    before = _seal.READ_ALONE
    _seal.READ_ALONE = count
    try:
        yield
    finally:
        _seal.READ_ALONE = before
