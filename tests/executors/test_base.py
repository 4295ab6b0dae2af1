"""What executors declare (`Capabilities`), plain executors, context managers, missing extras."""

from __future__ import annotations

import sys
from collections.abc import Callable
from concurrent.futures import Future, ThreadPoolExecutor
from typing import Any

import pytest

import flowdag
from flowdag.errors import (
    FlowdagError,
    InvalidArgumentError,
    InvalidArgumentTypeError,
    OptionalDependencyError,
)
from flowdag.executors import (
    AsyncioExecutor,
    Capabilities,
    Executor,
    ExecutorBase,
    ProcessExecutor,
    ThreadExecutor,
    capabilities_of,
    make_executor,
)
from flowdag.executors.base import PLAIN


class Plain:
    """A user's executor with the two methods the protocol asks for, and nothing else."""

    def __init__(self) -> None:
        self.pool = ThreadPoolExecutor(4)
        self.submitted: list[Any] = []

    def submit(self, fn: Callable[..., Any], /, *args: Any) -> Future[Any]:
        self.submitted.extend(args)
        return self.pool.submit(fn, *args)

    def shutdown(self, wait: bool = True) -> None:
        self.pool.shutdown(wait)


@pytest.mark.parametrize(
    ("executor", "expected"),
    [
        (
            lambda: ThreadExecutor(3),
            Capabilities(max_workers=3, in_process=True, run_soon=True),
        ),
        (
            lambda: AsyncioExecutor(2),
            Capabilities(max_workers=2, in_process=True, runs_coroutines=True),
        ),
        (lambda: ProcessExecutor(1), Capabilities(max_workers=1, reports_start=True)),
        (Plain, PLAIN),
    ],
    ids=["threads", "asyncio", "processes", "plain"],
)
def test_capabilities(executor: Callable[[], Any], expected: Capabilities) -> None:
    built = executor()
    try:
        assert isinstance(built, Executor)
        assert capabilities_of(built) == expected
        if isinstance(built, ExecutorBase):
            assert built.max_workers == expected.max_workers
    finally:
        built.shutdown()


def test_capabilities_are_frozen() -> None:
    with pytest.raises(AttributeError):
        PLAIN.in_process = True  # type: ignore[misc]


def test_a_plain_executor_gets_picklable_attempts() -> None:
    # Nothing declared: the attempt is sent as to another process, and runs.
    plain = Plain()
    wf = flowdag.Workflow("plain")
    wf.add_node("a", lambda: 20)
    wf.add_node("b", lambda a, ctx: (a + 1, ctx.node), deps=["a"])
    try:
        result = flowdag.run(wf, executor=plain)
    finally:
        plain.shutdown()
    assert result.outputs == {"a": 20, "b": (21, "b")}
    assert [type(task).__name__ for task in plain.submitted] == ["RemoteAttempt"] * 2


class Claims(ExecutorBase):
    def __init__(self, capabilities: Any) -> None:
        self.capabilities = capabilities

    def submit(self, fn: Callable[..., Any], /, *args: Any) -> Future[Any]:
        raise AssertionError("never called")

    def shutdown(self, wait: bool = True) -> None:
        pass


@pytest.mark.parametrize(
    ("capabilities", "message"),
    [
        ({"in_process": True}, r"Claims.capabilities must be a flowdag.executors.Capabilities"),
        (Capabilities(run_soon=True), r"declares capabilities.run_soon but has no run_soon\(\)"),
        (
            Capabilities(reports_start=True),
            r"declares capabilities.reports_start but has no submit_reporting_start\(\)",
        ),
    ],
)
def test_capabilities_that_cannot_be_used_are_refused(capabilities: Any, message: str) -> None:
    wf = flowdag.Workflow("claims")
    wf.add_node("a", lambda: 1)
    with pytest.raises(InvalidArgumentTypeError, match=message):
        flowdag.run(wf, executor=Claims(capabilities))


@pytest.mark.parametrize(
    "make",
    [lambda: ThreadExecutor(2), lambda: AsyncioExecutor(2), lambda: ProcessExecutor(1)],
    ids=["threads", "asyncio", "processes"],
)
def test_executors_are_context_managers(make: Callable[[], Any]) -> None:
    wf = flowdag.Workflow("with")
    wf.add_node("a", lambda: 2)
    wf.add_node("b", lambda a: a * 21, deps=["a"])
    with make() as executor:
        assert flowdag.run(wf, executor=executor).outputs == {"a": 2, "b": 42}
    with pytest.raises(RuntimeError):  # shut down on leaving the block
        executor.submit(print)
    executor.shutdown()  # a second shutdown is harmless


def test_unknown_executor_name() -> None:
    with pytest.raises(InvalidArgumentError, match=r"unknown executor 'nope'.*threads"):
        make_executor("nope", None)
    assert issubclass(InvalidArgumentError, FlowdagError)


def test_missing_dask_says_how_to_install_it(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setitem(sys.modules, "distributed", None)  # import distributed fails
    from flowdag.executors import DaskExecutor

    with pytest.raises(OptionalDependencyError, match=r"pip install 'flowdag\[dask\]'") as info:
        DaskExecutor()
    assert isinstance(info.value, ImportError)
    with pytest.raises(OptionalDependencyError, match="distributed"):
        make_executor("dask", None)
