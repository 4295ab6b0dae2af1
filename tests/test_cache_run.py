"""The cross-run cache in runs: hits across run ids, what makes a miss, keys, refresh, refs."""

from __future__ import annotations

from collections.abc import Callable, Iterator
from dataclasses import replace
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import pytest

import flowdag
from flowdag import NodeStatus, Ref, Workflow
from flowdag._cache_entries import TABLE, entry_record, read_entry
from flowdag.errors import DAGError, InvalidArgumentError, InvalidArgumentTypeError
from flowdag.stores.base import Store
from tests.test_provenance_run import KINDS, open_kind

CALLS: list[str] = []  # the nodes called, in order
BIG = 300_000  # characters: over the default inline limit, so kept by reference


@pytest.fixture(params=KINDS)
def store(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[Store]:
    with open_kind(request.param, tmp_path) as opened:
        yield opened


@pytest.fixture(autouse=True)
def _calls() -> Iterator[None]:
    CALLS.clear()
    yield
    CALLS.clear()


def pipeline(
    rows: tuple[int, ...] = (1, 2, 3),
    factor: int = 1,
    **cache_options: Any,
) -> Workflow:
    """src -> total (cached) -> report; ``factor`` changes total's code."""
    wf = Workflow("cached")
    wf.add_node("src", lambda: list(rows))
    options = cache_options or {"cache": True}
    if factor == 1:

        def total(src: list[int]) -> int:
            CALLS.append("total")
            return sum(src)
    else:

        def total(src: list[int]) -> int:
            CALLS.append("total")
            return sum(src) * 2

    wf.add_node("total", total, deps=["src"], **options)
    wf.add_node("report", lambda total: f"total {total}", deps=["total"])
    return wf


def test_a_new_run_id_reuses_the_cached_output_without_calling_the_node(store: Store) -> None:
    first = flowdag.run(pipeline(), run_id="first", store=store)
    assert first.ok and CALLS == ["total"]
    second = flowdag.run(pipeline(), run_id="second", store=store)
    assert second.ok and CALLS == ["total"]  # not called again
    assert second.nodes["total"].output == 6
    assert second.nodes["report"].output == "total 6"
    reason = second.reasons["total"]
    assert reason.code == "cached" and "run 'first'" in reason.detail
    assert second.nodes["total"].attempts == 0  # a hit is no attempt
    # The hit is durable as the node's state: explain says so from the store too.
    assert store.load("second").nodes["total"].provenance.reason == reason  # type: ignore[union-attr]
    assert second.explain()["total"] == reason


def test_a_change_of_code_inputs_or_cache_version_is_a_miss(store: Store) -> None:
    flowdag.run(pipeline(), run_id="r1", store=store)
    flowdag.run(pipeline(factor=2), run_id="r2", store=store)  # code changed
    flowdag.run(pipeline(rows=(1, 2)), run_id="r3", store=store)  # input changed
    flowdag.run(pipeline(cache=True, cache_version=2), run_id="r4", store=store)
    assert CALLS == ["total"] * 4
    # Each of those is cached in turn: running any again is a hit.
    again = flowdag.run(pipeline(factor=2), run_id="r5", store=store)
    assert CALLS == ["total"] * 4 and again.nodes["total"].output == 12
    assert len(store.table_scan(TABLE)) == 4


def test_a_cache_key_keys_on_its_value_with_its_type(store: Store) -> None:
    def keyed(key: Any) -> Workflow:
        return pipeline(cache_key=lambda src: key)

    for key in (1, "1", 1.0, (1,), [1]):
        flowdag.run(keyed(key), run_id=f"k{len(CALLS)}", store=store)
    assert CALLS == ["total"] * 5  # five distinct keys
    flowdag.run(keyed("1"), run_id="again", store=store)
    flowdag.run(pipeline(rows=(9,), cache_key=lambda src: "1"), run_id="other", store=store)
    assert CALLS == ["total"] * 5  # "1" again, whatever the inputs: hits


def test_a_cache_key_of_none_runs_the_node_and_stores_nothing(store: Store) -> None:
    for run_id in ("a", "b"):
        assert flowdag.run(pipeline(cache_key=lambda src: None), run_id=run_id, store=store).ok
    assert CALLS == ["total", "total"]
    assert store.table_scan(TABLE) == []


def test_a_cache_key_that_raises_fails_the_node_naming_it(store: Store) -> None:
    def broken(src: list[int]) -> Any:
        raise KeyError("region")

    result = flowdag.run(pipeline(cache_key=broken), run_id="r", store=store)
    failed = result.nodes["total"]
    assert failed.status is NodeStatus.FAILED and CALLS == []
    assert failed.error is not None and failed.error.type == "CacheKeyError"
    assert "node 'total': its cache_key raised KeyError" in failed.error.message
    assert result.nodes["report"].status is NodeStatus.SKIPPED


def test_a_cache_key_that_is_no_key_fails_the_node_saying_why(store: Store) -> None:
    result = flowdag.run(pipeline(cache_key=lambda src: object()), run_id="r", store=store)
    error = result.nodes["total"].error
    assert error is not None and error.type == "CacheKeyError"
    assert "cache_key of node 'total'" in error.message and "object" in error.message


def test_refresh_runs_and_overwrites(store: Store) -> None:
    flowdag.run(pipeline(), run_id="r1", store=store)
    flowdag.run(pipeline(), run_id="r2", store=store, refresh=True)
    flowdag.run(pipeline(), run_id="r3", store=store, refresh={"total"})
    assert CALLS == ["total"] * 3
    hit = flowdag.run(pipeline(), run_id="r4", store=store)
    assert "run 'r3'" in hit.reasons["total"].detail  # the refreshed entry replaced r1's


def test_bad_refresh_and_cache_options_are_refused() -> None:
    with pytest.raises(InvalidArgumentError, match="refresh names unknown node 'nope'"):
        flowdag.run(pipeline(), refresh={"nope"})
    with pytest.raises(InvalidArgumentError, match="node 'report', which is not cached"):
        flowdag.run(pipeline(), refresh=["report"])
    with pytest.raises(InvalidArgumentTypeError, match="refresh must be"):
        flowdag.run(pipeline(), refresh=3)  # type: ignore[arg-type]
    with pytest.raises(InvalidArgumentTypeError, match="cache_key must be a function"):
        pipeline(cache_key="src")
    with pytest.raises(InvalidArgumentTypeError, match="cache_version must be a str or an int"):
        pipeline(cache=True, cache_version=1.5)
    with pytest.raises(InvalidArgumentError, match="need cache=True or a cache_key"):
        pipeline(cache=False, cache_ttl="1d")
    with pytest.raises(DAGError, match="cache_ttl must be above 0"):
        pipeline(cache=True, cache_ttl=0)
    with pytest.raises(InvalidArgumentTypeError, match="cache must be True or False"):
        pipeline(cache="yes")


def big_pipeline() -> Workflow:
    wf = Workflow("big")
    wf.add_node("src", lambda: 3)

    def text(src: int) -> str:
        CALLS.append("text")
        return "x" * BIG

    wf.add_node("text", text, deps=["src"], cache=True)
    wf.add_node("size", lambda text: len(text), deps=["text"])
    return wf


def test_a_hit_on_a_blob_output_copies_no_bytes(store: Store) -> None:
    first = flowdag.run(big_pipeline(), run_id="r1", store=store)
    blobs = sorted(entry.name for entry in store.blobs.entries())
    assert len(blobs) == 1
    second = flowdag.run(big_pipeline(), run_id="r2", store=store)
    assert CALLS == ["text"] and second.nodes["size"].output == BIG
    assert sorted(entry.name for entry in store.blobs.entries()) == blobs
    ref = store.load("r2").nodes["text"].output
    assert isinstance(ref, Ref) and ref == first.refs["text"]
    assert set(store.life("r2").blobs) == {ref.sha256}  # the new run holds the blob too


def test_an_entry_whose_blob_is_gone_is_a_miss_that_is_replaced(store: Store) -> None:
    flowdag.run(big_pipeline(), run_id="r1", store=store)
    (blob,) = [entry.name for entry in store.blobs.entries()]
    store.blobs.delete(blob)
    second = flowdag.run(big_pipeline(), run_id="r2", store=store)
    assert second.ok and CALLS == ["text", "text"]
    (key, raw), *_ = store.table_scan(TABLE)
    assert read_entry(store.codec, key, raw).run_id == "r2"
    flowdag.run(big_pipeline(), run_id="r3", store=store)
    assert CALLS == ["text", "text"]


def rewrite_entries(store: Store, change: Callable[[Any], Any]) -> None:
    """Rewrite every cache entry of ``store`` through ``change`` (a CacheEntry -> CacheEntry)."""

    def work(txn: Any) -> None:
        for key, raw in list(txn.scan(TABLE)):
            txn.put(
                TABLE, key, entry_record(store.codec, change(read_entry(store.codec, key, raw)))
            )

    store.transact_tables(work)


def test_an_expired_entry_is_a_miss_and_a_failure_removes_it(store: Store) -> None:
    outage: dict[str, bool] = {"down": False}  # a dict's contents do not count in its code

    def flaky() -> Workflow:
        wf = Workflow("cached")
        wf.add_node("src", lambda: [1])

        def total(src: list[int]) -> int:
            CALLS.append("total")
            if outage["down"]:
                raise RuntimeError("down")
            return sum(src)

        wf.add_node("total", total, deps=["src"], cache=True, cache_ttl="1h")
        return wf

    flowdag.run(flaky(), run_id="r1", store=store)
    ((key, raw),) = store.table_scan(TABLE)
    entry = read_entry(store.codec, key, raw)
    assert entry.expires_at is not None
    assert timedelta(minutes=59) < entry.expires_at - entry.created_at <= timedelta(hours=1)
    past = datetime.now(UTC) - timedelta(seconds=1)
    rewrite_entries(store, lambda e: replace(e, expires_at=past))
    outage["down"] = True
    assert not flowdag.run(flaky(), run_id="r2", store=store).ok
    assert store.table_scan(TABLE) == []  # the expired entry went with the failure
    outage["down"] = False
    flowdag.run(flaky(), run_id="r3", store=store)
    flowdag.run(flaky(), run_id="r4", store=store)
    assert CALLS == ["total"] * 3  # r4 hit r3's entry


def test_entries_are_keyed_by_workflow_and_node_and_the_first_releases_keys_are_read(
    store: Store,
) -> None:
    flowdag.run(pipeline(), run_id="r1", store=store)
    ((key, raw),) = store.table_scan(TABLE)
    workflow, node, digest = key.split("/")
    assert (workflow, node) == ("cached", "total") and len(digest) == 64

    def as_first_release(txn: Any) -> None:  # it stored an entry under the bare digest
        txn.delete(TABLE, key)
        txn.put(TABLE, digest, raw)

    store.transact_tables(as_first_release)
    hit = flowdag.run(pipeline(), run_id="r2", store=store)
    assert hit.reasons["total"].code == "cached" and "run 'r1'" in hit.reasons["total"].detail
    assert CALLS == ["total"]
    # Stale, it is replaced under the new key: the old one goes in the same commit.
    past = datetime.now(UTC) - timedelta(seconds=1)
    rewrite_entries(store, lambda e: replace(e, expires_at=past))
    flowdag.run(pipeline(), run_id="r3", store=store)
    assert CALLS == ["total"] * 2
    ((again, raw),) = store.table_scan(TABLE)
    assert again == key and read_entry(store.codec, again, raw).run_id == "r3"
    # Refreshed, likewise.
    store.transact_tables(as_first_release)
    flowdag.run(pipeline(), run_id="r4", store=store, refresh=True)
    ((again, raw),) = store.table_scan(TABLE)
    assert again == key and read_entry(store.codec, again, raw).run_id == "r4"


def test_a_failed_node_writes_no_entry(store: Store) -> None:
    def failing(src: list[int]) -> int:
        CALLS.append("total")
        raise RuntimeError("down")

    wf = Workflow("cached")
    wf.add_node("src", lambda: [1])
    wf.add_node("total", failing, deps=["src"], cache=True, retries=1)
    assert not flowdag.run(wf, run_id="r", store=store).ok
    assert CALLS == ["total", "total"] and store.table_scan(TABLE) == []


def test_a_damaged_entry_fails_the_node_never_a_wrong_value(store: Store) -> None:
    flowdag.run(pipeline(), run_id="r1", store=store)
    ((key, _),) = store.table_scan(TABLE)
    store.transact_tables(lambda txn: txn.put(TABLE, key, store.codec.encode([1, "x"])))
    result = flowdag.run(pipeline(), run_id="r2", store=store)
    error = result.nodes["total"].error
    assert error is not None and error.type == "CorruptStateError"
    assert f"cache entry {key} is damaged" in error.message and CALLS == ["total"]


def test_a_resume_of_a_run_with_a_hit_reuses_it(store: Store) -> None:
    flowdag.run(pipeline(), run_id="r1", store=store)
    flowdag.run(pipeline(), run_id="r2", store=store)
    again = flowdag.run(pipeline(), run_id="r2", store=store)
    assert again.reasons["total"].code == "reused" and CALLS == ["total"]


def test_cached_nodes_with_a_lambda_key_run_in_processes(tmp_path: Path) -> None:
    # The cache is looked up by the driver: a cache_key lambda never travels.
    url = f"lmdb://{tmp_path / 'store'}"
    wf = Workflow("procs")
    wf.add_node("src", lambda: [1, 2, 3])
    wf.add_node("total", lambda src: sum(src), deps=["src"], cache_key=lambda src: len(src))
    first = flowdag.run(wf, run_id="a", store=url, executor="processes", max_workers=2)
    second = flowdag.run(wf, run_id="b", store=url, executor="processes", max_workers=2)
    assert first.ok and second.ok and second.nodes["total"].output == 6
    assert (first.reasons["total"].code, second.reasons["total"].code) == ("new", "cached")
