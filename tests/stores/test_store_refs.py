"""Every store keeps Refs: a blob area, bound loads, blobs listed for gc, run ttls.

Parametrised over every store kind (and an encrypted disk store): the part of
the store contract that outputs kept by reference rely on.
"""

from __future__ import annotations

from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest

from flowdag import BlobMissingError, Ref
from flowdag.errors import CorruptStateError, RunNotFoundError
from flowdag.state import AttemptInfo, NodeRecord, NodeState, NodeStatus, RunState
from flowdag.stores import generate_key, open_store
from flowdag.stores.base import Store

KINDS = ["memory", "lmdb", "json", "flatbuffers", "lmdb-encrypted", "json-encrypted"]
NOW = datetime.now(UTC).replace(microsecond=0)


def open_kind(kind: str, root: Path, key: bytes | None = None) -> Store:
    scheme, _, encrypted = kind.partition("-")
    if scheme == "memory":
        return open_store("memory://")
    options = {"key": key} if encrypted else {}
    return open_store(f"{scheme}://{root}", **options)


@pytest.fixture(params=KINDS)
def kind(request: pytest.FixtureRequest) -> str:
    return str(request.param)


@pytest.fixture
def key() -> bytes:
    return generate_key()


@pytest.fixture
def store(kind: str, tmp_path: Path, key: bytes) -> Iterator[Store]:
    with open_kind(kind, tmp_path, key) as opened:
        yield opened


def stored_ref(store: Store, value: object, **more: object) -> Ref:
    """A Ref to ``value`` encoded with the store's codec, put in its blob area."""
    data = store.codec.encode(value)
    return store.blobs.put(data).ref(encoding=store.codec.name, **more)


def completed(output: object, finished: datetime = NOW) -> NodeState:
    started = finished - timedelta(seconds=1)
    return NodeState(
        NodeStatus.COMPLETED,
        1,
        started,
        finished,
        output,
        history=(AttemptInfo(1, started, finished),),
    )


def test_a_saved_ref_loads_bound_and_reads_its_value(store: Store) -> None:
    rows = [{"id": i, "name": f"row {i}"} for i in range(1000)]
    ref = stored_ref(store, rows, extracted={"rows": 1000}, preview=rows[:2])
    store.save(RunState("r1", "wf", {"fetch": completed(ref)}, data={"latest": ref}))

    state = store.load("r1")
    loaded = state.nodes["fetch"].output
    assert loaded == ref and loaded.bound
    assert loaded.extracted == {"rows": 1000} and loaded.preview == rows[:2]
    assert loaded.load() == rows
    assert state.data["latest"].load() == rows


def test_nested_refs_are_bound_too(store: Store) -> None:
    first, second = stored_ref(store, "a" * 5000), stored_ref(store, list(range(3000)))
    store.save(RunState("r1", "wf", {"pair": completed({"first": first, "more": [second]})}))

    output = store.load("r1").nodes["pair"].output
    assert output["first"].load() == "a" * 5000
    assert output["more"][0].load() == list(range(3000))


def test_life_lists_the_blobs_of_outputs_and_data_without_reading_a_blob(store: Store) -> None:
    soon = NOW + timedelta(days=1)
    kept = stored_ref(store, "kept" * 1000)
    expiring = stored_ref(store, "expiring" * 1000, expires_at=soon)
    in_data = stored_ref(store, "data" * 1000)
    store.save(
        RunState(
            "r1",
            "wf",
            {"a": completed(kept), "b": completed([expiring, kept]), "c": NodeState()},
            data={"k": {"nested": in_data}},
        )
    )
    for entry in store.blobs.entries():  # life() reads records only: no blob is opened
        store.blobs.delete(entry.name)

    life = store.life("r1")
    assert life.blobs == {kept.sha256: None, expiring.sha256: soon, in_data.sha256: None}
    assert life.expires_at is None


