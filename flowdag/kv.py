"""Key-value state across runs: `KV` (``store.kv()``) and the writes a node stages (``ctx.kv``).

Design
------
Entries live in the store's ``kv`` table (`flowdag.stores._tables`), one per
key: one record encoded by the store's codec, with a version, holding the
value, when it was written and expires, the run and node that wrote it, and
the blobs it points at (so converting a store to another codec re-encodes an
entry as it does any record). A value whose encoding is above the inline limit
goes to the store's blob area and the entry holds its `Ref`, as outputs do;
gc reads ``blobs`` to keep those alive and deletes expired entries
(`flowdag._kv_entries.KVHolder`).

Every change is a `KVOp`, applied (`KVWrites`) inside one table transaction,
so it reads the latest committed entry. Outside runs each call of `KV` is its
own transaction. Inside a node, ``ctx.kv`` (`StagedKV`) only records ops; they
travel back with the attempt's outcome and the committer applies them in the
transaction that commits the node's completion (`flowdag._commit`): the node's
writes become durable exactly when its completion does, so a failed, timed-out
or killed attempt writes nothing and a completed node's writes are never
applied twice. An ``update`` function runs at that commit against the latest
committed value, which is how concurrent nodes compose.

An expired entry is absent to every read at once; gc removes it.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import TYPE_CHECKING, Any

from flowdag._kv_entries import (
    ABSENT,
    INLINE_LIMIT,
    TABLE,
    KVOp,
    Stored,
    apply_ops,
    check_fn,
    check_key,
    encode_value,
    keep_large,
    keep_plain,
    parse_entry,
    ttl_seconds,
    value_of,
)
from flowdag._units import Duration
from flowdag.errors import FlowdagError

if TYPE_CHECKING:
    from flowdag.codec import ValueCodec
    from flowdag.stores.base import Store

__all__ = ["KV", "KVEntry", "StagedKV", "check_key"]


@dataclass(frozen=True, slots=True)
class KVEntry:
    """One key's entry: its value, when it was written and expires, and who wrote it.

    ``run_id`` and ``node`` are None for a write made outside runs (``store.kv()``).
    """

    value: Any
    written_at: datetime
    expires_at: datetime | None
    run_id: str | None
    node: str | None


def _public(entry: Stored, value: Any) -> KVEntry:
    return KVEntry(value, entry.written_at, entry.expires_at, entry.run_id, entry.node)


# -- outside runs ------------------------------------------------------------------------------


class KV:
    """Key-value state shared by every run and workflow of a store: ``store.kv()``.

    Each call is one atomic transaction, exclusive across the processes
    sharing the store. Expired entries are absent to every method.
    """

    __slots__ = ("_limit", "_store")

    def __init__(self, store: Store, inline_limit: int | None = INLINE_LIMIT) -> None:
        self._store = store
        self._limit = inline_limit

    def get(self, key: str, default: Any = None) -> Any:
        """The value under ``key``, or ``default`` when it is absent or expired."""
        entry = self._stored(check_key(key))
        return default if entry is None else value_of(entry)

    def entry(self, key: str) -> KVEntry | None:
        """The entry under ``key`` with who wrote it and when, or None."""
        entry = self._stored(check_key(key))
        if entry is None:
            return None
        return _public(entry, value_of(entry))

    def set(self, key: str, value: Any, *, ttl: Duration | None = None) -> None:
        """Set ``key`` to ``value``, expiring ``ttl`` from now (None: never)."""
        op = KVOp("set", check_key(key), ttl=ttl_seconds(ttl), limit=self._limit)
        op.value, op.blobs = encode_value(self._store.codec, key, value)
        keep_plain(op, value)
        keep_large(op, self._store.ref_source)  # before the transaction
        self._apply(op)

    def delete(self, key: str) -> bool:
        """Remove ``key``; whether a live entry was there."""
        return bool(self._apply(KVOp("delete", check_key(key))))

    def update(self, key: str, fn: Callable[[Any], Any], *, ttl: Duration | None = None) -> Any:
        """Set ``key`` to ``fn(old value or None)`` in one transaction; the new value.

        Raises:
            UpdateFailedError: ``fn`` raised (nothing is written).
        """
        check_fn(check_key(key), fn)
        return self._apply(KVOp("update", key, ttl=ttl_seconds(ttl), fn=fn))

    def items(self, prefix: str = "") -> list[tuple[str, Any]]:
        """Every live entry whose key starts with ``prefix``: (key, value), sorted by key."""
        return [(key, entry.value) for key, entry in self.entries(prefix)]

    def entries(self, prefix: str = "") -> list[tuple[str, KVEntry]]:
        """Every live entry whose key starts with ``prefix``, with who wrote it, sorted by key."""
        now = datetime.now(UTC)
        store = self._store
        found = []
        for key, raw in store.table_scan(TABLE, prefix):
            entry = parse_entry(store.ref_source, key, raw)
            if entry.live(now):
                found.append((key, _public(entry, value_of(entry))))
        return found

    def _stored(self, key: str) -> Stored | None:
        raw = self._store.table_get(TABLE, key)
        if raw is None:
            return None
        entry = parse_entry(self._store.ref_source, key, raw)
        return entry if entry.live(datetime.now(UTC)) else None

    def _apply(self, op: KVOp) -> Any:
        op.limit = self._limit
        source = self._store.ref_source
        return self._store.transact_tables(lambda txn: apply_ops(txn, [op], source))

    def __repr__(self) -> str:
        return f"KV({self._store!r})"


# -- inside nodes ------------------------------------------------------------------------------


class StagedKV:
    """``ctx.kv``: committed entries with this attempt's writes laid over them.

    Writes are recorded as `KVOp` and applied when the node's completion is
    committed; reads replay this attempt's ops for the key over the committed
    entry (so an ``update`` function may run here, and again at the commit).
    """

    __slots__ = ("_codec", "_limit", "_node", "_read", "_values", "ops")

    def __init__(
        self,
        read: Callable[[str], Any] | str,
        codec: ValueCodec,
        node: str,
        inline_limit: int | None = INLINE_LIMIT,
    ) -> None:
        # What reads a committed value (absent: ABSENT), or why none can be read here.
        self._read = read
        self._codec = codec
        self._node = node
        self._limit = inline_limit
        self.ops: list[KVOp] = []
        self._values: list[Any] = []  # the decoded value of each set op, for reads

    def get(self, key: str, default: Any = None) -> Any:
        """The value under ``key`` as this node sees it, or ``default``."""
        value = self._current(check_key(key))
        return default if value is ABSENT else value

    def set(self, key: str, value: Any, *, ttl: Duration | None = None) -> None:
        """Stage ``key`` = ``value`` (expiring ``ttl`` after the commit)."""
        op = KVOp("set", check_key(key), ttl=ttl_seconds(ttl), limit=self._limit)
        op.value, op.blobs = encode_value(self._codec, key, value)
        keep_plain(op, value)
        self.ops.append(op)
        self._values.append(value)

    def delete(self, key: str) -> bool:
        """Stage removing ``key``; whether this node sees a value there now."""
        present = self._current(check_key(key)) is not ABSENT
        self.ops.append(KVOp("delete", key))
        self._values.append(None)
        return present

    def update(self, key: str, fn: Callable[[Any], Any], *, ttl: Duration | None = None) -> None:
        """Stage ``key`` = ``fn(latest value or None)``: ``fn`` runs at the commit.

        The commit runs it against the latest committed value, so concurrent
        nodes compose; a `get` of the key in this node runs it too, against what
        the node sees. Keep it pure: it may run more than once.
        """
        check_fn(check_key(key), fn)
        self.ops.append(KVOp("update", key, ttl=ttl_seconds(ttl), fn=fn, limit=self._limit))
        self._values.append(None)

    def _current(self, key: str) -> Any:
        value: Any = ABSENT
        mine = [(op, v) for op, v in zip(self.ops, self._values, strict=True) if op.key == key]
        start = 0
        for i in range(len(mine) - 1, -1, -1):  # from the last set or delete: no read needed
            if mine[i][0].kind != "update":
                start = i
                value = ABSENT if mine[i][0].kind == "delete" else mine[i][1]
                break
        else:
            value = self._committed(key)
        for op, _ in mine[start:]:
            if op.kind == "update":
                value = op.fn(None if value is ABSENT else value)
        return value

    def _committed(self, key: str) -> Any:
        if not callable(self._read):
            raise FlowdagError(f"node '{self._node}': ctx.kv.get({key!r}) {self._read}")
        return self._read(key)
