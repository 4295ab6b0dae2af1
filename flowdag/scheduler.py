"""Which nodes may start now, and when. Pure bookkeeping: no threads, no I/O, no clock.

Like `graphlib.TopologicalSorter` these let the caller own the loop:

- `ReadySet`: `take` hands out nodes whose dependencies are all done, `done`
  and `fail` report outcomes. A node becomes ready the moment its own
  dependencies are done, never waiting for a whole level, so one slow node
  delays only what depends on it.
- `PoolGate`: a node of a capped pool starts only while the pool has a free
  seat; the others are parked, oldest first, until a seat frees.
- `TimerHeap`: things due at a time (retries, deadlines), earliest first.
- `Schedule`: the three together, as the driver asks: "give me up to N nodes
  to start": due retries first, then parked nodes whose pool has a seat, then
  newly ready ones.

Times are plain floats the caller reads from its clock (``time.monotonic``).
"""

from __future__ import annotations

import heapq
from collections import deque
from collections.abc import Iterable, Mapping
from typing import Generic, TypeVar

from flowdag.dag import DAG

__all__ = ["PoolGate", "ReadySet", "Schedule", "TimerHeap"]

T = TypeVar("T")


class ReadySet:
    """Tracks readiness of a DAG's nodes while a run makes progress."""

    __slots__ = ("_dependents", "_items", "_ready", "_waiting")

    def __init__(self, dag: DAG, completed: Iterable[str] = ()) -> None:
        done = set(completed)
        self._dependents = dag.dependents  # node -> the nodes that depend on it
        self._items: dict[str, tuple[str, ...]] = {}  # a map's item -> (its map node,)
        # Number of not-yet-done dependencies of each node still to run. A node
        # that depends on one not done is here until it is ready or skipped: no
        # set of the nodes done is kept (one entry per node a run ends with).
        self._waiting: dict[str, int] = {}
        self._ready: deque[str] = deque()
        specs = dag.specs
        for name in dag.nodes:
            if name in done:
                continue
            deps = specs[name].deps
            # set(): a dep listed twice is one edge, released by one done().
            if done:
                missing = sum(1 for dep in set(deps) if dep not in done)
            else:  # a new run: every dep is missing (no set for one dep)
                missing = len(deps) if len(deps) < 2 else len(set(deps))
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
        waiting = self._waiting
        items = self._items  # `_successors`, inlined: once per node
        successors = items.get(name) if items else None
        if successors is None:
            successors = self._dependents(name)
        for successor in successors:
            left = waiting.get(successor)
            if left is None:
                continue  # already skipped
            if left == 1:
                del waiting[successor]
                self._ready.append(successor)
            else:
                waiting[successor] = left - 1
        if successors and not waiting:
            # All ready (a fan-out's source done): a dict emptied keeps its table,
            # a slot per node it held, for the rest of the run.
            self._waiting = {}

    def expand(self, node: str, items: list[str]) -> None:
        """Run ``items`` before ``node`` (a map node, taken already) ends.

        Each item is ready now (its deps are ``node``'s, all done); ``node`` is
        ready again once every item is reported: `done` for an item that
        completed or one whose failure ``node`` decides on, `fail` to skip ``node``.
        """
        if not items:
            self._ready.append(node)
            return
        for item in items:
            self._items[item] = (node,)
            self._ready.append(item)
        self._waiting[node] = len(items)

    def _successors(self, name: str) -> tuple[str, ...]:
        if self._items:
            found = self._items.get(name)
            if found is not None:
                return found
        return self._dependents(name)

    def fail(self, name: str) -> list[str]:
        """Record that ``name`` failed; return its descendants, now skipped."""
        waiting = self._waiting
        skipped: list[str] = []
        stack = list(self._successors(name))
        while stack:
            node = stack.pop()
            # A descendant of a node not done waits, unless skipped already; one
            # that does not (done before this call, or skipped) ends the walk there.
            if waiting.pop(node, None) is None:
                continue
            skipped.append(node)
            stack.extend(self._successors(node))
        return skipped

    @property
    def blocked(self) -> int:
        """Nodes still waiting on dependencies."""
        return len(self._waiting)


