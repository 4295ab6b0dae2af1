"""The driver under random workloads, and its regressions.

The property test builds random DAGs with pools, caps, retries, retry delays,
planned failures and short sleeps, runs each, and checks what every scheduler
must guarantee. Node functions count their own concurrency, so the caps are
checked where they matter: inside the running code.

``FLOWDAG_PROPERTY_EXAMPLES=500 pytest tests/test_driver.py`` runs it longer.
"""

from __future__ import annotations

import gc
import os
import threading
import time
import weakref
from collections import Counter
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from contextlib import contextmanager
from dataclasses import dataclass
from enum import StrEnum
from pathlib import Path
from typing import Any

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

import flowdag
import flowdag.stores
from flowdag import (
    Context,
    FlowdagError,
    InvalidArgumentError,
    InvalidArgumentTypeError,
    MemoryStore,
    NodeStatus,
    RunEvent,
    RunStatus,
    Store,
    StoreError,
    Workflow,
    open_store,
)
from flowdag._driver import _Driver
from flowdag.attempt import Attempt
from flowdag.executors import ThreadExecutor
from flowdag.runner import EventKind
from flowdag.scheduler import PoolGate

C, F, S = NodeStatus.COMPLETED, NodeStatus.FAILED, NodeStatus.SKIPPED

POOLS = ("db", "api", "gpu")  # "gpu" is never given a cap: nodes in it are not limited
SLEEPS = (0.0, 0.002, 0.005, 0.01, 0.02)


class DurableMemoryStore(MemoryStore):
    """A memory store that the driver treats as durable: commits go through the committer."""

    durable = True


@dataclass(frozen=True)
class NodePlan:
    name: str
    deps: tuple[str, ...]
    pool: str | None
    retries: int
    retry_delay: float
    failures: int  # the first `failures` attempts raise
    sleeps: tuple[float, ...]  # seconds slept by attempt 1, 2, ... (the last repeats)


@dataclass(frozen=True)
class Workload:
    nodes: tuple[NodePlan, ...]
    caps: dict[str, int]
    max_workers: int
    durable: bool
    own_pool: bool  # the run's own pool (capped: attempts queue ahead in it), else an instance


@st.composite
def workloads(draw: st.DrawFn) -> Workload:
    # Weighted towards what makes schedulers slip: few workers, small caps, many
    # nodes ready at once (few deps), retries whose delay ends while slots are full.
    count = draw(st.integers(3, 15))
    nodes = []
    for i in range(count):
        earlier = [f"n{j}" for j in range(i)]
        width = draw(st.sampled_from((0, 0, 0, 0, 1, 2)))
        deps = (
            draw(
                st.lists(
                    st.sampled_from(earlier), min_size=min(width, i), max_size=width, unique=True
                )
            )
            if earlier
            else []
        )
        nodes.append(
            NodePlan(
                name=f"n{i}",
                deps=tuple(deps),
                pool=draw(st.sampled_from((None, "db", "db", "api", "gpu"))),
                retries=draw(st.integers(0, 2)),
                retry_delay=draw(st.sampled_from((0.0, 0.001, 0.003, 0.01))),
                failures=draw(st.sampled_from((0, 1, 1, 2, 3))),
                sleeps=tuple(draw(st.lists(st.sampled_from(SLEEPS), min_size=1, max_size=3))),
            )
        )
    caps = {"db": draw(st.sampled_from((1, 1, 2)))}
    if draw(st.booleans()):
        caps["api"] = draw(st.integers(1, 3))
    max_workers = draw(st.sampled_from((1, 2, 2, 2, 3, 4)))
    return Workload(tuple(nodes), caps, max_workers, draw(st.booleans()), draw(st.booleans()))


