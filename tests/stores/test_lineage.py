"""A journal belongs to one snapshot: lost, rolled back or foreign files are refused, never adopted.

Real files and real processes: the runs are made by other processes (forked from the
fork server, tests/forkserver.py; killed with SIGKILL where the scenario says so) and
the files moved as an operator would.
"""

from __future__ import annotations

import os
import shutil
import time
from pathlib import Path

import pytest

import flowdag
from flowdag.errors import CorruptStateError, RunNotFoundError
from flowdag.state import NodeState, NodeStatus, RunState
from flowdag.stores import open_store
from flowdag.stores._framing import HEADER_SIZE
from flowdag.stores._journal import JournaledStore
from flowdag.stores.flatbuffers_store import FlatBuffersStore
from flowdag.stores.json_store import JSONStore
from tests.forkserver import python_m, python_script, shared
from tests.stores.fixtures.legacy import KEY, build
from tests.stores.test_journal import complete, new_run, run_dir

SCRIPT = Path(__file__).with_name("lineage_workflows.py")
LEGACY = Path(__file__).parent / "fixtures" / "legacy"
ROOT = Path(__file__).resolve().parents[2]
SCHEMES = ("json", "flatbuffers")
SUFFIX = {"json": ".json", "flatbuffers": ".fb"}


def run_script(url: str, key: str, which: str, marker: Path | None = None) -> str:
    """Run workflow ``which`` as run ``daily``; with ``marker``, SIGKILL it inside ``fetch``."""
    # ``python SCRIPT ...``, forked from the fork server (which imported flowdag once).
    args = [str(SCRIPT), str(ROOT), {**os.environ, "PYTHONPATH": str(ROOT)}, url, key, which]
    if marker is None:
        done = shared().run(python_script, *args, timeout=120)
        assert done.returncode == 0, done.stderr
        return done.stdout
    proc = shared().start(python_script, *args, str(marker))
    deadline = time.monotonic() + 60
    while not marker.exists() and proc.poll() is None and time.monotonic() < deadline:
        time.sleep(0.02)
    if proc.poll() is None:
        proc.kill()
    return proc.wait(timeout=60).stdout


@pytest.mark.parametrize("encrypted", [False, True], ids=["plain", "encrypted"])
@pytest.mark.parametrize("scheme", SCHEMES)
def test_a_new_run_never_adopts_the_journal_of_a_lost_snapshot(
    tmp_path: Path, scheme: str, encrypted: bool
) -> None:
    """Issue 10, finding 1: A partway, snapshot lost, B killed in its first node, B again."""
    url = f"{scheme}://{tmp_path / 'store'}"
    key = KEY if encrypted else "-"
    first = run_script(url, key, "A")
    assert "OUTPUT: None" in first, first  # A stopped partway: fetch completed, report failed
    run_dir = tmp_path / "store" / "runs" / "daily"
    (snapshot,) = run_dir.glob("snapshot.*")
    snapshot.unlink()  # lost, or half restored
    killed = run_script(url, key, "B", marker=tmp_path / "in-fetch")
    again = run_script(url, key, "B")
    assert "OLD-DATA" not in killed + again, (killed, again)
    # The journal A left is damage, not absence: B is refused, naming the run and the file.
    for out in (killed, again):
        assert out.startswith("CorruptStateError"), out
        assert "'daily'" in out and "journal-" in out and snapshot.name in out, out


@pytest.mark.parametrize("encrypted", [False, True], ids=["plain", "encrypted"])
@pytest.mark.parametrize("scheme", SCHEMES)
def test_a_journal_of_another_snapshot_is_refused(
    tmp_path: Path, scheme: str, encrypted: bool
) -> None:
    """A snapshot of the same generation from another run of the same id: not its journal."""
    url = f"{scheme}://{tmp_path / 'store'}"
    key = KEY if encrypted else "-"
    options = {"key": KEY} if encrypted else {}
    run_script(url, key, "A")
    run_dir = tmp_path / "store" / "runs" / "daily"
    saved = tmp_path / "saved-a"
    shutil.copytree(run_dir, saved)
    with open_store(url, **options) as store:
        store.delete("daily")
    killed = run_script(url, key, "B", marker=tmp_path / "in-fetch")
    assert "OUTPUT" not in killed
    # Put A's journal beside B's snapshot (same run, same generation, same key).
    for journal in saved.glob("journal-*"):
        shutil.copy(journal, run_dir / journal.name)
    (journal,) = run_dir.glob("journal-*")
    again = run_script(url, key, "B")
    assert "OLD-DATA" not in again, again
    assert again.startswith("CorruptStateError"), again
    assert "'daily'" in again and journal.name in again and f"snapshot{SUFFIX[scheme]}" in again


