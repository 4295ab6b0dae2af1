"""LMDBStore: the conformance suite, plus processes, permissions, map growth, damage."""

from __future__ import annotations

import os
import random
import signal
import stat
import subprocess
import sys
import zlib
from collections.abc import Iterator
from pathlib import Path

import lmdb
import msgpack
import pytest

from flowdag.errors import CorruptStateError, RunLockedError, RunNotFoundError, StoreError
from flowdag.state import NodeRecord, NodeState, NodeStatus, RunState
from flowdag.stores import LMDBStore, MemoryStore, open_store
from flowdag.stores._files import atomic_write, make_private_dir, open_private
from flowdag.stores._lmdb_keys import SMALL_OUTPUT, pack_named
from flowdag.stores._locks import lock_run_file
from flowdag.stores.base import Store
from tests.stores.conformance import PLAIN_VALUES, StoreTests, make_state, pending_state

ROOT = Path(__file__).resolve().parents[2]
KIB = 1024
MIB = 1024 * KIB


class TestLMDBStore(StoreTests):
    @pytest.fixture
    def store_dir(self, tmp_path: Path) -> Path:
        return tmp_path / "store"

    @pytest.fixture
    def store(self, store_dir: Path) -> Iterator[Store]:
        with LMDBStore(store_dir) as store:
            yield store


@pytest.fixture
def store(tmp_path: Path) -> Iterator[LMDBStore]:
    with LMDBStore(tmp_path / "store") as store:
        yield store


@pytest.fixture
def no_umask() -> Iterator[None]:
    """Umask 0, so modes that are right are right whatever the umask."""
    old = os.umask(0)
    try:
        yield
    finally:
        os.umask(old)


def spawn(code: str, *args: object) -> subprocess.Popen[str]:
    env = {
        **os.environ,
        "PYTHONPATH": os.pathsep.join([str(ROOT), os.environ.get("PYTHONPATH", "")]),
    }
    return subprocess.Popen(
        [sys.executable, "-c", code, *map(str, args)],
        stdout=subprocess.PIPE,
        text=True,
        env=env,
    )


def raw_env(path: Path) -> lmdb.Environment:
    """The store's environment opened directly (only while no LMDBStore has it open)."""
    return lmdb.open(str(path), max_dbs=4, create=False)


# -- persistence and sharing ------------------------------------------------------------


def test_runs_survive_reopening(tmp_path: Path) -> None:
    state = make_state()
    with LMDBStore(tmp_path / "s") as store:
        store.save(state)
        store.commit("run-1", [NodeRecord("pending", NodeStatus.SKIPPED, attempts=0)])
    state.nodes["pending"].status = NodeStatus.SKIPPED
    with LMDBStore(tmp_path / "s") as store:
        assert store.load("run-1") == state
        assert store.list_runs() == ["run-1"]


def test_stores_on_one_directory_share_the_environment(tmp_path: Path) -> None:
    (tmp_path / "s").mkdir()
    (tmp_path / "alias").symlink_to(tmp_path / "s")
    one = LMDBStore(tmp_path / "s")
    two = LMDBStore(tmp_path / "alias")  # same files under another name
    one.save(pending_state("r", "a"))
    assert two.load("r") == pending_state("r", "a")
    one.close()
    two.commit("r", [NodeRecord("a", NodeStatus.COMPLETED)])  # still open
    two.close()
    with LMDBStore(tmp_path / "s") as three:  # all closed: opens afresh
        assert three.load("r").nodes["a"].status is NodeStatus.COMPLETED


