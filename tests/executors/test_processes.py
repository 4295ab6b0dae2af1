"""ProcessExecutor: the conformance suite on one shared pool, and a killed driver."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

import flowdag
from flowdag.executors import ProcessExecutor
from tests.executors.conformance import ExecutorTests, kill_driver_then_resume


@pytest.fixture(scope="module")
def process_pool() -> Iterator[ProcessExecutor]:
    """One pool for the module: spawning workers is the slow part."""
    pool = ProcessExecutor(max_workers=2)
    yield pool
    pool.shutdown(wait=False)


class TestProcessExecutor(ExecutorTests):
    remote = True
    stops_sync_attempt = "terminated"
    worker_processes = True

    @pytest.fixture
    def executor(self, process_pool: ProcessExecutor) -> Any:
        return process_pool


def test_by_name() -> None:
    wf = flowdag.Workflow("named")
    wf.add_node("a", lambda: 2)
    wf.add_node("b", lambda a: a**10, deps=["a"])
    result = flowdag.run(wf, executor="processes", max_workers=1)
    assert result.outputs == {"a": 2, "b": 1024}


def test_sigkill_of_the_driver_then_resume(tmp_path: Path) -> None:
    kill_driver_then_resume(tmp_path, "flowdag.executors.ProcessExecutor(max_workers=2)")
