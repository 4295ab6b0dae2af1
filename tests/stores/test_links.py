"""Links planted inside a store: nothing is written (or read) through them.

Each attack plants a real symbolic link (or a FIFO) inside a real store and
checks that the file or directory it points to outside the store is left
exactly as it was, and that the store refuses with a `StoreError` naming the
link. The store directory itself may be a link: that one is the user's choice.
"""

from __future__ import annotations

import os
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import pytest

from flowdag.errors import StoreError
from flowdag.state import NodeRecord, NodeState, NodeStatus, RunState
from flowdag.stores import FlatBuffersStore, JSONStore, LMDBStore
from flowdag.stores._directory import DirectoryStore
from flowdag.stores._files import atomic_write, make_private_dir, open_private, read_file

ROOT = Path(__file__).resolve().parents[2]
PRECIOUS = b"precious outside data\n"

KINDS: dict[str, type[DirectoryStore]] = {
    "lmdb": LMDBStore,
    "json": JSONStore,
    "flatbuffers": FlatBuffersStore,
}
JOURNALED = ["json", "flatbuffers"]


@pytest.fixture
def outside(tmp_path: Path) -> Iterator[Path]:
    """A file outside the store, mode 0644, that nothing may change."""
    path = tmp_path / "outside.txt"
    path.write_bytes(PRECIOUS)
    path.chmod(0o644)
    yield path
    assert path.read_bytes() == PRECIOUS, "written through a link"
    assert path.stat().st_mode & 0o777 == 0o644, "chmod-ed through a link"


@pytest.fixture
def outside_dir(tmp_path: Path) -> Iterator[Path]:
    """A directory outside the store, which must stay empty."""
    path = tmp_path / "outside"
    path.mkdir()
    yield path
    assert list(path.iterdir()) == [], "written through a link"


def new_run(store: DirectoryStore, run_id: str = "r1") -> None:
    store.save(RunState(run_id, "wf", nodes={"a": NodeState(), "b": NodeState()}))


def complete(store: DirectoryStore, name: str, run_id: str = "r1") -> None:
    record = NodeRecord(name, NodeStatus.COMPLETED, 1, output=store.codec.encode(name * 10))
    store.commit(run_id, [record])


def make_store(kind: str, path: Path) -> None:
    """A store at ``path`` holding run r1 with node a done, its lock released."""
    with KINDS[kind](path) as store, store.lock("r1"):
        new_run(store)
        complete(store, "a")


def plant(link: Path, target: Path) -> Path:
    """Replace the file ``link`` with a symbolic link to ``target``."""
    link.unlink()
    link.symlink_to(target)
    return link


def refused(err: pytest.ExceptionInfo[StoreError], link: Path) -> None:
    message = str(err.value)
    assert str(link) in message and "symbolic link" in message, message


def run_flowdag(*args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "flowdag", *args],
        cwd=ROOT,
        env={**os.environ, "PYTHONPATH": str(ROOT), "COLUMNS": "200"},
        capture_output=True,
        text=True,
        timeout=120,
    )


# -- locks/<run>.lock -> an outside file ------------------------------------------


@pytest.mark.parametrize("kind", list(KINDS))
def test_a_lock_file_link_is_refused_not_truncated(
    kind: str, tmp_path: Path, outside: Path
) -> None:
    make_store(kind, tmp_path / "s")
    link = plant(tmp_path / "s" / "locks" / "r1.lock", outside)
    with KINDS[kind](tmp_path / "s") as store, pytest.raises(StoreError) as err, store.lock("r1"):
        pass
    refused(err, link)


@pytest.mark.parametrize("kind", JOURNALED)
def test_a_read_only_list_writes_no_lock_file(kind: str, tmp_path: Path, outside: Path) -> None:
    make_store(kind, tmp_path / "s")
    plant(tmp_path / "s" / "locks" / "r1.lock", outside)
    done = run_flowdag("list", "--store", f"{kind}://{tmp_path / 's'}")
    assert done.returncode == 0, done.stderr
    assert "r1" in done.stdout


@pytest.mark.parametrize("kind", list(KINDS))
def test_a_locks_directory_link_is_refused(kind: str, tmp_path: Path, outside_dir: Path) -> None:
    make_store(kind, tmp_path / "s")
    link = tmp_path / "s" / "locks"
    for lock in link.iterdir():
        lock.unlink()
    link.rmdir()
    link.symlink_to(outside_dir, target_is_directory=True)
    # The journaled stores refuse it on open, LMDB when it locks a run.
    with pytest.raises(StoreError) as err, KINDS[kind](tmp_path / "s") as store, store.lock("r1"):
        pass
    refused(err, link)


