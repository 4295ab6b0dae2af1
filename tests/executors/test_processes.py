"""ProcessExecutor: the conformance suite on one shared pool, and a killed driver."""

from __future__ import annotations

import os
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

import flowdag
from flowdag.codec import Codec
from flowdag.executors import ProcessExecutor
from tests.executors.conformance import (
    ExecutorTests,
    events,
    kill_driver_then_resume,
    max_overlap,
    record,
    working,
)


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


def test_timeout_counts_from_when_a_worker_takes_the_attempt(tmp_path: Path) -> None:
    # One worker, three attempts at once: the last waits ~1 s in the pool's queue
    # (after the worker's own start-up), more than its timeout, and still completes,
    # because its worker reports when it takes the attempt.
    log = tmp_path / "events.log"
    wf = flowdag.Workflow("queued")
    for i in range(3):
        wf.add_node(f"n{i}", working(log, f"n{i}", 0.5), timeout=1.2)
    with ProcessExecutor(max_workers=1) as pool:
        result = flowdag.run(wf, executor=pool, max_workers=3)
    assert result.ok, result.errors
    assert max_overlap(log) == 1
    assert len({pid for _, _, pid in events(log)}) == 1


def test_worker_killed_mid_attempt_fails_only_that_attempt(
    process_pool: ProcessExecutor, tmp_path: Path
) -> None:
    # With a timeout, so the attempt went through the start reports.
    marker = tmp_path / "died-once"
    log = tmp_path / "events.log"

    def dies_once() -> int:
        if not marker.exists():
            marker.touch()
            os._exit(1)
        return 1

    wf = flowdag.Workflow("killed-worker")
    wf.add_node("dies_once", dies_once, timeout=30)
    wf.add_node("other", working(log, "other", 0.2), timeout=30)
    result = flowdag.run(wf, executor=process_pool)
    assert result.ok, result.errors
    assert result.nodes["dies_once"].attempts == 1  # a lost worker is not the node's failure
    assert result.nodes["other"].attempts == 1


class CountingCodec(Codec):
    """A `Codec` that records each time a process builds it from a pickle."""

    __slots__ = ("log",)

    def __init__(self, log: str = "", **settings: Any) -> None:
        super().__init__(**settings)
        self.log = log

    def __getstate__(self) -> dict[str, Any]:
        return {**super().__getstate__(), "log": self.log}

    def __setstate__(self, state: dict[str, Any]) -> None:
        super().__setstate__(state)
        record(self.log, "codec built")


def test_codec_is_built_once_per_worker(tmp_path: Path) -> None:
    log = tmp_path / "events.log"
    wf = flowdag.Workflow("codec-once")
    wf.add_node("n0", lambda: 0)
    for i in range(1, 8):
        wf.add_node(f"n{i}", lambda ctx: len(ctx.inputs), deps=[f"n{i - 1}"])
    store = flowdag.MemoryStore(codec=CountingCodec(str(log)))
    with ProcessExecutor(max_workers=1) as pool:
        result = flowdag.run(wf, store=store, executor=pool)
    assert result.ok, result.errors
    assert [event for event, _, _ in events(log)] == ["codec built"]


def test_only_nodes_taking_ctx_are_sent_the_data(process_pool: ProcessExecutor) -> None:
    big = "x" * 100_000

    def sets(ctx: flowdag.Context) -> int:
        ctx.data["big"] = big
        return 1

    def plain(sets: int) -> int:
        return sets + 1

    def reads(plain: int, ctx: flowdag.Context) -> int:
        return len(ctx.data["big"]) + plain

    wf = flowdag.Workflow("data")
    wf.add_node("sets", sets)
    wf.add_node("plain", plain, deps=["sets"])
    wf.add_node("reads", reads, deps=["plain"])
    result = flowdag.run(wf, executor=process_pool)
    assert result.outputs == {"sets": 1, "plain": 2, "reads": 100_002}
    assert result.data == {"big": big}