class Probe:
    """What the node functions saw: calls, inputs, attempt numbers, peak concurrency."""

    def __init__(self, caps: dict[str, int]) -> None:
        self.lock = threading.Lock()
        self.calls = Counter[str]()
        self.attempts: dict[str, list[int]] = {}
        self.bad_inputs: list[str] = []
        self.running = 0
        self.peak = 0
        self.in_pool = Counter[str]()
        self.pool_peak = Counter[str]()

    def node(self, plan: NodePlan) -> Any:
        def fn(ctx: Context, **inputs: Any) -> str:
            with self.lock:
                self.calls[plan.name] += 1
                call = self.calls[plan.name]
                self.attempts.setdefault(plan.name, []).append(ctx.attempt)
                if inputs != {dep: f"out-{dep}" for dep in plan.deps}:
                    self.bad_inputs.append(f"{plan.name}: {inputs}")
                self.running += 1
                self.peak = max(self.peak, self.running)
                if plan.pool is not None:
                    self.in_pool[plan.pool] += 1
                    self.pool_peak[plan.pool] = max(
                        self.pool_peak[plan.pool], self.in_pool[plan.pool]
                    )
            try:
                time.sleep(plan.sleeps[min(call, len(plan.sleeps)) - 1])
                if call <= plan.failures:
                    raise RuntimeError(f"{plan.name} planned failure {call}")
                return f"out-{plan.name}"
            finally:
                with self.lock:
                    self.running -= 1
                    if plan.pool is not None:
                        self.in_pool[plan.pool] -= 1

        return fn


@contextmanager
def drivers_made() -> Iterator[list[weakref.ref[_Driver]]]:
    """Weak references to the drivers of the runs inside, the cyclic collector paused,
    so that a driver a reference cycle holds is still alive when the block ends."""
    made: list[weakref.ref[_Driver]] = []
    init = _Driver.__init__

    def recorded(self: _Driver, *args: Any, **kwargs: Any) -> None:
        made.append(weakref.ref(self))
        init(self, *args, **kwargs)

    enabled = gc.isenabled()
    gc.disable()
    _Driver.__init__ = recorded  # type: ignore[method-assign]
    try:
        yield made
    finally:
        _Driver.__init__ = init  # type: ignore[method-assign]
        if enabled:
            gc.enable()


def check_run(load: Workload) -> None:
    probe = Probe(load.caps)
    wf = Workflow("prop")
    for plan in load.nodes:
        wf.add_node(
            plan.name,
            probe.node(plan),
            deps=plan.deps,
            pool=plan.pool,
            retries=plan.retries,
            retry_delay=plan.retry_delay,
        )
    store = DurableMemoryStore() if load.durable else MemoryStore()
    with drivers_made() as drivers:
        if load.own_pool:
            result = flowdag.run(wf, store=store, max_workers=load.max_workers, pools=load.caps)
        else:
            with ThreadExecutor(load.max_workers) as pool:
                result = flowdag.run(wf, store=store, executor=pool, pools=load.caps)
        # Its state (a ledger of every node) is freed as run() returns, not left to
        # a later full collection that the caller's code would pay for.
        assert len(drivers) == 1 and drivers[0]() is None

    # What each node must end as: fails iff it failed more attempts than its
    # retries allow; skipped iff an ancestor failed (checked in topological order).
    expected: dict[str, NodeStatus] = {}
    for plan in load.nodes:
        if any(expected[dep] in (F, S) for dep in plan.deps):
            expected[plan.name] = S
        else:
            expected[plan.name] = F if plan.failures > plan.retries else C
    assert result.node_status == expected

    for plan in load.nodes:
        state = result.nodes[plan.name]
        calls = probe.calls[plan.name]
        if expected[plan.name] is C:
            assert calls == plan.failures + 1, plan.name
        elif expected[plan.name] is F:
            assert calls == plan.retries + 1, plan.name
            assert state.error is not None and state.error.type == "RuntimeError"
        else:
            assert calls == 0, plan.name  # skipped nodes are never called
        assert state.attempts == calls, plan.name
        assert probe.attempts.get(plan.name, []) == list(range(1, calls + 1)), plan.name
        # Every attempt is in the history, in order, each failed one with its error.
        assert [a.number for a in state.history] == list(range(1, calls + 1)), plan.name
        for attempt in state.history:
            failed = attempt.number <= plan.failures
            assert (attempt.error is not None) == failed, (plan.name, attempt)
        if state.history:
            assert state.history[-1].error == state.error, plan.name
    assert probe.bad_inputs == []
    assert probe.peak <= load.max_workers
    for pool, cap in load.caps.items():
        assert probe.pool_peak[pool] <= cap, pool
    assert result.ok == all(s is C for s in expected.values())
    assert result.ok == (result.status is RunStatus.COMPLETED)
    if not result.ok:
        assert result.errors, "a failed run names an error"
    assert store.load(result.run_id).nodes == result.nodes


