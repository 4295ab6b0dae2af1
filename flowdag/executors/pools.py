"""Pools in this machine: `ThreadExecutor` (the default) and `ProcessExecutor`.

`ThreadExecutor` is a thread pool that never runs short.

Unlike `concurrent.futures.ThreadPoolExecutor` it has no cap of its own: the
runner's driver caps how many attempts are in flight. That matters for
timeouts. Python cannot stop a thread, so an attempt that overruns its timeout
is *abandoned*: the driver fails (or retries) it at once and discards its result
when it comes, but its thread runs on until the function returns. A capped pool
would then queue new work behind it; this one starts a fresh thread whenever
no thread is idle, so an abandoned attempt costs a thread, not a worker slot.
Threads are daemons so that an abandoned attempt cannot keep the process alive.
"""

from __future__ import annotations

import os
import threading
from collections.abc import Callable
from concurrent.futures import Future
from queue import SimpleQueue
from typing import Any, TypeVar

__all__ = ["ProcessExecutor", "ThreadExecutor", "default_workers"]

T = TypeVar("T")
_Work = tuple[Future[Any] | None, Callable[..., Any], tuple[Any, ...]]


def default_workers() -> int:
    """Attempts in flight when ``max_workers`` is not given (as ThreadPoolExecutor)."""
    return min(32, (os.cpu_count() or 1) + 4)


class ThreadExecutor:
    """Runs each submitted callable on an idle thread, starting one if none is idle."""

    #: Attempts run in this process: they can report their own start.
    in_process = True

    def __init__(self, max_workers: int | None = None, thread_name_prefix: str = "flowdag") -> None:
        #: How many attempts the driver keeps in flight on this executor.
        self.max_workers = max_workers if max_workers is not None else default_workers()
        self._prefix = thread_name_prefix
        self._work: SimpleQueue[_Work | None] = SimpleQueue()
        self._idle = threading.Semaphore(0)
        self._threads: list[threading.Thread] = []
        self._lock = threading.Lock()
        self._shutdown = False

    def submit(self, fn: Callable[..., T], /, *args: Any) -> Future[T]:
        future: Future[T] = Future()
        self._put((future, fn, args))
        return future

    def run_soon(self, fn: Callable[..., Any], /, *args: Any) -> None:
        """Run ``fn(*args)`` with no Future: ``fn`` reports its own outcome.

        The runner uses this for the hot path; an exception escaping ``fn`` is lost.
        """
        self._put((None, fn, args))

    def _put(self, work: _Work) -> None:
        with self._lock:
            if self._shutdown:
                raise RuntimeError("cannot submit to a ThreadExecutor after shutdown")
            self._work.put(work)
            if not self._idle.acquire(blocking=False):
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
        while True:
            item = work.get()
            if item is None:
                work.put(None)
                return
            future, fn, args = item
            del item
            if future is None:
                fn(*args)
            elif future.set_running_or_notify_cancel():
                try:
                    result = fn(*args)
                except BaseException as exc:
                    future.set_exception(exc)
                else:
                    future.set_result(result)
            del future, fn, args
            self._idle.release()


class ProcessExecutor:
    """Runs callables in a pool of worker processes, for CPU-bound nodes.

    Built on `pebble.ProcessPool`, whose futures can be cancelled while they
    run: cancelling terminates the worker and starts a fresh one. That is how
    a node's timeout stops an attempt here, which no thread pool can. A worker
    that dies (killed, out of memory) fails only the attempt it ran; the runner
    retries such attempts without using up the node's retries.

    Workers are started with the ``spawn`` method by default (safe in a process
    that has threads, as the runner's has); what they run must be importable or
    picklable (the runner sends node functions with cloudpickle).
    """

    def __init__(self, max_workers: int | None = None, *, start_method: str = "spawn") -> None:
        import multiprocessing

        from pebble import ProcessPool

        self.max_workers = max_workers if max_workers is not None else (os.cpu_count() or 1)
        context = multiprocessing.get_context(start_method)
        self._pool = ProcessPool(max_workers=self.max_workers, context=context)

    def submit(self, fn: Callable[..., T], /, *args: Any) -> Future[T]:
        return self._pool.schedule(fn, args=args)

    def submit_reporting_start(
        self, on_start: Callable[[], None], fn: Callable[..., T], /, *args: Any
    ) -> Future[T]:
        """`submit`, calling ``on_start()`` once when a worker takes the task.

        The runner counts a node's timeout from there: a task can wait in the
        pool's queue, e.g. while a terminated worker is replaced, and that wait
        is not the node's.
        """
        future: Future[T] = self._pool.schedule(fn, args=args)
        once = threading.Lock()

        def report() -> None:
            if once.acquire(blocking=False):
                on_start()

        # pebble marks the future running when a worker acknowledges the task,
        # from its own thread: hook that call. If the worker was quicker than
        # this hook, the future is already running and we report it here.
        mark_running = future.set_running_or_notify_cancel

        def set_running_or_notify_cancel() -> bool:
            running = mark_running()
            if running:
                report()
            return running

        future.set_running_or_notify_cancel = set_running_or_notify_cancel  # type: ignore[method-assign]
        if future.running():
            report()
        return future

    def shutdown(self, wait: bool = True) -> None:
        if wait:
            self._pool.close()  # type: ignore[no-untyped-call]
        else:
            self._pool.stop()  # type: ignore[no-untyped-call]  # ends abandoned attempts too
        self._pool.join()
