"""ThreadExecutor, the default: the conformance suite, by name and as an instance."""

from __future__ import annotations

import contextlib
import logging
import threading
import time
from collections.abc import Iterator
from typing import Any

import pytest

import flowdag
from flowdag.executors import ThreadExecutor
from tests.executors.conformance import ExecutorTests


class TestThreadExecutor(ExecutorTests):
    @pytest.fixture
    def executor(self) -> Any:
        return "threads"


@pytest.fixture(scope="module")
def thread_pool() -> Iterator[ThreadExecutor]:
    pool = ThreadExecutor(max_workers=4)
    yield pool
    pool.shutdown()


class TestThreadExecutorInstance(ExecutorTests):
    """An instance the caller owns: reused across runs, never shut down by them."""

    @pytest.fixture
    def executor(self, thread_pool: ThreadExecutor) -> Any:
        return thread_pool


def test_instance_outlives_its_runs() -> None:
    pool = ThreadExecutor(max_workers=2)
    wf = flowdag.Workflow("w")
    wf.add_node("a", lambda: 1)
    assert flowdag.run(wf, executor=pool).ok
    assert flowdag.run(wf, executor=pool).ok  # not shut down by the first run
    pool.shutdown()
    with pytest.raises(RuntimeError, match="after shutdown"):
        pool.submit(print)


def test_run_soon_task_that_raises_does_not_kill_its_thread() -> None:
    pool = ThreadExecutor(max_workers=1)
    logged = threading.Event()
    records: list[logging.LogRecord] = []

    def escapes() -> None:
        raise RuntimeError("escaped the task")

    class Spy(logging.Handler):
        def emit(self, record: logging.LogRecord) -> None:
            records.append(record)
            logged.set()

    spy = Spy()
    logging.getLogger("flowdag").addHandler(spy)
    try:
        pool.run_soon(escapes)
        assert logged.wait(5)
    finally:
        logging.getLogger("flowdag").removeHandler(spy)
    [record] = records
    assert record.exc_info is not None
    assert str(record.exc_info[1]) == "escaped the task"
    assert _wait_for(lambda: not pool._busy)  # the thread went back to idle ...
    done = threading.Event()
    [thread] = pool._threads
    pool.run_soon(done.set)  # served by the same thread, which lives on
    assert done.wait(5)
    assert pool._threads == [thread]
    assert thread.is_alive()
    pool.shutdown()


@contextlib.contextmanager
def _blocked(pool: ThreadExecutor, count: int) -> Iterator[tuple[list[int], list[threading.Event]]]:
    """Put ``count`` callables on ``pool``, each noting its start in order, then
    waiting for its gate; on the way out every gate opens and the pool shuts down."""
    started: list[int] = []
    gates = [threading.Event() for _ in range(count)]

    def blocking(i: int) -> None:
        started.append(i)
        gates[i].wait(10)

    try:
        for i in range(count):
            pool.run_soon(blocking, i)
        yield started, gates
    finally:
        for gate in gates:
            gate.set()
        pool.shutdown()


def _wait_for(condition: Any) -> bool:
    deadline = time.monotonic() + 10
    while not condition() and time.monotonic() < deadline:
        time.sleep(0.005)
    return bool(condition())


def test_a_capped_pool_runs_max_workers_at_once_and_the_rest_in_order() -> None:
    pool = ThreadExecutor(max_workers=2, capped=True)
    assert pool.capabilities.queues
    with _blocked(pool, 6) as (started, gates):
        assert _wait_for(lambda: len(started) == 2)
        time.sleep(0.05)  # nothing more starts while both threads are busy
        assert sorted(started) == [0, 1]
        for i in range(6):
            gates[i].set()  # each release lets the next one in, in the order put
            assert _wait_for(lambda i=i: len(started) >= min(i + 3, 6))
        assert started[2:] == [2, 3, 4, 5]
        assert len(pool._threads) == 2


def test_an_abandoned_callable_gives_a_capped_pool_a_thread_in_its_place() -> None:
    pool = ThreadExecutor(max_workers=1, capped=True)
    with _blocked(pool, 3) as (started, gates):
        assert _wait_for(lambda: started == [0])
        pool.abandoned()  # 0 runs on, abandoned: 1 must not wait behind it
        assert _wait_for(lambda: started == [0, 1])
        gates[1].set()
        assert _wait_for(lambda: started == [0, 1, 2])
        assert len(pool._threads) == 2


def test_an_uncapped_pool_starts_a_thread_whenever_none_is_idle() -> None:
    pool = ThreadExecutor(max_workers=1)
    assert not pool.capabilities.queues
    with _blocked(pool, 3) as (started, _):
        assert _wait_for(lambda: sorted(started) == [0, 1, 2])
        pool.abandoned()  # nothing to do: it never queues
        assert len(pool._threads) == 3


def test_nodes_queued_behind_attempts_abandoned_past_their_timeout_still_run() -> None:
    """The run's own pool is capped: every abandoned attempt gets a thread in its place,
    so the nodes queued behind it run while it still hangs."""
    release = threading.Event()
    hanging = [0]
    lock = threading.Lock()

    def hangs() -> None:
        with lock:
            hanging[0] += 1
        release.wait(5)  # never returns before the run: released at the end
        with lock:
            hanging[0] -= 1

    wf = flowdag.Workflow("w")
    for i in range(3):
        wf.add_node(f"hangs{i}", hangs, timeout=0.05, retries=1)
    for i in range(6):
        wf.add_node(f"quick{i}", lambda: hanging[0])  # how many hang as it runs
    try:
        result = flowdag.run(wf, max_workers=1)
    finally:
        release.set()
    assert {name: state.status for name, state in result.nodes.items()} == {
        **{f"hangs{i}": flowdag.NodeStatus.FAILED for i in range(3)},
        **{f"quick{i}": flowdag.NodeStatus.COMPLETED for i in range(6)},
    }
    assert all(result.errors[f"hangs{i}"].type == "NodeTimeoutError" for i in range(3))
    assert all(result.outputs[f"quick{i}"] >= 1 for i in range(6))  # not behind them
