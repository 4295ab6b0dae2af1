"""One attempt: `failure` never raises, remote attempts are slim, the `Launcher` always reports."""

from __future__ import annotations

import pickle
import threading
import traceback
from collections.abc import Callable
from concurrent.futures import Future
from datetime import UTC, datetime
from typing import Any

import pytest

import flowdag
from flowdag.attempt import Attempt, Outcome, execute, failure
from flowdag.codec import Codec
from flowdag.dag import NodeSpec
from flowdag.errors import SerializationError
from flowdag.executors import Capabilities, ExecutorBase
from flowdag.launcher import Launcher, RemoteAttempt, execute_remote, received


class Unprintable(Exception):
    def __str__(self) -> str:
        raise Unprintable

    def __repr__(self) -> str:
        raise Unprintable


def test_failure_of_an_exception_that_cannot_be_shown() -> None:
    outcome = failure(Unprintable(), retryable=False)
    assert outcome.error is not None
    assert outcome.error.type == "Unprintable"
    assert outcome.error.message == "(its message could not be shown)"
    assert "Unprintable" in outcome.error.traceback
    assert not outcome.retryable


def test_failure_when_the_traceback_cannot_be_formatted(monkeypatch: pytest.MonkeyPatch) -> None:
    def broken(*args: Any) -> list[str]:
        raise RecursionError("too deep")

    monkeypatch.setattr(traceback, "format_exception", broken)
    outcome = failure(ValueError("bad"), infrastructure=True)
    assert outcome.error is not None
    assert (outcome.error.type, outcome.error.message, outcome.error.traceback) == (
        "ValueError",
        "bad",
        "",
    )
    assert outcome.infrastructure


def test_failure_of_a_serialization_error_is_not_retried() -> None:
    assert not failure(SerializationError("no")).retryable
    assert failure(ValueError("maybe")).retryable


def spec_of(fn: Callable[..., Any], *deps: str) -> NodeSpec:
    wf = flowdag.Workflow("w")
    for dep in deps:
        wf.add_node(dep, lambda: None)
    wf.add_node("node", fn, deps=list(deps))
    return wf.build().specs["node"]


def test_an_unprintable_error_of_the_node_is_its_outcome() -> None:
    def node() -> None:
        raise Unprintable

    attempt = Attempt(spec_of(node), "r", 1, {}, {}, Codec())
    outcome = execute(attempt)
    assert outcome.error is not None and outcome.error.type == "Unprintable"


class Capture(ExecutorBase):
    """A plain executor that keeps what it is given and runs it when told."""

    def __init__(self) -> None:
        self.tasks: list[tuple[Callable[..., Any], tuple[Any, ...], Future[Any]]] = []

    def submit(self, fn: Callable[..., Any], /, *args: Any) -> Future[Any]:
        future: Future[Any] = Future()
        self.tasks.append((fn, args, future))
        return future

    def shutdown(self, wait: bool = True) -> None:
        pass

    def run_all(self) -> None:
        for fn, args, future in self.tasks:
            try:
                future.set_result(fn(*pickle.loads(pickle.dumps(args))))
            except BaseException as exc:
                future.set_exception(exc)


def launched(
    fn: Callable[..., Any], inputs: dict[str, Any], data: dict[str, Any], executor: Any = None
) -> tuple[Any, list[tuple[Attempt, Outcome]], list[Attempt]]:
    executor = executor or Capture()
    outcomes: list[tuple[Attempt, Outcome]] = []
    starts: list[Attempt] = []
    launcher = Launcher(executor, Codec(), lambda a, o: outcomes.append((a, o)), starts.append)
    attempt = Attempt(spec_of(fn, *inputs), "r", 1, inputs, data, Codec())
    launcher.launch(attempt)
    return executor, outcomes, starts


def test_remote_attempt_of_a_node_without_ctx_carries_no_data() -> None:
    def node(a: int) -> int:
        return a + 1

    executor, outcomes, _ = launched(node, {"a": 1, "b": 2}, {"big": "x" * 1000})
    [(fn, (task,), _)] = executor.tasks
    assert fn is execute_remote
    assert isinstance(task, RemoteAttempt)
    assert task.data == {}
    assert task.inputs == {"a": 1}  # only what the function takes
    executor.run_all()
    [(_, outcome)] = outcomes
    assert outcome.value == 2


