"""ThreadExecutor, the default: the conformance suite, by name and as an instance."""

from __future__ import annotations

import logging
import threading
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
    pool._idle.get(timeout=5)  # the thread went back to idle ...
    pool._idle.put(None)
    done = threading.Event()
    [thread] = pool._threads
    pool.run_soon(done.set)  # served by the same thread, which lives on
    assert done.wait(5)
    assert pool._threads == [thread]
    assert thread.is_alive()
    pool.shutdown()
