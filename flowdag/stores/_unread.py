"""Results that read their run from the store when first read (`flowdag._seal`), kept
by their store so that it reads them before it writes their run or closes.

A result that read nothing yet is a promise that the run as stored is the run
as it was returned; the store keeps that promise by reading the run into the
result first. It holds the results weakly: one that is gone costs nothing.
"""

from __future__ import annotations

import contextlib
import threading
import weakref
from typing import Protocol

from flowdag.errors import FlowdagError

__all__ = ["Unread", "UnreadRuns"]


class Unread(Protocol):
    """A result's run, not read yet (`flowdag._seal.SealedRun`)."""

    run_id: str

    def state(self) -> object:
        """Read the run (once); raise as a read of it raises."""


class UnreadRuns:
    """A store's unread results."""

    __slots__ = ("_guard", "_runs")

    def __init__(self) -> None:
        self._runs: weakref.WeakSet[Unread] = weakref.WeakSet()
        self._guard = threading.Lock()

    def add(self, run: Unread) -> None:
        with self._guard:
            self._runs.add(run)

    def discard(self, run: Unread) -> None:
        with self._guard:
            self._runs.discard(run)

    def read(self, run_id: str | None = None) -> None:
        """Read the unread results of ``run_id`` (None: of every run) into them."""
        if not self._runs:  # the usual case, on every commit: one check
            return
        with self._guard:
            due = [run for run in self._runs if run_id is None or run.run_id == run_id]
        for run in due:
            with contextlib.suppress(FlowdagError):  # kept by the result: raised when read
                run.state()
