"""What `flowdag.gc` does with input waits (`flowdag._wait_entries`).

Two jobs, both lazy (no daemon: deadlines are checked as gc looks):

- `keeps_run`: a run one of whose waits is open and before its deadline, or
  answered and not yet taken by a run, is kept however old (``older_than``):
  someone may still answer it, or did. A run's ttl still ends it.
- `sweep_orphans`: the waits of runs that no longer exist (deleted, or
  expired and collected) are removed with their key entries.

The sweep reads the waits first and the runs after: a wait is only written by
a run that exists already, so a wait whose run is missing from the later
listing belongs to a run that is gone. Each is deleted in one transaction that
first checks the entry is unchanged, so a run made again under the same id
meanwhile, with a new wait at the same node, keeps it.
"""

from __future__ import annotations

import contextlib
from collections.abc import Iterable
from datetime import datetime

from flowdag._wait_entries import (
    PROVIDED,
    TABLE,
    decode_entry,
    decode_index,
    index_key,
    run_prefix,
)
from flowdag.errors import CorruptStateError
from flowdag.stores._tables import TableTxn
from flowdag.stores.base import Store

__all__ = ["keeps_run", "sweep_orphans"]


def keeps_run(store: Store, run_id: str, now: datetime) -> bool:
    """Whether a wait of run ``run_id`` is open and before its deadline, or answered."""
    for key, raw in store.table_scan(TABLE, run_prefix(run_id)):
        try:
            entry = decode_entry(raw, "waits entry " + key.replace("\0", "/"))
        except CorruptStateError:
            return True  # unreadable: it may be a live wait, so the run stays
        if entry.state == PROVIDED or not entry.expired(now):
            return True
    return False


def sweep_orphans(store: Store, live: Iterable[Store], doomed: set[str], dry_run: bool) -> int:
    """Remove the waits in ``store``'s tables whose run is gone; how many (dry run: would go).

    A run is live when a store of ``live`` lists it (the stores sharing the
    directory, which may share the tables) and it is not in ``doomed`` (runs
    this gc deleted, or in a dry run would delete).
    """
    waits = store.table_scan(TABLE, run_prefix())  # first: see the module docstring
    runs: set[str] = set()
    for each in live:
        runs.update(each.list_runs())
    runs -= doomed
    orphans = [(key, raw) for key, raw in waits if key.split("\0")[1] not in runs]
    if dry_run or not orphans:
        return len(orphans)

    def remove(txn: TableTxn) -> int:
        removed = 0
        for key, raw in orphans:
            if txn.get(TABLE, key) != raw:
                continue  # changed since the scan: not the wait judged
            txn.delete(TABLE, key)
            removed += 1
            try:
                entry = decode_entry(raw, "waits entry " + key.replace("\0", "/"))
            except CorruptStateError:
                continue  # its key entry cannot be found; the wait itself is gone
            where = index_key(entry.key_hash)
            index = txn.get(TABLE, where)
            with contextlib.suppress(CorruptStateError):  # not ours to judge: left as it is
                if index is not None and decode_index(index, where) == (entry.run_id, entry.node):
                    txn.delete(TABLE, where)
        return removed

    return store.transact_tables(remove)
