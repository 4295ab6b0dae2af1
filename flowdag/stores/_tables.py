"""Store-wide tables: bytes under string keys, shared by every run of a store.

Beside its runs a store keeps a few named *tables* (`TABLES`): ``kv`` for
cross-run key-value state (`flowdag.kv`), ``cache`` for the cross-run cache
and ``waits`` for input nodes waiting for values (`flowdag.waits`). A backend
keeps bytes only, as it does for runs; what an entry means (its value, ttl,
writer) is the business of the layer above.

Every change to tables is one transaction (`TableTxn`): exclusive across the
threads and processes sharing the store, atomic (all of it or none of it, also
across a ``kill -9``) and durable when it returns. A transaction may also carry
the records of a run's `Store.commit`: then the node records and the table
changes become durable together, so a node's key-value writes commit exactly
once with its completion. Reads inside a transaction see its own writes.

Keys are opaque text (the layer above checks their shape); they never become
paths. `StagedTables` is the overlay a backend can build its transaction on:
it reads through to the committed state and keeps the writes to apply.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator, Mapping
from typing import Protocol

from flowdag.errors import InvalidArgumentError

__all__ = ["TABLES", "StagedTables", "TableReader", "TableTxn", "check_table"]

#: The tables a store keeps.
TABLES = ("kv", "cache", "waits")


def check_table(table: str) -> str:
    """``table`` if it names one of `TABLES`, else `InvalidArgumentError`."""
    if table not in TABLES:
        raise InvalidArgumentError(f"unknown table {table!r}: use one of {', '.join(TABLES)}")
    return table


class TableReader(Protocol):
    """Committed table entries, read."""

    def get(self, table: str, key: str) -> bytes | None:
        """The entry under ``key``, or None."""

    def scan(self, table: str, prefix: str = "") -> Iterator[tuple[str, bytes]]:
        """Every entry whose key starts with ``prefix``, in key order."""


class TableTxn(TableReader, Protocol):
    """One transaction over the tables: reads see its own writes."""

    def put(self, table: str, key: str, value: bytes) -> None:
        """Set ``key`` to ``value`` when the transaction commits."""

    def delete(self, table: str, key: str) -> None:
        """Remove ``key`` (if present) when the transaction commits."""


class StagedTables:
    """A `TableTxn` that stages writes over a reader of the committed state.

    ``writes`` maps (table, key) to the staged bytes, or None for a delete, in
    the order they were last made; a backend applies them at commit.
    """

    __slots__ = ("_base", "writes")

    def __init__(self, base: TableReader) -> None:
        self._base = base
        self.writes: dict[tuple[str, str], bytes | None] = {}

    def get(self, table: str, key: str) -> bytes | None:
        staged = self.writes.get((table, key), self)
        if staged is not self:
            return staged  # type: ignore[return-value]  # bytes or None, never self
        return self._base.get(table, key)

    def scan(self, table: str, prefix: str = "") -> Iterator[tuple[str, bytes]]:
        merged = dict(self._base.scan(table, prefix))
        for (name, key), value in self.writes.items():
            if name == table and key.startswith(prefix):
                if value is None:
                    merged.pop(key, None)
                else:
                    merged[key] = value
        for key in sorted(merged):
            yield key, merged[key]

    def put(self, table: str, key: str, value: bytes) -> None:
        self.writes.pop((check_table(table), key), None)  # keep the order of the last write
        self.writes[table, key] = bytes(value)

    def delete(self, table: str, key: str) -> None:
        self.writes.pop((check_table(table), key), None)
        self.writes[table, key] = None


class DictTables:
    """Tables as dicts, for stores that keep everything in memory (and tests)."""

    __slots__ = ("tables",)

    def __init__(self) -> None:
        self.tables: dict[str, dict[str, bytes]] = {name: {} for name in TABLES}

    def get(self, table: str, key: str) -> bytes | None:
        return self.tables[check_table(table)].get(key)

    def scan(self, table: str, prefix: str = "") -> Iterator[tuple[str, bytes]]:
        entries = self.tables[check_table(table)]
        return iter([(k, entries[k]) for k in sorted(entries) if k.startswith(prefix)])

    def apply(self, writes: Mapping[tuple[str, str], bytes | None]) -> None:
        """Apply a transaction's staged writes."""
        for (table, key), value in writes.items():
            if value is None:
                self.tables[table].pop(key, None)
            else:
                self.tables[table][key] = value


#: What a transaction runs: given the transaction, it stages its writes and
#: returns what the backend commits with them for a run (nodes, data), if any.
TableWork = Callable[[TableTxn], None]
