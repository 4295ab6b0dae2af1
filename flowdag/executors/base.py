"""The executor protocol: run node functions, hand back futures. Nothing else.

The runner's driver owns scheduling, retries, timeouts and the store; an
executor only runs what it is given. That keeps pools, asyncio and Dask (which
we do not own) behind two methods.
"""

from __future__ import annotations

from collections.abc import Callable
from concurrent.futures import Future
from typing import Any, Protocol, TypeVar, runtime_checkable

__all__ = ["Executor"]

T = TypeVar("T")


@runtime_checkable
class Executor(Protocol):
    """Runs callables and returns `concurrent.futures.Future`s of their results."""

    def submit(self, fn: Callable[..., T], /, *args: Any) -> Future[T]:
        """Start ``fn(*args)`` and return a future of its result."""
        ...

    def shutdown(self, wait: bool = True) -> None:
        """Stop accepting work; with ``wait``, return once submitted work is done."""
        ...
