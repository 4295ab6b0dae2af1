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
  closures go too), and ``ctx.data`` only for a node that takes ``ctx``. Only
  bytes come back: the encoded output and changes, which `received` decodes
  on this side.

A `Launcher` picks the way an executor's `Capabilities` allow. Whatever
happens, every attempt it launches reports exactly one `Outcome`: `failure`
never raises, and the paths that run user code catch everything.
"""

from __future__ import annotations

import asyncio
import dataclasses
import functools
import inspect
import logging
import pickle
import traceback
from collections.abc import Callable, Iterator, Mapping
from concurrent.futures import Future
from contextlib import nullcontext
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any, cast

from flowdag._byref import by_reference, streamed
from flowdag._values import text_problem
from flowdag.codec import ValueCodec
from flowdag.context import Context, DataView
from flowdag.dag import NodeSpec
from flowdag.errors import FlowdagError, SerializationError
from flowdag.executors.base import Executor, ReportsStart, RunsSoon, capabilities_of
from flowdag.refs import Ref, binding, start_collecting, stop_collecting
from flowdag.state import ErrorInfo
from flowdag.stores._blobs import RefSource

__all__ = [
    "Attempt",
    "Launcher",
    "Outcome",
    "RemoteAttempt",
    "execute",
    "execute_async",
    "execute_remote",
    "failure",
    "received",
]

logger = logging.getLogger("flowdag")

# What a node may raise, all failures of that node. SystemExit too: raised in a
# worker process it would otherwise look like a dead worker, and on an event loop
# it would stop the loop. Only cancellation (a timeout, asyncio) passes through.
_NODE_ERRORS = (Exception, SystemExit, KeyboardInterrupt)


#: Output types no `Ref` can be inside (exact types: a subclass may hold anything).
_HOLDS_NO_REF = frozenset({int, float, bool, type(None), str, bytes})


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
    #: Outputs encoded above this many bytes are kept by reference (None: never).
    inline_limit: int | None = None
    #: The store's blob area and codec, where such outputs go; None: not from here
    #: (a worker with no reachable area: the driver puts the blob, see `received`).
    source: RefSource | None = None

    @property
    def node(self) -> str:
        return self.spec.name


@dataclass(slots=True)
class Outcome:
    """What an attempt produced: the output and data changes, encoded, or an error.

    ``value`` and ``changes`` are the same, decoded; a remote attempt leaves
    them out (only bytes cross back) and `received` fills them in.
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
    #: The blobs ``output`` refers to: sha256 -> when that ref expires (None: never).
    blobs: dict[str, datetime | None] | None = None


def execute(attempt: Attempt) -> Outcome:
    """Run ``attempt`` here and now (on a worker thread)."""
    started_at, value, ctx = _call(attempt)
    if inspect.iscoroutine(value):
        value = _resolved(asyncio.run, value, started_at)
    return _finish(attempt, started_at, value, ctx)


async def execute_async(attempt: Attempt) -> Outcome:
    """Run ``attempt`` on the running event loop; cancelling the task cancels the node."""
    started_at, value, ctx = _call(attempt)
    if inspect.isawaitable(value):
        try:
            value = await value
        except _NODE_ERRORS as exc:
            value = _Failed(failure(exc, started_at))
    return _finish(attempt, started_at, value, ctx)


@dataclass(slots=True)
class _Failed:
    """Stands in for the value of a call that raised: no node function returns one."""

    outcome: Outcome


def _call(attempt: Attempt) -> tuple[datetime, Any, Context | None]:
    """Report the start, then call the node: (start time, value or `_Failed`, its ctx)."""
    if attempt.on_start is not None:
        attempt.on_start()
    started_at = datetime.now(UTC)
    ctx = None
    try:
        kwargs, ctx = _arguments(attempt)
        return started_at, attempt.spec.fn(**kwargs), ctx
    except _NODE_ERRORS as exc:
        _discard_output(ctx)
        return started_at, _Failed(failure(exc, started_at)), ctx


def _resolved(run: Callable[[Any], Any], awaitable: Any, started_at: datetime) -> Any:
    try:
        return run(awaitable)
    except _NODE_ERRORS as exc:
        return _Failed(failure(exc, started_at))