# -- LMDB's own files -> outside files ----------------------------------------------


@pytest.mark.parametrize("name", ["lock.mdb", "data.mdb"])
def test_an_lmdb_file_link_is_refused(name: str, tmp_path: Path, outside: Path) -> None:
    make_store("lmdb", tmp_path / "s")
    link = plant(tmp_path / "s" / name, outside)
    with pytest.raises(StoreError) as err:
        LMDBStore(tmp_path / "s")
    refused(err, link)


def test_an_lmdb_lock_file_link_is_refused_on_a_new_store(tmp_path: Path, outside: Path) -> None:
    (tmp_path / "s").mkdir()
    link = tmp_path / "s" / "lock.mdb"
    link.symlink_to(outside)
    with pytest.raises(StoreError) as err:
        LMDBStore(tmp_path / "s")
    refused(err, link)


# -- runs/<run> and runs/ -> an outside directory ----------------------------------------


@pytest.mark.parametrize("kind", JOURNALED)
def test_a_run_directory_link_is_refused(kind: str, tmp_path: Path, outside_dir: Path) -> None:
    with KINDS[kind](tmp_path / "s"):
        pass
    link = tmp_path / "s" / "runs" / "r1"
    link.symlink_to(outside_dir, target_is_directory=True)
    with KINDS[kind](tmp_path / "s") as store:
        with pytest.raises(StoreError) as err, store.lock("r1"):
            new_run(store)
        refused(err, link)
        with pytest.raises(StoreError) as err:
            new_run(store)  # without the lock, too
        refused(err, link)


@pytest.mark.parametrize("kind", JOURNALED)
def test_a_run_directory_link_is_not_read(kind: str, tmp_path: Path) -> None:
    make_store(kind, tmp_path / "s")
    elsewhere = tmp_path / "elsewhere"
    os.replace(tmp_path / "s" / "runs" / "r1", elsewhere)  # a valid run, outside
    link = tmp_path / "s" / "runs" / "r1"
    link.symlink_to(elsewhere, target_is_directory=True)
    with KINDS[kind](tmp_path / "s") as store:
        for read in (store.load, store.load_statuses):
            with pytest.raises(StoreError) as err:
                read("r1")
            refused(err, link)


@pytest.mark.parametrize("kind", JOURNALED)
def test_a_runs_directory_link_is_refused(kind: str, tmp_path: Path, outside_dir: Path) -> None:
    (tmp_path / "s").mkdir()
    link = tmp_path / "s" / "runs"
    link.symlink_to(outside_dir, target_is_directory=True)
    with pytest.raises(StoreError) as err:
        KINDS[kind](tmp_path / "s")
    refused(err, link)


# -- files of a run -> outside files ---------------------------------------------------


@pytest.mark.parametrize("pattern", ["journal-*.log", "snapshot.*"])
@pytest.mark.parametrize("kind", JOURNALED)
def test_a_run_file_link_is_neither_read_nor_written(
    kind: str, pattern: str, tmp_path: Path, outside: Path
) -> None:
    make_store(kind, tmp_path / "s")
    (file,) = (tmp_path / "s" / "runs" / "r1").glob(pattern)
    link = plant(file, outside)
    with KINDS[kind](tmp_path / "s") as store:
        with pytest.raises(StoreError) as err:
            store.load("r1")
        refused(err, link)
        with pytest.raises(StoreError) as err, store.lock("r1"):
            complete(store, "b")  # a journal link would get this record appended
        refused(err, link)


