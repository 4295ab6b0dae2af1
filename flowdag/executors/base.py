"""The executor protocol: run node functions, hand back futures. Nothing else.

The runner's driver owns scheduling, retries, timeouts and the store; an
executor only runs what it is given. That keeps pools, asyncio and Dask (which
we do not own) behind two methods, ``submit`` and ``shutdown``.

What an executor can do beyond that, it declares in a `Capabilities` value, its
``capabilities`` attribute; the driver reads it once per run (`capabilities_of`)
instead of probing for methods. An executor without the attribute, such as one
a user writes with only ``submit`` and ``shutdown``, is a *plain* executor:
each attempt is sent to it in picklable form (as to a process pool or a
cluster), and a node's timeout counts from submission.
"""

from __future__ import annotations

from collections.abc import Callable
from concurrent.futures import Future
from dataclasses import dataclass
from typing import Any, Protocol, Self, TypeVar, runtime_checkable

from flowdag.errors import InvalidArgumentTypeError

__all__ = [
    "Capabilities",
    "Executor",
    "ExecutorBase",
    "Queues",
    "ReportsStart",
    "RunsSoon",
    "capabilities_of",
]

T = TypeVar("T")


@dataclass(frozen=True, slots=True)
class Capabilities:
    """What an executor can do beyond ``submit`` and ``shutdown``.

    Attributes:
        max_workers: how many attempts it runs at once; the run's cap on
            attempts in flight unless ``run(max_workers=...)`` says otherwise.
            None: the driver picks a default.
        in_process: attempts run in the driver's process, so they are handed
            over as they are (nothing pickled) and report their own start.
        runs_coroutines: ``submit`` of a coroutine function runs it on an
            event loop of the executor's (the driver then submits ``async def``
            nodes as coroutine functions).
        run_soon: it has ``run_soon(fn, *args)`` (see `RunsSoon`): a call with
            no Future, whose function reports its own outcome.
        reports_start: it has ``submit_reporting_start`` (see `ReportsStart`),
            so that a node's timeout counts from when a worker takes the attempt.
        queues: it runs at most ``max_workers`` callables at once and queues the
            rest in order, and has ``abandoned()`` (see `Queues`): the driver
            keeps attempts waiting in it, so that a worker that finishes one
            takes the next without waiting for the driver.
    """

    max_workers: int | None = None
    in_process: bool = False
    runs_coroutines: bool = False
    run_soon: bool = False
    reports_start: bool = False
    queues: bool = False


#: What an executor without a ``capabilities`` attribute can do: submit, nothing more.
PLAIN = Capabilities()


@runtime_checkable
class Executor(Protocol):
    """Runs callables and returns `concurrent.futures.Future`s of their results.

    These two methods are all an executor must have. Declare more with a
    ``capabilities`` attribute (a `Capabilities`); `ExecutorBase` gives a
    plain one, and makes the executor a context manager.
    """

    def submit(self, fn: Callable[..., T], /, *args: Any) -> Future[T]:
        """Start ``fn(*args)`` and return a future of its result."""
        ...

    def shutdown(self, wait: bool = True) -> None:
        """Stop accepting work; with ``wait``, return once submitted work is done."""
        ...


class RunsSoon(Protocol):
    """An executor with ``Capabilities.run_soon``."""

    def run_soon(self, fn: Callable[..., Any], /, *args: Any) -> None:
        """Run ``fn(*args)`` with no Future: ``fn`` reports its own outcome."""
        ...


class ReportsStart(Protocol):
    """An executor with ``Capabilities.reports_start``."""

    def submit_reporting_start(
        self, on_start: Callable[[], None], fn: Callable[..., T], /, *args: Any
    ) -> Future[T]:
        """`submit`, calling ``on_start()`` (once, from any thread) when a worker takes it."""
        ...


class Queues(Protocol):
    """An executor with ``Capabilities.queues``."""

    def abandoned(self) -> None:
        """An attempt it runs was abandoned past its timeout and runs on: run one
        more callable at once from now on, so that nothing queues behind it."""
        ...


class ExecutorBase:
    """A base for executors: plain capabilities, and ``with`` shuts it down.

    Subclasses implement ``submit`` and ``shutdown`` and may set
    ``capabilities`` (a class or an instance attribute).
    """

    capabilities: Capabilities = PLAIN

    @property
    def max_workers(self) -> int | None:
        """How many attempts it runs at once (``capabilities.max_workers``)."""
        return self.capabilities.max_workers

    def shutdown(self, wait: bool = True) -> None:
        raise NotImplementedError

    def __enter__(self) -> Self:
        return self

    def __exit__(self, *exc_info: object) -> None:
        self.shutdown(wait=True)  # as concurrent.futures executors do, error or not


def capabilities_of(executor: Executor) -> Capabilities:
    """What ``executor`` declares it can do; `PLAIN` when it declares nothing.

    Raises:
        InvalidArgumentTypeError: ``capabilities`` is not a `Capabilities`, or
            it claims a method the executor lacks.
    """
    capabilities = getattr(executor, "capabilities", PLAIN)
    name = type(executor).__name__
    if not isinstance(capabilities, Capabilities):
        raise InvalidArgumentTypeError(
            f"{name}.capabilities must be a flowdag.executors.Capabilities, "
            f"not {type(capabilities).__name__}"
        )
    for flag, method in (("run_soon", "run_soon"), ("reports_start", "submit_reporting_start")):
        if getattr(capabilities, flag) and not callable(getattr(executor, method, None)):
            raise InvalidArgumentTypeError(
                f"{name} declares capabilities.{flag} but has no {method}() method; "
                f"add the method or set {flag}=False"
            )
    return capabilities
