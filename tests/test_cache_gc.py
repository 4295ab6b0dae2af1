"""gc and the cross-run cache: live entries keep their blobs, expired entries go."""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import replace
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest

import flowdag
from flowdag._cache_entries import TABLE
from flowdag.stores.base import Store
from tests.test_cache_run import CALLS, big_pipeline, rewrite_entries
from tests.test_provenance_run import open_kind


@pytest.fixture(params=["memory", "lmdb", "json", "flatbuffers-encrypted"])
def store(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[Store]:
    CALLS.clear()
    with open_kind(request.param, tmp_path) as opened:
        yield opened


def expire_all(store: Store) -> None:
    past = datetime.now(UTC) - timedelta(seconds=1)
    rewrite_entries(store, lambda entry: replace(entry, expires_at=past))


def test_an_entry_keeps_its_blob_after_its_run_is_gone(store: Store) -> None:
    flowdag.run(big_pipeline(), run_id="r1", store=store)
    store.delete("r1")
    report = flowdag.gc(store, grace=0)
    assert (report.blobs, report.cache) == (0, 0)
    again = flowdag.run(big_pipeline(), run_id="r2", store=store)
    assert again.nodes["size"].output == 300_000 and CALLS == ["text"]  # a hit, its blob read


def test_an_expired_entry_goes_and_then_its_blob(store: Store) -> None:
    flowdag.run(big_pipeline(), run_id="r1", store=store)
    store.delete("r1")
    expire_all(store)
    dry = flowdag.gc(store, grace=0, dry_run=True)
    assert (dry.cache, dry.blobs) == (1, 1) and len(store.table_scan(TABLE)) == 1
    report = flowdag.gc(store, grace=0)
    assert (report.cache, report.blobs) == (1, 1)
    assert store.table_scan(TABLE) == [] and list(store.blobs.entries()) == []


def test_a_damaged_entry_stops_the_sweep_and_is_named(store: Store) -> None:
    flowdag.run(big_pipeline(), run_id="r1", store=store)
    store.delete("r1")
    ((key, _),) = store.table_scan(TABLE)
    store.transact_tables(lambda txn: txn.put(TABLE, key, store.codec.encode("junk")))
    report = flowdag.gc(store, grace=0)
    assert f"cache entry {key}" in report.unreadable and report.blobs == 0
    assert len(list(store.blobs.entries())) == 1
