"""One attempt of one node: what runs on an executor, and what it hands back.

An attempt calls the node function with its inputs (and ``ctx``), then encodes
the output and the ``ctx.data`` changes with the store's codec, so encoding
happens once, off the driver, and a value that cannot be stored fails its node
with `SerializationError` right there. An output above the node's inline
limit is put in the store's blob area here too (`flowdag._byref`), so the
record the driver commits already holds its `flowdag.Ref`; inputs kept by
reference are loaded here, as the node starts, never on the driver.

Two ways to run one in this process: `execute`, on a thread (a coroutine
result runs with ``asyncio.run``), and `execute_async`, awaited on an event
loop (the asyncio executor). `flowdag.launcher` starts attempts on an
executor, in this process or as picklable tasks for other processes.
Whatever happens, an attempt ends with exactly one `Outcome`: `failure` never
raises, and the paths that run user code catch everything.
"""

from __future__ import annotations

import inspect
import logging
import traceback
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any

from flowdag._byref import by_reference, streamed
from flowdag._digests import output_digest
from flowdag._kv_entries import INLINE_LIMIT, keep_large
from flowdag._values import text_problem
from flowdag.codec import ValueCodec
from flowdag.context import Context, DataView
from flowdag.dag import NodeSpec
from flowdag.errors import FlowdagError, SerializationError
from flowdag.kv import StagedKV
from flowdag.refs import LoadedOnRead, Ref, start_collecting, stop_collecting
from flowdag.state import ErrorInfo
from flowdag.stores._blobs import RefSource

__all__ = [
    "Attempt",
    "Outcome",
    "execute",
    "execute_async",
    "failure",
    "given",
    "keep_by_reference",
    "origin_of",
]

logger = logging.getLogger("flowdag")

# What a node may raise, all failures of that node. SystemExit too: raised in a
# worker process it would otherwise look like a dead worker, and on an event loop
# it would stop the loop. Only cancellation (a timeout, asyncio) passes through.
NODE_ERRORS = (Exception, SystemExit, KeyboardInterrupt)


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
    #: Reads committed kv values for ``ctx.kv`` (`flowdag._kv_readers.committed_reader`),
    #: or says why none can be read here.
    kv_read: Callable[[str], Any] | str = "cannot read the store's kv entries here"

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
    #: The output's digest (`flowdag._digests.output_digest`), made where it was encoded.
    digest: str | None = None
    #: The attempt's ``ctx.kv`` writes (`flowdag._kv_entries.KVOp`), None if it made none.
    kv: list[Any] | None = None


def execute(attempt: Attempt) -> Outcome:
    """Run ``attempt`` here and now (on a worker thread)."""
    started_at, value, ctx = _call(attempt)
    if inspect.iscoroutine(value):
        import asyncio  # here: a program without coroutine nodes never pays its import

        value = _resolved(asyncio.run, value, started_at)
    return _finish(attempt, started_at, value, ctx)


async def execute_async(attempt: Attempt) -> Outcome:
    """Run ``attempt`` on the running event loop; cancelling the task cancels the node."""
    started_at, value, ctx = _call(attempt)
    if inspect.isawaitable(value):
        try:
            value = await value
        except NODE_ERRORS as exc:
            value = _Failed(failure(exc, started_at))
    return _finish(attempt, started_at, value, ctx)


def given(attempt: Attempt, started_at: datetime, value: Any) -> Outcome:
    """The outcome of ``attempt`` as if its node had returned ``value`` (an input node's)."""
    return _finish(attempt, started_at, value, None)


@dataclass(slots=True)
class _Failed:
    """Stands in for the value of a call that raised: no node function returns one."""

    outcome: Outcome


def _call(attempt: Attempt) -> tuple[datetime, Any, Context | None]:
    """Report the start, then call the node: (start time, value or `_Failed`, its ctx)."""
    if attempt.on_start is not None:
        attempt.on_start()
    # Set here too: an attempt queued behind busy workers gets no start record until now.
    attempt.started_at = started_at = datetime.now(UTC)
    ctx = None
    try:
        spec = attempt.spec
        if spec.binding is None:  # the usual call: inputs by keyword, no constants
            kwargs, ctx = _arguments(attempt)
            if spec.map_over is not None:  # an item of a map node: the item comes first
                return started_at, spec.fn(_item(attempt, spec.map_over), **kwargs), ctx
            return started_at, spec.fn(**kwargs), ctx
        args, kwargs, ctx = _bound_arguments(attempt)
        if spec.map_over is not None:
            args = (_item(attempt, spec.map_over), *args)
        return started_at, spec.fn(*args, **kwargs), ctx
    except NODE_ERRORS as exc:
        _discard_output(ctx)
        return started_at, _Failed(failure(exc, started_at)), ctx


def _resolved(run: Callable[[Any], Any], awaitable: Any, started_at: datetime) -> Any:
    try:
        return run(awaitable)
    except NODE_ERRORS as exc:
        return _Failed(failure(exc, started_at))


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


def _item(attempt: Attempt, over: str) -> Any:
    """A map item's item: loaded when kept by reference, unless its parameter asks for the Ref."""
    item = attempt.inputs[over]
    return item.load() if type(item) is Ref and over not in attempt.spec.ref_deps else item


