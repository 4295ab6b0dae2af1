"""The cross-run cache: entries in the store's ``cache`` table, looked up before a node runs.

A node with ``cache=True`` (or a ``cache_key=``) is keyed on its workflow, its
name, its code fingerprint, its ``cache_version`` and either each input's
stored digest (the digests the store already has: no input is encoded again)
or the canonical form of what ``cache_key`` returns (`flowdag._cache_keys`,
`flowdag._entry_keys`).
Before the node runs, the driver looks the key up: a *hit* completes the node
with the entry's output, as stored (a blob output's entry holds its Ref, so no
bytes are copied), without calling it; a *miss* runs it, and its completion
record carries the new entry into the same transaction (`NodeRecord.tables`),
so the entry rides the group commit. An entry that expired, or whose blob is
gone or expired, is a miss that the new entry replaces.

An entry is stored under ``workflow/node/digest`` (`flowdag._entry_keys.entry_key`),
its key's digest after the names that keep a commit's entries together. The
first release stored it under the bare digest: such an entry is still found,
and replaced under the new key when it is stale or refreshed.

An entry is one record, encoded by the store's codec::

    [1, workflow, node, run_id, output, digest, created_us, expires_us, blobs]

``output`` is the node's output as stored (bytes), ``digest`` its output
digest, ``expires_us`` None for never, ``blobs`` {sha256: expires_us} of the
refs the output holds (gc keeps them while the entry lives).
"""

from __future__ import annotations

import time
from collections.abc import Iterable, Iterator, Mapping
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from typing import TYPE_CHECKING, Any

from flowdag._cache_keys import canonical
from flowdag._entry_keys import KeyHeads, entry_key, inputs_digest, user_key_digest
from flowdag._ledger import Ledger
from flowdag.codec import ValueCodec
from flowdag.dag import DAG
from flowdag.errors import (
    CacheKeyError,
    CorruptStateError,
    InvalidArgumentError,
    InvalidArgumentTypeError,
)
from flowdag.state import NodeRecord, NodeState, NodeStatus, Reason
from flowdag.stores._blobs import BlobArea
from flowdag.stores._fields import moment, shown, to_micros
from flowdag.stores._tables import TableTxn
from flowdag.stores.base import Store

if TYPE_CHECKING:
    from flowdag.gc import GCReport
    from flowdag.stores._blobcopy import BlobCopier

__all__ = [
    "CacheEntry",
    "CacheHolder",
    "RunCache",
    "cache_entries",
    "cached_reason",
    "check_refresh",
    "clear_cache",
    "convert_entry",
    "entry_record",
    "hit_record",
    "read_entry",
]

TABLE = "cache"
_FORMAT = 1
_MICROSECOND = timedelta(microseconds=1)


@dataclass(frozen=True, slots=True)
class CacheEntry:
    """One cached output: where it came from, the output as stored, and its lifetime."""

    workflow: str
    node: str
    run_id: str
    output: bytes
    digest: str
    created_at: datetime
    expires_at: datetime | None = None
    blobs: Mapping[str, datetime | None] = field(default_factory=dict)

    def usable(self, now: datetime, blobs: BlobArea) -> bool:
        """Unexpired, and every blob its output refers to unexpired and in ``blobs``."""
        if self.expires_at is not None and now >= self.expires_at:
            return False
        return all(
            (expires is None or now < expires) and blobs.exists(sha256)
            for sha256, expires in self.blobs.items()
        )


def entry_record(codec: ValueCodec, entry: CacheEntry) -> bytes:
    """``entry`` as the bytes the cache table keeps (see the module docstring)."""
    created = to_micros(entry.created_at)
    assert created is not None
    return _record(
        codec,
        entry.workflow,
        entry.node,
        entry.run_id,
        entry.output,
        entry.digest,
        created,
        to_micros(entry.expires_at),
        {sha: to_micros(at) for sha, at in entry.blobs.items()},
    )