@settings(
    max_examples=int(os.environ.get("FLOWDAG_PROPERTY_EXAMPLES", "200")),
    deadline=None,
    suppress_health_check=[HealthCheck.too_slow],
)
@given(workloads())
def test_every_run_ends_with_each_node_settled_and_caps_kept(load: Workload) -> None:
    check_run(load)


# -- regressions ----------------------------------------------------------------------


def test_a_node_parked_by_its_pool_is_not_stranded_when_retries_take_the_slots() -> None:
    # a1 holds pool db while a2 waits for it; b fails once and its retry waits for
    # a slot; when a1 frees pool db, b's retry takes the only free slot. a2 must
    # still start once a slot frees (it was left pending, with no error, before).
    failed = threading.Event()

    def b() -> str:
        if not failed.is_set():
            failed.set()
            raise RuntimeError("once")
        return "b"

    wf = Workflow("stranded")
    wf.add_node("a1", lambda: time.sleep(0.3), pool="db")
    wf.add_node("a2", lambda: "a2", pool="db")
    wf.add_node("b", b, retries=1, retry_delay=0.05)
    wf.add_node("c", lambda: time.sleep(0.5))
    result = flowdag.run(wf, max_workers=2, pools={"db": 1})
    assert result.node_status == dict.fromkeys(["a1", "a2", "b", "c"], C)
    assert result.ok


