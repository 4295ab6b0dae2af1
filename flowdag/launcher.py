"""Starting attempts on an executor: in this process, or as picklable tasks for others.

A `Launcher` picks the way an executor's `Capabilities` allow. In-process
executors run `flowdag.attempt.execute` (or ``execute_async``) on the
attempt itself. Other processes and Dask workers get a `RemoteAttempt`,
picklable, with the node's function (and its ``extract`` and ``preview``)
carried by cloudpickle, so lambdas and closures go too, and ``ctx.data`` only
for a node that takes ``ctx``; `execute_remote` runs it there. Only bytes come
back: the encoded output and changes, which `received` decodes on this side.

Outputs kept by reference never travel as values: a worker that can open the
store's blob area by path (a plain disk store) gets the area, reads its
inputs' blobs and writes its output's blob itself, and sends back the Ref. A
worker that cannot (a memory store's dict, an encrypted store's key, which
never leave this process) gets its inputs' values, read here, and its output
is put in the blob area here, by `received`.

Whatever happens, every attempt a `Launcher` launches reaches ``on_outcome``
exactly once: the paths that run user code catch everything.
"""

from __future__ import annotations

import dataclasses
import functools
import pickle
from collections.abc import Callable
from concurrent.futures import Future
from contextlib import nullcontext
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any, cast

from flowdag._kv_readers import remote_reader
from flowdag.attempt import (
    NODE_ERRORS,
    Attempt,
    Outcome,
    execute,
    execute_async,
    failure,
    keep_by_reference,
    origin_of,
)
from flowdag.codec import ValueCodec
from flowdag.dag import NodeSpec
from flowdag.errors import SerializationError
from flowdag.executors.base import Executor, Queues, ReportsStart, RunsSoon, capabilities_of
from flowdag.refs import Ref, binding
from flowdag.stores._blobs import RefSource

__all__ = ["Launcher", "RemoteAttempt", "execute_remote", "received"]


@dataclass(slots=True)
class RemoteAttempt:
    """An attempt in picklable form, for another process or machine."""

    spec: NodeSpec  # its functions are stand-ins: they travel as ``fn``
    fn: bytes  # cloudpickle of the node function, its extract and preview, and its binding
    run_id: str
    number: int
    inputs: dict[str, Any]  # only those the function takes, unless it takes ctx
    data: dict[str, Any]  # ctx.data as the attempt started; empty unless it takes ctx
    codec: bytes  # the store's codec, pickled: a worker builds it once (`_worker_codec`)
    inline_limit: int | None = None
    area: bytes | None = None  # the store's blob area, pickled, when the worker can reach it
    kv_read: Any = None  # reads committed kv values there (`flowdag._kv_readers.StoreReader`)

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
        fn, extract, preview, binding = cloudpickle.loads(task.fn)
        what = "the store's codec"
        codec = _worker_codec(task.codec)
    except Exception as exc:  # e.g. it refers to a module the worker cannot import
        error = SerializationError(
            f"node '{task.node}': {what} cannot be loaded in the worker "
            f"({type(exc).__name__}: {exc}); make what it imports importable there"
        )
        error.__cause__ = exc
        return failure(error, started_at, retryable=False)
    spec = dataclasses.replace(task.spec, fn=fn, extract=extract, preview=preview, binding=binding)
    attempt = Attempt(spec, task.run_id, task.number, task.inputs, task.data, codec)
    if task.area is not None:  # outputs above the limit go to the blob area from here
        attempt.inline_limit = task.inline_limit
        attempt.source = RefSource(_worker_area(task.area), codec)
    if task.kv_read is not None:
        attempt.kv_read = task.kv_read
    outcome = execute(attempt)
    # The encoded bytes are what the driver stores; the values would only cross twice.
    outcome.value = None
    outcome.changes = {}
    if outcome.kv:
        _pickle_updates(outcome, task.node)
    return outcome


