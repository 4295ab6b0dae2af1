"""Ready nodes that may end with no attempt: early cutoff, cache hits, input nodes.

`ReadyHooks` is the part of the driver (`flowdag._driver`) that decides, for
a node whose deps are done, whether it needs an attempt at all: a provisional
node whose inputs came out the same keeps its stored output (`cut_off`), a
cached node found in the cross-run cache completes from it (`cached`), and an
input node waits for a value or settles with the one given (`take_input`).
It works on the driver's state, on the driver's thread.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import replace
from datetime import UTC, datetime
from typing import TYPE_CHECKING, Any

from flowdag._cache import cached_reason, hit_record
from flowdag._cache_entries import CacheEntry
from flowdag.attempt import Attempt, Outcome, failure, given
from flowdag.errors import CacheKeyError, CorruptStateError
from flowdag.refs import binding
from flowdag.runner import EventKind
from flowdag.state import ErrorInfo, NodeStatus, Reason

if TYPE_CHECKING:
    from flowdag._cache import RunCache
    from flowdag._commit import Commits
    from flowdag._ledger import Ledger
    from flowdag._run_waits import RunWaits
    from flowdag.codec import ValueCodec
    from flowdag.runner import RunEvent
    from flowdag.scheduler import Schedule
    from flowdag.stores._blobs import RefSource

__all__ = ["ReadyHooks"]


class ReadyHooks:
    """The driver's decisions for ready nodes that may need no attempt (a mixin)."""

    # The driver's state these hooks work on (see `flowdag._driver._Driver`).
    run_id: str
    codec: ValueCodec
    ref_source: RefSource
    ledger: Ledger
    schedule: Schedule
    commits: Commits
    running: dict[str, Attempt]
    provisional: set[str]
    cache: RunCache | None
    waits: RunWaits | None
    on_event: Callable[[RunEvent], None] | None
    item_value: Callable[[str], Any]  # a map item's item (`flowdag._map_run.MapHooks`)

    def attempt(self, name: str) -> Attempt:
        raise NotImplementedError  # the driver's

    def on_result(self, attempt: Attempt, outcome: Outcome) -> None:
        raise NotImplementedError  # the driver's

    def emit(
        self,
        kind: EventKind,
        node: str,
        status: NodeStatus,
        attempt: int,
        error: ErrorInfo | None,
    ) -> None:
        raise NotImplementedError  # the driver's

    def cut_off(self, name: str) -> bool:
        """Decide provisional ``name``, its deps done: True if its stored output holds
        (early cutoff: done with no attempt and no commit, its record stays valid)."""
        self.provisional.discard(name)
        stored = self.ledger.cut_off(name)
        if stored is None:
            return False
        self.schedule.gate.release(name)  # it was seated in its pool by take()
        self.schedule.ready.done(name)
        if self.on_event is not None:
            self.emit(EventKind.NODE_FINISHED, name, stored.status, stored.attempts, None)
        return True

    def cached(self, name: str) -> bool:
        """Look ready ``name`` up in the cross-run cache (`flowdag._cache`): True if
        a hit completed it, or its ``cache_key`` failed it; False to run it."""
        cache = self.cache
        assert cache is not None
        ledger = self.ledger
        mapped = ledger.items.get(name) if cache.maps else None  # a map's item: (over, digest)
        item = None if mapped is None else (mapped[1], self.item_value(name))
        try:
            entry = cache.lookup(name, ledger.states, ledger.outputs, item)
        except (CacheKeyError, CorruptStateError) as exc:
            attempt = self.running[name] = self.attempt(name)
            self.on_result(attempt, failure(exc, retryable=False))
            return True
        if entry is None:
            return False
        self.schedule.gate.release(name)  # it was seated in its pool by take()
        if isinstance(entry, str):
            return True  # parked behind the item computing its key: see `release_parked`
        ledger.reasons[name] = cached_reason(entry)
        self.complete_from(name, entry)
        return True

    def complete_from(self, name: str, entry: CacheEntry) -> None:
        """Complete ``name`` with ``entry``'s output, without calling it."""
        now = datetime.now(UTC)
        with binding(self.ref_source, f"run '{self.run_id}', node '{name}' (cached)"):
            value = self.codec.decode(entry.output)
        self.commits.outcomes[name] = Outcome(now, now, value)
        self.commits.add([hit_record(name, entry, self.ledger, now)])

    def release_parked(self, name: str) -> None:
        """``name`` ended: the items parked behind it (same map, same key) complete
        from the entry it made, or, if it made none, are looked up again."""
        assert self.cache is not None
        entry, parked = self.cache.release(name)
        for item in parked:
            if entry is None:
                self.schedule.retry(item, 0.0)  # due at once: dispatched, looked up again
                continue
            why = f"same cache key as '{name}', computed in this run"
            self.ledger.reasons[item] = Reason("cached", why)
            self.complete_from(item, entry)

    def take_input(self, name: str) -> None:
        """Input node ``name`` is ready: it waits for a value, or settles (`flowdag._run_waits`)."""
        assert self.waits is not None
        self.schedule.gate.release(name)  # it was seated in its pool by take(); it runs nothing
        try:
            settled = self.waits.ready(name, self.ledger.outputs)
        except Exception as exc:  # its prompt raised, or the store failed
            attempt = self.running[name] = self.attempt(name)
            self.on_result(attempt, failure(exc, retryable=False))
            return
        if settled is None:
            state = self.ledger.states[name]
            if state.status is NodeStatus.WAITING:
                return  # still waiting at the end-of-drive recheck: reported already
            self.ledger.states[name] = replace(state, status=NodeStatus.WAITING)
            if self.on_event is not None:
                self.emit(EventKind.NODE_WAITING, name, NodeStatus.WAITING, state.attempts, None)
            return
        assert settled.reason is not None or settled.error is not None
        if settled.reason is not None:
            self.ledger.reasons[name] = settled.reason
        attempt = self.running[name] = self.attempt(name)
        if self.on_event is not None:  # taking the value is the node's attempt
            self.emit(EventKind.NODE_STARTED, name, NodeStatus.RUNNING, attempt.number, None)
        if settled.error is not None:
            outcome = failure(settled.error, settled.started_at, retryable=False)
        else:
            outcome = given(attempt, settled.started_at, settled.value)
        self.on_result(attempt, outcome)

    def settled_waits(self) -> bool:
        """With nothing else to do, look at the waits again: True if one settled meanwhile."""
        if self.waits is None or not self.waits.open or self.commits.error is not None:
            return False
        waiting = self.waits.recheck()
        for name in waiting:
            self.take_input(name)
        return len(self.waits.open) < len(waiting)

    def failed_tables(self, name: str) -> dict[tuple[str, str], bytes | None] | None:
        """The table writes of ``name``'s failure: its wait ends, its cache entry goes."""
        if self.waits is not None and name in self.waits.ending:
            return self.waits.clearing(name)  # input nodes are never cached
        if self.cache is None:
            return None
        tables = self.cache.failed(name)
        if self.cache.parked:
            self.release_parked(name)
        return tables