@dataclass(slots=True)
class RemoteAttempt:
    """An attempt in picklable form, for another process or machine."""

    spec: NodeSpec  # its fn is a stand-in: the function travels as ``fn``
    fn: bytes  # cloudpickle of the node function
    run_id: str
    number: int
    inputs: dict[str, Any]  # only those the function takes, unless it takes ctx
    data: dict[str, Any]  # ctx.data as the attempt started; empty unless it takes ctx
    codec: bytes  # the store's codec, pickled: a worker builds it once (`_worker_codec`)
    inline_limit: int | None = None
    area: bytes | None = None  # the store's blob area, pickled, when the worker can reach it

    @property
    def node(self) -> str:
        return self.spec.name


def _sent_separately() -> None:
    """Stands in for a node function while it travels cloudpickled."""


def execute_remote(task: RemoteAttempt) -> Outcome:
    """Run a `RemoteAttempt` in this (worker) process; the outcome holds bytes only."""
    import cloudpickle

    started_at = datetime.now(UTC)
    what = "its function"
    try:
        fn = cloudpickle.loads(task.fn)
        what = "the store's codec"
        codec = _worker_codec(task.codec)
    except Exception as exc:  # e.g. it refers to a module the worker cannot import
        error = SerializationError(
            f"node '{task.node}': {what} cannot be loaded in the worker "
            f"({type(exc).__name__}: {exc}); make what it imports importable there"
        )
        error.__cause__ = exc
        return failure(error, started_at, retryable=False)
    spec = dataclasses.replace(task.spec, fn=fn)
    attempt = Attempt(spec, task.run_id, task.number, task.inputs, task.data, codec)
    if task.area is not None:  # outputs above the limit go to the blob area from here
        attempt.inline_limit = task.inline_limit
        attempt.source = RefSource(_worker_area(task.area), codec)
    outcome = execute(attempt)
    # The encoded bytes are what the driver stores; the values would only cross twice.
    outcome.value = None
    outcome.changes = {}
    return outcome


@functools.lru_cache(maxsize=8)
def _worker_codec(pickled: bytes) -> ValueCodec:
    """The codec a run sent, built once per worker process, not per task."""
    codec: ValueCodec = pickle.loads(pickled)
    return codec


@functools.lru_cache(maxsize=8)
def _worker_area(pickled: bytes) -> Any:
    """The blob area a run sent, opened once per worker process."""
    return pickle.loads(pickled)


def received(outcome: Outcome, attempt: Attempt, *, keep_here: bool) -> Outcome:
    """A remote attempt's `Outcome` with its output and ``ctx.data`` changes decoded here.

    Refs in them are bound to the run's blob area. With ``keep_here`` (the worker
    could not reach the blob area), an output above the inline limit is kept by
    reference from here.
    """
    if outcome.error is not None or outcome.output is None:
        return outcome
    decode = attempt.codec.decode
    source = attempt.source
    try:
        with binding(source, _origin(attempt)) if source is not None else nullcontext():
            outcome.value = decode(outcome.output)
            outcome.changes = {
                key: (False, None) if blob is None else (True, decode(blob))
                for key, blob in outcome.encoded_changes.items()
            }
    except Exception as exc:
        return failure(exc, outcome.started_at, retryable=False)
    limit = attempt.inline_limit
    if (
        keep_here
        and source is not None
        and limit is not None
        and attempt.codec.plain_size(outcome.output) > limit
    ):
        blobs = dict(outcome.blobs or {})
        try:
            outcome.output, outcome.value = _kept_by_reference(
                attempt, outcome.value, outcome.output, source, blobs
            )
        except _NODE_ERRORS as exc:
            return failure(exc, outcome.started_at)
        outcome.blobs = blobs
    return outcome


def failure(
    exc: BaseException,
    started_at: datetime | None = None,
    *,
    retryable: bool | None = None,
    infrastructure: bool = False,
) -> Outcome:
    """The outcome of an attempt that raised ``exc``.

    Never raises, even for an exception whose ``__str__`` raises: an outcome
    that cannot be built would leave the driver waiting for it forever.
    """
    now = datetime.now(UTC)
    return Outcome(
        started_at or now,
        now,
        error=ErrorInfo(
            _safely(lambda: type(exc).__name__, "an exception"),
            _safely(lambda: str(exc), "(its message could not be shown)"),
            _safely(lambda: "".join(traceback.format_exception(exc)), ""),
        ),
        retryable=not isinstance(exc, SerializationError) if retryable is None else retryable,
        infrastructure=infrastructure,
    )