def _arguments(attempt: Attempt) -> tuple[dict[str, Any], Context | None]:
    spec = attempt.spec
    inputs = attempt.inputs
    kwargs = {}
    for dep in spec.kwarg_deps:  # one loop, no comprehension: once per node
        value = inputs[dep]
        # An output kept by reference is loaded now, unless the parameter asks for the Ref.
        if type(value) is Ref and dep not in spec.ref_deps:
            value = value.load()
        kwargs[dep] = value
    if not spec.wants_ctx:
        return kwargs, None
    kwargs["ctx"] = ctx = _context(attempt, kwargs)
    return kwargs, ctx


def _bound_arguments(attempt: Attempt) -> tuple[tuple[Any, ...], dict[str, Any], Context | None]:
    """The call of a node with a `flowdag.dag.Binding`: constants, a list, renamed inputs."""
    spec = attempt.spec
    binding = spec.binding
    assert binding is not None
    inputs = attempt.inputs
    values = {}
    for dep in spec.kwarg_deps:
        value = inputs[dep]
        # An output kept by reference is loaded now, unless the parameter asks for the Ref.
        values[dep] = value.load() if type(value) is Ref and dep not in spec.ref_deps else value
    args = binding.args
    if binding.listed is not None:
        args = (*args, [values[dep] for dep in binding.listed])
    kwargs = dict(binding.kwargs)
    for param, dep in binding.params:
        value = values[dep]
        # A dep kept as a Ref for one parameter annotated Ref, loaded for another.
        kwargs[param] = value.load() if type(value) is Ref and param not in binding.refs else value
    ctx = None
    if spec.wants_ctx:
        kwargs["ctx"] = ctx = _context(attempt, values)
    return args, kwargs, ctx


def _context(attempt: Attempt, loaded: Mapping[str, Any]) -> Context:
    """The node's ``ctx``; ``loaded`` holds the inputs read already (by dep name)."""
    spec = attempt.spec
    inputs = {dep: loaded.get(dep, value) for dep, value in attempt.inputs.items()}
    return Context(
        attempt.run_id,
        spec.name,
        attempt.number,
        LoadedOnRead(inputs),
        DataView(attempt.data),
        _output_opener(attempt),
        StagedKV(attempt.kv_read, attempt.codec, spec.name, _kv_limit(attempt)),
    )


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
        # From the bytes just encoded (or the Ref's sha256): never encoded again.
        # Uncompressed (a no-op below the codec's threshold), as a blob is addressed:
        # the same value digests the same inline or by reference.
        digest = output_digest(codec, output, value)
        if ctx is None:
            outcome = Outcome(started_at, datetime.now(UTC), value, output)
            outcome.blobs = blobs  # set, not passed by keyword: cheaper on this hot path
            outcome.digest = digest
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
        kv = ctx.kv.ops or None
        if kv is not None and attempt.source is not None:  # large values to blobs, off the driver
            for op in kv:
                if op.kind == "set":
                    keep_large(op, attempt.source)
    except NODE_ERRORS as exc:
        _discard_output(ctx)
        return failure(exc, started_at)
    outcome = Outcome(
        started_at, datetime.now(UTC), value, output, changes, encoded, blobs=blobs, digest=digest
    )
    outcome.kv = kv
    return outcome


def _kv_limit(attempt: Attempt) -> int | None:
    """The inline limit of the node's kv values: its outputs' limit, or the default."""
    return INLINE_LIMIT if attempt.inline_limit is None else attempt.inline_limit


def _output(attempt: Attempt, value: Any) -> tuple[bytes, Any, dict[str, datetime | None] | None]:
    """The output encoded (a Ref to it when above the limit), the value the run keeps, its blobs."""
    seen: dict[str, datetime | None] = {}
    if type(value) in _HOLDS_NO_REF:
        # Fast path: no Ref can be inside, so the refs need no collecting (a
        # context variable set and reset per output, a tenth of a node's own cost).
        output = _encode(attempt.codec, value, None, attempt)
    else:
        token, seen = start_collecting()  # the refs inside the value, for gc
        try:
            output = _encode(attempt.codec, value, None, attempt)
        finally:
            stop_collecting(token)
    limit, source = attempt.inline_limit, attempt.source
    if limit is None or source is None or attempt.codec.plain_size(output) <= limit:
        return output, value, seen or None
    output, ref = keep_by_reference(attempt, value, output, source, seen)
    return output, ref, seen


def keep_by_reference(
    attempt: Attempt,
    value: Any,
    output: bytes,
    source: RefSource,
    blobs: dict[str, datetime | None],
) -> tuple[bytes, Ref]:
    """``output`` put in the blob area: the encoded Ref, and the Ref; ``blobs`` gets its blob.

    Refs inside the value stay in ``blobs`` too: the blob holds them, so gc must keep them.
    """
    ref = by_reference(attempt.spec, value, output, source, origin_of(attempt))
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
    ref = streamed(attempt.spec, info, attempt.source, origin_of(attempt))
    return attempt.codec.encode(ref), ref, {ref.sha256: ref.expires_at}


def origin_of(attempt: Attempt) -> str:
    return f"run '{attempt.run_id}', node '{attempt.spec.name}'"


def _encode(codec: ValueCodec, value: Any, what: str | None, output_of: Any = None) -> bytes:
    """``value`` encoded; ``what`` it is names it in the error (None: the output of
    attempt ``output_of``, named only if it fails, not on every node's path)."""
    try:
        return codec.encode(value)
    except SerializationError as exc:
        if what is None:
            what = f"node '{output_of.spec.name}': output is"
        raise SerializationError(f"{what} not storable: {exc}") from None
