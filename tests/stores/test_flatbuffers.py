"""FlatBuffersStore: the conformance suite (journaled), plus what is special about it."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest

from flowdag.errors import CorruptStateError
from flowdag.stores import FlatBuffersStore, open_store
from flowdag.stores.base import Store
from tests.stores.conformance import JournaledStoreTests, make_state, statuses_of


class TestFlatBuffersStore(JournaledStoreTests):
    @pytest.fixture
    def store_dir(self, tmp_path: Path) -> Path:
        return tmp_path / "store"

    @pytest.fixture
    def store(self, store_dir: Path) -> Iterator[Store]:
        with FlatBuffersStore(store_dir) as store:
            yield store


@pytest.fixture
def store(tmp_path: Path) -> Iterator[FlatBuffersStore]:
    with FlatBuffersStore(tmp_path / "store") as store:
        yield store


def snapshot(store: FlatBuffersStore, run_id: str) -> Path:
    return store.path / "runs" / run_id / "snapshot.fb"


def test_files_of_a_run(store: FlatBuffersStore) -> None:
    store.save(make_state())
    store.commit("run-1", [])
    content = snapshot(store, "run-1").read_bytes()
    assert content[4:8] == b"FDAG"  # the schema's file_identifier
    assert store.describe("run-1") == str(store.path / "runs" / "run-1")
    assert store.scheme == "flatbuffers"
    assert str(store.path) in repr(store)


def test_statuses_are_read_without_outputs(
    store: FlatBuffersStore, monkeypatch: pytest.MonkeyPatch
) -> None:
    state = make_state()
    store.save(state)

    def refuse(content: bytes) -> object:
        raise AssertionError("load_statuses parsed the whole snapshot")

    monkeypatch.setattr(store.format, "load_snapshot", refuse)
    assert store.load_statuses("run-1") == statuses_of(state)


def test_open_store(tmp_path: Path) -> None:
    with open_store(f"flatbuffers://{tmp_path / 'fb'}") as store:
        assert isinstance(store, FlatBuffersStore)
        store.save(make_state())
    with FlatBuffersStore(tmp_path / "fb") as store:
        assert store.load("run-1") == make_state()


def test_a_json_snapshot_is_not_read_as_flatbuffers(store: FlatBuffersStore) -> None:
    store.save(make_state())
    path = snapshot(store, "run-1")
    path.write_bytes(b'{"format": 1}\n' * 40)
    with pytest.raises(CorruptStateError) as info:
        store.load("run-1")
    assert "run 'run-1'" in str(info.value) and str(path) in str(info.value)