def _record(
    codec: ValueCodec,
    workflow: str,
    node: str,
    run_id: str,
    output: bytes,
    digest: str,
    created_us: int,
    expires_us: int | None,
    blobs_us: Mapping[str, int | None],
) -> bytes:
    # One layout for every writer: the fields in order, times in microseconds.
    fields = (workflow, node, run_id, output, digest, created_us, expires_us, blobs_us)
    return codec.encode([_FORMAT, *fields])


def read_entry(codec: ValueCodec, key: str, raw: bytes) -> CacheEntry:
    """The entry stored under ``key``, checked.

    Raises:
        CorruptStateError: it is not an entry this release wrote.
    """
    try:
        record = codec.decode(raw)
        if type(record) is not list or len(record) != 9 or record[0] != _FORMAT:
            raise CorruptStateError(f"it is {shown(record)}, not a cache entry")
        _, workflow, node, run_id, output, digest, created, expires, blobs = record
        texts = (workflow, node, run_id, digest)
        if not all(type(t) is str for t in texts) or type(output) is not bytes:
            raise CorruptStateError("a field has the wrong type")
        if type(blobs) is not dict or not all(type(sha) is str for sha in blobs):
            raise CorruptStateError(f"its blobs are {shown(blobs)}, not sha256 -> expiry")
        return CacheEntry(
            workflow,
            node,
            run_id,
            output,
            digest,
            moment(created, "cache entry created"),
            None if expires is None else moment(expires, "cache entry expires"),
            {sha: None if at is None else moment(at, "blob expiry") for sha, at in blobs.items()},
        )
    except (CorruptStateError, ValueError, TypeError) as exc:
        raise CorruptStateError(
            f"cache entry {key} is damaged ({exc}); `flowdag cache clear` removes the cache"
        ) from exc


