"""Pools in this machine: `ThreadExecutor` (the default) and `ProcessExecutor`.

`ThreadExecutor` is a thread pool that never runs short.

Python cannot stop a thread, so an attempt that overruns its timeout is
*abandoned*: the driver fails (or retries) it at once and discards its result
when it comes, but its thread runs on until the function returns. A pool that
queued new work behind it could stall, so an abandoned attempt costs a thread,
never a worker slot:

- *uncapped* (an instance a caller makes, the default): the pool starts a
  thread whenever no thread is idle, and the runner's driver caps how many
  attempts are in flight on it;
- *capped* (the pool `flowdag.run` makes for itself, ``capped=True``): it runs
  at most ``max_workers`` callables at once and queues the rest in order, and
  each attempt the driver `abandoned` raises that cap by one. The driver then
  keeps attempts queued ahead of free threads (`Capabilities.queues`), so a
  thread that finishes one takes the next at once instead of sleeping until
  the driver hands it one.

Threads are daemons so that an abandoned attempt cannot keep the process alive.
"""

from __future__ import annotations

import itertools
import logging
import os
import struct
import threading
from collections.abc import Callable
from concurrent.futures import Future
from queue import SimpleQueue
from typing import TYPE_CHECKING, Any, TypeVar

from flowdag.executors._main_guard import check_main_guard
from flowdag.executors.base import Capabilities, ExecutorBase

if TYPE_CHECKING:  # multiprocessing.connection costs ~5 ms: imported with a process pool only
    from multiprocessing.connection import Connection

__all__ = ["ProcessExecutor", "ThreadExecutor", "default_workers"]

logger = logging.getLogger("flowdag")

T = TypeVar("T")
_Work = tuple[Future[Any] | None, Callable[..., Any], tuple[Any, ...]]


def default_workers() -> int:
    """Attempts in flight when ``max_workers`` is not given (as ThreadPoolExecutor)."""
    return min(32, (os.cpu_count() or 1) + 4)


class ThreadExecutor(ExecutorBase):
    """Runs each submitted callable on an idle thread, starting one if none is idle.

    Uncapped (the default), ``max_workers`` is how many attempts the driver
    keeps in flight on it and the pool itself has no cap. ``capped=True``: at
    most ``max_workers`` callables run at once (plus one per `abandoned` call),
    the rest wait in order. Attempts run in this process, so they report their
    own start, and it can run a callable with no Future (``run_soon``).
    """

    def __init__(
        self,
        max_workers: int | None = None,
        thread_name_prefix: str = "flowdag",
        *,
        capped: bool = False,
    ) -> None:
        workers = max_workers if max_workers is not None else default_workers()
        self.capabilities = Capabilities(
            max_workers=workers, in_process=True, run_soon=True, queues=capped
        )
        self._prefix = thread_name_prefix
        self._work: SimpleQueue[_Work | None] = SimpleQueue()
        self._cap = workers if capped else None  # threads at most; None: no cap
        # Callables put and not yet returned, under the lock: a plain counter, not
        # a Semaphore, whose acquire and release are Python code on every node's path.
        self._busy = 0
        self._threads: list[threading.Thread] = []
        self._lock = threading.Lock()
        self._shutdown = False

    def submit(self, fn: Callable[..., T], /, *args: Any) -> Future[T]:
        future: Future[T] = Future()
        self._put((future, fn, args))
        return future

    def run_soon(self, fn: Callable[..., Any], /, *args: Any) -> None:
        """Run ``fn(*args)`` with no Future: ``fn`` reports its own outcome.

        The runner uses this for the hot path. ``fn`` must report even its own
        failures: an exception escaping it is logged, and the thread serves on.
        """
        self._put((None, fn, args))

    def abandoned(self) -> None:
        """One callable was abandoned and runs on: a capped pool may start a thread more."""
        with self._lock:
            if self._cap is not None:
                self._cap += 1
                self._grow()

    def _put(self, work: _Work) -> None:
        with self._lock:
            if self._shutdown:
                raise RuntimeError("cannot submit to a ThreadExecutor after shutdown")
            self._work.put(work)
            self._busy += 1
            self._grow()

    def _grow(self) -> None:
        """Start a thread if work waits with every thread busy, within the cap (lock held)."""
        threads = len(self._threads)
        if self._busy > threads and (self._cap is None or threads < self._cap):
            self._start_thread()

    def shutdown(self, wait: bool = True) -> None:
        with self._lock:
            if self._shutdown:
                return
            self._shutdown = True
            self._work.put(None)  # each thread passes the sentinel on and exits
        if wait:
            for thread in list(self._threads):
                thread.join()

    def _start_thread(self) -> None:
        name = f"{self._prefix}-{len(self._threads)}"
        thread = threading.Thread(target=self._serve, name=name, daemon=True)
        thread.start()
        self._threads.append(thread)

    def _serve(self) -> None:
        work = self._work
        lock = self._lock
        while True:
            item = work.get()
            if item is None:
                work.put(None)
                return
            future, fn, args = item
            del item
            if future is None:
                try:
                    fn(*args)
                except BaseException:  # fn reports its outcome; keep serving
                    logger.exception("a task run with run_soon raised: %r", fn)
            elif future.set_running_or_notify_cancel():
                try:
                    result = fn(*args)
                except BaseException as exc:
                    future.set_exception(exc)
                else:
                    future.set_result(result)
            del future, fn, args
            with lock:
                self._busy -= 1


