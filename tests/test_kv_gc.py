"""gc and kv: live entries keep their blobs; expired entries, and only those, are removed."""

from __future__ import annotations

import flowdag
from flowdag import Context, Workflow
from flowdag.stores.base import Store
from tests import kv_stores
from tests.gc_stores import age_all

store = kv_stores.store  # fixtures: every store kind


BIG = list(range(100_000))  # above the 256 KiB inline limit
OTHER = list(range(1, 100_001))


def sha256_of(store: Store, key: str) -> str:
    raw = store.table_get("kv", key)
    assert raw is not None
    record = store.codec.decode(raw)
    (sha256,) = record["blobs"]
    return str(sha256)


def test_live_entries_keep_their_blobs_and_expired_ones_go_with_theirs(store: Store) -> None:
    kv = store.kv()
    kv.set("keep", BIG, ttl="1h")
    kv.set("gone", OTHER, ttl=0)  # expired as written
    kv.set("small", 1)
    kept, dropped = sha256_of(store, "keep"), sha256_of(store, "gone")
    age_all(store)  # past the grace period: only liveness protects them

    dry = flowdag.gc(store, dry_run=True, grace=0)
    assert (dry.kv, dry.blobs) == (1, 1)
    assert store.table_get("kv", "gone") is not None  # a dry run deletes nothing
    assert store.blobs.exists(dropped)

    report = flowdag.gc(store, grace=0)
    assert (report.kv, report.blobs) == (1, 1)
    assert store.table_get("kv", "gone") is None
    assert [key for key, _ in kv.items()] == ["keep", "small"]
    assert store.blobs.exists(kept) and not store.blobs.exists(dropped)
    assert kv.get("keep") == BIG

    assert flowdag.gc(store, grace=0).kv == 0  # nothing left to remove


def test_a_blob_written_by_a_node_lives_as_long_as_its_entry(store: Store) -> None:
    wf = Workflow("w")

    @wf.node()
    def write(ctx: Context) -> None:
        ctx.kv.set("big", BIG)

    result = flowdag.run(wf, store=store)
    flowdag.gc(store, grace=0)  # nothing expired
    store.delete(result.run_id)  # the run is gone: only the entry holds the blob
    age_all(store)
    assert flowdag.gc(store, grace=0).blobs == 0
    assert store.kv().get("big") == BIG
    store.kv().set("big", 1, ttl=0)  # replaced, then expired
    age_all(store)
    report = flowdag.gc(store, grace=0)
    assert (report.kv, report.blobs) == (1, 1)
    assert store.blobs.entries() == []