class RunCache:
    """The cache as one call of `flowdag.run` uses it (on the driver's thread).

    `lookup` decides a ready node: a hit (its entry), or None to run it; the
    entry a completed node writes is made by `entry_for`.
    """

    def __init__(
        self,
        dag: DAG,
        store: Store,
        run_id: str,
        fingerprints: Mapping[str, Any],
        refresh: bool | frozenset[str],
    ) -> None:
        self.dag = dag
        self.store = store
        self.codec = store.codec
        self.run_id = run_id
        self.fingerprints = fingerprints
        self.refresh = refresh
        self.nodes = {name for name in dag.nodes if dag.specs[name].cache is not None}
        self.keys: dict[str, str] = {}  # node -> the key its completion writes
        # The keys in the cache when the run first looks (None: not read yet). A
        # key not among them is a miss without a store read: a lookup per node cost
        # a read transaction, and under a busy run each waits for the GIL.
        # Entries other processes store meanwhile are not seen by this run.
        self.present: frozenset[str] | None = None
        self.stale: dict[str, str] = {}  # node -> the key of its unusable entry
        self.heads = KeyHeads(dag.name)

    def lookup(
        self, name: str, states: Mapping[str, NodeState], outputs: Mapping[str, Any]
    ) -> CacheEntry | None:
        """A usable entry for ready ``name``, or None to run it (its completion then
        writes the entry, unless it has no key).

        Raises:
            CacheKeyError: the node's ``cache_key`` raised or gave no valid key.
            CorruptStateError: the entry under its key is damaged.
        """
        digest = self._digest(name, states, outputs)
        if digest is None:
            return None
        key = self.keys[name] = entry_key(self.dag.name, name, digest)
        present = self.present
        if present is None:
            present = self.present = frozenset(self.store.table_keys(TABLE))
        # Under its key, or under the bare digest where the first release put it.
        found = key if key in present else digest if digest in present else None
        if self.refresh is True or (self.refresh and name in self.refresh):
            if found == digest:  # its completion writes the new key: the old one goes
                self.stale[name] = digest
            return None
        if found is None:
            return None
        raw = self.store.table_get(TABLE, found)
        if raw is None:
            return None
        entry = read_entry(self.codec, found, raw)
        if not entry.usable(datetime.now(UTC), self.store.blobs):
            self.stale[name] = found  # replaced when the node completes, removed if it fails
            return None
        del self.keys[name]
        return entry

    def entry_for(
        self,
        name: str,
        output: bytes | None,
        digest: str | None,
        blobs: Mapping[str, datetime | None] | None,
    ) -> dict[tuple[str, str], bytes | None] | None:
        """The table write of ``name``'s completion: its new entry (None: no key)."""
        key = self.keys.pop(name, None)
        stale = self.stale.pop(name, None)
        if key is None or output is None or digest is None:
            return None
        # The record written straight from the fields (a CacheEntry, and datetimes
        # only to turn back into microseconds, cost the driver's thread as much again).
        created = time.time_ns() // 1000
        ttl = self.dag.specs[name].cache.ttl  # type: ignore[union-attr]  # a cached node
        expires = None if ttl is None else created + ttl // _MICROSECOND
        held = {sha: to_micros(at) for sha, at in blobs.items()} if blobs else {}
        record = _record(
            self.codec, self.dag.name, name, self.run_id, output, digest, created, expires, held
        )
        if stale is not None and stale != key:  # a stale entry of the first release's
            return {(TABLE, stale): None, (TABLE, key): record}
        return {(TABLE, key): record}

    def failed(self, name: str) -> dict[tuple[str, str], bytes | None] | None:
        """The table write of ``name``'s failure: its stale entry removed, if it had one."""
        self.keys.pop(name, None)
        stale = self.stale.pop(name, None)
        return None if stale is None else {(TABLE, stale): None}

    def _digest(
        self, name: str, states: Mapping[str, NodeState], outputs: Mapping[str, Any]
    ) -> str | None:
        """The `cache_key` digest of ready ``name`` (None: it has no key this time)."""
        spec = self.dag.specs[name]
        options = spec.cache
        assert options is not None
        head = self.heads.head(name, self.fingerprints[name].digest, options.version)
        if options.key is None:
            inputs = {}
            for dep in spec.deps:
                digest = states[dep].output_digest
                if digest is None:
                    return None  # a dep stored by an older release: no digest to key on
                inputs[dep] = digest
            return inputs_digest(head, self.heads.names(spec.deps), inputs)
        arguments = {dep: outputs[dep] for dep in spec.kwarg_deps}
        try:
            value = options.key(**arguments)
        except Exception as exc:
            raise CacheKeyError(
                f"node '{name}': its cache_key raised {type(exc).__name__}: {exc}; fix it, "
                "or return None to run the node without the cache"
            ) from exc
        if value is None:
            return None
        try:
            user_key = canonical(value, name=f"cache_key of node '{name}'")
        except (InvalidArgumentTypeError, InvalidArgumentError) as exc:
            raise CacheKeyError(str(exc)) from exc
        return user_key_digest(head, user_key)


def cached_reason(entry: CacheEntry) -> Reason:
    """Why a node completed from ``entry``: ``cached``, naming the run it came from."""
    when = entry.created_at.isoformat(timespec="seconds")
    return Reason("cached", f"output of run '{entry.run_id}' (stored {when})")


def hit_record(name: str, entry: CacheEntry, ledger: Ledger, now: datetime) -> NodeRecord:
    """The record of ``name`` completed from ``entry``: its output as stored, no attempt."""
    state = ledger.states[name]
    return NodeRecord(
        name,
        NodeStatus.COMPLETED,
        state.attempts,
        now,
        now,
        None,
        entry.output,
        {},
        state.history,
        dict(entry.blobs) or None,
        ledger.provenance(name, state.deps, entry.digest),
    )


