"""Executors run node functions; the runner's driver does everything else.

`make_executor` maps the names ``run(executor=...)`` accepts to classes and
imports them lazily, so Dask and pebble load only when they are used. Every
executor here declares what it can do in ``capabilities`` (a `Capabilities`)
and is a context manager: ``with ProcessExecutor() as ex:`` shuts it down.
"""

from __future__ import annotations

import importlib
from typing import TYPE_CHECKING, Any

from flowdag.errors import InvalidArgumentError
from flowdag.executors.base import Capabilities, Executor, ExecutorBase, capabilities_of
from flowdag.executors.pools import ThreadExecutor, default_workers

if TYPE_CHECKING:
    from flowdag.executors.aio import AsyncioExecutor
    from flowdag.executors.distributed import DaskExecutor
    from flowdag.executors.pools import ProcessExecutor

__all__ = [
    "AsyncioExecutor",
    "Capabilities",
    "DaskExecutor",
    "Executor",
    "ExecutorBase",
    "ProcessExecutor",
    "ThreadExecutor",
    "capabilities_of",
    "make_executor",
]

# name -> (module, class)
_KINDS = {
    "threads": ("flowdag.executors.pools", "ThreadExecutor"),
    "processes": ("flowdag.executors.pools", "ProcessExecutor"),
    "asyncio": ("flowdag.executors.aio", "AsyncioExecutor"),
    "dask": ("flowdag.executors.distributed", "DaskExecutor"),
}
_LAZY = {cls: module for module, cls in _KINDS.values()}


def make_executor(kind: str, max_workers: int | None) -> Executor:
    """The executor for a ``run(executor=...)`` name."""
    if kind == "threads":  # the common case, without a lookup; the run's own: capped
        return ThreadExecutor(max_workers or default_workers(), capped=True)
    if kind not in _KINDS:
        raise InvalidArgumentError(
            f"unknown executor {kind!r}; choose one of: {', '.join(_KINDS)} "
            "(or pass an executor instance)"
        )
    module, name = _KINDS[kind]
    cls = getattr(importlib.import_module(module), name)
    executor: Executor = cls(max_workers=max_workers)
    return executor


def __getattr__(name: str) -> Any:
    module = _LAZY.get(name)
    if module is None:
        raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
    return getattr(importlib.import_module(module), name)