def _safely(show: Callable[[], str], fallback: str) -> str:
    try:
        text = show()
    except BaseException:  # whatever a broken __str__ raises
        return fallback
    return text if isinstance(text, str) else fallback


def _arguments(attempt: Attempt) -> tuple[dict[str, Any], Context | None]:
    spec = attempt.spec
    inputs = attempt.inputs
    kwargs = {dep: inputs[dep] for dep in spec.kwarg_deps}
    for dep, value in kwargs.items():
        # An output kept by reference is loaded now, unless the parameter asks for the Ref.
        if type(value) is Ref and dep not in spec.ref_deps:
            kwargs[dep] = value.load()
    if not spec.wants_ctx:
        return kwargs, None
    loaded = {dep: kwargs.get(dep, value) for dep, value in inputs.items()}
    ctx = Context(
        attempt.run_id,
        spec.name,
        attempt.number,
        _Inputs(loaded),
        DataView(attempt.data),
        _output_opener(attempt),
    )
    kwargs["ctx"] = ctx
    return kwargs, ctx


class _Inputs(Mapping[str, Any]):
    """``ctx.inputs``: every input's value, an output kept by reference loaded when read."""

    __slots__ = ("_values",)

    def __init__(self, values: dict[str, Any]) -> None:
        self._values = values

    def __getitem__(self, key: str) -> Any:
        value = self._values[key]
        if type(value) is Ref:
            value = self._values[key] = value.load()
        return value

    def __iter__(self) -> Iterator[str]:
        return iter(self._values)

    def __len__(self) -> int:
        return len(self._values)

    def __repr__(self) -> str:
        return f"<inputs {', '.join(self._values)}>"


def _output_opener(attempt: Attempt) -> Callable[[], Any] | str:
    """What opens ``ctx.output_file()`` for ``attempt``, or why it cannot."""
    source = attempt.source
    if source is None:
        return (
            "needs the store's blob area, which this worker cannot reach: use a disk "
            "store without encryption (its blob files are shared by path), or the "
            "threads or asyncio executor"
        )
    return source.area.writer


def _discard_output(ctx: Context | None) -> None:
    """Drop the output file of an attempt that failed: no blob of it is kept."""
    if ctx is not None and ctx.output is not None:
        ctx.output.close()


def _finish(attempt: Attempt, started_at: datetime, value: Any, ctx: Context | None) -> Outcome:
    if isinstance(value, _Failed):
        return value.outcome
    codec = attempt.codec
    name = attempt.spec.name
    blobs: dict[str, datetime | None] | None
    try:
        if ctx is not None and ctx.output is not None:
            output, value, blobs = _streamed_output(attempt, value, ctx)
        else:
            output, value, blobs = _output(attempt, value)
        if ctx is None:
            outcome = Outcome(started_at, datetime.now(UTC), value, output)
            outcome.blobs = blobs  # set, not passed by keyword: cheaper on this hot path
            return outcome
        changes = ctx.data.changes()
        for key in changes:  # every store keeps keys as UTF-8: refuse the same ones everywhere
            problem = text_problem(key)
            if problem is not None:
                raise SerializationError(
                    f"node '{name}': ctx.data key {key!r} not storable: {problem}; "
                    "use keys UTF-8 can encode"
                )
        encoded = {
            key: _encode(codec, new, f"node '{name}': ctx.data[{key!r}] is") if present else None
            for key, (present, new) in changes.items()
        }
    except _NODE_ERRORS as exc:
        _discard_output(ctx)
        return failure(exc, started_at)
    return Outcome(started_at, datetime.now(UTC), value, output, changes, encoded, blobs=blobs)


def _output(attempt: Attempt, value: Any) -> tuple[bytes, Any, dict[str, datetime | None] | None]:
    """The output encoded (a Ref to it when above the limit), the value the run keeps, its blobs."""
    what = f"node '{attempt.spec.name}': output is"
    seen: dict[str, datetime | None] = {}
    if type(value) in _HOLDS_NO_REF:
        # Fast path: no Ref can be inside, so the refs need no collecting (a
        # context variable set and reset per output, a tenth of a node's own cost).
        output = _encode(attempt.codec, value, what)
    else:
        token, seen = start_collecting()  # the refs inside the value, for gc
        try:
            output = _encode(attempt.codec, value, what)
        finally:
            stop_collecting(token)
    limit, source = attempt.inline_limit, attempt.source
    if limit is None or source is None or attempt.codec.plain_size(output) <= limit:
        return output, value, seen or None
    output, ref = _kept_by_reference(attempt, value, output, source, seen)
    return output, ref, seen


