"""copy_run and check_run with refs: blobs travel with their runs, checked, between all stores.

Every pair of store kinds (memory, LMDB, JSON, FlatBuffers, and encrypted
LMDB and JSON): the blobs of outputs and ``ctx.data`` (nested too) are copied
before the run, deduplicated, re-encoded where the destination's codec
differs; a missing or damaged blob (real files, changed on disk) stops the
copy of that run and names run, node and blob; `check_run` reads each blob
and names what is wrong. A copy killed at any step leaves no record whose
blob is missing.
"""

from __future__ import annotations

import os
import tempfile
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from flowdag import BlobMissingError, Ref
from flowdag.errors import CorruptStateError, RunNotFoundError, StoreError
from flowdag.state import NodeState, RunState
from flowdag.stores import generate_key, open_store, transfer
from flowdag.stores._refwalk import load_brief, refs_in, replace_refs
from flowdag.stores.base import Store, StoredRun
from flowdag.stores.transfer import check_run, copy_run, verify_run
from tests.forkserver import ForkServer
from tests.stores.kill_steps import KillAt
from tests.stores.test_store_refs import completed, stored_ref
from tests.stores.test_transfer import copy_finished, killed_copy

KINDS = ["memory", "lmdb", "json", "flatbuffers", "lmdb-encrypted", "json-encrypted"]
DISK = [kind for kind in KINDS if kind != "memory"]
KEY = generate_key()
NOW = datetime.now(UTC).replace(microsecond=0)
ROWS = [{"id": i, "name": f"row {i}", "t": (i, 1.5)} for i in range(3000)]


def open_kind(kind: str, root: Path) -> Store:
    scheme, _, encrypted = kind.partition("-")
    if scheme == "memory":
        return open_store("memory://")
    return open_store(f"{scheme}://{root}", **({"key": KEY} if encrypted else {}))


def url_of(kind: str, root: Path) -> str:
    return f"{kind.partition('-')[0]}://{root}"


#: Source and destination kinds: each kind on each side, the msgpack and JSON
#: codecs both ways, encrypted and plain both ways, and a kind to itself (all
#: 36 pairs took a minute of the suite and found nothing these do not).
PAIRS = [
    ("memory", "lmdb"),
    ("lmdb", "json"),
    ("json", "flatbuffers"),
    ("flatbuffers", "memory"),
    ("lmdb", "lmdb-encrypted"),
    ("lmdb-encrypted", "json"),
    ("json-encrypted", "flatbuffers"),
    ("json", "json-encrypted"),
    ("flatbuffers", "lmdb"),
    ("json", "lmdb"),
    ("lmdb-encrypted", "lmdb-encrypted"),
    ("memory", "json-encrypted"),
]


@pytest.fixture(params=PAIRS, ids=[f"{a}-to-{b}" for a, b in PAIRS])
def pair(request: pytest.FixtureRequest) -> tuple[str, str]:
    return request.param  # type: ignore[no-any-return]


@pytest.fixture
def src(pair: tuple[str, str], tmp_path: Path) -> Iterator[Store]:
    with open_kind(pair[0], tmp_path / "src") as store:
        yield store


@pytest.fixture
def dst(pair: tuple[str, str], tmp_path: Path) -> Iterator[Store]:
    with open_kind(pair[1], tmp_path / "dst") as store:
        yield store


def run_with_refs(store: Store, run_id: str = "r") -> dict[str, Any]:
    """A run with refs everywhere; returns the values they stand for."""
    rows = stored_ref(store, ROWS, extracted={"rows": len(ROWS)}, preview=ROWS[:2])
    raw = store.blobs.put(b"\x00raw bytes" * 5000).ref()
    text = stored_ref(store, "t" * 20_000, expires_at=NOW + timedelta(days=3))
    state = RunState(
        run_id,
        "wf",
        {
            "rows": completed(rows),
            "raw": completed(raw),
            "pair": completed({"first": text, "more": [rows, (raw,)]}),
            "inline": completed([1, 2, 3]),
            "todo": NodeState(deps=("rows",)),
        },
        data={"latest": rows, "nested": {"k": [text]}, "plain": 7},
    )
    store.save(state)
    return {"rows": ROWS, "raw": b"\x00raw bytes" * 5000, "text": "t" * 20_000}


