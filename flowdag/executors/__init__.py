"""Executors run node functions; the runner's driver does everything else."""

from __future__ import annotations

from flowdag.errors import FlowdagError
from flowdag.executors.base import Executor
from flowdag.executors.pools import ThreadExecutor, default_workers

__all__ = ["Executor", "ThreadExecutor", "make_executor"]

_KINDS = ("threads",)


def make_executor(kind: str, max_workers: int | None) -> Executor:
    """The executor for a ``run(executor=...)`` name."""
    if kind == "threads":
        return ThreadExecutor(max_workers or default_workers())
    raise FlowdagError(
        f"unknown executor {kind!r}; choose one of: {', '.join(_KINDS)} "
        "(or pass an executor instance)"
    )