def _pickle_updates(outcome: Outcome, node: str) -> None:
    """Send ``ctx.kv.update`` functions cloudpickled (a lambda too); the commit loads them."""
    from flowdag.executors._pickling import dumps

    assert outcome.kv is not None
    for op in outcome.kv:
        if op.kind == "update" and type(op.fn) is not bytes:
            try:
                op.fn = dumps(op.fn)
            except Exception as exc:
                failed = failure(
                    SerializationError(
                        f"node '{node}': its kv update function for key "
                        f"{op.key!r} cannot be sent back ({type(exc).__name__}: {exc})"
                    ),
                    outcome.started_at,
                    retryable=False,
                )
                outcome.error, outcome.output, outcome.kv = failed.error, None, None
                outcome.retryable = False
                return


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
        with binding(source, origin_of(attempt)) if source is not None else nullcontext():
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
            outcome.output, outcome.value = keep_by_reference(
                attempt, outcome.value, outcome.output, source, blobs
            )
        except NODE_ERRORS as exc:
            return failure(exc, outcome.started_at)
        outcome.blobs = blobs
        outcome.digest = outcome.value.sha256  # kept by reference here: the Ref's digest
    return outcome


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
        self._run_soon = (
            cast(RunsSoon, executor).run_soon
            if capabilities.run_soon and capabilities.in_process
            else None
        )
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
            if self._run_soon is not None and attempt.spec.timeout is None:
                # The usual node on a thread (`_launch`'s first case, once per node).
                self._run_soon(_execute_and_report, attempt, self._on_outcome)
            else:
                self._launch(attempt)
        except Exception as exc:  # the executor refused it: shut down, broken, unreachable
            self._on_outcome(attempt, failure(exc, infrastructure=True))

    def abandoned(self) -> None:
        """An attempt in this process overran its timeout and runs on (a thread
        cannot be stopped): an executor that queues gets a worker in its place."""
        if self.capabilities.queues:
            cast(Queues, self._executor).abandoned()

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
        report = self._on_outcome
        _when_done(future, attempt, lambda f: report(attempt, _outcome_of(f)))

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
        report = self._on_outcome
        # A worker that reached the blob area sent a Ref already; else it is put here.
        here = task.area is None
        _when_done(
            future,
            attempt,
            lambda f: report(attempt, received(_outcome_of(f), attempt, keep_here=here)),
        )

    def _to_remote(self, attempt: Attempt) -> RemoteAttempt:
        """The picklable form of ``attempt``: function and codec pickled once per run."""
        spec = attempt.spec
        if self._pickled_codec is None:
            self._pickled_codec = pickle.dumps(self._codec)
        # A map's items share its function: pickled once, under the map's name.
        key = spec.name if spec.map_over is None else spec.name.rpartition("[")[0]
        sent = self._remote_specs.get(key)
        if sent is None:
            sent = self._remote_specs[key] = (
                # The cache is the driver's business: its cache_key need not travel.
                dataclasses.replace(
                    spec, fn=_sent_separately, extract=None, preview=None, cache=None, binding=None
                ),
                _pickled_function(spec),
            )
        if spec.wants_ctx:  # ctx.inputs holds every input, ctx.data the run's data
            inputs, data = attempt.inputs, dict(attempt.data)
        else:
            taken = spec.kwarg_deps if spec.map_over is None else (*spec.kwarg_deps, spec.map_over)
            inputs, data = {dep: attempt.inputs[dep] for dep in taken}, {}
        area = self._area_for_workers(attempt)
        if area is None and attempt.source is not None:
            # The worker cannot read the blob area (memory, or a key that must not
            # travel): it gets the values, read here. Refs it asked for go as they are.
            inputs = {
                dep: value.load() if type(value) is Ref and dep not in spec.ref_deps else value
                for dep, value in inputs.items()
            }
        return RemoteAttempt(
            sent[0] if key is spec.name else dataclasses.replace(sent[0], name=spec.name),
            sent[1],
            attempt.run_id,
            attempt.number,
            inputs,
            data,
            self._pickled_codec,
            attempt.inline_limit,
            area,
            remote_reader(attempt.kv_read) if spec.wants_ctx else None,
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

    try:  # with the file names of their code, for tracebacks
        # The constants travel with the function: cloudpickle sends what pickle cannot.
        return dumps((spec.fn, spec.extract, spec.preview, spec.binding))
    except Exception as exc:
        raise SerializationError(
            f"node '{spec.name}': its function (or a constant argument) cannot be sent "
            "to another process "
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


def _when_done(
    future: Future[Outcome], attempt: Attempt, report: Callable[[Future[Outcome]], None]
) -> None:
    """Keep ``future`` as ``attempt``'s (to cancel on timeout) and ``report`` it once
    done. The attempt then lets go of it: the future holds the callback, which
    holds the attempt and its inputs, a cycle only the cyclic collector would free."""
    attempt.future = future

    def done(finished: Future[Outcome]) -> None:
        attempt.future = None
        report(finished)

    future.add_done_callback(done)


def _outcome_of(future: Future[Outcome]) -> Outcome:
    try:
        return future.result()
    except BaseException as exc:  # the executor failed (a worker died), not the node
        return failure(exc, infrastructure=True)