def _kept_by_reference(
    attempt: Attempt,
    value: Any,
    output: bytes,
    source: RefSource,
    blobs: dict[str, datetime | None],
) -> tuple[bytes, Ref]:
    """``output`` put in the blob area: the encoded Ref, and the Ref; ``blobs`` gets its blob.

    Refs inside the value stay in ``blobs`` too: the blob holds them, so gc must keep them.
    """
    ref = by_reference(attempt.spec, value, output, source, _origin(attempt))
    blobs[ref.sha256] = ref.expires_at
    return attempt.codec.encode(ref), ref


def _streamed_output(
    attempt: Attempt, value: Any, ctx: Context
) -> tuple[bytes, Any, dict[str, datetime | None]]:
    """The Ref to what the node wrote to ``ctx.output_file()``, encoded, and its blob."""
    name = attempt.spec.name
    if value is not None:
        raise FlowdagError(
            f"node '{name}' wrote its output to ctx.output_file() and also returned "
            f"{type(value).__name__}: a node has one output; return None"
        )
    writer = ctx.output
    info = writer.info if writer.closed else writer.commit()  # left open: finished here
    if info is None:
        raise FlowdagError(
            f"node '{name}': its ctx.output_file() was closed without being committed "
            "(an error inside its with block?); nothing was stored"
        )
    assert attempt.source is not None  # there is a file, so there is an area
    ref = streamed(attempt.spec, info, attempt.source, _origin(attempt))
    return attempt.codec.encode(ref), ref, {ref.sha256: ref.expires_at}


def _origin(attempt: Attempt) -> str:
    return f"run '{attempt.run_id}', node '{attempt.spec.name}'"


def _encode(codec: ValueCodec, value: Any, what: str) -> bytes:
    try:
        return codec.encode(value)
    except SerializationError as exc:
        raise SerializationError(f"{what} not storable: {exc}") from None


# -- launching attempts on an executor ------------------------------------------------


