"""The cache table: its entries as stored, and what reads or clears it whole.

An entry is stored under ``workflow/node/digest`` (`flowdag._entry_keys.entry_key`),
its key's digest after the names that keep a commit's entries together. The
first release stored it under the bare digest: such an entry is still found
(`flowdag._cache.RunCache.lookup`), and replaced under the new key when it is
stale or refreshed.

An entry is one record, encoded by the store's codec::

    [1, workflow, node, run_id, output, digest, created_us, expires_us, blobs]

``output`` is the node's output as stored (bytes), ``digest`` its output
digest, ``expires_us`` None for never, ``blobs`` {sha256: expires_us} of the
refs the output holds (gc keeps them while the entry lives: `CacheHolder`).
"""

from __future__ import annotations

from collections.abc import Iterator, Mapping
from dataclasses import dataclass, field
from datetime import datetime
from typing import TYPE_CHECKING

from flowdag.codec import ValueCodec
from flowdag.errors import CorruptStateError
from flowdag.stores._blobs import BlobArea
from flowdag.stores._fields import moment, shown, to_micros
from flowdag.stores._tables import TableTxn
from flowdag.stores.base import Store

if TYPE_CHECKING:
    from flowdag.gc import GCReport
    from flowdag.stores._blobcopy import BlobCopier

__all__ = [
    "TABLE",
    "CacheEntry",
    "CacheHolder",
    "cache_entries",
    "clear_cache",
    "convert_entry",
    "entry_bytes",
    "entry_record",
    "read_entry",
]

TABLE = "cache"
_FORMAT = 1


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
    return entry_bytes(
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


def entry_bytes(
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
