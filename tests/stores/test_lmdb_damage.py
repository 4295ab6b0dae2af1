"""LMDBStore on damaged or shared files: cut-short and lost data.mdb, maps resized on open.

Each reader of a damaged store runs in its own process (forked from
`tests.forkserver`): on such files LMDB used to kill its process with SIGBUS,
which must fail the test, not end pytest.
"""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
import time
from pathlib import Path

import lmdb
import pytest

from flowdag.cli import main
from flowdag.errors import CorruptStateError, StoreError
from flowdag.state import NodeRecord, NodeStatus
from flowdag.stores import LMDBStore, open_store
from flowdag.stores._lmdb_env import _lock_file_left
from tests.forkserver import ForkServer, exec_code
from tests.stores.conformance import make_state, pending_state

ROOT = Path(__file__).resolve().parents[2]
KIB = 1024
MIB = 1024 * KIB
RUNS = 40


def child_env() -> dict[str, str]:
    """The environment of a child: this checkout first on its path."""
    return {
        **os.environ,
        "PYTHONPATH": os.pathsep.join([str(ROOT), os.environ.get("PYTHONPATH", "")]),
    }


def run_python(
    server: ForkServer, code: str, *args: object, timeout: float = 60
) -> subprocess.CompletedProcess[str]:
    """Run ``code`` in a child forked from the fork server, as ``python -c`` would."""
    return server.run(exec_code, code, *map(str, args), timeout=timeout)


def cli_job(*args: str) -> None:
    """In a forked child: the flowdag CLI with ``args``."""
    sys.exit(main(list(args)))


def flowdag_cli(server: ForkServer, *args: str) -> subprocess.CompletedProcess[str]:
    return server.run(cli_job, *args)


# Opens the store, lists and loads every run; exit 3 on CorruptStateError.
READ_ALL = """
import sys
from flowdag.errors import CorruptStateError
from flowdag.stores import LMDBStore
try:
    with LMDBStore(sys.argv[1], create=sys.argv[2] == "create") as store:
        for run_id in store.list_runs():
            store.load(run_id)
except CorruptStateError as exc:
    print(f"corrupt: {exc}")
    sys.exit(3)
print("read all")
"""


