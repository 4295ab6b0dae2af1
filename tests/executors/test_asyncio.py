"""AsyncioExecutor: the conformance suite, and what only an event loop does."""

from __future__ import annotations

import asyncio
import threading
from pathlib import Path
from typing import Any

import pytest

import flowdag
from flowdag.executors import AsyncioExecutor
from tests.executors.conformance import ExecutorTests, record, wait_until


class TestAsyncioExecutor(ExecutorTests):
    @pytest.fixture
    def executor(self) -> Any:
        return "asyncio"


def test_async_nodes_share_one_event_loop_and_sync_nodes_use_threads() -> None:
    loops: list[int] = []
    threads: dict[str, str] = {}

    async def coro(ctx: flowdag.Context) -> int:
        loops.append(id(asyncio.get_running_loop()))
        threads[ctx.node] = threading.current_thread().name
        await asyncio.sleep(0.01)
        return 1

    def blocking(ctx: flowdag.Context) -> int:
        threads[ctx.node] = threading.current_thread().name
        return 2

    wf = flowdag.Workflow("loop")
    for i in range(3):
        wf.add_node(f"coro{i}", coro)
    wf.add_node("blocking", blocking)
    result = flowdag.run(wf, executor="asyncio")
    assert result.ok, result.errors
    assert len(set(loops)) == 1
    assert {threads[f"coro{i}"] for i in range(3)} == {"flowdag-asyncio"}
    assert threads["blocking"].startswith("flowdag-aio")


def test_timeout_cancels_the_task(tmp_path: Path) -> None:
    log = tmp_path / "events.log"

    async def hangs() -> None:
        record(log, "start hangs")
        try:
            await asyncio.sleep(30)
        except asyncio.CancelledError:
            record(log, "cancelled hangs")
            raise

    wf = flowdag.Workflow("cancel")
    wf.add_node("hangs", hangs, timeout=0.2)
    wf.add_node("other", lambda: "other")
    result = flowdag.run(wf, executor="asyncio")
    assert result.node_status["other"] is flowdag.NodeStatus.COMPLETED
    error = result.errors["hangs"]
    assert error.type == "NodeTimeoutError"
    assert "cancelled" in error.message
    # The coroutine saw CancelledError: the loop ran its handler before it stopped.
    assert wait_until(lambda: "cancelled hangs" in log.read_text(), 5)


def test_timed_out_task_is_cancelled_on_a_shared_executor(tmp_path: Path) -> None:
    log = tmp_path / "events.log"

    async def hangs(ctx: flowdag.Context) -> str:
        if ctx.attempt > 1:
            return "second try"
        try:
            await asyncio.sleep(30)
        except asyncio.CancelledError:
            record(log, "cancelled")
            raise
        return "never"

    executor = AsyncioExecutor(max_workers=2)
    try:
        wf = flowdag.Workflow("cancel-retry")
        wf.add_node("hangs", hangs, timeout=0.2, retries=1)
        result = flowdag.run(wf, executor=executor)
        assert result.outputs == {"hangs": "second try"}
        assert wait_until(lambda: log.exists() and "cancelled" in log.read_text(), 5)
    finally:
        executor.shutdown()
