"""run(): inputs, ctx, retries, timeouts, failures, concurrency, checkpoints and resume.

Node functions record what happened (calls, attempts, times) in plain Python
objects; nothing of flowdag is mocked. Stores are real: MemoryStore, and
LMDBStore under tmp_path.
"""

from __future__ import annotations

import asyncio
import threading
import time
from collections import Counter
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest

import flowdag
from flowdag import (
    Context,
    InvalidRunIdError,
    LMDBStore,
    MemoryStore,
    NodeStatus,
    RunEvent,
    RunFailedError,
    RunLockedError,
    RunResult,
    RunStatus,
    Store,
    Workflow,
    WorkflowChangedError,
)
from flowdag.stores.base import check_run_id

C, F, S = NodeStatus.COMPLETED, NodeStatus.FAILED, NodeStatus.SKIPPED


@pytest.fixture(params=["memory", "lmdb"])
def store_factory(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[Callable[[], Store]]:
    """Opens a store on the same place each call (for LMDB: a new handle on one directory)."""
    opened: list[Store] = []

    def make() -> Store:
        if request.param == "memory":
            if not opened:
                opened.append(MemoryStore())
            return opened[0]
        store = LMDBStore(tmp_path / "state")
        opened.append(store)
        return store

    yield make
    for store in opened:
        store.close()


@pytest.fixture
def release() -> Iterator[threading.Event]:
    """Set at teardown, so that nodes blocked on it (abandoned attempts) end."""
    event = threading.Event()
    yield event
    event.set()


# -- the API.md example --------------------------------------------------------------


def test_api_example() -> None:
    wf = flowdag.Workflow("nightly-etl")

    @wf.node
    def extract() -> list[dict[str, int]]:
        return [{"id": 1, "amount": 10}, {"id": 2, "amount": 32}]

    @wf.node(deps=["extract"], retries=2, retry_delay=0.05, timeout=30.0)
    def transform(extract: list[dict[str, int]]) -> list[int]:
        return [r["amount"] * 2 for r in extract]

    @wf.node(deps=["transform"])
    def load(transform: list[int], ctx: Context) -> int:
        ctx.data["rows_loaded"] = len(transform)
        return sum(transform)

    wf.add_node("report", lambda load: f"total={load}", deps=["load"])

    result = flowdag.run(wf.build(), run_id="2026-11-22", store=MemoryStore(), max_workers=4)
    assert isinstance(result, RunResult)
    assert result.status is RunStatus.COMPLETED
    assert result.ok
    assert result.run_id == "2026-11-22"
    assert result.outputs == {
        "extract": [{"id": 1, "amount": 10}, {"id": 2, "amount": 32}],
        "transform": [20, 64],
        "load": 84,
        "report": "total=84",
    }
    assert result.node_status == dict.fromkeys(["extract", "transform", "load", "report"], C)
    assert result.data == {"rows_loaded": 2}
    assert result.errors == {}
    result.raise_on_failure()  # no-op when completed


# -- inputs and ctx -------------------------------------------------------------------


def test_inputs_arrive_as_kwargs_named_after_deps() -> None:
    wf = Workflow("w")
    wf.add_node("a", lambda: 1)
    wf.add_node("b", lambda: 2)
    wf.add_node("sub", lambda a, b: a - b, deps=["b", "a"])
    wf.add_node("only_b", lambda b: b * 10, deps=["a", "b"])
    wf.add_node("defaulted", lambda a, extra=5: a + extra, deps=["a"])
    result = flowdag.run(wf)
    assert result.outputs["sub"] == -1
    assert result.outputs["only_b"] == 20
    assert result.outputs["defaulted"] == 6


def test_dependency_listed_twice_runs_once_done() -> None:
    wf = Workflow("w")
    wf.add_node("a", lambda: 1)
    wf.add_node("b", lambda a: a + 1, deps=["a", "a"])
    result = flowdag.run(wf)
    assert result.ok
    assert result.outputs == {"a": 1, "b": 2}


def test_var_kwargs_receive_every_dep_but_not_ctx() -> None:
    seen: dict[str, dict[str, Any]] = {}

    def collect(name: str) -> Callable[..., int]:
        def fn(**kwargs: Any) -> int:
            seen[name] = kwargs
            return len(kwargs)

        return fn

    def named_and_rest(a: int, **rest: Any) -> int:
        seen["named_and_rest"] = {"a": a, **rest}
        return a

    wf = Workflow("w")
    wf.add_node("a", lambda: 1)
    wf.add_node("load-data", lambda: 2)
    wf.add_node("none", collect("none"))
    wf.add_node("all", collect("all"), deps=["a", "load-data"])
    wf.add_node("named_and_rest", named_and_rest, deps=["a", "load-data"])
    result = flowdag.run(wf)
    assert result.ok
    assert seen["none"] == {}
    assert seen["all"] == {"a": 1, "load-data": 2}
    assert seen["named_and_rest"] == {"a": 1, "load-data": 2}


def test_ctx_is_injected_only_when_asked_for() -> None:
    got: dict[str, Any] = {}

    def with_ctx(a: int, ctx: Context) -> int:
        got["ctx"] = ctx
        return a

    def without_ctx(a: int, *args: Any) -> int:
        got["args"] = args
        return a

    wf = Workflow("w")
    wf.add_node("a", lambda: 1)
    wf.add_node("with_ctx", with_ctx, deps=["a"])
    wf.add_node("without_ctx", without_ctx, deps=["a"])
    assert flowdag.run(wf).ok
    assert isinstance(got["ctx"], Context)
    assert got["args"] == ()


def test_ctx_inputs_work_for_names_that_are_not_identifiers() -> None:
    wf = Workflow("w")
    wf.add_node("load-data", lambda: [1, 2, 3])
    wf.add_node("2nd.step", lambda: 10)
    wf.add_node(
        "total",
        lambda ctx: sum(ctx.inputs["load-data"]) + ctx.inputs["2nd.step"],
        deps=["load-data", "2nd.step"],
    )
    wf.add_node("keys", lambda ctx: sorted(ctx.inputs), deps=["load-data", "2nd.step"])
    result = flowdag.run(wf)
    assert result.outputs["total"] == 16
    assert result.outputs["keys"] == ["2nd.step", "load-data"]


def test_ctx_identity_attempts_and_idempotency_keys(store_factory: Callable[[], Store]) -> None:
    seen: list[tuple[str, str, int, str]] = []  # (ctx.run_id, ctx.node, attempt, key)
    fail = {"flaky": 2, "broken": 1}  # failures left per node
    lock = threading.Lock()

    def node(ctx: Context) -> str:
        with lock:
            seen.append((ctx.run_id, ctx.node, ctx.attempt, ctx.idempotency_key))
            if fail.get(ctx.node, 0) > 0:
                fail[ctx.node] -= 1
                raise RuntimeError(f"{ctx.node} fails")
        return ctx.node

    wf = Workflow("w")
    wf.add_node("flaky", node, retries=2)
    wf.add_node("broken", node)
    wf.add_node("steady", node)
    store = store_factory()

    result = flowdag.run(wf, run_id="first", store=store)
    assert result.node_status == {"flaky": C, "broken": F, "steady": C}
    assert {run for run, *_ in seen} == {"first"}
    assert [a for _, n, a, _ in seen if n == "flaky"] == [1, 2, 3]
    assert store.load("first").nodes["flaky"].attempts == 3

    flowdag.run(wf, run_id="first", store=store_factory())  # resume: broken runs again
    flowdag.run(wf, run_id="second", store=store)

    keys: dict[tuple[str, str], set[str]] = {}
    for run, name, _, key in seen:
        keys.setdefault((run, name), set()).add(key)
    # One key per (run id, node): the same across attempts and across the resume ...
    assert all(len(k) == 1 for k in keys.values())
    assert len([1 for run, name, *_ in seen if (run, name) == ("first", "broken")]) == 2
    # ... and a different key for every other node or run id.
    all_keys = [next(iter(k)) for k in keys.values()]
    assert len(set(all_keys)) == len(keys) == 6


def test_ctx_data_is_persisted_and_visible_to_dependents(
    store_factory: Callable[[], Store],
) -> None:
    seen: dict[str, Any] = {}
    failed_once = threading.Event()

    def first(ctx: Context) -> int:
        ctx.data["rows"] = 3
        ctx.data["scratch"] = "tmp"
        return 1

    def flaky(first: int, ctx: Context) -> int:
        if not failed_once.is_set():
            failed_once.set()
            ctx.data["poison"] = "from the failed attempt"
            del ctx.data["scratch"]
            raise RuntimeError("first attempt fails")
        assert "poison" not in ctx.data
        assert ctx.data["scratch"] == "tmp"  # the failed attempt's delete was dropped too
        ctx.data["rows"] = ctx.data["rows"] + 1
        return 2

    def cleanup(flaky: int, ctx: Context) -> int:
        del ctx.data["scratch"]
        return 3

    def last(cleanup: int, ctx: Context) -> int:
        seen.update(ctx.data)
        return 4

    def doomed(first: int, ctx: Context) -> int:
        ctx.data["doomed"] = True
        raise ValueError("always")

    wf = Workflow("w")
    wf.add_node("first", first)
    wf.add_node("flaky", flaky, deps=["first"], retries=1)
    wf.add_node("cleanup", cleanup, deps=["flaky"])
    wf.add_node("last", last, deps=["cleanup"])
    wf.add_node("doomed", doomed, deps=["first"])
    result = flowdag.run(wf, run_id="r", store=store_factory())
    assert result.node_status == {"first": C, "flaky": C, "cleanup": C, "last": C, "doomed": F}
    assert seen == {"rows": 4}
    assert result.data == {"rows": 4}
    assert store_factory().load("r").data == {"rows": 4}


# -- retries and timeouts -------------------------------------------------------------


def test_retry_wait_grows_by_backoff_up_to_the_maximum() -> None:
    wf = Workflow("w")
    spec = wf.add_node("a", lambda: 1, retries=5, retry_delay=0.5, backoff=3, max_retry_delay=10)
    assert [spec.retry_wait(n) for n in range(1, 6)] == [0.5, 1.5, 4.5, 10.0, 10.0]


def test_retries_with_backoff_and_persisted_attempts(store_factory: Callable[[], Store]) -> None:
    stamps: list[float] = []

    def flaky(ctx: Context) -> int:
        stamps.append(time.monotonic())
        if ctx.attempt < 3:
            raise ConnectionError(f"attempt {ctx.attempt}")
        return ctx.attempt

    wf = Workflow("w")
    wf.add_node("flaky", flaky, retries=3, retry_delay=0.05, backoff=3)
    store = store_factory()
    result = flowdag.run(wf, run_id="r", store=store)
    assert result.ok
    assert result.outputs["flaky"] == 3
    assert result.nodes["flaky"].attempts == 3
    assert store.load("r").nodes["flaky"].attempts == 3
    first_gap, second_gap = stamps[1] - stamps[0], stamps[2] - stamps[1]
    assert first_gap >= 0.05 * 0.9  # retry_delay, less the 10% jitter
    assert second_gap >= first_gap * 1.5  # loose: backoff 3, jitter and overhead aside


def test_retries_exhausted_fail_the_node(store_factory: Callable[[], Store]) -> None:
    calls = Counter[str]()

    def broken() -> None:
        calls["broken"] += 1
        raise KeyError("missing")

    wf = Workflow("w")
    wf.add_node("broken", broken, retries=2)
    store = store_factory()
    result = flowdag.run(wf, run_id="r", store=store)
    assert calls["broken"] == 3
    assert result.node_status == {"broken": F}
    assert result.nodes["broken"].attempts == 3
    assert store.load("r").nodes["broken"].attempts == 3
    assert result.errors["broken"].type == "KeyError"


def test_timeout_fails_the_attempt_without_waiting_for_the_function(
    release: threading.Event,
) -> None:
    wf = Workflow("w")
    wf.add_node("sleepy", lambda: release.wait(3), timeout=0.2)
    wf.add_node("after", lambda sleepy: sleepy, deps=["sleepy"])
    wf.add_node("other", lambda: "fine")
    started = time.monotonic()
    result = flowdag.run(wf)
    elapsed = time.monotonic() - started
    assert elapsed < 2.5  # behaviour, not a benchmark: run did not wait for the 3 s sleep
    assert not release.is_set()  # the function is still running
    assert result.node_status == {"sleepy": F, "after": S, "other": C}
    error = result.errors["sleepy"]
    assert error.type == "NodeTimeoutError"
    assert "sleepy" in error.message
    assert "0.2" in error.message


def test_timeout_with_retries(release: threading.Event, store_factory: Callable[[], Store]) -> None:
    attempts: list[int] = []

    def first_attempt_hangs(ctx: Context) -> int:
        attempts.append(ctx.attempt)
        if ctx.attempt == 1:
            ctx.data["hung"] = True  # dropped: the attempt is abandoned
            release.wait(3)
        return ctx.attempt

    def always_hangs() -> None:
        release.wait(3)

    wf = Workflow("w")
    wf.add_node("recovers", first_attempt_hangs, timeout=0.2, retries=1)
    wf.add_node("hangs", always_hangs, timeout=0.1, retries=1, retry_delay=0.01)
    store = store_factory()
    started = time.monotonic()
    result = flowdag.run(wf, run_id="r", store=store)
    assert time.monotonic() - started < 2.5
    assert attempts == [1, 2]
    assert result.outputs["recovers"] == 2
    assert result.nodes["recovers"].attempts == 2
    assert result.data == {}
    assert result.node_status["hangs"] is F
    assert result.nodes["hangs"].attempts == 2
    assert result.errors["hangs"].type == "NodeTimeoutError"
    stored = store.load("r")
    assert stored.nodes["recovers"].attempts == 2
    assert stored.nodes["hangs"].attempts == 2


# -- failures -------------------------------------------------------------------------


def test_failed_node_skips_descendants_and_independent_branches_complete() -> None:
    def explode(extract: int) -> int:
        raise RuntimeError("transform exploded")

    wf = Workflow("w")
    wf.add_node("extract", lambda: 1)
    wf.add_node("transform", explode, deps=["extract"])
    wf.add_node("load", lambda transform: transform, deps=["transform"])
    wf.add_node("report", lambda load, side: 0, deps=["load", "side"])
    wf.add_node("side", lambda extract: extract + 1, deps=["extract"])
    wf.add_node("side2", lambda side: side + 1, deps=["side"])
    wf.add_node("lonely", lambda: "ok")
    result = flowdag.run(wf)  # does not raise
    assert result.status is RunStatus.FAILED
    assert not result.ok
    assert result.node_status == {
        "extract": C,
        "transform": F,
        "load": S,
        "report": S,
        "side": C,
        "side2": C,
        "lonely": C,
    }
    assert result.outputs == {"extract": 1, "side": 2, "side2": 3, "lonely": "ok"}
    assert set(result.errors) == {"transform"}
    error = result.errors["transform"]
    assert (error.type, error.message) == ("RuntimeError", "transform exploded")
    assert "Traceback" in error.traceback
    assert "explode" in error.traceback

    with pytest.raises(RunFailedError) as info:
        result.raise_on_failure()
    assert "transform" in str(info.value)
    assert "transform exploded" in str(info.value)


def test_unsupported_output_fails_only_that_node(tmp_path: Path) -> None:
    calls = Counter[str]()

    def bad() -> object:
        calls["bad"] += 1
        return object()

    def bad_data(ctx: Context) -> int:
        ctx.data["handle"] = threading.Lock()
        return 1

    wf = Workflow("w")
    wf.add_node("bad", bad, retries=2)  # not retried: the same value would fail again
    wf.add_node("bad_data", bad_data)
    wf.add_node("after", lambda bad: bad, deps=["bad"])
    wf.add_node("good", lambda: {"x": [1, 2.5, "s", None, True]})
    with LMDBStore(tmp_path / "state") as store:
        result = flowdag.run(wf, run_id="r", store=store)
        assert result.node_status == {"bad": F, "bad_data": F, "after": S, "good": C}
        assert calls["bad"] == 1
        for name, type_name in [("bad", "object"), ("bad_data", "lock")]:
            error = result.errors[name]
            assert error.type == "SerializationError"
            assert f"'{name}'" in error.message
            assert type_name in error.message
        assert result.outputs["good"] == {"x": [1, 2.5, "s", None, True]}
        stored = store.load("r")  # the store is intact
        assert stored.nodes["good"].output == {"x": [1, 2.5, "s", None, True]}
        assert stored.nodes["bad"].status is F
        assert stored.data == {}


def test_async_node_runs_under_the_default_executor() -> None:
    async def fetch(a: int, ctx: Context) -> int:
        await asyncio.sleep(0.01)
        ctx.data["fetched"] = True
        return a + 1

    async def fails() -> None:
        await asyncio.sleep(0)
        raise ValueError("async failure")

    wf = Workflow("w")
    wf.add_node("a", lambda: 1)
    wf.add_node("fetch", fetch, deps=["a"])
    wf.add_node("fails", fails)
    result = flowdag.run(wf)
    assert result.outputs["fetch"] == 2
    assert result.data == {"fetched": True}
    assert result.errors["fails"].type == "ValueError"


# -- concurrency ----------------------------------------------------------------------


def test_node_starts_as_soon_as_its_own_deps_are_done() -> None:
    d_started = threading.Event()

    def slow_a() -> bool:
        # Ready-node scheduling starts d (after b) while a still runs; a
        # level-by-level one would start d only after a, so this wait times out.
        return d_started.wait(2)

    def d(b: str) -> str:
        d_started.set()
        return b

    wf = Workflow("w")
    wf.add_node("a", slow_a)
    wf.add_node("b", lambda: "fast")
    wf.add_node("c", lambda a: a, deps=["a"])
    wf.add_node("d", d, deps=["b"])
    result = flowdag.run(wf, max_workers=2)
    assert result.ok
    assert result.outputs["a"] is True


def test_max_workers_caps_concurrency() -> None:
    lock = threading.Lock()
    running = 0
    peak = 0
    barrier = threading.Barrier(3, timeout=5)  # fails unless 3 nodes can run at once

    def node() -> None:
        nonlocal running, peak
        with lock:
            running += 1
            peak = max(peak, running)
        try:
            barrier.wait()
            time.sleep(0.005)
        finally:
            with lock:
                running -= 1

    wf = Workflow("w")
    for i in range(12):
        wf.add_node(f"n{i:02}", node)
    result = flowdag.run(wf, max_workers=3)
    assert result.ok
    assert peak == 3


@pytest.mark.parametrize("bad", [0, -1, 1.5, "2"])
def test_bad_max_workers(bad: Any) -> None:
    wf = Workflow("w")
    wf.add_node("a", lambda: 1)
    with pytest.raises(flowdag.FlowdagError):
        flowdag.run(wf, max_workers=bad)


# -- run ids --------------------------------------------------------------------------


def test_run_id_none_makes_a_unique_valid_id(store_factory: Callable[[], Store]) -> None:
    seen: list[str] = []
    wf = Workflow("w")
    wf.add_node("a", lambda ctx: seen.append(ctx.run_id))
    store = store_factory()
    ids = [flowdag.run(wf, store=store).run_id for _ in range(3)]
    assert len(set(ids)) == 3
    assert all(check_run_id(run_id) == run_id for run_id in ids)
    assert seen == ids
    assert store.list_runs() == sorted(ids)


@pytest.mark.parametrize(
    "run_id", ["", ".hidden", "a/b", "../up", "a b", "x" * 201, "nul\x00", "é", 7]
)
def test_invalid_run_id_raises_before_anything_runs(tmp_path: Path, run_id: Any) -> None:
    calls = Counter[str]()
    wf = Workflow("w")
    wf.add_node("a", lambda: calls.update(["a"]))
    with LMDBStore(tmp_path / "state") as store:
        with pytest.raises(InvalidRunIdError) as info:
            flowdag.run(wf, run_id=run_id, store=store)
        assert isinstance(info.value, ValueError)
        assert store.list_runs() == []
    assert not calls
    assert not (tmp_path / "state" / "locks").exists()


# -- checkpoints ----------------------------------------------------------------------


def test_dependency_is_in_the_store_before_a_dependent_starts(
    store_factory: Callable[[], Store],
) -> None:
    store = store_factory()
    seen: dict[str, dict[str, NodeStatus]] = {}

    def check(ctx: Context) -> str:
        statuses = store.load_statuses(ctx.run_id).nodes
        seen[ctx.node] = {dep: statuses[dep].status for dep in ctx.inputs}
        return ctx.node

    wf = Workflow("w")
    for name in ["a", "b", "c"]:
        wf.add_node(name, check)
    wf.add_node("ab", check, deps=["a", "b"])
    wf.add_node("abc", check, deps=["ab", "c"])
    result = flowdag.run(wf, run_id="r", store=store, max_workers=4)
    assert result.ok
    assert seen["ab"] == {"a": C, "b": C}
    assert seen["abc"] == {"ab": C, "c": C}


class CountingLMDBStore(LMDBStore):
    """A real LMDB store that counts its commits (one per transaction)."""

    def __init__(self, path: Path) -> None:
        super().__init__(path)
        self.commits = 0
        self.records = 0

    def commit(self, run_id: str, records: Any) -> None:
        self.commits += 1
        self.records += len(records)
        super().commit(run_id, records)


def test_group_commit_batches_completions(tmp_path: Path) -> None:
    wf = Workflow("fan")
    wf.add_node("root", lambda: 0)
    for i in range(200):
        wf.add_node(f"n{i:03}", lambda root: root, deps=["root"])
    with CountingLMDBStore(tmp_path / "state") as store:
        result = flowdag.run(wf, run_id="r", store=store)
        assert result.ok
        assert store.records == 201
        assert store.commits < 200
        stored = store.load("r")
        assert len(stored.nodes) == 201
        assert all(node.status is C for node in stored.nodes.values())


# -- events ---------------------------------------------------------------------------


def test_on_event_reports_progress() -> None:
    events: list[RunEvent] = []
    failed_once = threading.Event()

    def flaky() -> int:
        if not failed_once.is_set():
            failed_once.set()
            raise RuntimeError("once")
        return 1

    wf = Workflow("w")
    wf.add_node("a", lambda: 1)
    wf.add_node("flaky", flaky, deps=["a"], retries=1)
    wf.add_node("broken", lambda a: 1 / 0, deps=["a"])
    wf.add_node("after", lambda broken: broken, deps=["broken"])
    result = flowdag.run(wf, on_event=events.append)
    assert result.node_status == {"a": C, "flaky": C, "broken": F, "after": S}

    assert {e.total for e in events} == {4}
    started = [(e.node, e.attempt) for e in events if e.kind == "node_started"]
    assert sorted(started) == [("a", 1), ("broken", 1), ("flaky", 1), ("flaky", 2)]
    assert all(e.status is NodeStatus.RUNNING for e in events if e.kind == "node_started")
    retrying = [e for e in events if e.kind == "node_retrying"]
    assert [(e.node, e.attempt, e.error.type if e.error else None) for e in retrying] == [
        ("flaky", 1, "RuntimeError")
    ]
    finished = [e for e in events if e.kind == "node_finished"]
    assert sorted((e.node, e.status) for e in finished) == [
        ("a", C),
        ("after", S),
        ("broken", F),
        ("flaky", C),
    ]
    assert [e.done for e in finished] == [1, 2, 3, 4]
    broken = next(e for e in finished if e.node == "broken")
    assert broken.error is not None and broken.error.type == "ZeroDivisionError"
    # Each node's start comes before its finish.
    order = [(e.kind, e.node) for e in events]
    for name in ["a", "flaky", "broken"]:
        assert order.index(("node_started", name)) < order.index(("node_finished", name))


# -- resume ---------------------------------------------------------------------------


def _resumable(calls: Counter[str], fail: set[str]) -> Workflow:
    """extract -> transform -> load, plus side: transform fails while in ``fail``."""

    def extract(ctx: Context) -> list[int]:
        calls["extract"] += 1
        ctx.data["extracted"] = 3
        return [1, 2, 3]

    def transform(extract: list[int], ctx: Context) -> list[int]:
        calls["transform"] += 1
        if "transform" in fail:
            ctx.data["half-done"] = True
            raise RuntimeError("transform is broken")
        ctx.data["transformed"] = len(extract)
        return [x * 10 for x in extract]

    def load(transform: list[int], ctx: Context) -> int:
        calls["load"] += 1
        return sum(transform) + ctx.data["extracted"]

    def side() -> str:
        calls["side"] += 1
        return "side"

    wf = Workflow("resumable")
    wf.add_node("extract", extract)
    wf.add_node("transform", transform, deps=["extract"])
    wf.add_node("load", load, deps=["transform"])
    wf.add_node("side", side)
    return wf


def test_resume_runs_only_what_did_not_complete(store_factory: Callable[[], Store]) -> None:
    calls = Counter[str]()
    fail = {"transform"}
    wf = _resumable(calls, fail)

    first = flowdag.run(wf, run_id="nightly", store=store_factory())
    assert first.node_status == {"extract": C, "transform": F, "load": S, "side": C}
    assert calls == {"extract": 1, "transform": 1, "side": 1}

    fail.clear()
    second = flowdag.run(wf, run_id="nightly", store=store_factory())
    assert calls == {"extract": 1, "transform": 2, "load": 1, "side": 1}
    assert second.ok
    assert second.outputs == {
        "extract": [1, 2, 3],
        "transform": [10, 20, 30],
        "load": 63,
        "side": "side",
    }
    assert second.data == {"extracted": 3, "transformed": 3}
    assert second.nodes["transform"].attempts == 2  # one per run() call, persisted

    stored = store_factory().load("nightly")
    assert {n: s.status for n, s in stored.nodes.items()} == second.node_status
    assert {n: s.output for n, s in stored.nodes.items()} == second.outputs
    assert stored.data == second.data


def test_resume_of_a_completed_run_calls_nothing(store_factory: Callable[[], Store]) -> None:
    calls = Counter[str]()
    wf = _resumable(calls, set())
    first = flowdag.run(wf, run_id="done", store=store_factory())
    assert first.ok
    calls.clear()
    events: list[RunEvent] = []
    again = flowdag.run(wf, run_id="done", store=store_factory(), on_event=events.append)
    assert not calls
    assert events == []
    assert again.ok
    assert again.outputs == first.outputs
    assert again.data == first.data
    assert again.node_status == first.node_status


def test_resume_runs_a_node_stored_as_running(store_factory: Callable[[], Store]) -> None:
    """A crash leaves a node 'running' in the store: it runs again on resume."""
    calls = Counter[str]()
    wf = _resumable(calls, set())
    store = store_factory()
    flowdag.run(wf, run_id="crashed", store=store)
    state = store.load("crashed")
    state.nodes["load"].status = NodeStatus.RUNNING
    state.nodes["load"].output = None
    store.save(state)
    calls.clear()
    result = flowdag.run(wf, run_id="crashed", store=store_factory())
    assert calls == {"load": 1}
    assert result.ok
    assert result.outputs["load"] == 63


def test_resume_done_counts_nodes_completed_before(store_factory: Callable[[], Store]) -> None:
    calls = Counter[str]()
    fail = {"transform"}
    wf = _resumable(calls, fail)
    flowdag.run(wf, run_id="r", store=store_factory())
    fail.clear()
    events: list[RunEvent] = []
    flowdag.run(wf, run_id="r", store=store_factory(), on_event=events.append)
    finished = [e.done for e in events if e.kind == "node_finished"]
    assert finished == [3, 4]  # extract and side were done before


def test_resume_of_a_changed_dag(store_factory: Callable[[], Store]) -> None:
    calls = Counter[str]()
    wf = _resumable(calls, set())
    flowdag.run(wf, run_id="r", store=store_factory())
    calls.clear()

    changed = _resumable(calls, set())
    changed.add_node("audit", lambda load: calls.update(["audit"]) or load > 0, deps=["load"])
    with pytest.raises(WorkflowChangedError) as info:
        flowdag.run(changed, run_id="r", store=store_factory())
    assert "'audit' is new" in str(info.value)
    assert not calls

    result = flowdag.run(changed, run_id="r", store=store_factory(), allow_changes=True)
    assert calls == {"audit": 1}
    assert result.ok
    assert result.outputs["audit"] is True

    smaller = Workflow("resumable")
    smaller.add_node("extract", lambda: calls.update(["extract"]))
    smaller.add_node("side", lambda: calls.update(["side"]))
    with pytest.raises(WorkflowChangedError) as info:
        flowdag.run(smaller, run_id="r", store=store_factory())
    for removed in ["transform", "load", "audit"]:
        assert f"'{removed}' was removed" in str(info.value)
    calls.clear()
    # Its nodes' code is not theirs of before: "ignore" keeps their outputs all the same.
    result = flowdag.run(
        smaller, run_id="r", store=store_factory(), allow_changes=True, on_code_change="ignore"
    )
    assert not calls
    assert set(result.nodes) == {"extract", "side"}
    assert set(store_factory().load("r").nodes) == {"extract", "side"}


def test_resume_under_another_workflow_name_is_refused(
    store_factory: Callable[[], Store],
) -> None:
    calls = Counter[str]()
    flowdag.run(_resumable(calls, set()), run_id="r", store=store_factory())
    other = Workflow("other")
    other.add_node("extract", lambda: 1)
    with pytest.raises(WorkflowChangedError, match="resumable"):
        flowdag.run(other, run_id="r", store=store_factory(), allow_changes=True)


# -- locking --------------------------------------------------------------------------


def test_second_concurrent_run_of_one_run_id_is_locked(
    store_factory: Callable[[], Store],
) -> None:
    entered, leave = threading.Event(), threading.Event()
    results: list[RunResult] = []

    def block() -> str:
        entered.set()
        leave.wait(5)
        return "done"

    wf = Workflow("w")
    wf.add_node("block", block)
    store = store_factory()
    first = threading.Thread(
        target=lambda: results.append(flowdag.run(wf, run_id="r", store=store))
    )
    first.start()
    try:
        assert entered.wait(5)
        quick = Workflow("w")
        quick.add_node("block", lambda: "quick")
        with pytest.raises(RunLockedError) as info:
            flowdag.run(quick, run_id="r", store=store_factory())
        assert "'r'" in str(info.value)
        # Another run id on the same store is not blocked.
        assert flowdag.run(quick, run_id="other", store=store_factory()).ok
    finally:
        leave.set()
        first.join(5)
    assert results[0].outputs == {"block": "done"}
    # Once the first run ended, its lock is free again.
    # Another function under the same name: "ignore" keeps the stored output.
    again = flowdag.run(quick, run_id="r", store=store_factory(), on_code_change="ignore")
    assert again.outputs == {"block": "done"}


def test_each_node_of_a_result_has_a_state_of_its_own() -> None:
    """A new run's pending nodes share one state per deps while it runs; a result
    gives each node its own, after waits, a map, the cache and a retry ran."""
    calls: Counter[str] = Counter()

    def flaky(source: list[int]) -> int:
        calls["flaky"] += 1
        if calls["flaky"] == 1:
            raise ValueError("first attempt fails")
        return len(source)

    wf = Workflow("own-states")
    wf.add_node("source", lambda: [1, 2])
    wf.map("each", lambda item: item * 2, over="source")
    wf.add_node("counted", lambda source: len(source), deps=["source"], cache=True)
    wf.add_node("flaky", flaky, deps=["source"], retries=1)
    wf.add_input("approval", schema={"type": "boolean"}, deps=["source"])
    for i in range(3):  # waiting for the approval: pending, two groups of equal deps
        wf.add_node(f"after{i}", lambda approval, i=i: i, deps=["approval"])
        wf.add_node(f"late{i}", lambda approval, flaky, i=i: i, deps=["approval", "flaky"])
    with MemoryStore() as store:
        result = flowdag.run(wf, run_id="r", store=store)
    assert result.status is RunStatus.SUSPENDED
    assert calls["flaky"] == 2
    pending = [n for n, s in result.nodes.items() if s.status is NodeStatus.PENDING]
    assert sorted(pending) == sorted(f"{kind}{i}" for kind in ("after", "late") for i in range(3))
    assert len({id(state) for state in result.nodes.values()}) == len(result.nodes)
    result.nodes["after0"].attempts = 7  # a caller's change stays in its node
    result.nodes["late0"].output = "changed"
    attempts = [result.nodes[n].attempts for n in pending]
    assert attempts == [7 if n == "after0" else 0 for n in pending]
    assert [n for n in pending if result.nodes[n].output is not None] == ["late0"]