class ProcessExecutor(ExecutorBase):
    """Runs callables in a pool of worker processes, for CPU-bound nodes.

    Built on `pebble.ProcessPool`, whose futures can be cancelled while they
    run: cancelling terminates the worker and starts a fresh one. That is how
    a node's timeout stops an attempt here, which no thread pool can. The
    timeout counts from when a worker takes the attempt, which the worker
    reports itself (`submit_reporting_start`). A worker that dies (killed, out
    of memory) fails only the attempt it ran; the runner retries such attempts
    without using up the node's retries.

    Workers are started with the ``spawn`` method by default (safe in a process
    that has threads, as the runner's has); what they run must be importable or
    picklable (the runner sends node functions with cloudpickle, keeping their
    file names, so tracebacks name the workflow file and line). Spawned workers
    import the main file again: creating the pool from its module-level code,
    outside ``if __name__ == "__main__":``, raises `MainGuardError`.
    """

    def __init__(self, max_workers: int | None = None, *, start_method: str = "spawn") -> None:
        import multiprocessing

        from pebble import ProcessPool

        if start_method != "fork":  # spawned workers import the main file again
            check_main_guard('executor="processes"')
        workers = max_workers if max_workers is not None else (os.cpu_count() or 1)
        self.capabilities = Capabilities(max_workers=workers, reports_start=True)
        context = multiprocessing.get_context(start_method)
        self._starts = _StartReports(context.Pipe(duplex=False))
        self._pool = ProcessPool(
            max_workers=workers,
            context=context,
            initializer=_keep_start_pipe,
            initargs=(self._starts.writer,),
        )
        self._closed = False

    def submit(self, fn: Callable[..., T], /, *args: Any) -> Future[T]:
        return self._pool.schedule(fn, args=args)

    def submit_reporting_start(
        self, on_start: Callable[[], None], fn: Callable[..., T], /, *args: Any
    ) -> Future[T]:
        """`submit`, calling ``on_start()`` once when a worker takes the task.

        The runner counts a node's timeout from there: a task can wait in the
        pool's queue, e.g. while a terminated worker is replaced, and that wait
        is not the node's. The worker says so itself, before it calls ``fn``.
        """
        token = self._starts.expect(on_start)
        try:
            future: Future[T] = self._pool.schedule(
                _report_start_then_call, args=(token, fn, *args)
            )
        except BaseException:
            self._starts.forget(token)  # nothing will report this token
            raise
        future.add_done_callback(lambda _: self._starts.forget(token))
        return future

    def shutdown(self, wait: bool = True) -> None:
        if self._closed:
            return
        self._closed = True
        if wait:
            self._pool.close()  # type: ignore[no-untyped-call]
        else:
            self._pool.stop()  # type: ignore[no-untyped-call]  # ends abandoned attempts too
        self._pool.join()
        self._starts.close()


# -- start reports: worker -> driver ---------------------------------------------------

# A report is one small write to a pipe that every worker shares. Writes up to
# PIPE_BUF bytes are atomic, so reports of several workers never interleave and
# need no lock, which a worker killed mid-report could leave held.
_TOKEN = struct.Struct("<Q")
_CLOSE = 0  # the token that stops the reading thread

_start_pipe: Connection | None = None  # in a worker: where it reports starts


def _keep_start_pipe(pipe: Connection) -> None:
    """Runs in each worker as it starts (the pool's initializer)."""
    global _start_pipe
    _start_pipe = pipe


def _report_start_then_call(token: int, fn: Callable[..., T], /, *args: Any) -> T:
    """Runs in a worker: report that this task started, then run it."""
    if _start_pipe is not None:
        _start_pipe.send_bytes(_TOKEN.pack(token))
    return fn(*args)


class _StartReports:
    """The driver's end of the start reports: one thread calls back who started."""

    def __init__(self, pipe: tuple[Connection, Connection]) -> None:
        self._reader, self.writer = pipe
        self._waiting: dict[int, Callable[[], None]] = {}  # token -> on_start
        self._tokens = itertools.count(_CLOSE + 1)
        self._thread = threading.Thread(target=self._serve, name="flowdag-starts", daemon=True)
        self._thread.start()

    def expect(self, on_start: Callable[[], None]) -> int:
        """A token for a task about to be scheduled; ``on_start`` runs when it is reported."""
        token = next(self._tokens)
        self._waiting[token] = on_start
        return token

    def forget(self, token: int) -> None:
        """The task is over (or never started): a late report is ignored."""
        self._waiting.pop(token, None)

    def close(self) -> None:
        self.writer.send_bytes(_TOKEN.pack(_CLOSE))
        self._thread.join()
        self._reader.close()
        self.writer.close()

    def _serve(self) -> None:
        reader = self._reader
        while True:
            try:
                (token,) = _TOKEN.unpack(reader.recv_bytes())
            except (EOFError, OSError):
                return
            if token == _CLOSE:
                return
            on_start = self._waiting.pop(token, None)  # pop: once per task
            if on_start is not None:
                try:
                    on_start()
                except Exception:
                    logger.exception("a start report raised")
