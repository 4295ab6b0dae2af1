"""One attempt of one node: what runs on an executor, and what it hands back.

An attempt calls the node function with its inputs (and ``ctx``), then encodes
the output and the ``ctx.data`` changes with the store's codec, so encoding
happens once, off the driver, and a value that cannot be stored fails its node
with `SerializationError` right there.

Three ways to run one:

- `execute`, in this process, on a thread (a coroutine result runs with
  ``asyncio.run``);
- `execute_async`, awaited on an event loop (the asyncio executor);
- `execute_remote`, in another process or on a Dask worker: the `RemoteAttempt`
  is picklable, with the function carried by cloudpickle (so lambdas and
  closures go too) and a copy of ``ctx.data``. The `Outcome` comes back pickled.
"""

from __future__ import annotations

import asyncio
import dataclasses
import inspect
import traceback
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any

from flowdag.codec import ValueCodec
from flowdag.context import Context, DataView
from flowdag.dag import NodeSpec
from flowdag.errors import SerializationError
from flowdag.state import ErrorInfo

__all__ = ["Attempt", "Outcome", "RemoteAttempt", "execute", "execute_async", "execute_remote"]

# What a node may raise, all failures of that node. SystemExit too: raised in a
# worker process it would otherwise look like a dead worker, and on an event loop
# it would stop the loop. Only cancellation (a timeout, asyncio) passes through.
_NODE_ERRORS = (Exception, SystemExit, KeyboardInterrupt)


# Not frozen: a frozen dataclass is slower to build, and this is built per node.
# eq=False: attempts compare by identity, which tells a live one from an abandoned one.
@dataclass(slots=True, eq=False)
class Attempt:
    """One attempt of one node, as the driver tracks it and in-process executors run it."""

    spec: NodeSpec
    run_id: str
    number: int  # ctx.attempt
    inputs: dict[str, Any]
    data: Mapping[str, Any]
    codec: ValueCodec
    on_start: Callable[[], None] | None = None  # reports the start of a node with a timeout
    started_at: datetime | None = None
    future: Any = None  # the executor's future, to cancel on timeout (not for run_soon)

    @property
    def node(self) -> str:
        return self.spec.name


@dataclass(slots=True)
class Outcome:
    """What an attempt produced: the output and data changes, encoded, or an error.

    ``retryable`` is False for errors a retry cannot fix (a value that cannot be
    stored); ``infrastructure`` is True when the executor, not the node, failed
    (a worker process died), which is retried without using up the node's retries.
    """

    started_at: datetime
    finished_at: datetime
    value: Any = None
    output: bytes | None = None
    changes: dict[str, tuple[bool, Any]] = field(default_factory=dict)
    encoded_changes: dict[str, bytes | None] = field(default_factory=dict)
    error: ErrorInfo | None = None
    retryable: bool = True
    infrastructure: bool = False


def execute(attempt: Attempt) -> Outcome:
    """Run ``attempt`` here and now (on a worker thread)."""
    if attempt.on_start is not None:
        attempt.on_start()
    started_at = datetime.now(UTC)
    try:
        kwargs, view = _arguments(attempt)
        value = attempt.spec.fn(**kwargs)
        if inspect.iscoroutine(value):
            value = asyncio.run(value)
        return _finish(attempt, started_at, value, view)
    except _NODE_ERRORS as exc:
        return failure(exc, started_at)


async def execute_async(attempt: Attempt) -> Outcome:
    """Run ``attempt`` on the running event loop; cancelling the task cancels the node."""
    if attempt.on_start is not None:
        attempt.on_start()
    started_at = datetime.now(UTC)
    try:
        kwargs, view = _arguments(attempt)
        value = attempt.spec.fn(**kwargs)
        if inspect.isawaitable(value):
            value = await value
        return _finish(attempt, started_at, value, view)
    except _NODE_ERRORS as exc:
        return failure(exc, started_at)


@dataclass(slots=True)
class RemoteAttempt:
    """An attempt in picklable form, for another process or machine."""

    spec: NodeSpec  # its fn is a stand-in: the function travels as ``fn``
    fn: bytes  # cloudpickle of the node function
    run_id: str
    number: int
    inputs: dict[str, Any]
    data: dict[str, Any]  # a copy of ctx.data as it was when the attempt started
    codec: ValueCodec

    @property
    def node(self) -> str:
        return self.spec.name


def to_remote(attempt: Attempt, fn: bytes) -> RemoteAttempt:
    """The picklable form of ``attempt``; ``fn`` is the function, cloudpickled."""
    spec = dataclasses.replace(attempt.spec, fn=_sent_separately)
    return RemoteAttempt(
        spec, fn, attempt.run_id, attempt.number, attempt.inputs, dict(attempt.data), attempt.codec
    )


def _sent_separately() -> None:
    """Stands in for a node function while it travels cloudpickled."""


def execute_remote(task: RemoteAttempt) -> Outcome:
    """Run a `RemoteAttempt` in this (worker) process."""
    import cloudpickle

    started_at = datetime.now(UTC)
    try:
        fn = cloudpickle.loads(task.fn)
    except Exception as exc:  # e.g. it refers to a module the worker cannot import
        error = SerializationError(
            f"node '{task.node}': its function cannot be loaded in the worker "
            f"({type(exc).__name__}: {exc}); make what it imports importable there"
        )
        error.__cause__ = exc
        return failure(error, started_at, retryable=False)
    spec = dataclasses.replace(task.spec, fn=fn)
    return execute(Attempt(spec, task.run_id, task.number, task.inputs, task.data, task.codec))


def failure(
    exc: BaseException,
    started_at: datetime | None = None,
    *,
    retryable: bool | None = None,
    infrastructure: bool = False,
) -> Outcome:
    """The outcome of an attempt that raised ``exc``."""
    now = datetime.now(UTC)
    text = "".join(traceback.format_exception(exc))
    return Outcome(
        started_at or now,
        now,
        error=ErrorInfo(type(exc).__name__, str(exc), text),
        retryable=not isinstance(exc, SerializationError) if retryable is None else retryable,
        infrastructure=infrastructure,
    )


def _arguments(attempt: Attempt) -> tuple[dict[str, Any], DataView | None]:
    spec = attempt.spec
    inputs = attempt.inputs
    kwargs = {dep: inputs[dep] for dep in spec.kwarg_deps}
    if not spec.wants_ctx:
        return kwargs, None
    view = DataView(attempt.data)
    kwargs["ctx"] = Context(attempt.run_id, spec.name, attempt.number, inputs, view)
    return kwargs, view


def _finish(attempt: Attempt, started_at: datetime, value: Any, view: DataView | None) -> Outcome:
    codec = attempt.codec
    name = attempt.spec.name
    output = _encode(codec, value, f"node '{name}': output is")
    if view is None:
        return Outcome(started_at, datetime.now(UTC), value, output)
    changes = view.changes()
    encoded = {
        key: _encode(codec, new, f"node '{name}': ctx.data[{key!r}] is") if present else None
        for key, (present, new) in changes.items()
    }
    return Outcome(started_at, datetime.now(UTC), value, output, changes, encoded)


def _encode(codec: ValueCodec, value: Any, what: str) -> bytes:
    try:
        return codec.encode(value)
    except SerializationError as exc:
        raise SerializationError(f"{what} not storable: {exc}") from None