@pytest.fixture(scope="module")
def full_store(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """An LMDB store of many pages: runs, a large output (overflow pages), a run lock."""
    path = tmp_path_factory.mktemp("lmdb") / "store"
    with LMDBStore(path) as store:
        for i in range(RUNS):
            store.save(make_state(f"run-{i}"))
        store.save(pending_state("big", "a"))
        with store.lock("big"):
            blob = store.codec.encode(os.urandom(256 * KIB))
            store.commit("big", [NodeRecord("a", NodeStatus.COMPLETED, 1, output=blob)])
    return path


def copy_store(src: Path, dst: Path) -> Path:
    shutil.copytree(src, dst)
    return dst


def assert_refused(result: subprocess.CompletedProcess[str], data_file: Path, *words: str) -> None:
    """The reader ended with CorruptStateError naming the file, not a signal or wrong data."""
    assert result.returncode >= 0, f"reader killed by signal {-result.returncode}"
    assert result.returncode == 3, result.stdout + result.stderr
    assert str(data_file) in result.stdout, result.stdout
    for word in words:
        assert word in result.stdout, result.stdout


# -- a data.mdb cut short -------------------------------------------------------------------


def truncated_sizes(size: int, page: int) -> dict[str, int]:
    return {
        "a few bytes": 100,
        "one page": page,
        "two pages": 2 * page,
        "three pages": 3 * page,
        "half": size // 2 // page * page,
        "half and a bit": size // 2 + 17,
        "all but a page": size - page,
        "all but a byte": size - 1,
    }


def test_truncated_data_file_is_refused_not_a_crash(
    full_store: Path, tmp_path: Path, fork_server: ForkServer
) -> None:
    size = (full_store / "data.mdb").stat().st_size
    page = os.sysconf("SC_PAGE_SIZE")
    assert size > 20 * page  # enough pages that a cut leaves some out
    for name, cut in truncated_sizes(size, page).items():
        for create in ("create", "no-create"):
            store = copy_store(full_store, tmp_path / f"{name}-{create}".replace(" ", "-"))
            os.truncate(store / "data.mdb", cut)
            result = run_python(fork_server, READ_ALL, store, create)
            assert_refused(result, store / "data.mdb")
            if cut >= page:  # (shorter ones are not LMDB files at all: LMDB says so)
                assert "truncated" in result.stdout, (name, result.stdout)
            assert (store / "data.mdb").stat().st_size == cut, name  # left as it was


def test_truncated_data_file_in_the_cli(
    full_store: Path, tmp_path: Path, fork_server: ForkServer
) -> None:
    store = copy_store(full_store, tmp_path / "store")
    os.truncate(store / "data.mdb", (store / "data.mdb").stat().st_size // 2)
    for command in (["list"], ["status", "run-1"]):
        result = flowdag_cli(fork_server, *command, "--store", f"lmdb://{store}")
        assert result.returncode > 0, (command, result.returncode)
        assert "truncated" in result.stderr and str(store / "data.mdb") in result.stderr
    result = flowdag_cli(fork_server, "store", "verify", f"lmdb://{store}")
    assert result.returncode > 0 and "all ok" not in result.stdout
    assert "truncated" in result.stderr


def test_whole_store_still_reads(full_store: Path, tmp_path: Path, fork_server: ForkServer) -> None:
    store = copy_store(full_store, tmp_path / "store")
    result = run_python(fork_server, READ_ALL, store, "no-create")
    assert (result.returncode, result.stdout.strip()) == (0, "read all"), result.stderr
    with LMDBStore(store, create=False) as again:
        assert again.load("run-3") == make_state("run-3")


# -- a data.mdb lost ------------------------------------------------------------------------


MARKERS = {
    "codec record": ["lock.mdb", "locks"],  # what is removed besides data.mdb
    "LMDB lock file": ["lmdb-store.json", "locks"],
    "run locks": ["lmdb-store.json", "lock.mdb"],
    "all": [],
}


@pytest.mark.parametrize("emptied", [False, True], ids=["deleted", "emptied"])
@pytest.mark.parametrize("left", sorted(MARKERS))
def test_lost_data_file_is_damage_not_a_new_store(
    full_store: Path, tmp_path: Path, fork_server: ForkServer, left: str, emptied: bool
) -> None:
    store = copy_store(full_store, tmp_path / "store")
    data_file = store / "data.mdb"
    for name in MARKERS[left]:
        target = store / name
        shutil.rmtree(target) if target.is_dir() else target.unlink()
    if emptied:
        os.truncate(data_file, 0)
    else:
        data_file.unlink()
    state = "empty" if emptied else "missing"
    for create in (True, False):
        with pytest.raises(CorruptStateError) as info:
            LMDBStore(store, create=create)
        message = str(info.value)
        assert str(data_file) in message and state in message, message
        assert "restore" in message, message
    for url in (f"lmdb://{store}",):
        result = flowdag_cli(fork_server, "store", "verify", url)
        assert result.returncode > 0, result.stdout
        assert "all ok" not in result.stdout and "checked 0 runs" not in result.stdout
        assert str(data_file) in result.stderr and state in result.stderr, result.stderr
        result = flowdag_cli(fork_server, "list", "--store", url)
        assert result.returncode > 0 and str(data_file) in result.stderr, result.stderr
    # Nothing was recreated in its place.
    assert data_file.exists() is emptied
    if emptied:
        assert data_file.stat().st_size == 0


def test_new_stores_still_open(tmp_path: Path) -> None:
    # An empty directory, and one where a journaled store keeps its runs and run locks.
    with pytest.raises(StoreError, match="no store at"):
        LMDBStore(tmp_path / "empty", create=False)
    with open_store(f"json://{tmp_path / 'shared'}") as journaled:
        journaled.save(pending_state("r", "a"))
        with journaled.lock("r"):
            pass
    assert (tmp_path / "shared" / "locks").is_dir()
    with pytest.raises(StoreError, match="no store at"):
        LMDBStore(tmp_path / "shared", create=False)
    for path in (tmp_path / "empty", tmp_path / "shared"):
        with LMDBStore(path) as store:
            store.save(pending_state("r", "a"))
        with LMDBStore(path, create=False) as store:
            assert store.list_runs() == ["r"]


def create_job(store: str, go: str, i: int) -> None:
    """In a forked child: says it waits, waits for the go file, creates (or opens) the store
    and saves one run."""
    print("waiting", flush=True)
    while not os.path.exists(go):
        time.sleep(0.001)
    with LMDBStore(store) as opened:
        opened.save(pending_state(f"r{i}", "a"))
    print("saved", flush=True)


def test_processes_creating_one_store_see_no_damage(
    tmp_path: Path, fork_server: ForkServer
) -> None:
    """lock.mdb before data.mdb while another process creates the store is no damage."""
    for attempt in range(4):
        store, go = tmp_path / f"store-{attempt}", tmp_path / f"go-{attempt}"
        children = [
            fork_server.start(create_job, str(store), str(go), i, stream=True) for i in range(6)
        ]
        for child in children:  # every process waits for the go file
            assert child.stdout is not None
            assert child.stdout.readline() == "waiting\n"
        go.touch()
        for child in children:
            proc = child.wait(timeout=60)
            assert (proc.returncode, proc.stdout.strip()) == (0, "saved"), proc.stderr
        with LMDBStore(store, create=False) as again:
            assert again.list_runs() == [f"r{i}" for i in range(6)]


# -- a map resized by another process while opening ------------------------------------------


# Opens the store with a small map, once the parent holds a write transaction.
OPEN_SMALL = """
import sys
from flowdag.stores import LMDBStore
print("opening", flush=True)
try:
    with LMDBStore(sys.argv[1], map_size=64 * 1024) as store:
        print("runs", *store.list_runs(), flush=True)
except Exception as exc:
    print(f"failed: {type(exc).__name__}: {exc}", flush=True)
"""


def test_open_adopts_a_map_resized_by_another_process(tmp_path: Path) -> None:
    path = tmp_path / "store"
    with LMDBStore(path, map_size=64 * KIB) as store:
        store.save(pending_state("r", "a"))
    # This process writes the store with a large map and grows the file far past
    # the opener's map while the opener waits for the write lock in its open_db.
    env = lmdb.open(str(path), map_size=256 * MIB, max_dbs=4, create=False)
    try:
        txn = env.begin(write=True)
        filler = env.open_db(b"filler", txn=txn)
        for i in range(64):
            txn.put(b"%d" % i, os.urandom(256 * KIB), db=filler)
        opener = subprocess.Popen(
            [sys.executable, "-c", OPEN_SMALL, str(path)],
            stdout=subprocess.PIPE,
            text=True,
            env=child_env(),
        )
        try:
            assert opener.stdout is not None
            assert opener.stdout.readline().strip() == "opening"
            time.sleep(1.0)  # the opener has read the file's size and waits in open_db
            txn.commit()
            out, _ = opener.communicate(timeout=60)
        finally:
            opener.kill()
            opener.wait()
    finally:
        env.close()
    assert out.strip() == "runs r", out


# Grows the store with a large map: one 128 KiB output per commit, for a while.
GROW = """
import os, sys, time
from flowdag.state import NodeRecord, NodeStatus
from flowdag.stores import LMDBStore
from tests.stores.conformance import pending_state
names = [f"n{i}" for i in range(300)]
with LMDBStore(sys.argv[1], map_size=1 << 30) as store:
    store.save(pending_state("w", *names))
    print("ready", flush=True)
    end = time.monotonic() + 3.0
    with store.lock("w"):
        for name in names:
            if time.monotonic() > end:
                break
            blob = store.codec.encode(os.urandom(128 * 1024))
            store.commit("w", [NodeRecord(name, NodeStatus.COMPLETED, 1, output=blob)])
print("done", flush=True)
"""

# Opens the store again and again with a small map while it grows.
REOPEN = """
import sys, time
from flowdag.stores import LMDBStore
end = time.monotonic() + 2.0
opens, errors = 0, []
while time.monotonic() < end:
    try:
        with LMDBStore(sys.argv[1], map_size=64 * 1024) as store:
            store.load_statuses("w")
        opens += 1
    except Exception as exc:
        errors.append(f"{type(exc).__name__}: {exc}")
print(opens, len(errors), errors[:1], flush=True)
"""


def test_processes_with_other_map_sizes_open_a_growing_store(
    tmp_path: Path, fork_server: ForkServer
) -> None:
    path = tmp_path / "store"
    writer = subprocess.Popen(
        [sys.executable, "-c", GROW, str(path)], stdout=subprocess.PIPE, text=True, env=child_env()
    )
    try:
        assert writer.stdout is not None
        assert writer.stdout.readline().strip() == "ready"
        result = run_python(fork_server, REOPEN, path)
        assert writer.stdout.readline().strip() == "done"
    finally:
        writer.kill()
        writer.wait()
    opens, errors, _ = result.stdout.split(maxsplit=2)
    assert int(opens) > 0 and int(errors) == 0, result.stdout + result.stderr


# Holds a write lock on byte 0 of lock.mdb, as LMDB's first opener does while it sets up data.mdb.
HOLD_FIRST_BYTE = """
import fcntl, os, sys, time
fd = os.open(sys.argv[1], os.O_RDWR)
fcntl.lockf(fd, fcntl.LOCK_EX, 1, 0)
print("locked", flush=True)
time.sleep(60)
"""


def test_lock_file_of_a_store_being_created_is_no_proof(full_store: Path, tmp_path: Path) -> None:
    store = copy_store(full_store, tmp_path / "store")
    (store / "data.mdb").unlink()
    assert _lock_file_left(store / "lock.mdb", store / "data.mdb")  # left behind: damage
    holder = subprocess.Popen(
        [sys.executable, "-c", HOLD_FIRST_BYTE, str(store / "lock.mdb")],
        stdout=subprocess.PIPE,
        text=True,
    )
    try:
        assert holder.stdout is not None
        assert holder.stdout.readline().strip() == "locked"
        # Someone is creating the store right now: its data.mdb is on its way.
        assert not _lock_file_left(store / "lock.mdb", store / "data.mdb")
    finally:
        holder.kill()
        holder.wait()
    assert _lock_file_left(store / "lock.mdb", store / "data.mdb")
    (store / "data.mdb").write_bytes(b"")
    assert _lock_file_left(store / "lock.mdb", store / "data.mdb")  # emptied: damage too