@pytest.mark.parametrize("kind", JOURNALED)
def test_a_fifo_in_place_of_a_snapshot_does_not_hang(kind: str, tmp_path: Path) -> None:
    make_store(kind, tmp_path / "s")
    (snapshot,) = (tmp_path / "s" / "runs" / "r1").glob("snapshot.*")
    snapshot.unlink()
    os.mkfifo(snapshot)
    url = f"{kind}://{tmp_path / 's'}"
    code = (
        "import sys; from flowdag.stores import open_store\n"
        f"store = open_store({url!r})\n"
        "try:\n    store.load('r1')\nexcept Exception as exc:\n    print(type(exc).__name__, exc)\n"
    )
    done = subprocess.run(
        [sys.executable, "-c", code],
        env={**os.environ, "PYTHONPATH": str(ROOT)},
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert done.stdout.startswith("StoreError") and str(snapshot) in done.stdout, done


@pytest.mark.parametrize("kind", list(KINDS))
def test_a_codec_record_link_is_refused(kind: str, tmp_path: Path, outside: Path) -> None:
    make_store(kind, tmp_path / "s")
    link = plant(tmp_path / "s" / f"{kind}-store.json", outside)
    with pytest.raises(StoreError) as err:
        KINDS[kind](tmp_path / "s")
    refused(err, link)


# -- what stays allowed ----------------------------------------------------------------------


@pytest.mark.parametrize("kind", list(KINDS))
def test_the_store_directory_itself_may_be_a_link(kind: str, tmp_path: Path) -> None:
    real = tmp_path / "data" / "state"
    real.mkdir(parents=True)
    (tmp_path / "state").symlink_to(real, target_is_directory=True)
    make_store(kind, tmp_path / "state")
    with KINDS[kind](tmp_path / "state") as store, store.lock("r1"):
        complete(store, "b")
        assert store.load("r1").nodes["b"].status is NodeStatus.COMPLETED
    assert (real / "locks" / "r1.lock").is_file()


@pytest.mark.parametrize("kind", JOURNALED)
def test_a_new_run_over_a_planted_snapshot_link_is_refused(
    kind: str, tmp_path: Path, outside: Path
) -> None:
    with KINDS[kind](tmp_path / "s"):
        pass
    run = tmp_path / "s" / "runs" / "r1"
    make_private_dir(run)
    link = run / f"snapshot{KINDS[kind].format.suffix}"  # type: ignore[attr-defined]
    link.symlink_to(outside)
    with KINDS[kind](tmp_path / "s") as store, store.lock("r1"):
        with pytest.raises(StoreError) as err:
            new_run(store)
        refused(err, link)
        link.unlink()
        new_run(store)  # once the link is gone
        complete(store, "a")
        assert store.load("r1").nodes["a"].status is NodeStatus.COMPLETED


def test_the_file_helpers_never_follow_a_final_link(tmp_path: Path, outside: Path) -> None:
    link = tmp_path / "link"
    link.symlink_to(outside)
    for attempt in (
        lambda: os.close(open_private(link)),
        lambda: read_file(link),
        lambda: open_private(link, os.O_RDWR | os.O_APPEND),
    ):
        with pytest.raises(StoreError) as err:
            attempt()
        refused(err, link)
    atomic_write(link, b"new")  # replaces the link, not its target
    assert not link.is_symlink() and link.read_bytes() == b"new"
    assert link.stat().st_mode & 0o777 == 0o600


def test_a_directory_link_below_the_root_is_refused(tmp_path: Path, outside_dir: Path) -> None:
    (tmp_path / "root").mkdir()
    link = tmp_path / "root" / "sub"
    link.symlink_to(outside_dir, target_is_directory=True)
    for attempt in (
        lambda: make_private_dir(link / "deeper", root=tmp_path / "root"),
        lambda: atomic_write(link / "f", b"x", root=tmp_path / "root"),
        lambda: os.close(open_private(link / "f", root=tmp_path / "root")),
    ):
        with pytest.raises(StoreError) as err:
            attempt()
        refused(err, link)


def test_checking_lmdb_files_keeps_lmdbs_locks(tmp_path: Path) -> None:
    # LMDB marks an environment in use with a POSIX (fcntl) read lock on
    # lock.mdb. Closing any descriptor of that file drops every such lock of
    # the process, so the link checks must never open and close lock.mdb once
    # LMDB has it: another process would then take the environment for unused
    # and reset its lock table under a running writer (lost commits).
    probe = (
        "import fcntl, os, sys\n"
        "fd = os.open(sys.argv[1], os.O_RDWR)\n"
        "try:\n    fcntl.lockf(fd, fcntl.LOCK_EX | fcntl.LOCK_NB, 1, 0)\n"
        "except OSError:\n    print('in use')\nelse:\n    print('free')\n"
    )
    lock = str(tmp_path / "s" / "lock.mdb")
    with LMDBStore(tmp_path / "s") as store:
        new_run(store)
        with LMDBStore(tmp_path / "s") as again:  # a second store on the same environment
            assert again.list_runs() == ["r1"]
        done = subprocess.run(
            [sys.executable, "-c", probe, lock], capture_output=True, text=True, timeout=60
        )
        assert done.stdout.strip() == "in use", done
