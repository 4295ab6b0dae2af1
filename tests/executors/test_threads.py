"""ThreadExecutor, the default: the conformance suite, by name and as an instance."""

from __future__ import annotations

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