class PoolGate:
    """Seats in capped pools: admits a node while its pool has room, else parks it.

    Invariant: a pool is *open* (listed for `next_admissible`) exactly when it has
    parked nodes and a free seat. It stays open however long the caller takes to
    have room for its nodes: forgetting an open pool strands its parked nodes.
    Nodes with no pool, or a pool without a cap, are always admitted.
    """

    __slots__ = ("_caps", "_open", "_parked", "_pool_of", "_seated", "capped")

    def __init__(self, caps: Mapping[str, int], pool_of: Mapping[str, str | None]) -> None:
        """``caps``: pool -> seats; ``pool_of``: node -> its pool (or None)."""
        self._caps = dict(caps)
        #: Whether any pool has a cap: if not, `admit` admits and `release` frees nothing.
        self.capped = bool(self._caps)
        self._pool_of = {node: pool for node, pool in pool_of.items() if pool in self._caps}
        self._seated = dict.fromkeys(self._caps, 0)
        self._parked: dict[str, deque[str]] = {pool: deque() for pool in self._caps}
        self._open: dict[str, None] = {}  # an ordered set: first opened, first served

    def admit(self, name: str) -> bool:
        """Seat ``name`` and return True, or park it (its pool is full) and return False."""
        pool = self._pool_of.get(name)
        if pool is None:  # the fast path: most nodes have no capped pool
            return True
        if self._seated[pool] >= self._caps[pool]:
            self._parked[pool].append(name)  # a full pool is not open: nothing to update
            return False
        self._seated[pool] += 1
        self._update(pool)
        return True

    def release(self, name: str) -> None:
        """``name`` stopped running: free its seat, which opens its pool to parked nodes."""
        pool = self._pool_of.get(name)
        if pool is not None:
            self._seated[pool] -= 1
            self._update(pool)

    def add(self, name: str, pool: str | None) -> None:
        """A node added while the run goes (a map's item), in ``pool`` (or none)."""
        if pool is not None and pool in self._caps:
            self._pool_of[name] = pool

    def next_admissible(self) -> str | None:
        """Seat and return the oldest parked node of an open pool, or None if none is."""
        for pool in self._open:
            self._seated[pool] += 1
            name = self._parked[pool].popleft()
            self._update(pool)
            return name
        return None

    def has_admissible(self) -> bool:
        """Whether `next_admissible` would return a node."""
        return bool(self._open)

    @property
    def parked(self) -> list[str]:
        """Parked nodes, pool by pool, oldest first."""
        return [name for nodes in self._parked.values() for name in nodes]

    def _update(self, pool: str) -> None:
        """Keep the invariant: open iff parked nodes and a free seat."""
        if self._parked[pool] and self._seated[pool] < self._caps[pool]:
            self._open[pool] = None
        else:
            self._open.pop(pool, None)


class TimerHeap(Generic[T]):
    """Items due at a time, earliest first; items due at one time keep their order."""

    __slots__ = ("_heap", "_seq")

    def __init__(self) -> None:
        self._heap: list[tuple[float, int, T]] = []
        self._seq = 0  # breaks ties, so items are never compared

    def push(self, when: float, item: T) -> None:
        """Add ``item``, due at ``when``."""
        self._seq += 1
        heapq.heappush(self._heap, (when, self._seq, item))

    def next_at(self) -> float | None:
        """When the earliest item is due, or None if there is none."""
        return self._heap[0][0] if self._heap else None

    def first(self) -> T:
        """The earliest item (the heap must not be empty)."""
        return self._heap[0][2]

    def pop(self) -> T:
        """Remove and return the earliest item (the heap must not be empty)."""
        return heapq.heappop(self._heap)[2]

    def pop_due(self, now: float) -> list[T]:
        """Remove and return the items due at or before ``now``, earliest first."""
        heap = self._heap
        due: list[T] = []
        while heap and heap[0][0] <= now:
            due.append(heapq.heappop(heap)[2])
        return due

    def clear(self) -> None:
        """Drop every item."""
        self._heap.clear()

    def __len__(self) -> int:
        return len(self._heap)


class Schedule:
    """What to start next: due retries, then parked nodes given a seat, then ready nodes.

    The caller reports each node's end to `ready` (``done``/``fail``) and to
    `gate` (``release``), schedules retries with `retry`, and moves the retries
    whose time has come with `fire`.
    """

    __slots__ = ("_due", "gate", "ready", "retries")

    def __init__(self, ready: ReadySet, gate: PoolGate) -> None:
        self.ready = ready
        self.gate = gate
        self.retries: TimerHeap[str] = TimerHeap()  # failed nodes waiting out their delay
        self._due: deque[str] = deque()  # retries whose delay is over, waiting for a slot

    def take(self, free: int) -> list[str]:
        """Up to ``free`` nodes to start now, in priority order, each seated in its pool."""
        due, gate, ready = self._due, self.gate, self.ready
        if not due and not gate.capped:  # the usual case: no retry due, no pool capped
            return ready.take(free)
        names: list[str] = []
        while free > 0 and due:
            name = due.popleft()
            if gate.admit(name):
                names.append(name)
                free -= 1
        while free > 0 and (parked := gate.next_admissible()) is not None:
            names.append(parked)
            free -= 1
        while free > 0 and ready.has_ready():
            for name in ready.take(free):
                if gate.admit(name):
                    names.append(name)
                    free -= 1
        return names

    def has_startable(self) -> bool:
        """Whether `take` would return a node, given a free slot."""
        return bool(self._due) or self.gate.has_admissible() or self.ready.has_ready()

    def retry(self, name: str, when: float) -> None:
        """Start ``name`` again once ``when`` has come (see `fire`)."""
        self.retries.push(when, name)

    def fire(self, now: float) -> None:
        """Make the retries due at ``now`` startable, in the order they fell due."""
        if self.retries:
            self._due.extend(self.retries.pop_due(now))

    def cancel_retries(self) -> None:
        """Drop every retry, waiting or due: nothing new is to start."""
        self.retries.clear()
        self._due.clear()
