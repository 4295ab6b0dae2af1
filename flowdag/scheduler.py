"""`ReadySet`: which nodes may start now. Pure bookkeeping, no threads, no I/O.

Like `graphlib.TopologicalSorter` it lets the caller own the loop: `take` hands
out nodes whose dependencies are all done, `done` and `fail` report outcomes.
A node becomes ready the moment its own dependencies are done, never waiting for
a whole level, so one slow node delays only what depends on it.
"""

from __future__ import annotations

from collections import deque
from collections.abc import Iterable

from flowdag.dag import DAG

__all__ = ["ReadySet"]


class ReadySet:
    """Tracks readiness of a DAG's nodes while a run makes progress."""

    __slots__ = ("_closed", "_ready", "_successors", "_waiting")

    def __init__(self, dag: DAG, completed: Iterable[str] = ()) -> None:
        done = set(completed)
        self._successors: dict[str, list[str]] = {
            name: list(dag.graph.successors(name)) for name in dag.nodes
        }
        # Number of not-yet-done dependencies of each node still to run.
        self._waiting: dict[str, int] = {}
        self._ready: deque[str] = deque()
        self._closed: set[str] = set(done)  # done, failed or skipped
        for name in dag.nodes:
            if name in done:
                continue
            # set(): a dep listed twice is one edge, released by one done().
            missing = sum(1 for dep in set(dag.specs[name].deps) if dep not in done)
            if missing:
                self._waiting[name] = missing
            else:
                self._ready.append(name)

    def take(self, limit: int | None = None) -> list[str]:
        """Remove and return up to ``limit`` ready nodes (all when None), in order."""
        ready = self._ready
        count = len(ready) if limit is None else min(limit, len(ready))
        return [ready.popleft() for _ in range(count)]

    def has_ready(self) -> bool:
        """Whether `take` would return anything."""
        return bool(self._ready)

    def done(self, name: str) -> None:
        """Record that ``name`` completed; its dependents may become ready."""
        self._closed.add(name)
        waiting = self._waiting
        for successor in self._successors[name]:
            left = waiting.get(successor)
            if left is None:
                continue  # already skipped
            if left == 1:
                del waiting[successor]
                self._ready.append(successor)
            else:
                waiting[successor] = left - 1

    def fail(self, name: str) -> list[str]:
        """Record that ``name`` failed; return its descendants, now skipped."""
        self._closed.add(name)
        skipped: list[str] = []
        stack = list(self._successors[name])
        while stack:
            node = stack.pop()
            if node in self._closed:
                continue
            self._closed.add(node)
            self._waiting.pop(node, None)
            skipped.append(node)
            stack.extend(self._successors[node])
        return skipped

    @property
    def blocked(self) -> int:
        """Nodes still waiting on dependencies."""
        return len(self._waiting)