@pytest.mark.parametrize("scheme", SCHEMES)
def test_a_journal_without_its_snapshot_is_damage_not_absence(tmp_path: Path, scheme: str) -> None:
    """Issue 10, finding 4: a deleted snapshot no longer makes a run vanish from `list`."""
    url = f"{scheme}://{tmp_path / 'store'}"
    run_script(url, "-", "A")
    (snapshot,) = (tmp_path / "store" / "runs" / "daily").glob("snapshot.*")
    snapshot.unlink()
    env = {**os.environ, "PYTHONPATH": str(ROOT)}
    verify = shared().run(python_m, "flowdag", str(ROOT), env, "store", "verify", url, timeout=120)
    assert verify.returncode == 1, verify.stdout + verify.stderr
    assert "daily: damaged" in verify.stdout and snapshot.name in verify.stdout
    with open_store(url) as store:
        assert store.list_runs() == ["daily"]
        with pytest.raises(CorruptStateError) as err:
            store.load("daily")
        assert not isinstance(err.value, RunNotFoundError)
        message = str(err.value)
        assert "'daily'" in message and "journal-" in message and snapshot.name in message
        with pytest.raises(CorruptStateError):
            store.load_statuses("daily")
        assert store.delete("daily")
        assert store.list_runs() == []


@pytest.fixture(params=[JSONStore, FlatBuffersStore], ids=["json", "flatbuffers"])
def store_class(request: pytest.FixtureRequest) -> type[JournaledStore]:
    cls: type[JournaledStore] = request.param
    return cls


@pytest.fixture(params=[False, True], ids=["plain", "encrypted"])
def key(request: pytest.FixtureRequest) -> dict[str, str]:
    return {"key": KEY} if request.param else {}


def _compacted_run(store: JournaledStore) -> tuple[bytes, Path]:
    """A run compacted at least twice; the snapshot before the last compaction, the journal."""
    new_run(store, nodes=300)
    directory = run_dir(store)
    snapshots: list[bytes] = []
    for i in range(300):
        complete(store, f"n{i}", {"i": i, "pad": "p" * 40})
        (path,) = directory.glob("snapshot.*")
        content = path.read_bytes()
        if not snapshots or snapshots[-1] != content:
            snapshots.append(content)
        (journal,) = directory.glob("journal-*.log")
        if len(snapshots) >= 3 and journal.stat().st_size > 100:
            break
    assert journal.stat().st_size > 100  # the newer journal holds commits
    return snapshots[-2], journal


def test_an_older_snapshot_over_a_newer_journal_is_refused_and_the_journal_kept(
    tmp_path: Path, store_class: type[JournaledStore], key: dict[str, str]
) -> None:
    """Issue 10, finding 3: a partial rollback is detected, and no writer drops the journal."""
    with store_class(tmp_path, compact_min_bytes=2048, **key) as store:
        older, journal = _compacted_run(store)
        completed = sum(n.status is NodeStatus.COMPLETED for n in store.load("r").nodes.values())
    newer = journal.read_bytes()
    (snapshot,) = run_dir(store).glob("snapshot.*")
    snapshot.write_bytes(older)  # restored from an older backup
    with store_class(tmp_path, compact_min_bytes=2048, **key) as store:
        for read in (store.load, store.load_statuses):
            with pytest.raises(CorruptStateError) as err:
                read("r")
            message = str(err.value)
            assert "'r'" in message and journal.name in message and snapshot.name in message
        with store.lock("r"), pytest.raises(CorruptStateError):
            complete(store, "n299", "more")  # the writer refuses too
        assert journal.read_bytes() == newer
        # A whole new state saved over it moves the journal aside, never deletes it.
        store.save(RunState("r", "wf", nodes={"n0": NodeState()}))
        assert store.load("r").nodes.keys() == {"n0"}
    kept = [p for p in run_dir(store).iterdir() if p.read_bytes() == newer]
    assert kept and completed > 0, list(run_dir(store).iterdir())


def test_a_save_over_a_lost_snapshot_sets_the_journal_aside(
    tmp_path: Path, store_class: type[JournaledStore], key: dict[str, str]
) -> None:
    """The next writer of a run whose snapshot is lost never adopts nor deletes its journal."""
    with store_class(tmp_path, **key) as store:
        new_run(store)
        complete(store, "n0", "old")
        (journal,) = run_dir(store).glob("journal-*.log")
        content = journal.read_bytes()
        (snapshot,) = run_dir(store).glob("snapshot.*")
    snapshot.unlink()
    with store_class(tmp_path, **key) as store:
        new_run(store)
        assert store.load("r").nodes["n0"].status is NodeStatus.PENDING
        complete(store, "n1", "new")
        loaded = store.load("r")
    assert loaded.nodes["n0"].status is NodeStatus.PENDING
    assert loaded.nodes["n1"].output == "new"
    assert any(p.read_bytes() == content for p in run_dir(store).iterdir())


