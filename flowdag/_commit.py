"""Records on their way to the store: the committer thread and the driver's outbox.

The committer makes records durable with `Store.commit`, taking every record
waiting in its queue as one batch: *group commit* (see the design note of
`flowdag._driver`). `Commits` is the driver's side: the records of the current
wake-up, and the count of those handed over but not yet acknowledged.
"""

from __future__ import annotations

import threading
from collections.abc import Callable
from queue import Empty, SimpleQueue

from flowdag.attempt import Outcome
from flowdag.state import ErrorInfo, NodeRecord
from flowdag.stores.base import Store

__all__ = ["Commits", "Committer"]


class Commits:
    """Records on their way to the store: this wake-up's batch, and those in flight."""

    __slots__ = ("committer", "error", "inline", "outbox", "outcomes", "unacknowledged")

    def __init__(self, store: Store, committer: Committer) -> None:
        self.outbox: list[NodeRecord] = []  # records of this wake-up, committed together
        self.unacknowledged = 0  # records handed over (or in the outbox), not yet durable
        self.outcomes: dict[str, Outcome] = {}  # completed nodes' values, until durable
        # A store that keeps nothing on disk commits at once; a background commit
        # would only add a thread hop per batch.
        self.inline = not store.durable
        self.error: ErrorInfo | None = None  # set when the store refused a batch
        self.committer = committer

    def add(self, records: list[NodeRecord]) -> None:
        self.unacknowledged += len(records)
        self.outbox.extend(records)

    def take(self) -> list[NodeRecord]:
        """This wake-up's batch; the outbox starts anew."""
        batch, self.outbox = self.outbox, []
        return batch


class Committer:
    """The thread that makes records durable, a batch per transaction."""

    def __init__(
        self,
        store: Store,
        run_id: str,
        committed: Callable[[list[NodeRecord]], None],
        failed: Callable[[list[NodeRecord], BaseException], None],
    ) -> None:
        self._store = store
        self._run_id = run_id
        self._committed = committed  # called on the committer thread
        self._failed = failed
        self._queue: SimpleQueue[list[NodeRecord] | None] = SimpleQueue()
        self._thread = threading.Thread(target=self._serve, name="flowdag-commit", daemon=True)

    def start(self) -> None:
        self._thread.start()

    def put(self, records: list[NodeRecord]) -> None:
        self._queue.put(records)

    def close(self) -> None:
        """Commit what was handed over, then stop."""
        self._queue.put(None)
        self._thread.join()

    def _serve(self) -> None:
        queue = self._queue
        stop = False
        while not stop:
            batch: list[NodeRecord] = []
            item = queue.get()
            while True:  # everything that arrived meanwhile joins this batch
                if item is None:
                    stop = True
                else:
                    batch.extend(item)
                try:
                    item = queue.get_nowait()
                except Empty:
                    break
            if not batch:
                continue
            try:
                self._store.commit(self._run_id, batch)
            except BaseException as exc:  # whatever it is: the driver waits for word
                self._failed(batch, exc)
            else:
                self._committed(batch)