def test_nodes_that_can_neither_start_nor_fail_are_a_loud_bug(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    # Simulate a scheduler that forgets parked nodes: the run must not end as a
    # FAILED result with no error, but raise, naming the stranded node.
    monkeypatch.setattr(PoolGate, "next_admissible", lambda self: None)
    wf = Workflow("w")
    wf.add_node("a1", lambda: time.sleep(0.05), pool="db")
    wf.add_node("a2", lambda: "a2", pool="db")
    with pytest.raises(RuntimeError, match=r"flowdag bug: .*\ba2\b"):
        flowdag.run(wf, max_workers=2, pools={"db": 1})


# -- run() arguments and resources ----------------------------------------------------


def test_a_store_opened_from_a_url_is_closed_when_the_executor_is_refused(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    opened: list[Store] = []

    def spy(url: str) -> Store:
        store = open_store(url)
        opened.append(store)
        return store

    monkeypatch.setattr(flowdag.stores, "open_store", spy)
    wf = Workflow("w")
    wf.add_node("a", lambda: 1)
    with pytest.raises(FlowdagError, match="'nope'"):
        flowdag.run(wf, store=f"lmdb://{tmp_path / 'x'}", executor="nope")
    assert len(opened) == 1
    with pytest.raises(StoreError, match="closed"):
        opened[0].list_runs()


@pytest.mark.parametrize(
    ("kwargs", "error", "words"),
    [
        ({"max_workers": 0}, InvalidArgumentError, ["max_workers", "0"]),
        ({"max_workers": True}, InvalidArgumentError, ["max_workers", "True"]),
        ({"max_workers": "2"}, InvalidArgumentError, ["max_workers", "'2'"]),
        ({"pools": {"db": 0}}, InvalidArgumentError, ["pools['db']", "0"]),
        ({"pools": {"db": "1"}}, InvalidArgumentError, ["pools['db']", "'1'"]),
        ({"pools": [("db", 1)]}, InvalidArgumentTypeError, ["pools", "list"]),
        ({"pools": {1: 1}}, InvalidArgumentTypeError, ["pool names", "1"]),
        ({"store": 42}, InvalidArgumentTypeError, ["store", "int"]),
    ],
)
def test_argument_errors_are_flowdag_errors_and_builtins(
    kwargs: dict[str, Any], error: type[Exception], words: list[str]
) -> None:
    wf = Workflow("w")
    wf.add_node("a", lambda: 1)
    with pytest.raises(error) as caught:
        flowdag.run(wf, **kwargs)
    assert type(caught.value) is error
    assert isinstance(caught.value, FlowdagError)
    assert isinstance(caught.value, TypeError if error is InvalidArgumentTypeError else ValueError)
    for word in words:
        assert word in str(caught.value)


def test_run_needs_a_dag_or_a_workflow() -> None:
    with pytest.raises(InvalidArgumentTypeError, match="DAG or a Workflow, not str"):
        flowdag.run("etl.py")  # type: ignore[arg-type]


# -- attempts and events --------------------------------------------------------------


def test_event_kinds_are_a_str_enum() -> None:
    assert issubclass(EventKind, StrEnum)
    assert [kind.value for kind in EventKind] == [
        "node_started",
        "node_retrying",
        "node_finished",
        "node_waiting",
    ]
    events: list[RunEvent] = []
    wf = Workflow("w")
    wf.add_node("a", lambda: 1)
    flowdag.run(wf, on_event=events.append)
    assert [e.kind for e in events] == [EventKind.NODE_STARTED, EventKind.NODE_FINISHED]
    assert [e.kind for e in events] == ["node_started", "node_finished"]
    assert all(type(e.kind) is EventKind for e in events)


def test_attempts_count_over_the_runs_life_and_each_call_retries_afresh(
    tmp_path: Path,
) -> None:
    # flaky fails its first 3 attempts and has retries=1: the first run() gives
    # it attempts 1 and 2 (both fail), the resume attempts 3 (fails) and 4.
    seen: list[int] = []  # ctx.attempt, call by call
    delays: list[float] = []

    def flaky(ctx: Context) -> int:
        seen.append(ctx.attempt)
        delays.append(time.monotonic())
        if ctx.attempt <= 3:
            raise RuntimeError(f"attempt {ctx.attempt}")
        return ctx.attempt

    wf = Workflow("w")
    wf.add_node("flaky", flaky, retries=1, retry_delay=0.05, backoff=10)
    wf.add_node("after", lambda flaky: flaky, deps=["flaky"])
    store = open_store(f"lmdb://{tmp_path}")
    try:
        events: list[RunEvent] = []
        first = flowdag.run(wf, run_id="r", store=store, on_event=events.append)
        assert first.node_status == {"flaky": F, "after": S}
        assert seen == [1, 2]
        assert first.nodes["flaky"].attempts == 2 == store.load("r").nodes["flaky"].attempts
        assert [(e.kind, e.node, e.attempt) for e in events] == [
            ("node_started", "flaky", 1),
            ("node_retrying", "flaky", 1),
            ("node_started", "flaky", 2),
            ("node_finished", "flaky", 2),
            ("node_finished", "after", 0),
        ]

        events.clear()
        delays.clear()
        second = flowdag.run(wf, run_id="r", store=store, on_event=events.append)
        assert second.ok
        assert seen == [1, 2, 3, 4]  # ctx.attempt goes on counting across the resume
        assert second.nodes["flaky"].attempts == 4 == store.load("r").nodes["flaky"].attempts
        assert second.outputs["after"] == 4
        assert [(e.kind, e.node, e.attempt) for e in events] == [
            ("node_started", "flaky", 3),
            ("node_retrying", "flaky", 3),
            ("node_started", "flaky", 4),
            ("node_finished", "flaky", 4),
            ("node_started", "after", 1),
            ("node_finished", "after", 1),
        ]
        # The resume's first retry waits retry_delay again, not the 10x backoff
        # a fourth lifetime attempt would get: the retry budget is per call.
        assert delays[1] - delays[0] < 0.3
    finally:
        store.close()


@pytest.mark.parametrize("timeout", [None, 5.0])
def test_an_executor_that_refuses_attempts_fails_the_nodes_instead_of_the_run(
    timeout: float | None,
) -> None:
    # A pool shut down before the run refuses every submit: the nodes fail with
    # that error (after the lost-attempt retries), and run() returns a result.
    pool = ThreadPoolExecutor(max_workers=2)
    pool.shutdown()
    wf = flowdag.Workflow("refused")
    wf.add_node("a", lambda: 1, timeout=timeout)
    wf.add_node("b", lambda a: a, deps=["a"])
    result = flowdag.run(wf, executor=pool)
    assert result.node_status == {"a": NodeStatus.FAILED, "b": NodeStatus.SKIPPED}
    assert result.errors["a"].type == "RuntimeError"
    assert "shutdown" in result.errors["a"].message


def test_a_process_pool_shut_down_before_the_run_fails_the_nodes() -> None:
    from flowdag.executors import ProcessExecutor

    pool = ProcessExecutor(max_workers=1)
    pool.shutdown()
    wf = flowdag.Workflow("refused")
    wf.add_node("a", _one, timeout=5.0)  # the start-reporting submit
    wf.add_node("b", _one)  # the plain submit
    result = flowdag.run(wf, executor=pool)
    assert result.node_status == {"a": NodeStatus.FAILED, "b": NodeStatus.FAILED}
    assert set(result.errors) == {"a", "b"}


def _one() -> int:
    return 1


class _StoreThatExitsOnCommit(flowdag.LMDBStore):
    """A real LMDB store whose commits raise a BaseException in the committer thread.

    On the caller's thread (the driver commits inline when nothing else is in
    flight) a BaseException must propagate, as Ctrl-C does, so it commits there.
    """

    def _commit(self, *args: Any, **kwargs: Any) -> None:
        if threading.current_thread() is not threading.main_thread():
            raise SystemExit("commit interrupted")
        super()._commit(*args, **kwargs)


def test_a_base_exception_in_the_committer_fails_the_batch_without_a_hang(
    tmp_path: Path,
) -> None:
    wf = flowdag.Workflow("exits")
    for i in range(6):  # a fan-out of nodes in flight together: commits go to the committer
        wf.add_node(f"n{i}", lambda: time.sleep(0.05))
    with _StoreThatExitsOnCommit(tmp_path / "s") as store:
        result = flowdag.run(wf, run_id="r", store=store, max_workers=3)
    assert result.status is flowdag.RunStatus.FAILED
    assert {e.type for e in result.errors.values()} == {"SystemExit"}


def _shape_with(feature: str) -> Workflow:
    """A small workflow using ``feature`` of the driver (see the test below)."""
    wf = Workflow(f"cycles-{feature}")
    wf.add_node("a", lambda: [1, 2, 3], cache=feature == "cache")
    if feature == "map":
        wf.map("b", lambda item: item * 2, over="a")
    elif feature == "input":
        wf.add_input("b", schema={"type": "integer"}, deps=["a"])
    elif feature == "failure":
        wf.add_node("b", lambda a: 1 / 0, deps=["a"], retries=1, retry_delay=0.0)
    else:
        wf.add_node("b", lambda a: len(a), deps=["a"])
    wf.add_node("c", lambda b: b, deps=["b"])
    return wf


@pytest.mark.parametrize("feature", ["plain", "events", "map", "cache", "input", "failure"])
@pytest.mark.parametrize("kind", ["memory", "lmdb"])
def test_no_reference_cycle_holds_a_run_once_it_returned(
    feature: str, kind: str, tmp_path: Path
) -> None:
    """A run's state (its ledger of every node) is freed as `flowdag.run` returns, with
    each feature of the driver, not left to a later full collection to find."""
    events: list[RunEvent] = []
    url = "memory://" if kind == "memory" else f"lmdb://{tmp_path}"
    with open_store(url) as store, drivers_made() as drivers:
        result = flowdag.run(
            _shape_with(feature),
            run_id="r",
            store=store,
            on_event=events.append if feature == "events" else None,
        )
        assert len(drivers) == 1 and drivers[0]() is None
    expected = {"failure": RunStatus.FAILED, "input": RunStatus.SUSPENDED}
    assert result.status is expected.get(feature, RunStatus.COMPLETED)
    assert (feature == "events") == bool(events)


def _one() -> int:
    return 1


def _doubled(a: int) -> int:
    return 2 * a


@pytest.mark.parametrize("executor", ["threads", "asyncio", "processes"])
def test_no_attempt_outlives_its_run_in_a_reference_cycle(executor: str) -> None:
    """An attempt (its inputs: its deps' outputs) is freed once its run returned,
    whatever runs it, not kept by a cycle through its future until a full collection."""
    wf = Workflow("attempts")
    wf.add_node("a", _one)
    for i in range(8):
        wf.add_node(f"b{i}", _doubled, deps=["a"])
    run_id = f"attempts-{executor}"
    with MemoryStore() as store, drivers_made():
        assert flowdag.run(wf, run_id=run_id, store=store, executor=executor).ok
        # Of this run only: an earlier test's abandoned attempt may still be running.
        left = [o for o in gc.get_objects() if type(o) is Attempt and o.run_id == run_id]
        assert left == []