def check_refresh(dag: DAG, refresh: object) -> bool | frozenset[str]:
    """``run(refresh=...)`` checked: True, False, or the cached nodes to refresh.

    Raises:
        InvalidArgumentTypeError: not a bool or node names.
        InvalidArgumentError: a name that is no cached node of ``dag``.
    """
    if isinstance(refresh, bool):
        return refresh
    names = (refresh,) if isinstance(refresh, str) else refresh
    if not isinstance(names, Iterable) or not all(isinstance(n, str) for n in names):
        raise InvalidArgumentTypeError(
            f"refresh must be True, False or node names, not {refresh!r}"
        )
    chosen = frozenset(names)
    for name in sorted(chosen):
        if name not in dag:
            known = ", ".join(f"'{n}'" for n in dag.nodes[:5])
            raise InvalidArgumentError(f"refresh names unknown node '{name}'; nodes: {known}")
        if dag.specs[name].cache is None:
            raise InvalidArgumentError(
                f"refresh names node '{name}', which is not cached; give it cache=True "
                "or a cache_key, or leave it out of refresh"
            )
    return chosen


def cache_entries(store: Store, node: str | None = None) -> list[tuple[str, CacheEntry]]:
    """The store's cache entries (of ``node`` only, if given), by key: expired ones too.

    Raises:
        CorruptStateError: an entry is damaged.
    """
    entries = [(key, read_entry(store.codec, key, raw)) for key, raw in store.table_scan(TABLE)]
    return [(key, entry) for key, entry in entries if node is None or entry.node == node]


def clear_cache(store: Store, node: str | None = None) -> int:
    """Remove the store's cache entries (of ``node`` only, if given); how many went.

    One transaction: a run committing an entry meanwhile either lands before
    (and is removed) or after (and stays). A damaged entry is removed too.
    """

    def clear(txn: TableTxn) -> int:
        removed = 0
        for key, raw in list(txn.scan(TABLE)):
            if node is not None:
                try:
                    if read_entry(store.codec, key, raw).node != node:
                        continue
                except CorruptStateError:
                    pass  # damaged: whichever node it was, it goes
            txn.delete(TABLE, key)
            removed += 1
        return removed

    return store.transact_tables(clear)


class CacheHolder:
    """gc's view of the cache (`flowdag.gc.Holder`): an unexpired entry holds the
    blobs its output refers to; an expired one is deleted (counted in
    ``GCReport.cache``; with ``dry_run``, only counted)."""

    def __init__(self, store: Store) -> None:
        self.store = store

    def held(self, now: datetime, report: GCReport) -> Iterator[str]:
        codec = self.store.codec

        def sweep(txn: TableTxn) -> tuple[list[str], int]:
            live: list[str] = []
            expired = 0
            for key, raw in list(txn.scan(TABLE)):
                try:
                    entry = read_entry(codec, key, raw)
                except CorruptStateError as exc:  # it may hold any blob: nothing is swept
                    report.unreadable[f"cache entry {key}"] = str(exc)
                    continue
                if entry.expires_at is not None and now >= entry.expires_at:
                    expired += 1
                    if not report.dry_run:
                        txn.delete(TABLE, key)
                    continue
                live += [sha for sha, at in entry.blobs.items() if at is None or now < at]
            return live, expired

        live, expired = self.store.transact_tables(sweep)
        report.cache += expired
        yield from live


def convert_entry(copier: BlobCopier, key: str, raw: bytes) -> bytes | None:
    """The entry ``raw`` for ``copier.dst``, its blobs copied first; None to leave it behind.

    It is left behind between codecs (its output is the source codec's
    encoding, and its key hashes such encodings: see `flowdag.stores.transfer.copy_tables`)
    and when it is a miss in the source already (expired, or a blob of its
    output expired or gone): the cache fills again as runs go.

    Raises:
        CorruptStateError: the entry, or a blob of its output, is damaged in the source.
    """
    from flowdag.stores._blobcopy import Subject

    if copier.recoding:
        return None
    entry = read_entry(copier.src.codec, key, raw)
    if not entry.usable(copier.now, copier.src.blobs):
        return None
    subject = Subject(
        f"cache entry {key}", "", "no table entry was copied", "clear the cache", alone=False
    )
    copier.blobs(subject, [("its output", sha, at) for sha, at in sorted(entry.blobs.items())])
    return raw
