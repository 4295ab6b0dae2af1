"""JSONStore: the conformance suite (journaled), plus what a person reading the files sees."""

from __future__ import annotations

import json
from collections.abc import Iterator
from pathlib import Path

import pytest

from flowdag.errors import CorruptStateError
from flowdag.state import NodeRecord, NodeStatus
from flowdag.stores import JSONStore, open_store
from flowdag.stores.base import Store
from tests.stores.conformance import JournaledStoreTests, make_state, pending_state


class TestJSONStore(JournaledStoreTests):
    @pytest.fixture
    def store_dir(self, tmp_path: Path) -> Path:
        return tmp_path / "store"

    @pytest.fixture
    def store(self, store_dir: Path) -> Iterator[Store]:
        with JSONStore(store_dir) as store:
            yield store


@pytest.fixture
def store(tmp_path: Path) -> Iterator[JSONStore]:
    with JSONStore(tmp_path / "store") as store:
        yield store


def snapshot(store: JSONStore, run_id: str) -> Path:
    return store.path / "runs" / run_id / "snapshot.json"


def read_snapshot(store: JSONStore, run_id: str) -> tuple[dict[str, object], dict[str, object]]:
    """The first line and the body, as a person would read them with json.loads."""
    first, _, body = snapshot(store, run_id).read_text(encoding="utf-8").partition("\n")
    return json.loads(first), json.loads(body)


def test_a_person_can_read_a_run(store: JSONStore) -> None:
    state = make_state()
    store.save(state)
    first, body = read_snapshot(store, "run-1")
    assert first["flowdag"] == "json-store"
    nodes = body["nodes"]
    assert isinstance(nodes, dict)
    assert nodes["out_str"]["output"] == "héllo wörld ✓"
    assert nodes["out_float_whole"]["output"] == 5.0  # a float, not 5
    assert nodes["out_list"]["output"] == [1, "a", None, 2.5, [{"$bytes": "eA=="}]]
    assert nodes["failed"]["meta"][0] == "failed"
    assert body["data"]["rows_loaded"] == 2  # type: ignore[index]


def test_commits_land_in_the_snapshot_after_compaction(tmp_path: Path) -> None:
    with JSONStore(tmp_path / "s", compact_min_bytes=1) as store:
        store.save(pending_state("r", "a", "b"))
        encode = store.codec.encode
        for name in ("a", "b"):
            store.commit("r", [NodeRecord(name, NodeStatus.COMPLETED, 1, output=encode((name,)),
                                          data={name: encode(float("nan"))})])  # fmt: skip
        _, body = read_snapshot(store, "r")
        loaded = store.load("r")
    assert body["nodes"]["b"]["output"] == {"$tuple": ["b"]}  # type: ignore[index]
    assert body["data"] == {"a": {"$float": "NaN"}, "b": {"$float": "NaN"}}
    assert loaded.nodes["b"].output == ("b",)


def test_files_of_a_run(store: JSONStore) -> None:
    store.save(make_state())
    store.commit("run-1", [NodeRecord("pending", NodeStatus.COMPLETED, 1)])
    names = sorted(p.name for p in (store.path / "runs" / "run-1").iterdir())
    assert names == ["journal-1.json.log", "snapshot.json"]
    assert store.describe("run-1") == str(store.path / "runs" / "run-1")
    assert store.scheme == "json"


def test_open_store(tmp_path: Path) -> None:
    with open_store(f"json://{tmp_path / 'j'}") as store:
        assert isinstance(store, JSONStore)
        store.save(make_state())
    with JSONStore(tmp_path / "j") as store:
        assert store.load("run-1") == make_state()


def test_a_hand_edited_snapshot_is_refused(store: JSONStore) -> None:
    store.save(make_state())
    path = snapshot(store, "run-1")
    path.write_text(path.read_text(encoding="utf-8").replace('"completed"', '"failed"', 1))
    with pytest.raises(CorruptStateError) as info:
        store.load("run-1")
    assert "run 'run-1'" in str(info.value) and str(path) in str(info.value)
