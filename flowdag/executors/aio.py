"""`AsyncioExecutor`: ``async def`` nodes on one event loop, sync nodes on threads."""

from __future__ import annotations

import asyncio
import inspect
import threading
from collections.abc import Callable
from concurrent.futures import Future
from typing import Any, TypeVar

from flowdag.executors.base import Capabilities, ExecutorBase
from flowdag.executors.pools import ThreadExecutor, default_workers

__all__ = ["AsyncioExecutor"]

T = TypeVar("T")


class AsyncioExecutor(ExecutorBase):
    """Runs coroutine functions as tasks on one event loop in a thread of its own.

    Plain callables go to a `ThreadExecutor` so that a blocking node never
    stalls the loop. A task's future can be cancelled while it runs, which
    cancels the task: that is how a node's timeout stops an ``async def`` node.
    """

    def __init__(self, max_workers: int | None = None) -> None:
        workers = max_workers if max_workers is not None else default_workers()
        # Attempts run in this process, and coroutine functions go to the loop as such.
        self.capabilities = Capabilities(max_workers=workers, in_process=True, runs_coroutines=True)
        self._loop = asyncio.new_event_loop()
        self._thread = threading.Thread(
            target=self._loop.run_forever, name="flowdag-asyncio", daemon=True
        )
        self._thread.start()
        self._threads = ThreadExecutor(workers, thread_name_prefix="flowdag-aio")

    def submit(self, fn: Callable[..., Any], /, *args: Any) -> Future[Any]:
        if inspect.iscoroutinefunction(fn):
            return asyncio.run_coroutine_threadsafe(fn(*args), self._loop)
        return self._threads.submit(fn, *args)

    def shutdown(self, wait: bool = True) -> None:
        if self._loop.is_closed():
            return
        if not wait:
            for task in asyncio.all_tasks(self._loop):
                self._loop.call_soon_threadsafe(task.cancel)
        self._loop.call_soon_threadsafe(self._loop.stop)
        self._thread.join()
        self._loop.close()
        self._threads.shutdown(wait)