def test_a_record_copied_from_another_journal_is_refused(
    tmp_path: Path, store_class: type[JournaledStore], key: dict[str, str]
) -> None:
    """Each record's checksum (and, encrypted, its associated data) covers its snapshot's id."""
    with store_class(tmp_path / "a", **key) as store:
        new_run(store)
        complete(store, "n0", "from a")
        (theirs,) = run_dir(store).glob("journal-*.log")
    with store_class(tmp_path / "b", **key) as store:
        new_run(store)
        complete(store, "n1", "from b")
        (mine,) = run_dir(store).glob("journal-*.log")
    assert theirs.name == mine.name  # same run id, same generation, same offsets
    record = theirs.read_bytes()[HEADER_SIZE:]
    header = mine.read_bytes()[:HEADER_SIZE]
    for spliced in (header + record, mine.read_bytes() + record):
        mine.write_bytes(spliced)
        with store_class(tmp_path / "b", **key) as store, pytest.raises(CorruptStateError) as err:
            store.load("r")
        assert "'r'" in str(err.value) and mine.name in str(err.value)


def test_a_damaged_journal_header_is_refused(
    tmp_path: Path, store_class: type[JournaledStore]
) -> None:
    with store_class(tmp_path) as store:
        new_run(store)
        complete(store, "n0", "a")
        (journal,) = run_dir(store).glob("journal-*.log")
    content = journal.read_bytes()
    for at in range(HEADER_SIZE):
        damaged = bytearray(content)
        damaged[at] ^= 0x01
        journal.write_bytes(bytes(damaged))
        with store_class(tmp_path) as store, pytest.raises(CorruptStateError) as err:
            store.load("r")
        assert journal.name in str(err.value), at
    journal.write_bytes(content[:10])  # a header cut short: never written so by flowdag
    with store_class(tmp_path) as store, pytest.raises(CorruptStateError):
        store.load("r")


def test_a_compaction_never_adopts_a_journal_planted_at_its_next_generation(
    tmp_path: Path, store_class: type[JournaledStore], key: dict[str, str]
) -> None:
    with store_class(tmp_path / "other", **key) as store:
        new_run(store)
        store.save(store.load("r"))  # generation 2
        complete(store, "n0", "planted")
        (planted,) = run_dir(store).glob("journal-*.log")
    content = planted.read_bytes()
    with store_class(tmp_path / "s", compact_min_bytes=0, **key) as store:
        new_run(store)
        with store.lock("r"):
            complete(store, "n1", "x")
            target = run_dir(store) / planted.name  # the name the next compaction takes
            target.write_bytes(content)
            complete(store, "n2", "y" * 5000)  # bigger than the snapshot: compacts
            complete(store, "n3", "z")
        loaded = store.load("r")
    assert loaded.nodes["n0"].status is NodeStatus.PENDING  # never adopted
    assert [loaded.nodes[n].output for n in ("n1", "n2", "n3")] == ["x", "y" * 5000, "z"]
    assert any(p.read_bytes() == content for p in run_dir(store).iterdir())  # never deleted


@pytest.mark.parametrize("encrypted", [False, True], ids=["plain", "encrypted"])
@pytest.mark.parametrize("scheme", SCHEMES)
def test_a_run_of_the_previous_release_moves_to_format_2_at_its_first_commit(
    tmp_path: Path, scheme: str, encrypted: bool
) -> None:
    where = tmp_path / "store"
    source = LEGACY / (f"{scheme}-encrypted" if encrypted else scheme)
    shutil.copytree(source, where)
    run_dir = where / "runs" / "legacy"
    (old_journal,) = run_dir.glob("journal-*.log")
    assert not old_journal.read_bytes().startswith(b"FDJ2")  # format 1: no header
    options = {"key": KEY} if encrypted else {}
    with open_store(f"{scheme}://{where}", **options) as store:
        before = store.load("legacy")  # read as the previous release read it: nothing written
        assert sorted(p.name for p in run_dir.iterdir()) == sorted(
            p.name for p in source.joinpath("runs", "legacy").iterdir()
        )
        flowdag.run(build(fail=False), run_id="legacy", store=store)
        after = store.load("legacy")
    assert before.nodes["extract"] == after.nodes["extract"]
    (journal,) = run_dir.glob("journal-*.log")
    assert journal.name != old_journal.name and journal.read_bytes().startswith(b"FDJ2")
    (snapshot,) = run_dir.glob("snapshot.*")
    journaled = JSONStore if scheme == "json" else FlatBuffersStore
    with journaled(where, **options) as typed:
        content = typed._files.open_snapshot("legacy", snapshot, snapshot.read_bytes())
        stamp = typed.format.load_snapshot_metas(content)[2]
    assert len(stamp.id) == 16 and stamp.generation == 2
