"""Fault injection at the store edge: failing writes and syncs, read-only and full disks,
store files replaced mid-run, and failing blob writes of outputs kept by reference.

The faults are injected, never mocked: the real store runs, and only the
system call it makes (``os.write``, ``os.fdatasync``, ``os.fsync``,
``os.replace``) or LMDB's transaction commit fails, for the duration of one
run. Real ENOSPC (a tiny tmpfs) and a real read-only directory (a read-only
bind mount) are used where this machine allows mounts.

Whatever the fault, `check_after_fault` holds:

- ``run()`` returns a `RunResult` (a fault during the run never escapes as an
  exception); if the fault made a commit fail, the run is FAILED and the nodes
  of that commit carry a `StoreError` naming the cause;
- a node the result reports completed is completed in the store, with its
  output (durable before done); a node whose commit failed is not;
- the store loads, from a fresh store object, once the fault is gone;
- a resume then finishes the run without calling any node the store held as
  completed, and every output and ``ctx.data`` value is what an uninterrupted
  run computes.
"""

from __future__ import annotations

import contextlib
import errno
import functools
import hashlib
import os
import random
import shutil
import subprocess
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import lmdb
import pytest

import flowdag
from flowdag import NodeStatus, RunEvent, RunResult, RunStatus
from flowdag.stores import _blobdir, _blobio, _files, _journal, generate_key, open_store
from flowdag.stores.base import Store
from flowdag.stores.lmdb_store import LMDBStore

STORES = ["lmdb", "json", "flatbuffers"]
JOURNALED = ["json", "flatbuffers"]
RUN_ID = "faulty"
NODES = 16
STORE_ERRORS = {"StoreError", "CorruptStateError"}


# -- the workflow -------------------------------------------------------------------