def assert_values(store: Store, run_id: str, values: dict[str, Any]) -> None:
    state = store.load(run_id)
    assert state.nodes["rows"].output.load() == values["rows"]
    assert state.nodes["raw"].output.load() == values["raw"]
    with state.nodes["raw"].output.open() as stream:
        assert stream.read() == values["raw"]
    pair = state.nodes["pair"].output
    assert pair["first"].load() == values["text"]
    assert pair["more"][0].load() == values["rows"]
    assert pair["more"][1][0].load() == values["raw"]
    assert state.data["latest"].load() == values["rows"]
    assert state.data["nested"]["k"][0].load() == values["text"]
    assert state.nodes["inline"].output == [1, 2, 3] and state.data["plain"] == 7


def blob_files(store: Store) -> list[Path]:
    root = Path(store.blobs.locate("0" * 64)).parent.parent
    return sorted(p for p in root.glob("??/*") if p.is_file())


# -- every pair of store kinds ----------------------------------------------------------------


def test_copy_takes_the_blobs_of_every_ref(src: Store, dst: Store) -> None:
    values = run_with_refs(src)
    done = copy_run(src, dst, "r")
    assert_values(dst, "r", values)
    assert check_run(dst, "r").ok and verify_run(dst, "r") is None
    # Three blobs, each counted once however many refs hold it.
    assert done.blobs == 3 and done.written == 3 and done.expired == 0
    recode = src.codec.name != dst.codec.name
    assert done.recoded == (2 if recode else 0)  # the two encoded values, never raw bytes
    copied = dst.load("r").nodes["rows"].output
    original = src.load("r").nodes["rows"].output
    assert copied.extracted == original.extracted and copied.preview == original.preview
    assert copied.encoding == dst.codec.name
    text = dst.load("r").nodes["pair"].output["first"]
    assert text.expires_at == NOW + timedelta(days=3)  # re-encoded or not, the same expiry
    assert (copied == original) is not recode  # re-encoded: another blob, another ref
    assert dst.load("r").nodes["raw"].output == src.load("r").nodes["raw"].output
    # gc's view: the destination's records list exactly the blobs it holds.
    held = dst.life("r").blobs
    assert len(held) == 3 and all(dst.blobs.exists(sha256) for sha256 in held)


def test_copy_back_and_forth_gives_the_same_run(src: Store, dst: Store, tmp_path: Path) -> None:
    values = run_with_refs(src)
    copy_run(src, dst, "r")
    if src.scheme == "memory":
        back = open_store("memory://")
    else:
        options = {"key": KEY} if src.blobs.encrypted else {}
        back = open_store(f"{src.scheme}://{tmp_path / 'back'}", **options)
    with back:
        copy_run(dst, back, "r")
        assert back.load("r") == src.load("r")  # the same codec: the same refs and blobs
        assert_values(back, "r", values)


def test_a_blob_already_there_is_not_written_again(src: Store, dst: Store) -> None:
    run_with_refs(src, "r1")
    run_with_refs(src, "r2")
    first = copy_run(src, dst, "r1")
    second = copy_run(src, dst, "r2")
    assert first.written == 3 and second.written == 0 and second.blobs == 3
    assert copy_run(src, dst, "r1").written == 0  # again: nothing new
    if dst.scheme != "memory":
        assert len(blob_files(dst)) == 3


def test_expired_refs_are_not_copied_and_expired_runs_not_at_all(src: Store, dst: Store) -> None:
    gone = stored_ref(src, "old" * 10_000, expires_at=NOW - timedelta(hours=1))
    kept = stored_ref(src, "new" * 10_000)
    src.save(RunState("r", "wf", {"a": completed(gone), "b": completed(kept)}))
    done = copy_run(src, dst, "r")
    assert done.expired == 1 and done.blobs == 1
    state = dst.load("r")
    with pytest.raises(BlobMissingError, match="expired"):
        state.nodes["a"].output.load()
    assert state.nodes["b"].output.load() == "new" * 10_000
    result = check_run(dst, "r")
    assert result.ok and result.expired == 1 and result.refs == 1

    old = completed(kept, NOW - timedelta(hours=2))
    src.save(RunState("old", "wf", {"a": old}, ttl=timedelta(minutes=1)))
    with pytest.raises(RunNotFoundError, match="expired"):
        copy_run(src, dst, "old")
    assert "old" not in dst.list_runs()


