"""The table side of `Store`: its public table and key-value methods, and their hooks.

Beside its runs a store keeps store-wide *tables* of bytes under string keys
(`flowdag.stores._tables`: key-value state and the cross-run cache), changed in
transactions that may carry a run's commit, so both become durable together.
`StoreTables` is a mixin of `flowdag.stores.base.Store`: the public methods
(`table_get`, `table_scan`, `table_keys`, `transact_tables`, `kv`) check their
input and call the backend hooks (`_table_reader`, `_transact_tables`,
`_table_keys`); a backend that keeps no tables leaves the hooks alone and
every table method raises `StoreError`.
"""

from __future__ import annotations

from abc import ABC, abstractmethod
from collections.abc import Callable, Mapping
from typing import TYPE_CHECKING, TypeVar, cast

from flowdag.errors import StoreError
from flowdag.stores._stored import StoredNode
from flowdag.stores._tables import TableReader, TableTxn, check_table

if TYPE_CHECKING:
    from flowdag.kv import KV
    from flowdag.stores.base import Store

__all__ = ["StoreTables"]

T = TypeVar("T")


class StoreTables(ABC):
    """The table and key-value methods of `Store` (see the module docstring)."""

    @abstractmethod
    def _check_open(self) -> None:
        """Raise `StoreError` if the store is closed (`Store` implements it)."""

    # -- public API ---------------------------------------------------------

    def kv(self) -> KV:
        """The store's key-value state, shared by every run and workflow (`flowdag.kv`)."""
        from flowdag.kv import KV

        return KV(cast("Store", self))  # only a Store mixes this class in

    def table_get(self, table: str, key: str) -> bytes | None:
        """The committed entry under ``key`` in ``table`` (see `flowdag.stores._tables`)."""
        self._check_open()
        return self._table_reader().get(check_table(table), key)

    def table_scan(self, table: str, prefix: str = "") -> list[tuple[str, bytes]]:
        """The committed entries of ``table`` whose keys start with ``prefix``, in key order."""
        self._check_open()
        return list(self._table_reader().scan(check_table(table), prefix))

    def table_keys(self, table: str, prefix: str = "") -> list[str]:
        """The keys of ``table`` that start with ``prefix``, sorted, without reading values."""
        self._check_open()
        return self._table_keys(check_table(table), prefix)

    def transact_tables(self, work: Callable[[TableTxn], T]) -> T:
        """Run ``work`` as one transaction over the store's tables and return its result.

        Exclusive across the threads and processes sharing the store, atomic and
        durable: ``work`` reads the latest committed entries (and its own writes),
        and its writes commit together when it returns, or not at all when it raises.
        """
        self._check_open()
        result: list[T] = []

        def staged(txn: TableTxn) -> tuple[dict[str, StoredNode], dict[str, bytes | None]]:
            result.append(work(txn))  # the last run counts: a backend may retry
            return {}, {}

        self._transact_tables(None, staged)
        return result[-1]

    def _keeps_tables(self) -> bool:
        """Whether this store's backend keeps tables (every kind here does)."""
        return type(self)._transact_tables is not StoreTables._transact_tables

    # -- backend hooks --------------------------------------------------------

    def _table_keys(self, table: str, prefix: str) -> list[str]:
        """Override where a backend can list keys without reading the values."""
        return [key for key, _ in self._table_reader().scan(table, prefix)]

    def _table_reader(self) -> TableReader:
        """The committed state of the tables (each call reads afresh)."""
        raise StoreError(f"{type(self).__name__} keeps no tables")

    def _transact_tables(
        self,
        run_id: str | None,
        work: Callable[[TableTxn], tuple[Mapping[str, StoredNode], Mapping[str, bytes | None]]],
    ) -> None:
        """Run ``work`` in one exclusive, atomic, durable transaction over the tables.

        ``work`` stages table writes and returns the nodes and data to commit to
        run ``run_id`` in the same transaction (none when ``run_id`` is None);
        raise `RunNotFoundError` if that run was never saved.
        """
        raise StoreError(f"{type(self).__name__} keeps no tables")