class Launcher:
    """Starts the attempts of one run on one executor, as its capabilities allow.

    Every attempt launched reaches ``on_outcome(attempt, outcome)`` exactly once,
    from whichever thread finishes it, even if the node raises something whose
    message cannot be shown or the worker dies. For a node with a timeout,
    ``on_start(attempt)`` is called when the attempt really starts (when a
    worker takes it), or at submission for an executor that cannot tell.

    Args:
        executor: where attempts run.
        codec: the store's codec, which attempts encode with.
        on_outcome: receives each attempt's outcome.
        on_start: told when an attempt of a node with a timeout starts.

    Raises:
        InvalidArgumentTypeError: the executor's capabilities are not usable.
    """

    def __init__(
        self,
        executor: Executor,
        codec: ValueCodec,
        on_outcome: Callable[[Attempt, Outcome], None],
        on_start: Callable[[Attempt], None],
    ) -> None:
        self.capabilities = capabilities = capabilities_of(executor)
        self._executor = executor
        self._codec = codec
        self._on_outcome = on_outcome
        self._on_start = on_start
        self._in_process = capabilities.in_process
        self._runs_coroutines = capabilities.runs_coroutines
        # In-process executors may run a callable without a Future: the attempt then
        # reports its own outcome, which spares the Future's locks on the hot path.
        self._run_soon = cast(RunsSoon, executor).run_soon if capabilities.run_soon else None
        self._submit_reporting_start = (
            cast(ReportsStart, executor).submit_reporting_start
            if capabilities.reports_start
            else None
        )
        self._pickled_codec: bytes | None = None
        self._pickled_area: bytes | None = None
        self._remote_specs: dict[str, tuple[NodeSpec, bytes]] = {}  # node -> (stand-in, fn)

    def launch(self, attempt: Attempt) -> None:
        """Start ``attempt``; its outcome comes to ``on_outcome``."""
        try:
            self._launch(attempt)
        except Exception as exc:  # the executor refused it: shut down, broken, unreachable
            self._on_outcome(attempt, failure(exc, infrastructure=True))

    def _launch(self, attempt: Attempt) -> None:
        spec = attempt.spec
        if not self._in_process:
            self._launch_remote(attempt)
            return
        if spec.timeout is not None:  # the deadline counts from the real start
            attempt.on_start = functools.partial(self._on_start, attempt)
        if self._run_soon is not None:
            self._run_soon(_execute_and_report, attempt, self._on_outcome)
            return
        # An executor that runs coroutines resolves the one execute_async returns.
        run: Callable[[Attempt], Any] = (
            execute_async if spec.is_async and self._runs_coroutines else execute
        )
        future: Future[Outcome] = self._executor.submit(run, attempt)
        attempt.future = future
        report = self._on_outcome
        future.add_done_callback(lambda f: report(attempt, _outcome_of(f)))

    def _launch_remote(self, attempt: Attempt) -> None:
        try:
            task = self._to_remote(attempt)
        except Exception as exc:  # the function or the codec cannot be pickled
            self._on_outcome(attempt, failure(exc, retryable=False))
            return
        future: Future[Outcome]
        if attempt.spec.timeout is None:
            future = self._executor.submit(execute_remote, task)
        elif self._submit_reporting_start is not None:  # the deadline counts from the start
            on_start = functools.partial(self._on_start, attempt)
            future = self._submit_reporting_start(on_start, execute_remote, task)
        else:  # the driver fills the executor no further than it runs: start it now
            self._on_start(attempt)
            future = self._executor.submit(execute_remote, task)
        attempt.future = future
        report = self._on_outcome
        # A worker that reached the blob area sent a Ref already; else it is put here.
        here = task.area is None
        future.add_done_callback(
            lambda f: report(attempt, received(_outcome_of(f), attempt, keep_here=here))
        )

    def _to_remote(self, attempt: Attempt) -> RemoteAttempt:
        """The picklable form of ``attempt``: function and codec pickled once per run."""
        spec = attempt.spec
        if self._pickled_codec is None:
            self._pickled_codec = pickle.dumps(self._codec)
        sent = self._remote_specs.get(spec.name)
        if sent is None:
            sent = self._remote_specs[spec.name] = (
                dataclasses.replace(spec, fn=_sent_separately),
                _pickled_function(spec),
            )
        if spec.wants_ctx:  # ctx.inputs holds every input, ctx.data the run's data
            inputs, data = attempt.inputs, dict(attempt.data)
        else:
            inputs, data = {dep: attempt.inputs[dep] for dep in spec.kwarg_deps}, {}
        area = self._area_for_workers(attempt)
        if area is None and attempt.source is not None:
            # The worker cannot read the blob area (memory, or a key that must not
            # travel): it gets the values, read here. Refs it asked for go as they are.
            inputs = {
                dep: value.load() if type(value) is Ref and dep not in spec.ref_deps else value
                for dep, value in inputs.items()
            }
        return RemoteAttempt(
            sent[0],
            sent[1],
            attempt.run_id,
            attempt.number,
            inputs,
            data,
            self._pickled_codec,
            attempt.inline_limit,
            area,
        )

    def _area_for_workers(self, attempt: Attempt) -> bytes | None:
        """The blob area, pickled, if a worker can open it by path; else None."""
        source = attempt.source
        if source is None or not source.area.portable:
            return None
        if self._pickled_area is None:
            self._pickled_area = pickle.dumps(source.area)
        return self._pickled_area


def _pickled_function(spec: NodeSpec) -> bytes:
    from flowdag.executors._pickling import dumps  # imports cloudpickle: remote runs only

    try:
        return dumps(spec.fn)  # with the file names of its code, for tracebacks
    except Exception as exc:
        raise SerializationError(
            f"node '{spec.name}': its function cannot be sent to another process "
            f"({type(exc).__name__}: {exc}); define it at module level, or use "
            "the threads executor"
        ) from exc


def _execute_and_report(attempt: Attempt, report: Callable[[Attempt, Outcome], None]) -> None:
    """Run an attempt and report its outcome, whatever happens (the run_soon path)."""
    try:
        outcome = execute(attempt)
    except BaseException as exc:  # e.g. on_start failed: still report
        outcome = failure(exc)
    report(attempt, outcome)


def _outcome_of(future: Future[Outcome]) -> Outcome:
    try:
        return future.result()
    except BaseException as exc:  # the executor failed (a worker died), not the node
        return failure(exc, infrastructure=True)