def test_a_run_without_refs_copies_no_blob(src: Store, dst: Store) -> None:
    src.save(RunState("r", "wf", {"a": completed({"x": [1, 2]})}, data={"k": b"v"}))
    done = copy_run(src, dst, "r")
    assert done.blobs == done.written == 0
    assert dst.load("r") == src.load("r")


# -- damage in the source ------------------------------------------------------------------------


@pytest.fixture(params=DISK)
def disk_src(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[Store]:
    with open_kind(request.param, tmp_path / "src") as store:
        yield store


@pytest.fixture(params=["lmdb", "json"])
def disk_dst(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[Store]:
    with open_kind(request.param, tmp_path / "dst") as store:
        yield store


def blob_file(store: Store, ref: Ref) -> Path:
    return Path(store.blobs.locate(store.blobs.name_of(ref.sha256)))


def flip_byte(path: Path) -> None:
    content = bytearray(path.read_bytes())
    content[len(content) // 2] ^= 0x01
    path.write_bytes(content)


def test_a_missing_blob_stops_the_copy_before_anything_is_written(
    disk_src: Store, disk_dst: Store
) -> None:
    run_with_refs(disk_src)
    text = disk_src.load("r").nodes["pair"].output["first"]
    blob_file(disk_src, text).unlink()
    with pytest.raises(BlobMissingError) as info:
        copy_run(disk_src, disk_dst, "r")
    message = str(info.value)
    assert "run 'r', node 'pair'" in message and text.uri in message
    assert str(blob_file(disk_src, text)) in message and "not copied" in message
    assert disk_dst.list_runs() == [] and blob_files(disk_dst) == []
    result = check_run(disk_src, "r")
    assert not result.ok and len(result.blobs) == 2  # node 'pair' and ctx.data 'nested'
    assert "run 'r', node 'pair'" in result.blobs[0] and "is missing" in result.blobs[0]
    assert str(blob_file(disk_src, text)) in result.blobs[0]
    assert "run 'r', ctx.data 'nested'" in result.blobs[1]


def test_a_damaged_blob_fails_the_copy_and_keeps_the_previous_one(
    disk_src: Store, disk_dst: Store
) -> None:
    values = run_with_refs(disk_src)
    copy_run(disk_src, disk_dst, "r")
    previous = disk_dst.load("r")
    rows = disk_src.load("r").nodes["rows"].output
    # Another blob, so the copy must read it again: the rows in a new value.
    disk_src.save(RunState("r", "wf", {"rows": completed(stored_ref(disk_src, ROWS[::-1]))}))
    flip_byte(blob_file(disk_src, disk_src.load("r").nodes["rows"].output))
    with pytest.raises(CorruptStateError) as info:
        copy_run(disk_src, disk_dst, "r")
    message = str(info.value)
    assert "run 'r', node 'rows'" in message and "damaged" in message
    assert disk_dst.load("r") == previous  # the previous copy stays, whole
    assert_values(disk_dst, "r", values)
    assert rows.load() == ROWS  # the source's other blobs are fine
    result = check_run(disk_src, "r")
    assert not result.ok and "run 'r', node 'rows'" in result.blobs[0]
    # An encrypted blob fails its authentication before its hash is checked.
    assert "does not match its sha256" in result.blobs[0] or "was changed" in result.blobs[0]
    assert str(blob_file(disk_src, disk_src.load("r").nodes["rows"].output)) in result.blobs[0]


def test_a_truncated_blob_is_damage(disk_src: Store, disk_dst: Store) -> None:
    run_with_refs(disk_src)
    raw = disk_src.load("r").nodes["raw"].output
    path = blob_file(disk_src, raw)
    path.write_bytes(path.read_bytes()[: path.stat().st_size // 2])
    with pytest.raises(CorruptStateError, match="run 'r', node 'raw'"):
        copy_run(disk_src, disk_dst, "r")
    assert "r" not in disk_dst.list_runs()
    assert "run 'r', node 'raw'" in (verify_run(disk_src, "r") or "")


def test_check_run_reads_each_blob_once_across_runs(disk_src: Store) -> None:
    run_with_refs(disk_src, "r1")
    run_with_refs(disk_src, "r2")
    seen: dict[str, str | None] = {}
    first, second = check_run(disk_src, "r1", seen), check_run(disk_src, "r2", seen)
    assert first.refs == second.refs == 7 and len(seen) == 3
    assert all(verdict is None for verdict in seen.values())


def test_check_run_reports_a_damaged_record(disk_src: Store) -> None:
    disk_src.save(RunState("r", "wf", {"a": completed(1)}))
    disk_src._save("r", StoredRun(header=disk_src.codec.encode(["not a header"])))
    result = check_run(disk_src, "r")
    assert result.damage is not None and "run 'r'" in result.damage and not result.ok


# -- what the walk finds ---------------------------------------------------------------------------


def test_refs_are_found_and_replaced_in_any_value() -> None:
    store = open_store("memory://")
    a, b = stored_ref(store, "a" * 100), stored_ref(store, "b" * 100)
    value = {"x": [a, (b, {a})], "y": frozenset([b]), "z": 3}
    assert set(refs_in(value)) == {a, b}
    assert refs_in(a) == [a] and refs_in("text") == [] and refs_in(None) == []
    c = stored_ref(store, "c" * 100)
    swapped = replace_refs(value, {a: c})
    assert swapped == {"x": [c, (b, {c})], "y": frozenset([b]), "z": 3}
    assert value["x"][0] is a  # the original is left alone
    with pytest.raises(StoreError, match="cannot look for refs"):
        refs_in([lambda: 1])


def test_load_brief_gives_refs_and_no_inline_output(src: Store) -> None:
    run_with_refs(src)
    for path in blob_files(src) if src.scheme != "memory" else []:
        path.unlink()  # the brief reads no blob
    state = load_brief(src, "r")
    assert type(state.nodes["rows"].output) is Ref and state.nodes["rows"].output.bound
    assert state.nodes["rows"].output.extracted == {"rows": len(ROWS)}
    assert state.nodes["inline"].output is None  # inline: not read
    assert state.nodes["pair"].output is None  # a value holding refs: not a ref
    assert state.data == {}
    src.save(RunState("plain", "wf", {"a": completed(1)}))
    assert load_brief(src, "plain") == src.load_statuses("plain")


# -- a copy killed at any step --------------------------------------------------------------------


def killed_copy_job(src_url: str, dst_url: str, kill_at: int, key: str) -> None:
    """In a forked child: copy run "r", SIGKILLing itself at the ``kill_at``-th step.

    The steps: blob and record writes alike (write, sync, rename, link, unlink, utime), and
    the check of the copy read back; ``key`` is the source's ("-": none).
    """
    options: dict[str, Any] = {"key": key} if key != "-" else {}
    kill = KillAt(kill_at)
    with open_store(src_url, **options) as src, open_store(dst_url) as dst:
        calls = ("write", "fsync", "fdatasync", "replace", "rename", "link", "unlink", "utime")
        kill.patch(os, *calls)
        kill.patch(transfer, "_difference")
        transfer.copy_run(src, dst, "r")
    print("copied", kill.calls)


def held_blobs_are_there(store: Store, run_id: str) -> None:
    """The destination never holds a record whose blob is missing."""
    for sha256, expires_at in store.life(run_id).blobs.items():
        if expires_at is None or expires_at > datetime.now(UTC):
            assert store.blobs.exists(sha256), f"record of {run_id} points at missing {sha256}"
            store.blobs.check(sha256)


@pytest.mark.slow
@pytest.mark.parametrize(("src_kind", "dst_kind"), [
    ("json", "lmdb"), ("lmdb-encrypted", "json"), ("lmdb", "flatbuffers"),
])  # fmt: skip
def test_copy_with_refs_killed_at_any_step_leaves_no_record_without_its_blob(
    tmp_path: Path, fork_server: ForkServer, src_kind: str, dst_kind: str
) -> None:
    src_url = url_of(src_kind, tmp_path / "src")
    key = KEY if src_kind.endswith("encrypted") else "-"
    with open_kind(src_kind, tmp_path / "src") as src:
        values = run_with_refs(src)
        expected = src.load("r")
    recoded = (src_kind.startswith("json")) != (dst_kind.startswith("json"))
    outcomes = []
    for kill_at in range(1, 400):
        dst_url = url_of(dst_kind, tmp_path / f"dst-{kill_at}")
        proc = killed_copy(fork_server, killed_copy_job, src_url, dst_url, kill_at, key)
        with open_store(dst_url) as dst:
            if dst.list_runs():
                assert dst.list_runs() == ["r"]
                held_blobs_are_there(dst, "r")
                assert_values(dst, "r", values)
                if not recoded:
                    assert dst.load("r") == expected
                outcomes.append("copied")
            else:
                # Killed before the record: blobs already copied are orphans, nothing more.
                outcomes.append("orphans" if blob_files(dst) else "none")
            with open_kind(src_kind, tmp_path / "src") as src:
                copy_run(src, dst, "r")  # leftovers (orphans, temp files) never get in the way
            held_blobs_are_there(dst, "r")
            assert_values(dst, "r", values)
        if copy_finished(proc):
            break
    else:
        pytest.fail("the copy never finished")
    assert outcomes[0] == "none" and outcomes[-1] == "copied", outcomes
    assert outcomes.count("orphans") >= 5, outcomes  # killed between blobs and record


# -- refs at any depth, copied across codecs (property) --------------------------------------------

POOL = ["a" * 3000, list(range(2000)), {"k": b"\x01" * 3000}]


def shape(value: Any) -> Any:
    """``value`` with each ref replaced by the pool index its extracted fields name."""
    if type(value) is Ref:
        return ("ref", value.extracted["i"])
    if isinstance(value, dict):
        return {key: shape(item) for key, item in value.items()}
    if isinstance(value, list | tuple):
        return type(value)(shape(item) for item in value)
    if isinstance(value, frozenset):
        return frozenset(shape(item) for item in value)
    return value


def nested(refs: st.SearchStrategy[Any]) -> st.SearchStrategy[Any]:
    leaves = st.one_of(st.integers(), st.text(max_size=5), st.none(), refs)
    return st.recursive(
        leaves,
        lambda inner: st.one_of(
            st.lists(inner, max_size=4),
            st.tuples(inner, inner),
            st.dictionaries(st.text(max_size=3), inner, max_size=3),
            st.frozensets(st.one_of(st.integers(), refs), max_size=3),
        ),
        max_leaves=12,
    )


@settings(max_examples=25, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(data=st.data())
def test_refs_at_any_depth_survive_a_copy_to_another_codec(data: st.DataObject) -> None:
    with tempfile.TemporaryDirectory() as tmp:
        src, dst = open_store("memory://"), open_store(f"json://{tmp}/dst")
        pool = [stored_ref(src, value, extracted={"i": i}) for i, value in enumerate(POOL)]
        refs = st.sampled_from(pool)
        output, value = data.draw(nested(refs)), data.draw(nested(refs))
        src.save(RunState("r", "wf", {"a": completed(output)}, data={"k": value}))
        copy_run(src, dst, "r")
        state = dst.load("r")
        copied, kept = state.nodes["a"].output, state.data["k"]
        assert shape(copied) == shape(output) and shape(kept) == shape(value)
        for ref in refs_in(copied) + refs_in(kept):
            assert ref.encoding == "json" and ref.load() == POOL[ref.extracted["i"]]
        assert check_run(dst, "r").ok
        dst.close()
