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

A cached map's items are keyed as the map, each on its own item's digest (or
``cache_key(item, **inputs)``), so equal items share one entry. In one run
they compute once: the first runs, the others *park* behind it and complete
from its entry when it completes (their records follow its record in the
commit order), or are looked up again, one of them then running, if it fails;
an item ready after that finds the entry this run wrote without a store read.
The entries as stored: `flowdag._cache_entries`.
"""

from __future__ import annotations

import time
from collections.abc import Iterable, Mapping
from datetime import UTC, datetime, timedelta
from typing import Any

from flowdag._cache_entries import TABLE, CacheEntry, entry_bytes, read_entry
from flowdag._cache_keys import canonical
from flowdag._entry_keys import KeyHeads, entry_key, inputs_digest, user_key_digest
from flowdag._ledger import Ledger
from flowdag.dag import DAG
from flowdag.errors import (
    CacheKeyError,
    InvalidArgumentError,
    InvalidArgumentTypeError,
)
from flowdag.state import NodeRecord, NodeState, NodeStatus, Reason
from flowdag.stores._fields import to_micros
from flowdag.stores.base import Store

__all__ = ["RunCache", "cached_reason", "check_refresh", "hit_record"]

_MICROSECOND = timedelta(microseconds=1)


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
        self.maps: dict[str, str] = {}  # a cached map's item -> its map node
        # Items of a map with the same key compute once (see the module docstring).
        self.computing: dict[str, str] = {}  # key -> the item whose completion writes it
        self.parked: dict[str, list[str]] = {}  # that item -> the items waiting for it
        self.made: dict[str, CacheEntry] = {}  # that item -> the entry they complete from
        # Entries items wrote in this run, by key: found by later items with that key
        # before (and after) their commit (`present` is read once, at the start).
        self.written: dict[str, bytes] = {}

    def add_items(self, name: str, items: Iterable[str]) -> None:
        """Cached map node ``name`` expanded into ``items``: each is looked up as
        the map, keyed on its own item (`lookup`)."""
        for item in items:
            self.maps[item] = name
            self.nodes.add(item)

    def lookup(
        self,
        name: str,
        states: Mapping[str, NodeState],
        outputs: Mapping[str, Any],
        item: tuple[str, Any] | None = None,
    ) -> CacheEntry | str | None:
        """A usable entry for ready ``name``, None to run it (its completion then
        writes the entry, unless it has no key), or the name of the item in
        flight whose entry ``name``, an item of the same map with the same key,
        takes when it ends (`release`).

        ``item`` is a map item's (digest, value): its key is the map's, on its
        item rather than ``over``'s whole list, so equal items share entries.

        Raises:
            CacheKeyError: the node's ``cache_key`` raised or gave no valid key.
            CorruptStateError: the entry under its key is damaged.
        """
        base = self.maps.get(name, name) if self.maps else name
        digest = self._digest(base, states, outputs, item)
        if digest is None:
            return None
        key = entry_key(self.dag.name, base, digest)
        first = self.computing.get(key) if self.computing else None
        if first is not None and first != name:  # (itself: a retry of the one computing)
            self.parked.setdefault(first, []).append(name)
            return first
        if base != name:  # only a map's items can share a key
            record = self.written.get(key) if self.written else None
            if record is not None:  # fresh from this run, even when refreshing
                made = read_entry(self.codec, key, record)
                if made.usable(datetime.now(UTC), self.store.blobs):
                    return made
            self.computing[key] = name
        self.keys[name] = key
        present = self.present
        if present is None:
            present = self.present = frozenset(self.store.table_keys(TABLE))
        # Under its key, or under the bare digest where the first release put it.
        found = key if key in present else digest if digest in present else None
        if self._refreshed(base):
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
        self.computing.pop(key, None)
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
        self._ended(name, key)
        stale = self.stale.pop(name, None)
        if key is None or output is None or digest is None:
            return None
        base = self.maps.get(name, name) if self.maps else name
        # The record written straight from the fields (a CacheEntry, and datetimes
        # only to turn back into microseconds, cost the driver's thread as much again).
        created = time.time_ns() // 1000
        ttl = self.dag.specs[base].cache.ttl  # type: ignore[union-attr]  # a cached node
        expires = None if ttl is None else created + ttl // _MICROSECOND
        held = {sha: to_micros(at) for sha, at in blobs.items()} if blobs else {}
        record = entry_bytes(
            self.codec, self.dag.name, base, self.run_id, output, digest, created, expires, held
        )
        if base != name:  # for the items with the same key, now and later in this run
            self.written[key] = record
            if self.parked and name in self.parked:
                self.made[name] = read_entry(self.codec, key, record)
        if stale is not None and stale != key:  # a stale entry of the first release's
            return {(TABLE, stale): None, (TABLE, key): record}
        return {(TABLE, key): record}

    def failed(self, name: str) -> dict[tuple[str, str], bytes | None] | None:
        """The table write of ``name``'s failure: its stale entry removed, if it had one."""
        self._ended(name, self.keys.pop(name, None))
        stale = self.stale.pop(name, None)
        return None if stale is None else {(TABLE, stale): None}

    def release(self, name: str) -> tuple[CacheEntry | None, list[str]]:
        """The items parked behind ``name``, which has ended, and the entry its
        completion made for them (None: it failed or made none; they are looked
        up again, and one of them runs)."""
        return self.made.pop(name, None), self.parked.pop(name, [])

    def _refreshed(self, name: str) -> bool:
        return self.refresh is True or bool(self.refresh and name in self.refresh)

    def _ended(self, name: str, key: str | None) -> None:
        if key is not None and self.computing and self.computing.get(key) == name:
            del self.computing[key]

    def _digest(
        self,
        name: str,
        states: Mapping[str, NodeState],
        outputs: Mapping[str, Any],
        item: tuple[str, Any] | None,
    ) -> str | None:
        """The `cache_key` digest of ready ``name`` (a node, or the map of ``item``),
        None when it has no key this time."""
        spec = self.dag.specs[name]
        options = spec.cache
        assert options is not None
        head = self.heads.head(name, self.fingerprints[name].digest, options.version)
        over = spec.map_over
        if options.key is None:
            inputs = {}
            for dep in spec.deps:
                if dep == over and item is not None:
                    inputs[dep] = item[0]  # the item's digest, not the whole list's
                    continue
                digest = states[dep].output_digest
                if digest is None:
                    return None  # a dep stored by an older release: no digest to key on
                inputs[dep] = digest
            return inputs_digest(head, self.heads.names(spec.deps), inputs)
        arguments = {dep: outputs[dep] for dep in spec.kwarg_deps}
        try:
            value = options.key(**arguments) if item is None else options.key(item[1], **arguments)
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