def test_remote_attempt_of_a_node_with_ctx_carries_data_and_every_input() -> None:
    def node(a: int, ctx: flowdag.Context) -> int:
        ctx.data["seen"] = sorted(ctx.inputs)
        return a + len(ctx.data["big"])

    executor, outcomes, _ = launched(node, {"a": 1, "b": 2}, {"big": "x" * 10})
    [(_, (task,), _)] = executor.tasks
    assert task.data == {"big": "x" * 10}
    assert task.inputs == {"a": 1, "b": 2}
    executor.run_all()
    [(_, outcome)] = outcomes
    assert outcome.value == 11
    assert outcome.changes == {"seen": (True, ["a", "b"])}


def test_remote_outcome_holds_bytes_only() -> None:
    def node(ctx: flowdag.Context) -> dict[str, Any]:
        ctx.data["k"] = [1, 2]
        del ctx.data["gone"]
        return {"big": "y" * 10_000}

    executor, _, _ = launched(node, {}, {"gone": 1})
    [(_, (task,), _)] = executor.tasks
    outcome = execute_remote(pickle.loads(pickle.dumps(task)))
    assert outcome.error is None
    assert (outcome.value, outcome.changes) == (None, {})
    assert outcome.output is not None
    assert len(pickle.dumps(outcome)) < len(outcome.output) + 500  # the output crosses once
    codec = Codec()
    back = received(outcome, Attempt(spec_of(node), "r", 1, {}, {}, codec), keep_here=False)
    assert back.value == {"big": "y" * 10_000}
    assert back.changes == {"k": (True, [1, 2]), "gone": (False, None)}


def test_received_output_that_cannot_be_decoded_fails_the_attempt() -> None:
    now = datetime.now(UTC)
    outcome = Outcome(now, now, output=b"not a blob")
    back = received(
        outcome, Attempt(spec_of(lambda: None), "r", 1, {}, {}, Codec()), keep_here=False
    )
    assert back.error is not None
    assert not back.retryable


def test_a_function_that_cannot_be_sent_is_reported_not_raised() -> None:
    lock = threading.Lock()

    def node() -> bool:
        return lock.locked()

    executor, outcomes, _ = launched(node, {}, {})
    assert executor.tasks == []
    [(_, outcome)] = outcomes
    assert outcome.error is not None and outcome.error.type == "SerializationError"
    assert not outcome.retryable


def test_a_lost_worker_is_an_infrastructure_failure() -> None:
    executor, outcomes, _ = launched(lambda: 1, {}, {})
    [(_, _, future)] = executor.tasks
    future.set_exception(Unprintable())  # even one that cannot be shown
    [(_, outcome)] = outcomes
    assert outcome.infrastructure
    assert outcome.error is not None and outcome.error.type == "Unprintable"


class Soon(ExecutorBase):
    """In process, with run_soon: runs at once, on the caller's thread."""

    capabilities = Capabilities(in_process=True, run_soon=True)

    def submit(self, fn: Callable[..., Any], /, *args: Any) -> Future[Any]:
        raise AssertionError("run_soon is used instead")

    def run_soon(self, fn: Callable[..., Any], /, *args: Any) -> None:
        fn(*args)

    def shutdown(self, wait: bool = True) -> None:
        pass


def test_run_soon_reports_even_when_the_start_report_raises() -> None:
    def node() -> int:
        return 1

    wf = flowdag.Workflow("w")
    wf.add_node("node", node, timeout=5)
    spec = wf.build().specs["node"]
    outcomes: list[Outcome] = []

    def on_start(attempt: Attempt) -> None:
        raise Unprintable

    launcher = Launcher(Soon(), Codec(), lambda a, o: outcomes.append(o), on_start)
    launcher.launch(Attempt(spec, "r", 1, {}, {}, Codec()))
    [outcome] = outcomes
    assert outcome.error is not None and outcome.error.type == "Unprintable"


def test_plain_executor_with_a_timeout_reports_the_start_at_submission() -> None:
    wf = flowdag.Workflow("w")
    wf.add_node("node", lambda: 1, timeout=5)
    spec = wf.build().specs["node"]
    executor = Capture()
    starts: list[Attempt] = []
    launcher = Launcher(executor, Codec(), lambda a, o: None, starts.append)
    attempt = Attempt(spec, "r", 1, {}, {}, Codec())
    launcher.launch(attempt)
    assert starts == [attempt]
    assert attempt.future is executor.tasks[0][2]