def test_committed_records_list_their_blobs(store: Store) -> None:
    ref = stored_ref(store, b"x" * 10_000)
    store.save(RunState("r1", "wf", {"a": NodeState()}))
    output = store.codec.encode(ref)
    later = NOW + timedelta(hours=2)
    store.commit(
        "r1",
        [
            NodeRecord(
                "a",
                NodeStatus.COMPLETED,
                1,
                NOW,
                NOW,
                output=output,
                history=(AttemptInfo(1, NOW, NOW),),
                blobs={ref.sha256: later},
            )
        ],
    )
    assert store.life("r1").blobs == {ref.sha256: later}
    assert store.load("r1").nodes["a"].output.load() == b"x" * 10_000


def test_a_run_with_a_ttl_expires_after_its_last_node_finished(store: Store) -> None:
    last = NOW - timedelta(hours=3)
    nodes = {"a": completed(1, last - timedelta(hours=1)), "b": completed(2, last)}
    store.save(RunState("old", "wf", nodes, ttl=timedelta(hours=2)))
    store.save(RunState("young", "wf", dict(nodes), ttl=timedelta(hours=4)))
    store.save(RunState("forever", "wf", dict(nodes)))

    for read in (store.load, store.load_statuses):
        with pytest.raises(RunNotFoundError, match=r"run 'old' expired at .*gc"):
            read("old")
        assert read("young").ttl == timedelta(hours=4)
        assert read("forever").ttl is None
    assert store.life("old").expires_at == last + timedelta(hours=2)
    assert store.life("young").expires_at == last + timedelta(hours=4)
    assert store.life("forever").expires_at is None


def test_a_run_that_never_finished_a_node_does_not_expire(store: Store) -> None:
    store.save(RunState("r1", "wf", {"a": NodeState()}, ttl=timedelta(microseconds=1)))
    assert store.load("r1").ttl == timedelta(microseconds=1)
    assert store.life("r1").expires_at is None


@pytest.mark.parametrize("ttl", [timedelta(0), timedelta(seconds=-1), 30])
def test_a_ttl_that_is_no_positive_timedelta_is_refused(store: Store, ttl: object) -> None:
    with pytest.raises(TypeError, match="ttl must be a timedelta above zero"):
        store.save(RunState("r1", "wf", {}, ttl=ttl))  # type: ignore[arg-type]


def test_a_missing_blob_is_blob_missing_naming_run_and_node(store: Store) -> None:
    ref = stored_ref(store, "v" * 10_000)
    store.save(RunState("r1", "wf", {"fetch": completed(ref)}))
    store.blobs.delete(store.blobs.name_of(ref.sha256))

    loaded = store.load("r1").nodes["fetch"].output  # loading the run reads no blob
    with pytest.raises(BlobMissingError, match=r"run 'r1', node 'fetch'"):
        loaded.load()


def test_a_damaged_blob_is_corrupt_state_naming_run_node_and_file(kind: str, store: Store) -> None:
    if kind == "memory":
        pytest.skip("a memory store has no files to damage")
    ref = stored_ref(store, bytes(range(256)) * 100)
    store.save(RunState("r1", "wf", {"fetch": completed(ref)}))
    path = Path(store.blobs.locate(store.blobs.name_of(ref.sha256)))
    data = bytearray(path.read_bytes())
    data[len(data) // 2] ^= 0xFF
    path.write_bytes(bytes(data))

    with pytest.raises(CorruptStateError) as info:
        store.load("r1").nodes["fetch"].output.load()
    assert "run 'r1', node 'fetch'" in str(info.value) and str(path) in str(info.value)


def test_json_and_flatbuffers_stores_in_one_directory_share_one_blob_area(
    tmp_path: Path,
) -> None:
    with open_store(f"json://{tmp_path}") as js, open_store(f"flatbuffers://{tmp_path}") as fb:
        ref = stored_ref(js, "shared" * 1000)
        assert fb.blobs.exists(ref.sha256)  # so gc must mark the runs of both
        raw = fb.blobs.put(b"bytes" * 1000).ref()
        js.save(RunState("r1", "wf", {"a": completed(raw)}))
        assert js.load("r1").nodes["a"].output.load() == b"bytes" * 1000
