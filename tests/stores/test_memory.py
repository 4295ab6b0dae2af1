"""MemoryStore: the conformance suite, plus what is special about a store in memory."""

from __future__ import annotations

from collections.abc import Iterator

import pytest

from flowdag.errors import StoreError
from flowdag.state import NodeRecord, NodeStatus
from flowdag.stores import MemoryStore, open_store
from flowdag.stores.base import Store
from tests.stores.conformance import StoreTests, make_state, pending_state


class TestMemoryStore(StoreTests):
    @pytest.fixture
    def store(self) -> Iterator[Store]:
        with MemoryStore() as store:
            yield store


def test_saved_state_is_a_copy() -> None:
    store = MemoryStore()
    state = make_state()
    store.save(state)
    state.nodes.clear()
    state.data.clear()
    assert store.load("run-1") == make_state()


def test_commit_records_are_not_aliased() -> None:
    store = MemoryStore()
    store.save(pending_state("r", "a"))
    data = {"k": store.codec.encode(1)}
    store.commit("r", [NodeRecord("a", NodeStatus.COMPLETED, data=data)])
    data["k"] = store.codec.encode(2)
    assert store.load("r").data == {"k": 1}


def test_stores_are_independent() -> None:
    one, two = MemoryStore(), MemoryStore()
    one.save(pending_state("r", "a"))
    assert two.list_runs() == []
    with one.lock("r"), two.lock("r"):  # locks are per store
        pass


def test_describe() -> None:
    assert MemoryStore().describe("r") == "memory://"


def test_open_store_memory() -> None:
    store = open_store("memory://")
    assert isinstance(store, MemoryStore)
    assert store.scheme == "memory"
    assert open_store("memory://") is not store


def test_open_store_memory_takes_no_path() -> None:
    with pytest.raises(StoreError, match="takes no path"):
        open_store("memory://somewhere")
