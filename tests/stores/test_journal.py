"""The journal engine: framing, torn tails, damage, compaction, temp files.

The engine is exercised through both real formats (JSON and FlatBuffers): the
framing tests need no format at all.
"""

from __future__ import annotations

import os
from pathlib import Path

import pytest

from flowdag.errors import CorruptStateError
from flowdag.state import NodeRecord, NodeState, NodeStatus, RunState
from flowdag.stores import _journal
from flowdag.stores._framing import frame, replay
from flowdag.stores._journal import JournaledStore
from flowdag.stores.flatbuffers_store import FlatBuffersStore
from flowdag.stores.json_store import JSONStore

PAYLOADS = [b"first record", b"", b"x" * 300, b"last one \x00\xff"]


def journal() -> bytes:
    return b"".join(frame(p) for p in PAYLOADS)


def test_replay_reads_every_record() -> None:
    content = journal()
    assert replay(content) == (PAYLOADS, len(content))


def test_truncation_at_every_offset_of_the_last_record_is_a_torn_tail() -> None:
    content = journal()
    last_start = len(content) - len(frame(PAYLOADS[-1]))
    for cut in range(last_start, len(content) + 1):
        payloads, end = replay(content[:cut])
        if cut == len(content):
            assert payloads == PAYLOADS
        else:
            assert payloads == PAYLOADS[:-1], cut
            assert end == last_start


def test_truncation_anywhere_gives_a_prefix_of_the_records() -> None:
    content = journal()
    for cut in range(len(content) + 1):
        payloads, end = replay(content[:cut])
        assert payloads == PAYLOADS[: len(payloads)]
        assert end <= cut


def test_zero_filled_tail_is_torn() -> None:
    content = journal()
    assert replay(content + bytes(100)) == (PAYLOADS, len(content))
    # The last record's bytes never landed, but the file grew to hold them.
    last = len(frame(PAYLOADS[-1]))
    assert replay(content[:-last] + bytes(last))[0] == PAYLOADS[:-1]


def test_every_flipped_byte_is_damage_or_harmless() -> None:
    content = journal()
    for i in range(len(content)):
        for bit in (0x01, 0x80):
            damaged = bytearray(content)
            damaged[i] ^= bit
            try:
                payloads, _ = replay(bytes(damaged))
            except ValueError:
                continue
            assert payloads == PAYLOADS, f"byte {i} bit {bit:#x}: wrong records"


@pytest.fixture(params=[JSONStore, FlatBuffersStore], ids=["json", "flatbuffers"])
def store_class(request: pytest.FixtureRequest) -> type[JournaledStore]:
    cls: type[JournaledStore] = request.param
    return cls


def new_run(store: JournaledStore, nodes: int = 5) -> RunState:
    state = RunState("r", "wf", nodes={f"n{i}": NodeState() for i in range(nodes)})
    store.save(state)
    return state


def complete(store: JournaledStore, name: str, value: object, data: object = None) -> None:
    encode = store.codec.encode
    changes = {} if data is None else {f"k-{name}": encode(data)}
    store.commit(
        "r", [NodeRecord(name, NodeStatus.COMPLETED, 1, output=encode(value), data=changes)]
    )


def run_dir(store: JournaledStore) -> Path:
    return store.path / "runs" / "r"


def journal_files(store: JournaledStore) -> list[str]:
    return sorted(p.name for p in run_dir(store).glob("journal-*.log"))


def test_commit_appends_and_load_replays(tmp_path: Path, store_class: type[JournaledStore]) -> None:
    with store_class(tmp_path) as store:
        new_run(store)
        complete(store, "n0", [1, 2], data="x")
        complete(store, "n1", 5.0)
        loaded = store.load("r")
    assert loaded.nodes["n0"].output == [1, 2]
    assert loaded.nodes["n1"].output == 5.0
    assert loaded.data == {"k-n0": "x"}
    assert loaded.nodes["n2"].status is NodeStatus.PENDING


def test_torn_tail_is_cut_before_the_next_append(
    tmp_path: Path, store_class: type[JournaledStore]
) -> None:
    with store_class(tmp_path) as store:
        new_run(store)
        complete(store, "n0", "a")
        (journal_path,) = run_dir(store).glob("journal-*.log")
    with open(journal_path, "ab") as f:  # a record whose append was cut short
        f.write(frame(b"never acknowledged")[:-5])
    with store_class(tmp_path) as store:
        assert store.load("r").nodes["n0"].output == "a"
        complete(store, "n1", "b")
        loaded = store.load("r")
    assert loaded.nodes["n1"].output == "b"
    assert loaded.nodes["n0"].output == "a"


def test_compaction_keeps_the_state_and_starts_a_new_journal(
    tmp_path: Path, store_class: type[JournaledStore]
) -> None:
    with store_class(tmp_path, compact_min_bytes=512) as store:
        new_run(store, nodes=200)
        for i in range(200):
            complete(store, f"n{i}", {"i": i, "pad": "p" * 40}, data=i)
        names = journal_files(store)
        loaded = store.load("r")
    suffix = store_class.format.suffix
    assert len(names) == 1 and names[0] != f"journal-1{suffix}.log"  # compacted at least once
    assert all(loaded.nodes[f"n{i}"].output == {"i": i, "pad": "p" * 40} for i in range(200))
    assert loaded.data == {f"k-n{i}": i for i in range(200)}