def test_key_layout(tmp_path: Path) -> None:
    long_name = "n" * 600  # longer than an LMDB key: only its number is in one
    big = b"y" * (SMALL_OUTPUT + 1)  # an output too large for its node's entry
    state = make_state("run-1")
    with LMDBStore(tmp_path / "s") as store:
        store.save(state)
        store.commit("run-1", [NodeRecord(long_name, NodeStatus.COMPLETED, output=b"x")])
        store.commit("run-1", [NodeRecord("big", NodeStatus.COMPLETED, output=big)])
    prefix = b"run-1\x00"
    with raw_env(tmp_path / "s") as env:
        runs = env.open_db(b"runs", create=False)
        nodes = env.open_db(b"nodes", create=False)
        outputs = env.open_db(b"outputs", create=False)
        data = env.open_db(b"data", create=False)
        with env.begin() as txn:
            assert [key for key, _ in txn.cursor(runs)] == [b"run-1"]
            # The run's marker sorts first: the layout and the next number.
            marker = msgpack.unpackb(txn.get(prefix, db=nodes))
            assert (marker["layout"], len(marker["nonce"])) == (2, 8)
            names: dict[str, int] = {}
            in_entry: dict[str, bytes] = {}  # small outputs, held by their node's entry
            in_outputs: dict[str, bytes] = {}
            for db in (nodes, outputs, data):
                for key, value in txn.cursor(db):
                    if key == prefix:
                        continue
                    assert key.startswith(prefix + b"\x01") and len(key) == len(prefix) + 5
                    name, blob, crc, *output = msgpack.unpackb(value, raw=False)
                    assert isinstance(blob, bytes) and crc == zlib.crc32(name.encode())
                    number = int.from_bytes(key[-4:], "big")
                    if db is nodes and output:
                        in_entry[name] = output[0]
                    assert not output or db is nodes  # only a node's entry holds an output
                    if db is not outputs:
                        names[name] = number
                    else:
                        assert names[name] == number  # an output is keyed as its node
                        in_outputs[name] = blob
    assert in_entry[long_name] == b"x" and long_name not in in_outputs
    assert in_outputs["big"] == big and "big" not in in_entry
    with LMDBStore(tmp_path / "s") as store:
        stored = store._to_stored(make_state("run-1"))  # never-run nodes get no entry
        assert long_name in store._load("run-1").nodes
    # Numbered in order: the saved nodes, then the saved data keys, then the committed node.
    assert sorted(names, key=names.__getitem__) == [*stored.nodes, *stored.data, long_name, "big"]
    assert sorted(names.values()) == list(range(len(names))) and marker["next"] == len(names)


def _outputs_entries(path: Path) -> int:
    with raw_env(path) as env:
        outputs = env.open_db(b"outputs", create=False)
        with env.begin() as txn:
            return sum(1 for _ in txn.cursor(outputs))


