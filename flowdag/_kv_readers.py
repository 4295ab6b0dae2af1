"""How attempts read committed kv entries for ``ctx.kv``: in this process, or in a worker.

In the driver's process an attempt reads through the run's own store
(`committed_reader`). A worker process cannot share that store object: it gets
a picklable `StoreReader` that opens the store again by its URL, once per
worker; a store that cannot be opened elsewhere (in memory, encrypted) gives a
message instead, which ``ctx.kv`` raises on a read. Entries are parsed as
`flowdag._kv_entries` defines them.
"""

from __future__ import annotations

import functools
from collections.abc import Callable
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import TYPE_CHECKING, Any

from flowdag._kv_entries import ABSENT, TABLE, has_tables, parse_entry, value_of
from flowdag.errors import FlowdagError

if TYPE_CHECKING:
    from flowdag.stores.base import Store

__all__ = ["StoreReader", "committed_reader", "kv_reader", "remote_reader"]


def committed_reader(store: Store) -> Callable[[str], Any]:
    """What `StagedKV` reads committed values with, from ``store`` (in this process)."""

    def read(key: str) -> Any:
        raw = store.table_get(TABLE, key)
        if raw is None:
            return ABSENT
        entry = parse_entry(store.ref_source, key, raw)
        if not entry.live(datetime.now(UTC)):
            return ABSENT
        return value_of(entry)

    return read


def kv_reader(store: Store) -> Callable[[str], Any] | str:
    """What ``ctx.kv`` reads committed values with in this process, or why it cannot."""
    if not has_tables(store):
        return f"cannot read kv entries: a {type(store).__name__} keeps no tables yet"
    path = getattr(store, "path", None)
    portable = path is not None and store.blobs.portable  # a disk store, not encrypted
    return _Reader(store, f"{store.scheme}://{path}" if portable else None)


class _Reader:
    """`committed_reader` of one store, which a worker process can open by its URL."""

    __slots__ = ("read", "url")

    def __init__(self, store: Store, url: str | None) -> None:
        self.read = committed_reader(store)
        self.url = url  # None: the store cannot be opened elsewhere (memory, encrypted)

    def __call__(self, key: str) -> Any:
        return self.read(key)


def remote_reader(read: Callable[[str], Any] | str) -> Callable[[str], Any] | str:
    """What a worker process reads committed kv values with: a picklable `StoreReader`,
    or why it cannot (the store lives in this process, or its key must not travel)."""
    if isinstance(read, _Reader) and read.url is not None:
        return StoreReader(read.url)
    if isinstance(read, str):
        return read
    return (
        "cannot read kv entries in a worker process from a store it cannot open "
        "(a memory or encrypted store): use a disk store, or the threads or asyncio executor"
    )


@dataclass(frozen=True, slots=True)
class StoreReader:
    """Reads committed kv values from the store at ``url``, opened once per worker process."""

    url: str

    def __call__(self, key: str) -> Any:
        return _opened(self.url)(key)


@functools.lru_cache(maxsize=4)
def _opened(url: str) -> Callable[[str], Any]:
    from flowdag.stores import open_store

    try:
        return committed_reader(open_store(url, create=False))
    except Exception as exc:
        raise FlowdagError(
            f"cannot read kv entries in this worker: opening {url} failed "
            f"({type(exc).__name__}: {exc}); use the threads or asyncio executor"
        ) from exc