def deps_of(i: int) -> list[int]:
    return sorted({j for j in (i - 1, i // 2, i - 3) if 0 <= j < i})


def make_workflow(calls: list[str], *, payload: int = 300, nodes: int = NODES) -> flowdag.Workflow:
    wf = flowdag.Workflow("faults")
    for i in range(nodes):

        def node(ctx: flowdag.Context, i: int = i) -> dict[str, Any]:
            calls.append(ctx.node)
            ctx.data[f"k{i}"] = [i, "x" * (i % 5)]
            total = i + sum(value["sum"] for value in ctx.inputs.values())
            return {"sum": total, "pad": random.Random(i).randbytes(payload)}

        wf.add_node(f"n{i}", node, deps=[f"n{j}" for j in deps_of(i)])
    return wf


def expected(payload: int = 300, nodes: int = NODES) -> tuple[dict[str, Any], dict[str, Any]]:
    outputs: dict[str, Any] = {}
    for i in range(nodes):
        total = i + sum(outputs[f"n{j}"]["sum"] for j in deps_of(i))
        outputs[f"n{i}"] = {"sum": total, "pad": random.Random(i).randbytes(payload)}
    return outputs, {f"k{i}": [i, "x" * (i % 5)] for i in range(nodes)}


def store_url(scheme: str, directory: Path) -> str:
    return f"{scheme}://{directory}"


def open_small(url: str) -> Store:
    """Journaled stores compact every few commits, so faults hit compactions too."""
    if url.startswith(("json", "flatbuffers")):
        return open_store(url, compact_min_bytes=1024)
    return open_store(url)


# -- fault injectors ----------------------------------------------------------------


class FaultyOS:
    """The ``os`` module, except that one function fails with ``err`` after ``after`` calls.

    ``times`` bounds the failures (None: every call from then on, like a full
    disk). ``partial`` makes a failing ``write`` first write half its bytes,
    as a real write that runs out of space does.
    """

    def __init__(
        self,
        name: str,
        err: int,
        *,
        after: int = 0,
        times: int | None = None,
        partial: bool = False,
    ) -> None:
        self._name = name
        self.calls = 0
        self.failures = 0
        real = getattr(os, name)

        def faulty(*args: Any, **kwargs: Any) -> Any:
            self.calls += 1
            if self.calls > after and (times is None or self.failures < times):
                self.failures += 1
                if partial and name == "write":
                    fd, data = args
                    real(fd, bytes(data[: max(1, len(data) // 2)]))
                raise OSError(err, os.strerror(err))
            return real(*args, **kwargs)

        self.faulty = faulty

    def __getattr__(self, name: str) -> Any:
        if name == self._name:
            return self.faulty
        return getattr(os, name)


@contextlib.contextmanager
def failing_os(
    monkeypatch: pytest.MonkeyPatch, modules: list[Any], name: str, err: int, **options: Any
) -> Iterator[FaultyOS]:
    """Make ``os.<name>`` fail as seen from ``modules`` (the store edge) for the block."""
    fault = FaultyOS(name, err, **options)
    with monkeypatch.context() as patch:
        for module in modules:
            patch.setattr(module, "os", fault)
        yield fault


class _FailingTxn:
    """A write transaction whose commit fails: the real one is aborted instead."""

    def __init__(self, txn: Any, error: lmdb.Error) -> None:
        self._txn = txn
        self._error = error

    def __enter__(self) -> Any:
        return self._txn.__enter__()

    def __exit__(self, *exc_info: Any) -> bool:
        if exc_info[0] is not None:
            return bool(self._txn.__exit__(*exc_info))
        self._txn.abort()
        raise self._error


class FailingEnv:
    """An LMDB environment whose write commits fail after ``after`` good ones."""

    def __init__(self, env: Any, error: lmdb.Error, after: int, times: int | None) -> None:
        self._env = env
        self._error = error
        self._after = after
        self._times = times
        self.commits = 0
        self.failures = 0

    def begin(self, *, write: bool = False, **kwargs: Any) -> Any:
        txn = self._env.begin(write=write, **kwargs)
        if not write:
            return txn
        self.commits += 1
        if self.commits <= self._after or (
            self._times is not None and self.failures >= self._times
        ):
            return txn
        self.failures += 1
        return _FailingTxn(txn, self._error)

    def __getattr__(self, name: str) -> Any:
        return getattr(self._env, name)


@contextlib.contextmanager
def failing_lmdb_commits(
    store: LMDBStore, error: lmdb.Error, after: int, times: int | None
) -> Iterator[FailingEnv]:
    shared = store._shared
    assert shared is not None
    real = shared.env
    fault = FailingEnv(real, error, after, times)
    shared.env = fault  # type: ignore[assignment]
    try:
        yield fault
    finally:
        shared.env = real


# -- the checks ---------------------------------------------------------------------


def check_after_fault(
    url: str,
    result: RunResult,
    *,
    commit_failed: bool | None,
    cause: str = "",
) -> None:
    """Everything the module docstring promises after a faulty run, then a resume."""
    outputs, data = expected()
    reported = {n for n, s in result.nodes.items() if s.status is NodeStatus.COMPLETED}
    store_failed = {n for n, e in result.errors.items() if e.type in STORE_ERRORS}
    if commit_failed is True:
        assert result.status is RunStatus.FAILED
        assert store_failed, result.errors
        for name in store_failed:
            assert cause in result.errors[name].message, result.errors[name]
    elif commit_failed is False:
        assert result.ok, result.errors
    with open_store(url) as store:  # the store loads (a fresh store object)
        state = store.load(RUN_ID)
    done = {n for n, s in state.nodes.items() if s.status is NodeStatus.COMPLETED}
    assert reported <= done, f"reported completed but not durable: {sorted(reported - done)}"
    assert not (store_failed & done), f"failed commits that stuck: {sorted(store_failed & done)}"
    for name in done:
        assert state.nodes[name].output == outputs[name]

    calls: list[str] = []
    with open_store(url) as store:
        resumed = flowdag.run(make_workflow(calls), run_id=RUN_ID, store=store, max_workers=3)
    assert resumed.ok, resumed.errors
    assert not set(calls) & done, f"completed nodes ran again: {sorted(set(calls) & done)}"
    assert resumed.outputs == outputs
    assert resumed.data == data
    with open_store(url) as store:
        final = store.load(RUN_ID)
    assert {n: s.output for n, s in final.nodes.items()} == outputs
    assert final.data == data


def run_with(store: Store, **options: Any) -> RunResult:
    calls: list[str] = []
    return flowdag.run(make_workflow(calls), run_id=RUN_ID, store=store, **options)


# -- injected faults ------------------------------------------------------------------

COMMIT_FAULTS = [
    pytest.param("write", errno.ENOSPC, False, id="write-ENOSPC"),
    pytest.param("write", errno.ENOSPC, True, id="short-write-then-ENOSPC"),
    pytest.param("write", errno.EIO, False, id="write-EIO"),
    pytest.param("write", errno.EROFS, False, id="write-EROFS"),
    pytest.param("fdatasync", errno.EIO, False, id="fdatasync-EIO"),
    pytest.param("fdatasync", errno.ENOSPC, False, id="fdatasync-ENOSPC"),
]


@pytest.mark.parametrize("scheme", JOURNALED)
@pytest.mark.parametrize(("call", "err", "partial"), COMMIT_FAULTS)
@pytest.mark.parametrize("times", [None, 1], ids=["persistent", "once"])
def test_journal_commit_fault(
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
    scheme: str,
    call: str,
    err: int,
    partial: bool,
    times: int | None,
) -> None:
    url = store_url(scheme, tmp_path / "store")
    with open_small(url) as store:
        fault_options = {"after": 4, "times": times, "partial": partial}
        with failing_os(monkeypatch, [_journal], call, err, **fault_options) as fault:
            result = run_with(store, max_workers=3)
        assert fault.failures >= 1
    check_after_fault(url, result, commit_failed=True, cause=os.strerror(err))


@pytest.mark.parametrize("scheme", JOURNALED)
@pytest.mark.parametrize(
    ("call", "err", "after"),
    # after: the first save makes 5 fsyncs (the runs directory, the snapshot and
    # its directory, the journal created with its header and the directory) and 1 rename
    [("fsync", errno.EIO, 5), ("fsync", errno.ENOSPC, 5), ("replace", errno.EROFS, 1)],
    ids=["fsync-EIO", "fsync-ENOSPC", "rename-EROFS"],
)
def test_journal_compaction_fault(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, scheme: str, call: str, err: int, after: int
) -> None:
    # Snapshot writes (compactions) fail; journal appends still work. The record
    # of the commit that triggered a compaction is durable, so that commit
    # stands; later commits reopen the journal, and when that needs the failing
    # call too, they fail cleanly.
    url = store_url(scheme, tmp_path / "store")
    with open_small(url) as store:
        with failing_os(monkeypatch, [_files], call, err, after=after) as fault:
            result = run_with(store, max_workers=3)
        assert fault.failures >= 1
    check_after_fault(url, result, commit_failed=None, cause=os.strerror(err))


@pytest.mark.parametrize(
    "error",
    [
        lmdb.DiskError("mdb_txn_commit: Input/output error"),
        lmdb.Error("mdb_txn_commit: No space left on device"),
        lmdb.ReadonlyError("mdb_txn_commit: Read-only file system"),
    ],
    ids=["EIO", "ENOSPC", "EROFS"],
)
@pytest.mark.parametrize("times", [None, 1], ids=["persistent", "once"])
def test_lmdb_commit_fault(tmp_path: Path, error: lmdb.Error, times: int | None) -> None:
    url = store_url("lmdb", tmp_path / "store")
    with open_store(url) as store:
        assert isinstance(store, LMDBStore)
        with failing_lmdb_commits(store, error, after=4, times=times) as fault:
            result = run_with(store, max_workers=3)
        assert fault.failures >= 1
    check_after_fault(url, result, commit_failed=True, cause=str(error).split(": ")[-1])


def test_fault_at_the_first_save_raises_store_error(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    # Before the run is saved there is nothing to report against: run() raises.
    url = store_url("json", tmp_path / "store")
    with open_small(url) as store:
        with (
            failing_os(monkeypatch, [_files], "fsync", errno.ENOSPC),
            pytest.raises(flowdag.StoreError, match="No space left on device"),
        ):
            run_with(store)
        assert store.list_runs() == []  # the failed save left no run behind
    calls: list[str] = []
    with open_store(url) as store:
        assert flowdag.run(make_workflow(calls), run_id=RUN_ID, store=store).ok


# -- real faults: a full disk, a read-only directory, replaced files --------------------


def _mount(*args: str) -> bool:
    done = subprocess.run(["mount", *args], capture_output=True, check=False)
    return done.returncode == 0


@pytest.fixture
def tiny_fs(tmp_path: Path) -> Iterator[Path]:
    """A 1 MiB tmpfs (root only); remount it bigger to end the fault."""
    mount_point = tmp_path / "tiny"
    mount_point.mkdir()
    if os.geteuid() != 0 or shutil.which("mount") is None:
        pytest.skip("mounting a tmpfs needs root")
    if not _mount("-t", "tmpfs", "-o", "size=1m,mode=0700", "tmpfs", str(mount_point)):
        pytest.skip("this machine does not allow mounting a tmpfs")
    try:
        yield mount_point
    finally:
        subprocess.run(["umount", "-l", str(mount_point)], check=False)


@pytest.mark.parametrize("scheme", STORES)
def test_real_disk_full_then_resume(tiny_fs: Path, scheme: str) -> None:
    url = store_url(scheme, tiny_fs / "store")
    outputs_size = 120 * 1024  # 16 nodes of 120 KiB do not fit in 1 MiB
    calls: list[str] = []
    wf = make_workflow(calls, payload=outputs_size)
    with open_store(url) as store:
        result = flowdag.run(wf, run_id=RUN_ID, store=store, max_workers=2)
    assert result.status is RunStatus.FAILED
    errors = [e for e in result.errors.values() if e.type in STORE_ERRORS]
    assert errors and all("No space left on device" in e.message for e in errors), errors
    with open_store(url) as store:  # still loads on the full disk
        state = store.load(RUN_ID)
    reported = {n for n, s in result.nodes.items() if s.status is NodeStatus.COMPLETED}
    done = {n for n, s in state.nodes.items() if s.status is NodeStatus.COMPLETED}
    assert reported <= done
    assert not {n for n, e in result.errors.items() if e.type in STORE_ERRORS} & done

    assert _mount("-o", "remount,size=64m", str(tiny_fs))  # the fault is gone
    again: list[str] = []
    with open_store(url) as store:
        resumed = flowdag.run(
            make_workflow(again, payload=outputs_size), run_id=RUN_ID, store=store
        )
    assert resumed.ok, resumed.errors
    assert not set(again) & done
    assert resumed.outputs == expected(payload=outputs_size)[0]


@contextlib.contextmanager
def read_only(directory: Path) -> Iterator[None]:
    """Make ``directory`` read-only for real: a read-only bind mount as root, else chmod."""
    if os.geteuid() != 0:
        mode = directory.stat().st_mode
        for path in [directory, *directory.rglob("*")]:
            path.chmod(path.stat().st_mode & ~0o222)
        try:
            yield
        finally:
            for path in [directory, *directory.rglob("*")]:
                path.chmod(path.stat().st_mode | 0o200)
            directory.chmod(mode)
        return
    if not (
        _mount("--bind", str(directory), str(directory))
        and _mount("-o", "remount,ro,bind", str(directory))
    ):
        subprocess.run(["umount", str(directory)], check=False)
        pytest.skip("this machine allows neither chmod nor read-only bind mounts to bite")
    try:
        yield
    finally:
        subprocess.run(["umount", "-l", str(directory)], check=True)


@pytest.mark.parametrize("scheme", STORES)
def test_read_only_store_directory(tmp_path: Path, scheme: str) -> None:
    url = store_url(scheme, tmp_path / "store")
    half: list[str] = []
    with open_store(url) as store:  # half a run, then the directory turns read-only
        wf = make_workflow(half)
        wf.add_node("boom", _boom, deps=["n5"])
        first = flowdag.run(wf, run_id="other", store=store)
    assert not first.ok
    with read_only(tmp_path / "store"):
        with pytest.raises(flowdag.StoreError) as info, open_store(url) as store:
            run_with(store)
        message = str(info.value)
        assert str(tmp_path / "store") in message
        assert "Read-only file system" in message or "ermission denied" in message
    # The fault is gone: the store loads and the run goes through.
    with open_store(url) as store:
        assert store.load("other").nodes["n5"].status is NodeStatus.COMPLETED
        assert run_with(store).ok


def _boom() -> None:
    raise RuntimeError("boom")


def _replace_mid_run(store: Store, after: int, swap: Callable[[], None]) -> RunResult:
    """Run a chain on one worker (commits in the driver, in order); swap files after a node."""
    finished = 0

    def on_event(event: RunEvent) -> None:
        nonlocal finished
        if event.kind == "node_finished":
            finished += 1
            if finished == after:
                swap()

    calls: list[str] = []
    return flowdag.run(
        make_workflow(calls), run_id=RUN_ID, store=store, max_workers=1, on_event=on_event
    )


def _swap_file(path: Path, content: bytes | None = None) -> None:
    """Replace ``path`` by a new file (a new inode) with ``content`` (default: the same)."""
    tmp = path.with_name(path.name + ".swap")
    tmp.write_bytes(path.read_bytes() if content is None else content)
    os.replace(tmp, path)


def test_lmdb_data_file_replaced_mid_run(tmp_path: Path) -> None:
    # LMDB keeps writing to the file it opened; commits after the swap would go
    # to a file nobody reads. The store notices and fails the commit instead.
    url = store_url("lmdb", tmp_path / "store")
    with open_store(url) as store:
        result = _replace_mid_run(store, 5, lambda: _swap_file(tmp_path / "store" / "data.mdb"))
    check_after_fault(url, result, commit_failed=True, cause="was replaced")


@pytest.mark.parametrize("scheme", JOURNALED)
def test_journaled_files_replaced_by_copies_mid_run(tmp_path: Path, scheme: str) -> None:
    # New inodes with the same bytes: the writer reopens them and carries on.
    url = store_url(scheme, tmp_path / "store")
    run_dir = tmp_path / "store" / "runs" / RUN_ID

    def swap() -> None:
        for path in run_dir.iterdir():
            _swap_file(path)

    with open_store(url) as store:
        result = _replace_mid_run(store, 5, swap)
    check_after_fault(url, result, commit_failed=False)


@pytest.mark.parametrize("scheme", JOURNALED)
def test_journaled_snapshot_replaced_by_garbage_mid_run(tmp_path: Path, scheme: str) -> None:
    # The next commit finds the damage and fails with CorruptStateError: the run
    # stops cleanly, and once the file is restored the run resumes.
    url = store_url(scheme, tmp_path / "store")
    snapshot = (
        tmp_path / "store" / "runs" / RUN_ID / f"snapshot.{'json' if scheme == 'json' else 'fb'}"
    )
    saved: list[bytes] = []

    def swap() -> None:
        saved.append(snapshot.read_bytes())
        _swap_file(snapshot, b"\x00garbage" * 10)

    with open_store(url) as store:
        result = _replace_mid_run(store, 5, swap)
    assert result.status is RunStatus.FAILED
    failed = [e for e in result.errors.values() if e.type == "CorruptStateError"]
    assert failed and str(snapshot) in failed[0].message
    with open_store(url) as store, pytest.raises(flowdag.CorruptStateError):
        store.load(RUN_ID)
    _swap_file(snapshot, saved[0])  # the fault is gone
    check_after_fault(url, result, commit_failed=None)


# -- faults while writing a blob (outputs kept by reference) --------------------------
#
# The same promises hold for a node whose output goes to the blob area, and one
# more: no record ever holds a ref to a blob that is not whole. A failed blob
# write fails its node with `StoreError` naming the file and the cause, and
# leaves no file under a blob's name (nor a temp file: the writer removes it).

BLOB_KINDS = ["lmdb", "json", "flatbuffers", "lmdb-encrypted"]
BLOB_KEY = generate_key()
BLOB_LIMIT = "4KiB"
BLOB_PAD = 20_000  # bytes of random padding: every large output is above BLOB_LIMIT
STREAMED = 3 * BLOB_PAD  # the bytes the streaming node writes


def open_kind(kind: str, directory: Path) -> Store:
    scheme, _, encrypted = kind.partition("-")
    url = f"{scheme}://{directory}"
    return open_store(url, key=BLOB_KEY) if encrypted else open_store(url)


def big_value(i: int) -> dict[str, Any]:
    """Node b<i>'s output: b0 and b3 (and b1 and b4, b2 and b5) are equal, so one blob."""
    return {"k": i % 3, "pad": random.Random(i % 3).randbytes(BLOB_PAD)}


def _random_bytes(seed: int, size: int) -> bytes:
    return random.Random(seed).randbytes(size)


def streamed_bytes() -> bytes:
    return random.Random(7).randbytes(STREAMED)


def blob_workflow(calls: list[str], *, swallow: bool = False) -> flowdag.Workflow:
    """Large outputs returned (with repeats), streamed, and a ref passed on inside a value.

    ``swallow``: the streaming node ignores errors of its writes, as careless code does.
    """
    wf = flowdag.Workflow("blob-faults")
    for i in range(6):

        def big(i: int = i) -> dict[str, Any]:
            calls.append(f"b{i}")
            return big_value(i)

        wf.add_node(f"b{i}", big)

    def dump(ctx: flowdag.Context) -> None:
        calls.append("dump")
        data = streamed_bytes()
        with ctx.output_file() as f:
            for start in range(0, len(data), 4096):
                try:
                    f.write(data[start : start + 4096])
                except Exception:
                    if not swallow:
                        raise

    def pass_on(b0: flowdag.Ref) -> dict[str, Any]:
        calls.append("pass_on")
        return {"ref": b0}  # small: inline, holding b0's ref

    def join(b1: dict[str, Any], b2: dict[str, Any], dump: bytes, pass_on: Any) -> Any:
        calls.append("join")
        nested = pass_on["ref"].load()["k"]
        return {"sum": b1["k"] + b2["k"] + nested, "len": len(dump), "pad": dump[:BLOB_PAD]}

    wf.add_node("dump", dump)
    wf.add_node("pass_on", pass_on, deps=["b0"])
    wf.add_node("join", join, deps=["b1", "b2", "dump", "pass_on"])
    return wf


def plain(value: Any) -> Any:
    """``value`` with every Ref in it replaced by ("ref", its loaded value)."""
    if isinstance(value, flowdag.Ref):
        return ("ref", value.load())
    if isinstance(value, dict):
        return {key: plain(item) for key, item in value.items()}
    return value


def stored_value(output: Any) -> Any:
    """What a stored output means: a top-level Ref is the node's value kept by reference."""
    return plain(output.load() if isinstance(output, flowdag.Ref) else output)


def blob_expected() -> dict[str, Any]:
    outputs: dict[str, Any] = {f"b{i}": big_value(i) for i in range(6)}
    outputs["dump"] = streamed_bytes()
    outputs["pass_on"] = {"ref": ("ref", big_value(0))}
    outputs["join"] = {"sum": 3, "len": STREAMED, "pad": streamed_bytes()[:BLOB_PAD]}
    return outputs


def refs_in(value: Any) -> list[flowdag.Ref]:
    if isinstance(value, flowdag.Ref):
        return [value]
    if isinstance(value, dict):
        return [ref for item in value.values() for ref in refs_in(item)]
    return []


def check_blob_area(store: Store, run_id: str) -> set[str]:
    """Every blob file is whole; every ref a completed node holds resolves. Its completed nodes."""
    state = store.load(run_id)
    done = {n for n, s in state.nodes.items() if s.status is NodeStatus.COMPLETED}
    known = {
        hashlib.sha256(store.codec.plain(store.codec.encode(value))).hexdigest(): None
        for value in blob_expected().values()
    }
    known[hashlib.sha256(streamed_bytes()).hexdigest()] = None
    names = {store.blobs.name_of(sha256): sha256 for sha256 in known}
    for entry in store.blobs.entries():  # no partial blob under a final name
        assert entry.name in names, f"unknown blob {entry.name}"
        store.blobs.check(names[entry.name])
    held = {ref.sha256 for n in done for ref in refs_in(state.nodes[n].output)}
    assert set(store.life(run_id).blobs) == held
    for sha256 in held:  # never a record pointing at nothing
        store.blobs.check(sha256)
    for name in done:
        assert stored_value(state.nodes[name].output) == blob_expected()[name]
    return done


def check_after_blob_fault(
    kind: str, directory: Path, result: RunResult, cause: str, *, what: str = "blob"
) -> None:
    """``what``: the word the store's errors use for what failed (a blob, a commit)."""
    assert result.status is RunStatus.FAILED
    failed = {n: e for n, e in result.errors.items() if e.type in STORE_ERRORS}
    assert failed, result.errors
    for error in failed.values():
        assert error.type == "StoreError" and cause in error.message, error
        assert what in error.message, error
    assert not {e.type for e in result.errors.values()} - STORE_ERRORS, result.errors
    with open_kind(kind, directory) as store:  # a fresh store object loads
        done = check_blob_area(store, RUN_ID)
        assert store.blobs.temp_entries() == []  # a failed writer removes its file
        calls: list[str] = []
        resumed = flowdag.run(
            blob_workflow(calls), run_id=RUN_ID, store=store, inline_limit=BLOB_LIMIT
        )
        assert resumed.ok, resumed.errors
        assert not set(calls) & done, f"completed nodes ran again: {sorted(set(calls) & done)}"
        assert {n: plain(v) for n, v in resumed.outputs.items()} == blob_expected()
        assert check_blob_area(store, RUN_ID) == set(blob_expected())


BLOB_FAULTS = [
    # (module, call, errno, options): options of FaultyOS besides ``times``
    pytest.param(_blobio, "write", errno.ENOSPC, {}, id="write-ENOSPC"),
    pytest.param(_blobio, "write", errno.ENOSPC, {"partial": True}, id="short-write-ENOSPC"),
    pytest.param(_blobio, "write", errno.EIO, {"after": 3}, id="write-EIO"),
    # The first blob's syncs: blobs/ in the store directory, the file, its shard after
    # the rename, the new shard in blobs/.
    pytest.param(_blobdir, "fsync", errno.EIO, {}, id="fsync-EIO"),
    pytest.param(_blobdir, "fsync", errno.ENOSPC, {"after": 1}, id="file-fsync-ENOSPC"),
    pytest.param(_blobdir, "fsync", errno.EIO, {"after": 2}, id="fsync-after-rename-EIO"),
    pytest.param(_blobdir, "rename", errno.ENOSPC, {}, id="rename-ENOSPC"),
    pytest.param(_blobdir, "rename", errno.EIO, {"after": 1}, id="rename-EIO"),
    pytest.param(_blobdir, "utime", errno.EIO, {}, id="refresh-EIO"),  # a repeated value
]


@pytest.mark.parametrize("kind", BLOB_KINDS)
@pytest.mark.parametrize(("module", "call", "err", "options"), BLOB_FAULTS)
@pytest.mark.parametrize("times", [None, 1], ids=["persistent", "once"])
def test_blob_write_fault(
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
    kind: str,
    module: Any,
    call: str,
    err: int,
    options: dict[str, Any],
    times: int | None,
) -> None:
    calls: list[str] = []
    with open_kind(kind, tmp_path) as store:
        with failing_os(monkeypatch, [module], call, err, times=times, **options) as fault:
            # One worker: the outputs repeat in order, so the refresh of a blob is reached.
            result = flowdag.run(
                blob_workflow(calls),
                run_id=RUN_ID,
                store=store,
                inline_limit=BLOB_LIMIT,
                max_workers=1,
            )
        assert fault.failures >= 1
    check_after_blob_fault(kind, tmp_path, result, os.strerror(err))


@pytest.mark.parametrize(
    ("kind", "call", "err"),
    [
        ("json", "write", errno.ENOSPC),
        ("flatbuffers", "fdatasync", errno.EIO),
        ("lmdb", "", errno.EIO),
        ("lmdb-encrypted", "", errno.ENOSPC),
    ],
)
def test_record_commit_fault_after_the_blob_was_written(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, kind: str, call: str, err: int
) -> None:
    # The blobs are durable, their records fail to commit: orphans, which the
    # resume writes again (or finds, and reuses).
    calls: list[str] = []
    wf = blob_workflow(calls)
    with open_kind(kind, tmp_path) as store:
        if isinstance(store, LMDBStore):
            error = lmdb.Error(f"mdb_txn_commit: {os.strerror(err)}")
            faults: Any = failing_lmdb_commits(store, error, after=3, times=None)
        else:
            faults = failing_os(monkeypatch, [_journal], call, err, after=3)
        with faults as fault:
            result = flowdag.run(wf, run_id=RUN_ID, store=store, inline_limit=BLOB_LIMIT)
        assert fault.failures >= 1
        assert store.blobs.entries()  # blobs were written before the commits failed
    check_after_blob_fault(kind, tmp_path, result, os.strerror(err), what="commit")


class LateCloseError:
    """``os`` whose first ``close`` closes the file, then reports EIO (as NFS may)."""

    def __init__(self) -> None:
        self.failures = 0

    def close(self, fd: int) -> None:
        os.close(fd)
        if not self.failures:
            self.failures += 1
            raise OSError(errno.EIO, os.strerror(errno.EIO))

    def __getattr__(self, name: str) -> Any:
        return getattr(os, name)


@pytest.mark.parametrize("kind", BLOB_KINDS)
def test_a_blob_file_whose_close_reports_eio(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, kind: str
) -> None:
    # close() reports a write error after it closed the file: the node fails with
    # that error, and the temp file is removed (not left by a second close's EBADF).
    wf = flowdag.Workflow("late")
    wf.add_node("big", functools.partial(_random_bytes, 1, BLOB_PAD))
    with open_kind(kind, tmp_path) as store:
        fault = LateCloseError()
        with monkeypatch.context() as patch:
            patch.setattr(_blobdir, "os", fault)
            result = flowdag.run(wf, run_id=RUN_ID, store=store, inline_limit=BLOB_LIMIT)
        assert fault.failures == 1
        error = result.errors["big"]
        assert error.type == "StoreError" and "Input/output error" in error.message, error
        assert store.blobs.temp_entries() == []
        resumed = flowdag.run(wf, run_id=RUN_ID, store=store, inline_limit=BLOB_LIMIT)
        assert resumed.ok and resumed.outputs["big"] == _random_bytes(1, BLOB_PAD)


@pytest.mark.parametrize("kind", BLOB_KINDS)
def test_a_streamed_write_error_the_node_ignores_keeps_no_partial_blob(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, kind: str
) -> None:
    # The node swallows the error of one short write and carries on: what the
    # file holds is not what the hash covers, so the output file refuses to
    # commit, and no blob holds the damaged bytes under the hash's name. Three
    # MiB: the first is held until it shows whether to compress (and an encrypted
    # area seals whole MiB chunks), so the failing write comes after it.
    data = random.Random(8).randbytes(3 << 20)
    wf = flowdag.Workflow("careless")

    @wf.node
    def dump(ctx: flowdag.Context) -> None:
        with ctx.output_file() as f:
            for start in range(0, len(data), 4096):
                with contextlib.suppress(Exception):
                    f.write(data[start : start + 4096])

    @wf.node(deps=["dump"])
    def size(dump: bytes) -> int:
        return len(dump)

    with open_kind(kind, tmp_path) as store:
        with failing_os(
            monkeypatch, [_blobio], "write", errno.EIO, after=1, times=1, partial=True
        ) as fault:
            result = flowdag.run(wf, run_id=RUN_ID, store=store)
        assert fault.failures == 1
        assert result.node_status["dump"] is NodeStatus.FAILED
        error = result.errors["dump"]
        assert error.type == "StoreError", error
        assert "Input/output error" in error.message, error
        assert "nothing of this blob was kept" in error.message, error
        assert store.blobs.entries() == [] and store.blobs.temp_entries() == []
    with open_kind(kind, tmp_path) as store:  # the fault is gone
        resumed = flowdag.run(wf, run_id=RUN_ID, store=store)
        assert resumed.ok, resumed.errors
        assert resumed.outputs == {"dump": data, "size": len(data)}


@pytest.mark.parametrize("kind", BLOB_KINDS)
def test_real_disk_full_while_writing_blobs_then_resume(tiny_fs: Path, kind: str) -> None:
    # Incompressible outputs kept by reference fill the 1 MiB disk: the blob
    # writes fail (the records are small), the store loads, and once there is
    # room again a resume finishes with every output right.
    pad = 150 * 1024
    wf = flowdag.Workflow("full")
    for i in range(10):
        wf.add_node(f"n{i}", functools.partial(_random_bytes, i, pad))
    wf.add_node("last", lambda **inputs: sorted(inputs), deps=[f"n{i}" for i in range(10)])
    expected_outputs: dict[str, Any] = {f"n{i}": _random_bytes(i, pad) for i in range(10)}
    expected_outputs["last"] = sorted(expected_outputs)
    directory = tiny_fs / "store"
    with open_kind(kind, directory) as store:
        result = flowdag.run(wf, run_id=RUN_ID, store=store, max_workers=2, inline_limit="64KiB")
        assert result.status is RunStatus.FAILED
        errors = [e for e in result.errors.values() if e.type in STORE_ERRORS]
        assert errors, result.errors
        for error in errors:
            assert error.type == "StoreError" and "No space left on device" in error.message
        assert not {e.type for e in result.errors.values()} - STORE_ERRORS - {"NodeSkipped"}
    with open_kind(kind, directory) as store:  # loads on the full disk
        state = store.load(RUN_ID)
        done = {n for n, s in state.nodes.items() if s.status is NodeStatus.COMPLETED}
        for name in done:  # never a ref to a partial blob
            assert state.nodes[name].output.load() == expected_outputs[name]
        codec = store.codec
        names = {
            store.blobs.name_of(hashlib.sha256(codec.plain(codec.encode(v))).hexdigest())
            for v in expected_outputs.values()
        }
        assert {entry.name for entry in store.blobs.entries()} <= names  # whole blobs only

    assert _mount("-o", "remount,size=64m", str(tiny_fs))  # the fault is gone
    with open_kind(kind, directory) as store:
        resumed = flowdag.run(wf, run_id=RUN_ID, store=store, inline_limit="64KiB")
        assert resumed.ok, resumed.errors
        assert resumed.outputs == expected_outputs
        assert set(resumed.refs) == {f"n{i}" for i in range(10)}
        assert {n for n, s in resumed.nodes.items() if s.attempts > 1} <= set(result.errors)