def test_new_nodes_fill_their_pages_and_other_runs_stay_whole(tmp_path: Path) -> None:
    """A run's new node entries are appended, so LMDB leaves full pages behind (an
    insert would split each in half); with another run's entries after them, they
    are inserted, and both runs read back whole."""
    nodes = 300
    with LMDBStore(tmp_path / "s") as store:
        for run_id in ("b", "a"):  # "a" sorts first: its entries are never the last keys
            store.save(RunState(run_id, "wf", {f"n{i}": NodeState() for i in range(nodes)}))
        for i in range(nodes):
            for run_id in ("b", "a"):
                output = bytes([i % 251]) * 600
                store.commit(run_id, [NodeRecord(f"n{i}", NodeStatus.COMPLETED, 1, output=output)])
        for run_id in ("a", "b"):
            loaded = store._load(run_id).nodes
            assert [loaded[f"n{i}"].output for i in range(nodes)] == [
                bytes([i % 251]) * 600 for i in range(nodes)
            ]
    with LMDBStore(tmp_path / "alone") as store:
        store.save(RunState("r", "wf", {f"n{i}": NodeState() for i in range(nodes)}))
        for i in range(nodes):
            store.commit("r", [NodeRecord(f"n{i}", NodeStatus.COMPLETED, 1, output=b"x" * 600)])
    with raw_env(tmp_path / "alone") as env, env.begin() as txn:
        db = env.open_db(b"nodes", txn=txn, create=False)
        sizes = [8 + len(key) + len(value) + 2 for key, value in txn.cursor(db)]
        per_page = (4096 - 16) // max(sizes)
        assert txn.stat(db)["leaf_pages"] <= -(-len(sizes) // per_page) + 1


@pytest.mark.parametrize("encrypted", [False, True])
def test_an_output_moves_between_its_entry_and_outputs_as_its_size_changes(
    tmp_path: Path, encrypted: bool
) -> None:
    """A re-run that makes a small output after a large one (or the reverse, or none)
    leaves one output of the node, the latest, wherever it is kept."""
    key = os.urandom(32).hex() if encrypted else None
    small, large = b"s", b"L" * (SMALL_OUTPUT + 1)
    with LMDBStore(tmp_path / "s", key=key) as store:
        store.save(pending_state("r", "a"))
    for output, entries in ((large, 1), (small, 0), (large, 1), (None, 0), (small, 0)):
        status = NodeStatus.FAILED if output is None else NodeStatus.COMPLETED
        with LMDBStore(tmp_path / "s", key=key) as store:
            store.commit("r", [NodeRecord("a", status, output=output)])
            assert store._load("r").nodes["a"].output == output
        with LMDBStore(tmp_path / "s", key=key) as store:  # as read afresh
            assert store._load("r").nodes["a"].output == output
        assert _outputs_entries(tmp_path / "s") == entries


def test_a_node_with_an_output_in_its_entry_and_in_outputs_is_damaged(tmp_path: Path) -> None:
    with LMDBStore(tmp_path / "s") as store:
        store.save(pending_state("r", "a"))
        one = store.codec.encode(1)
        store.commit("r", [NodeRecord("a", NodeStatus.COMPLETED, output=one)])
    with raw_env(tmp_path / "s") as env:
        nodes = env.open_db(b"nodes", create=False)
        outputs = env.open_db(b"outputs", create=False)
        with env.begin(write=True) as txn:
            [key] = [k for k, v in txn.cursor(nodes) if k != b"r\x00" and len(v) > 8]
            txn.put(key, pack_named("a", one), db=outputs)
    with LMDBStore(tmp_path / "s") as store, pytest.raises(CorruptStateError, match="two outputs"):
        store.load("r")


def test_crash_never_loses_a_reported_commit(tmp_path: Path) -> None:
    # The child reports each node after commit returns; kill -9 it mid-stream.
    code = """
import sys
from flowdag.state import NodeRecord, NodeState, NodeStatus, RunState
from flowdag.stores.lmdb_store import LMDBStore
store = LMDBStore(sys.argv[1], map_size=64 * 1024)
names = [f"n{i}" for i in range(20_000)]
store.save(RunState("r", "wf", {name: NodeState() for name in names}))
print("saved", flush=True)
for name in names:
    output = store.codec.encode(name * 100)
    store.commit("r", [NodeRecord(name, NodeStatus.COMPLETED, 1, output=output)])
    print(name, flush=True)
"""
    proc = spawn(code, tmp_path / "s")
    try:
        assert proc.stdout is not None
        assert proc.stdout.readline().strip() == "saved"
        reported = [proc.stdout.readline().strip() for _ in range(30)]
        proc.send_signal(signal.SIGKILL)
        proc.wait()
        reported += [line.strip() for line in proc.stdout if line.strip()]
    finally:
        proc.kill()
        proc.wait()
    with LMDBStore(tmp_path / "s") as store:
        state = store.load("r")
    for name in reported:
        assert state.nodes[name] == NodeState(NodeStatus.COMPLETED, 1, output=name * 100)
    done = [name for name, node in state.nodes.items() if node.status is NodeStatus.COMPLETED]
    assert len(reported) <= len(done) <= len(reported) + 1  # at most one unreported commit


# -- locking across processes ---------------------------------------------------------

HOLD_LOCK = """
import sys, time
from flowdag.stores.lmdb_store import LMDBStore
store = LMDBStore(sys.argv[1])
held = store.lock(sys.argv[2])
held.__enter__()  # keep a reference: a collected context manager releases
print("locked", flush=True)
time.sleep(120)
"""


def test_lock_held_by_another_process(store: LMDBStore) -> None:
    proc = spawn(HOLD_LOCK, store.path, "nightly")
    try:
        assert proc.stdout is not None
        assert proc.stdout.readline().strip() == "locked"
        with pytest.raises(RunLockedError) as info, store.lock("nightly"):
            pass  # pragma: no cover
        message = str(info.value)
        assert f"pid {proc.pid}" in message
        assert "run 'nightly'" in message
        assert str(store.path / "locks" / "nightly.lock") in message
        assert "use another run id" in message and "--" not in message
        with store.lock("other"):  # only that run id is taken
            pass
        proc.send_signal(signal.SIGKILL)  # the OS drops the dead holder's lock
        proc.wait()
        with store.lock("nightly"):
            pass
    finally:
        proc.kill()
        proc.wait()
    assert (store.path / "locks" / "nightly.lock").exists()  # never deleted


def test_lock_message_in_process(store: LMDBStore) -> None:
    with (
        store.lock("nightly"),
        pytest.raises(RunLockedError, match=r"this process"),
        store.lock("nightly"),
    ):
        pass  # pragma: no cover


def test_lock_from_two_stores_in_one_process(tmp_path: Path) -> None:
    with LMDBStore(tmp_path / "s") as one, LMDBStore(tmp_path / "s") as two:
        with one.lock("r"), pytest.raises(RunLockedError), two.lock("r"):
            pass  # pragma: no cover
        with two.lock("r"):
            pass


# -- permissions ----------------------------------------------------------------------


def mode(path: Path) -> int:
    return stat.S_IMODE(os.stat(path).st_mode)


def test_permissions(tmp_path: Path, no_umask: None) -> None:
    path = tmp_path / "a" / "b" / "store"
    with LMDBStore(path) as store, store.lock("r"):
        pass
    for directory in (tmp_path / "a", tmp_path / "a" / "b", path, path / "locks"):
        assert mode(directory) == 0o700, directory
    for file in (path / "data.mdb", path / "lock.mdb", path / "locks" / "r.lock"):
        assert mode(file) == 0o600, file


def test_existing_directory_keeps_its_mode(tmp_path: Path, no_umask: None) -> None:
    path = tmp_path / "shared"
    path.mkdir(mode=0o750)
    os.chmod(path, 0o750)
    LMDBStore(path).close()
    assert mode(path) == 0o750
    assert mode(path / "data.mdb") == 0o600


def test_loose_file_modes_are_tightened(tmp_path: Path) -> None:
    LMDBStore(tmp_path / "s").close()
    os.chmod(tmp_path / "s" / "data.mdb", 0o644)
    LMDBStore(tmp_path / "s").close()
    assert mode(tmp_path / "s" / "data.mdb") == 0o600


# -- map growth -----------------------------------------------------------------------


def test_map_grows_on_commit(tmp_path: Path) -> None:
    with LMDBStore(tmp_path / "s", map_size=64 * KIB) as store:
        store.save(pending_state("r", *(f"n{i}" for i in range(40))))
        encode = store.codec.encode
        for i in range(40):
            blob = encode(os.urandom(100 * KIB))  # incompressible: 4 MB in all
            store.commit("r", [NodeRecord(f"n{i}", NodeStatus.COMPLETED, output=blob,
                                          data={f"k{i}": encode(bytes(50 * KIB))})])  # fmt: skip
        state = store.load("r")
        assert all(len(node.output) == 100 * KIB for node in state.nodes.values())
        assert len(state.data) == 40
    with LMDBStore(tmp_path / "s", map_size=64 * KIB) as store:  # small map_size on reopen
        assert len(store.load("r").nodes) == 40
        store.commit("r", [NodeRecord("n0", NodeStatus.COMPLETED, output=encode(bytes(MIB)))])


def test_map_grows_on_save(tmp_path: Path) -> None:
    state = RunState(
        "big", "wf", {"a": NodeState(NodeStatus.COMPLETED, output=os.urandom(3 * MIB))}
    )
    state.data = {f"k{i}": os.urandom(10 * KIB) for i in range(200)}
    with LMDBStore(tmp_path / "s", map_size=64 * KIB) as store:
        store.save(state)
        assert store.load("big") == state


def test_map_grown_by_another_process(tmp_path: Path) -> None:
    grow = """
import sys
from flowdag.state import NodeRecord, NodeStatus
from flowdag.stores.lmdb_store import LMDBStore
with LMDBStore(sys.argv[1], map_size=64 * 1024) as store:
    blob = store.codec.encode(bytes(range(256)) * 8 * 1024)
    store.commit("r", [NodeRecord("a", NodeStatus.COMPLETED, output=blob)])
print("done", flush=True)
"""
    with LMDBStore(tmp_path / "s", map_size=64 * KIB) as store:
        store.save(pending_state("r", "a", "b"))
        proc = spawn(grow, tmp_path / "s")
        assert proc.stdout is not None
        assert proc.stdout.read().strip() == "done"
        assert proc.wait() == 0
        # Our map is now smaller than the file: reads and writes adopt the new size.
        assert store.load("r").nodes["a"].output == bytes(range(256)) * 8 * 1024
        store.commit("r", [NodeRecord("b", NodeStatus.COMPLETED, output=store.codec.encode(1))])
        assert store.load_statuses("r").nodes["b"].status is NodeStatus.COMPLETED


# -- damage ---------------------------------------------------------------------------


def damage(path: Path, db_name: bytes, how: str, run_id: str = "run-1") -> None:
    """Overwrite part of one of the run's values in ``db_name`` through a raw handle."""
    with raw_env(path) as env:
        db = env.open_db(db_name, create=False)
        with env.begin(write=True) as txn:
            prefix = run_id.encode() + b"\x00"
            key, value = next(  # an entry of a node or key (not the run's layout marker)
                (key, value)
                for key, value in txn.cursor(db)
                if (key.startswith(prefix) and key != prefix) or key == run_id.encode()
            )
            if how == "blob":  # last byte: inside the codec's payload
                bad = value[:-1] + bytes([value[-1] ^ 0x55])
            elif how == "name":  # a byte of the name the key was hashed from
                name = msgpack.unpackb(value, raw=False)[0].encode()
                at = value.index(name)
                bad = value[:at] + bytes([name[0] ^ 0x01]) + value[at + 1 :]
            else:  # "truncated"
                bad = value[: len(value) // 2]
            txn.put(key, bad, db=db)


#: The first node's output is too large for its entry: it has an ``outputs`` entry, and
#: its node entry holds no output (which `damage` would hit instead of the meta).
LARGE_FIRST = {"large": random.Random(0).randbytes(2 * SMALL_OUTPUT).hex(), **PLAIN_VALUES}

DAMAGE = [
    (db_name, how)
    for db_name in (b"nodes", b"outputs", b"data", b"runs")
    for how in ("blob", "name", "truncated")
    if not (db_name == b"runs" and how == "name")  # a header value carries no name
]


@pytest.mark.parametrize(("db_name", "how"), DAMAGE)
def test_damaged_value(tmp_path: Path, db_name: bytes, how: str) -> None:
    path = tmp_path / "s"
    with LMDBStore(path) as store:
        store.save(make_state("run-1", LARGE_FIRST))
        store.save(make_state("intact"))
    damage(path, db_name, how)
    with LMDBStore(path) as store:
        calls = [store.load]
        if db_name in (b"nodes", b"runs"):
            calls.append(store.load_statuses)
        for call in calls:
            with pytest.raises(CorruptStateError) as info:
                call("run-1")
            assert "run 'run-1'" in str(info.value)
            assert str(path / "data.mdb") in str(info.value)
        assert store.load("intact") == make_state("intact")  # other runs still load
        assert store.delete("run-1")  # a damaged run can be removed


def test_load_statuses_never_reads_outputs(tmp_path: Path) -> None:
    path = tmp_path / "s"
    with LMDBStore(path) as store:
        store.save(make_state("run-1", LARGE_FIRST))
    damage(path, b"outputs", "blob")
    with LMDBStore(path) as store:
        assert store.load_statuses("run-1") == store.load_statuses("run-1")
        with pytest.raises(CorruptStateError):
            store.load("run-1")


def test_garbage_data_file(tmp_path: Path) -> None:
    path = tmp_path / "s"
    path.mkdir()
    (path / "data.mdb").write_bytes(b"not an lmdb file " * 1024)
    with pytest.raises(CorruptStateError, match=r"data\.mdb"):
        LMDBStore(path)


# -- opening ----------------------------------------------------------------------------


def test_path_is_a_file(tmp_path: Path) -> None:
    (tmp_path / "file").write_text("x")
    with pytest.raises(StoreError, match="not a directory"):
        LMDBStore(tmp_path / "file")
    with pytest.raises(StoreError, match="not a directory"):
        LMDBStore(tmp_path / "file" / "below")


@pytest.mark.skipif(os.geteuid() == 0, reason="root can read any directory")
def test_unreadable_directory(tmp_path: Path) -> None:
    path = tmp_path / "locked"
    path.mkdir()
    os.chmod(path, 0)
    try:
        with pytest.raises(StoreError, match="permission denied"):
            LMDBStore(path)
    finally:
        os.chmod(path, 0o700)


def test_describe_and_repr(store: LMDBStore) -> None:
    assert store.describe("r") == str(store.path / "data.mdb")
    assert str(store.path) in repr(store)
    assert store.scheme == "lmdb"


def test_missing_run_message_names_the_store(store: LMDBStore) -> None:
    with pytest.raises(RunNotFoundError, match=str(store.path)):
        store.load("nope")


# -- open_store -------------------------------------------------------------------------


def test_open_store_relative_directory(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.chdir(tmp_path)
    with open_store("lmdb://.flowdag") as store:
        assert isinstance(store, LMDBStore)
        assert store.path == tmp_path / ".flowdag"
        store.save(pending_state("r", "a"))
    assert (tmp_path / ".flowdag" / "data.mdb").exists()


def test_open_store_absolute_directory_and_kwargs(tmp_path: Path) -> None:
    with open_store(f"lmdb://{tmp_path}/abs", map_size=64 * KIB) as store:
        assert isinstance(store, LMDBStore)
        assert store.path == tmp_path / "abs"
        store.save(RunState("r", "wf", {"a": NodeState(NodeStatus.COMPLETED, output=bytes(MIB))}))


@pytest.mark.parametrize("url", ["", "state", "lmdb:state", "lmdb://", "s3://b/k"])
def test_open_store_bad_url(url: str) -> None:
    with pytest.raises(StoreError) as info:
        open_store(url)
    if url != "lmdb://":
        assert "lmdb://DIR" in str(info.value)
        assert "memory://" in str(info.value)


def test_open_store_memory_is_known() -> None:
    assert isinstance(open_store("memory://"), MemoryStore)


# -- file helpers -------------------------------------------------------------------------


def test_make_private_dir(tmp_path: Path, no_umask: None) -> None:
    target = tmp_path / "x" / "y"
    assert make_private_dir(target) == target
    assert mode(tmp_path / "x") == mode(target) == 0o700
    make_private_dir(target)  # exists: fine
    (tmp_path / "f").write_text("")
    with pytest.raises(NotADirectoryError):
        make_private_dir(tmp_path / "f")


def test_open_private_and_atomic_write(tmp_path: Path, no_umask: None) -> None:
    fd = open_private(tmp_path / "new")
    os.close(fd)
    assert mode(tmp_path / "new") == 0o600
    atomic_write(tmp_path / "doc", b"one")
    atomic_write(tmp_path / "doc", b"two")
    assert (tmp_path / "doc").read_bytes() == b"two"
    assert mode(tmp_path / "doc") == 0o600
    assert sorted(p.name for p in tmp_path.iterdir()) == ["doc", "new"]  # no temp files left


def test_lock_run_file(tmp_path: Path) -> None:
    path = tmp_path / "r.lock"
    held = lock_run_file(path, "r")
    assert path.read_text().strip() == str(os.getpid())
    with pytest.raises(RunLockedError, match=rf"run 'r' is locked by pid {os.getpid()}"):
        lock_run_file(path, "r")
    held.release()
    held.release()  # twice is fine
    assert path.read_text() == ""
    with lock_run_file(path, "r"):
        pass


def test_forked_child_does_not_keep_the_lock(tmp_path: Path) -> None:
    path = tmp_path / "r.lock"
    held = lock_run_file(path, "r")
    pid = os.fork()
    if pid == 0:  # child: the inherited lock is forgotten, not released
        os._exit(0 if not held.held else 1)
    _, status = os.waitpid(pid, 0)
    assert os.waitstatus_to_exitcode(status) == 0
    assert held.held
    with pytest.raises(RunLockedError):
        lock_run_file(path, "r")
    held.release()
    lock_run_file(path, "r").release()


def test_commit_checks_the_data_file_without_a_stat(
    store: LMDBStore, monkeypatch: pytest.MonkeyPatch
) -> None:
    # The same-file check is an fstat of a descriptor the store holds, not a path lookup.
    from flowdag.stores import lmdb_store

    store.save(pending_state("r", "a"))

    def stat(*args: object, **kwargs: object) -> os.stat_result:
        raise AssertionError("os.stat on the commit path")

    with store.lock("r"), monkeypatch.context() as patch:
        patch.setattr(lmdb_store.os, "stat", stat)
        store.commit("r", [NodeRecord("a", NodeStatus.COMPLETED, 1)])
    assert store.load("r").nodes["a"].status is NodeStatus.COMPLETED
