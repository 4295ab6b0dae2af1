"""A cached map: each item keyed on its own item, equal items computed once per run."""

from __future__ import annotations

import threading
from collections import Counter
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

import flowdag
from flowdag import NodeStatus, Workflow
from flowdag._cache_entries import cache_entries
from flowdag.explain import explain_stored
from flowdag.stores.base import Store
from flowdag.stores.memory import MemoryStore
from tests.test_provenance_run import KINDS, open_kind

CALLS: Counter[str] = Counter()  # item value -> times the map's function ran on it
FAILING: set[str] = set()  # item values the map's function fails on
_LOCK = threading.Lock()


@pytest.fixture(params=KINDS)
def store(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[Store]:
    with open_kind(request.param, tmp_path) as opened:
        yield opened


@pytest.fixture(autouse=True)
def _reset() -> Iterator[None]:
    CALLS.clear()
    FAILING.clear()
    yield
    CALLS.clear()
    FAILING.clear()


def fetch(item: str, suffix: str) -> str:
    with _LOCK:
        CALLS[item] += 1
    if item in FAILING:
        raise ValueError(f"cannot fetch {item}")
    return item + suffix


def fetching(items: list[str], **cache_options: Any) -> flowdag.DAG:
    wf = Workflow("cached-map")
    wf.add_node("urls", lambda: list(items))
    wf.add_node("suffix", lambda: "!")
    wf.map("fetch", fetch, over="urls", deps=["suffix"], **cache_options)
    wf.add_node("merge", lambda fetch: fetch, deps=["fetch"])
    return wf.build()


def test_equal_items_compute_once_and_a_new_run_calls_none(store: Store) -> None:
    items = ["a", "b", "a", "c", "a", "b"]
    dag = fetching(items, cache=True)
    first = flowdag.run(dag, run_id="one", store=store, max_workers=4)
    assert first.outputs["merge"] == [i + "!" for i in items]
    assert Counter("abc") == CALLS
    assert sorted(e.node for _, e in cache_entries(store)) == ["fetch"] * 3
    reasons = explain_stored(store, "one")
    ran = [i for i in range(len(items)) if reasons[f"fetch[{i}]"].code != "cached"]  # type: ignore[union-attr]
    assert sorted(items[i] for i in ran) == ["a", "b", "c"]  # one per distinct item
    CALLS.clear()
    second = flowdag.run(dag, run_id="two", store=store, max_workers=1)
    assert second.outputs["merge"] == [i + "!" for i in items]
    assert not CALLS
    assert all(r.code == "cached" for n, r in explain_stored(store, "two").items() if "[" in n)  # type: ignore[union-attr]


def test_one_worker_finds_the_entry_the_run_just_wrote() -> None:
    dag = fetching(["x", "x", "x"], cache=True)
    result = flowdag.run(dag, run_id="r", store=MemoryStore(), max_workers=1)
    assert result.outputs["merge"] == ["x!"] * 3
    assert Counter({"x": 1}) == CALLS


def test_an_item_that_fails_hands_its_key_to_the_next_equal_item() -> None:
    FAILING.add("bad")
    dag = fetching(["bad", "ok", "bad", "ok", "bad"], cache=True)
    store = MemoryStore()
    result = flowdag.run(dag, run_id="r", store=store, max_workers=4)
    assert result.status == "failed"
    assert Counter({"bad": 3, "ok": 1}) == CALLS  # each failing item tried on its own
    failed = {n for n, s in result.nodes.items() if s.status is NodeStatus.FAILED}
    assert failed == {"fetch", "fetch[0]", "fetch[2]", "fetch[4]"}
    assert result.nodes["merge"].status is NodeStatus.SKIPPED
    FAILING.clear()
    CALLS.clear()
    resumed = flowdag.run(dag, run_id="r", store=store, max_workers=4)
    assert resumed.outputs["merge"] == ["bad!", "ok!", "bad!", "ok!", "bad!"]
    assert Counter({"bad": 1}) == CALLS


def test_a_retried_item_computes_its_key_again() -> None:
    def flaky(item: str, ctx: flowdag.Context) -> str:
        with _LOCK:
            CALLS[item] += 1
        if ctx.attempt < 2:
            raise RuntimeError("flaky first attempt")
        return item + "!"

    wf = Workflow("cached-map")
    wf.add_node("urls", lambda: ["a", "a"])
    wf.map("fetch", flaky, over="urls", cache=True, retries=1)
    result = flowdag.run(wf, run_id="r", store=MemoryStore(), max_workers=2)
    assert result.ok
    assert result.outputs["fetch"] == ["a!", "a!"]
    assert Counter({"a": 2}) == CALLS  # the first item's two attempts; the other waited


def test_a_cache_key_takes_the_item_first() -> None:
    dag = fetching(["A", "a", "b"], cache_key=lambda item, suffix: (item.lower(), suffix))
    result = flowdag.run(dag, run_id="r", store=MemoryStore(), max_workers=2)
    assert sorted(CALLS) == ["A", "b"] or sorted(CALLS) == ["a", "b"]
    first = result.outputs["merge"][0]
    assert result.outputs["merge"] == [first, first, "b!"]  # "a" took "A"'s entry


def test_refresh_computes_each_distinct_item_once_again() -> None:
    store = MemoryStore()
    dag = fetching(["a", "a", "b"], cache=True)
    flowdag.run(dag, run_id="one", store=store)
    CALLS.clear()
    flowdag.run(dag, run_id="two", store=store, refresh={"fetch"})
    assert Counter("ab") == CALLS
    assert len(cache_entries(store)) == 2  # overwritten, not added to


def test_an_item_of_a_changed_list_finds_its_entry_at_any_index() -> None:
    store = MemoryStore()
    flowdag.run(fetching(["a", "b"], cache=True), run_id="one", store=store)
    CALLS.clear()
    result = flowdag.run(fetching(["b", "c", "a"], cache=True), run_id="two", store=store)
    assert result.outputs["merge"] == ["b!", "c!", "a!"]
    assert Counter("c") == CALLS


@settings(max_examples=40, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(
    items=st.lists(st.sampled_from("abcd"), max_size=10),
    failing=st.sets(st.sampled_from("abcd")),
    workers=st.integers(1, 4),
)
def test_each_distinct_item_runs_once_unless_it_fails(
    items: list[str], failing: set[str], workers: int
) -> None:
    """Random lists with repeats and failures: an item that works computes once a
    run and never in the next; a failing one is tried once per item; the list is right."""
    CALLS.clear()
    FAILING.clear()
    FAILING.update(failing)
    store = MemoryStore()
    dag = fetching(items, cache=True)
    result = flowdag.run(dag, run_id="one", store=store, max_workers=workers)
    counts = Counter(items)
    assert Counter({v: (counts[v] if v in failing else 1) for v in counts}) == CALLS
    failed = {n for n, s in result.nodes.items() if s.status is NodeStatus.FAILED and "[" in n}
    assert failed == {f"fetch[{i}]" for i, v in enumerate(items) if v in failing}
    if not failed:
        assert result.outputs["merge"] == [v + "!" for v in items]
    FAILING.clear()
    CALLS.clear()
    again = flowdag.run(dag, run_id="two", store=store, max_workers=workers)
    assert again.outputs["merge"] == [v + "!" for v in items]
    assert Counter({v: 1 for v in counts if v in failing}) == CALLS