def test_crash_between_new_snapshot_and_journal_removal_loads(
    tmp_path: Path, store_class: type[JournaledStore]
) -> None:
    """Snapshot g+1 in place, journal g still there: the stale journal is ignored."""
    with store_class(tmp_path, compact_min_bytes=10**9) as store:
        new_run(store)
        complete(store, "n0", "a")
        complete(store, "n1", "b")
        (stale,) = run_dir(store).glob("journal-*.log")
        content = stale.read_bytes()
        store._compact("r", store._writers["r"])  # what a compaction leaves on disk
    stale.write_bytes(content)
    with store_class(tmp_path) as store:
        loaded = store.load("r")
        assert [loaded.nodes[n].output for n in ("n0", "n1")] == ["a", "b"]
        complete(store, "n2", "c")  # the writer removes the stale journal
        assert stale.name not in journal_files(store)
        assert store.load("r").nodes["n2"].output == "c"


def test_damaged_middle_record_raises(tmp_path: Path, store_class: type[JournaledStore]) -> None:
    with store_class(tmp_path) as store:
        new_run(store)
        complete(store, "n0", "a" * 50)
        complete(store, "n1", "b")
        (path,) = run_dir(store).glob("journal-*.log")
    content = bytearray(path.read_bytes())
    content[30] ^= 0xFF  # inside the first record's payload
    path.write_bytes(bytes(content))
    with store_class(tmp_path) as store, pytest.raises(CorruptStateError) as err:
        store.load("r")
    assert "'r'" in str(err.value) and path.name in str(err.value)


def test_temp_files_left_by_a_crash_are_removed(
    tmp_path: Path, store_class: type[JournaledStore]
) -> None:
    with store_class(tmp_path) as store:
        new_run(store)
    leftover = run_dir(store) / ".snapshot.json.abc123.tmp"
    leftover.write_bytes(b"half a snapshot")
    with store_class(tmp_path) as store:
        assert leftover.exists()  # opening a store touches no run (it may hold thousands)
        assert store.load("r").workflow == "wf"
        with store.lock("r"):  # the run's own housekeeping, under its lock
            assert not leftover.exists()
            assert store.load("r").workflow == "wf"


def test_files_are_private(tmp_path: Path, store_class: type[JournaledStore]) -> None:
    old = os.umask(0)
    try:
        with store_class(tmp_path / "s") as store:
            new_run(store)
            complete(store, "n0", 1)
    finally:
        os.umask(old)
    for path in (tmp_path / "s").rglob("*"):
        mode = path.stat().st_mode & 0o777
        assert mode == (0o700 if path.is_dir() else 0o600), path


# -- the writer: less I/O per commit and per resume -----------------------------------------


class CountingReads:
    """Counts whole-file reads of the journal engine (snapshot and journal)."""

    def __init__(self, monkeypatch: pytest.MonkeyPatch) -> None:
        self.files = 0
        real = _journal.read_all

        def read_all(fd: int) -> bytes:
            self.files += 1
            return real(fd)

        monkeypatch.setattr(_journal, "read_all", read_all)


def no_stat(monkeypatch: pytest.MonkeyPatch) -> None:
    def stat(*args: object, **kwargs: object) -> os.stat_result:
        raise AssertionError("os.stat on the commit path")

    monkeypatch.setattr(_journal.os, "stat", stat)


def test_resume_reads_snapshot_and_journal_once_then_commits_without_a_stat(
    tmp_path: Path, store_class: type[JournaledStore], monkeypatch: pytest.MonkeyPatch
) -> None:
    with store_class(tmp_path, compact_min_bytes=10**9) as store:
        new_run(store)
        with store.lock("r"):
            complete(store, "n0", "a")
    with store_class(tmp_path, compact_min_bytes=10**9) as store, store.lock("r"):
        reads = CountingReads(monkeypatch)
        # As run() resumes: load under the lock, then commit per node.
        assert store.load("r").nodes["n0"].output == "a"
        assert reads.files == 2  # the snapshot and the journal, once each
        with monkeypatch.context() as patch:
            no_stat(patch)
            for name in ("n1", "n2"):
                complete(store, name, name)
            assert store.load("r").nodes["n2"].output == "n2"  # from memory, under the lock
        assert reads.files == 2
    with store_class(tmp_path) as store:  # what the disk holds
        assert [store.load("r").nodes[n].output for n in ("n0", "n1", "n2")] == ["a", "n1", "n2"]


def test_a_new_run_is_saved_and_committed_without_reading(
    tmp_path: Path, store_class: type[JournaledStore], monkeypatch: pytest.MonkeyPatch
) -> None:
    with store_class(tmp_path) as store, store.lock("r"):
        reads = CountingReads(monkeypatch)
        new_run(store)
        with monkeypatch.context() as patch:
            no_stat(patch)
            complete(store, "n0", "a")
        assert reads.files == 0
    with store_class(tmp_path) as store:
        assert store.load("r").nodes["n0"].output == "a"


def test_the_writer_goes_with_the_lock(tmp_path: Path, store_class: type[JournaledStore]) -> None:
    with store_class(tmp_path) as store:
        new_run(store)
        with store.lock("r"):
            store.load("r")
            assert "r" in store._writers
        assert "r" not in store._writers  # another process may write from here on
