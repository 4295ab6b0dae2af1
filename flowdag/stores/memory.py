"""A store that keeps runs in this process's memory: for tests and throwaway runs."""

from __future__ import annotations

import os
import threading
from collections.abc import Callable, Iterator, Mapping
from dataclasses import dataclass

from flowdag.codec import ValueCodec
from flowdag.errors import RunNotFoundError
from flowdag.stores._tables import DictTables, StagedTables, TableReader, TableTxn
from flowdag.stores.base import RunLock, Store, StoredNode, StoredRun

__all__ = ["MemoryStore"]


class MemoryStore(Store):
    """Runs as bytes in a dict; nothing survives the process.

    Saved and loaded runs are copies, so callers never alias the stored state.
    ``create`` is accepted for `open_store` and ignored: there is nothing to create.
    A checked save (``copy_run``) needs no staging here: a crash loses the store whole.
    """

    scheme = "memory"
    durable = False

    def __init__(self, *, codec: ValueCodec | None = None, create: bool = True) -> None:
        super().__init__(codec=codec)
        self._guard = threading.Lock()
        self._runs: dict[str, StoredRun] = {}
        self._seals: dict[str, tuple[bytes, bytes]] = {}  # run id -> (token, seal); writes drop
        self._tables = DictTables()
        self._locks = ThreadRunLocks()
        self._tables_guard = threading.Lock()

    def _save(self, run_id: str, run: StoredRun) -> None:
        copy = run.copy()
        with self._guard:
            self._runs[run_id] = copy
            self._seals.pop(run_id, None)

    def _load(self, run_id: str) -> StoredRun:
        with self._guard:
            return self._get(run_id).copy()

    def _load_metas(self, run_id: str) -> tuple[bytes, dict[str, bytes]]:
        with self._guard:
            run = self._get(run_id)
            return run.header, {name: node.meta for name, node in run.nodes.items()}

    def _commit(
        self, run_id: str, nodes: Mapping[str, StoredNode], data: Mapping[str, bytes | None]
    ) -> None:
        with self._guard:
            self._get(run_id).apply(nodes, data)
            self._seals.pop(run_id, None)

    def _table_reader(self) -> TableReader:
        return _Guarded(self._tables, self._guard)

    def _transact_tables(
        self,
        run_id: str | None,
        work: Callable[[TableTxn], tuple[Mapping[str, StoredNode], Mapping[str, bytes | None]]],
    ) -> None:
        with self._tables_guard:  # one transaction at a time; readers are not held up
            with self._guard:
                run = None if run_id is None else self._get(run_id)
            txn = StagedTables(_Guarded(self._tables, self._guard))
            nodes, data = work(txn)
            with self._guard:
                if run is not None:
                    run.apply(nodes, data)
                if run_id is not None:
                    self._seals.pop(run_id, None)
                self._tables.apply(txn.writes)

    def _list_runs(self) -> list[str]:
        with self._guard:
            return list(self._runs)

    def _delete(self, run_id: str) -> bool:
        with self._guard:
            self._seals.pop(run_id, None)
            return self._runs.pop(run_id, None) is not None

    def _sealed(self, run_id: str) -> tuple[bytes, bytes] | None:
        with self._guard:
            self._get(run_id)
            return self._seals.get(run_id)

    def _put_seal(self, run_id: str, seal: bytes) -> bytes:
        token = os.urandom(8)
        with self._guard:
            self._get(run_id)
            self._seals[run_id] = (token, seal)
        return token

    def _lock(self, run_id: str) -> RunLock:
        return self._locks.acquire(run_id)

    def _lock_holder(self, run_id: str) -> int | None:
        return self._locks.holder(run_id)

    def _close(self) -> None:
        with self._guard:
            self._runs.clear()
            self._seals.clear()

    def _get(self, run_id: str) -> StoredRun:
        # Caller holds self._guard.
        run = self._runs.get(run_id)
        if run is None:
            raise RunNotFoundError(f"run '{run_id}' not found in memory://")
        return run


class _Guarded:
    """Reads of dict tables under the store's guard."""

    __slots__ = ("_guard", "_tables")

    def __init__(self, tables: DictTables, guard: threading.Lock) -> None:
        self._tables, self._guard = tables, guard

    def get(self, table: str, key: str) -> bytes | None:
        with self._guard:
            return self._tables.get(table, key)

    def scan(self, table: str, prefix: str = "") -> Iterator[tuple[str, bytes]]:
        with self._guard:
            return self._tables.scan(table, prefix)


class ThreadRunLocks:
    """Per-run locks within one process, for stores that live in memory."""

    def __init__(self) -> None:
        self._guard = threading.Lock()
        self._held: set[str] = set()

    def acquire(self, run_id: str) -> RunLock:
        from flowdag.errors import RunLockedError

        with self._guard:
            if run_id in self._held:
                raise RunLockedError(
                    f"run '{run_id}' is already running in this process; "
                    "wait for it to finish or use another run id"
                )
            self._held.add(run_id)
        return _ThreadRunLock(self, run_id)

    def holder(self, run_id: str) -> int | None:
        """This process's pid while it holds ``run_id``, else None."""
        with self._guard:
            return os.getpid() if run_id in self._held else None

    def _release(self, run_id: str) -> None:
        with self._guard:
            self._held.discard(run_id)


@dataclass(slots=True)
class _ThreadRunLock:
    owner: ThreadRunLocks
    run_id: str

    def release(self) -> None:
        self.owner._release(self.run_id)
