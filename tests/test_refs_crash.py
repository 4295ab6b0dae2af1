"""SIGKILL of real runs whose outputs are kept by reference: never a ref to nothing.

A workflow whose nodes return outputs above the inline limit (two of them
equal, so one blob), stream two through ``ctx.output_file()``, and pass a ref
on inside a value and as a value, runs in a real process that is killed with
SIGKILL:

- at the N-th call of each step of the write order (`KILLED`): a blob's writes,
  its fsync, its rename into place, the fsync of its directory after the
  rename, the refresh of a blob that exists, then the store's ``_commit`` of
  the record (so: after the blob is durable, before its record), and the
  journal's writes and syncs inside that commit; for every N the run reaches,
  on a fresh store and on one that holds every blob already (refreshed and
  synced, not written);
- at random moments, over and over on one store, each run resuming the last,
  with threads and with worker processes writing the blobs.

After every kill, from a store opened afresh in this process:

- the run loads (or was never saved);
- every ref a completed node's record holds (its output, or one inside it)
  resolves: the blob is there and hashes right; `Store.life` names exactly
  those blobs;
- every file under a blob's name is one of the run's blobs, whole: at most
  orphans are left, and temp files stay in the temp area, never taken for blobs;
- a resume calls no completed node again and ends with every output equal to
  the uninterrupted run's.

The killed processes are forked from `tests.forkserver`, a process that
imported flowdag once, so a kill costs a fork, not an interpreter start.
"""

from __future__ import annotations

import hashlib
import json
import os
import random
import shutil
import signal
import tempfile
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest

import flowdag
from flowdag import NodeStatus, Ref
from flowdag._fingerprint import Fingerprinter, node_fingerprints
from flowdag.errors import RunNotFoundError
from flowdag.stores import _blobdir, generate_key, open_store
from flowdag.stores._blobdir import DirectoryBlobs
from flowdag.stores.base import Store
from tests.forkserver import ForkServer
from tests.stores.kill_steps import KillAt

KINDS = ["lmdb", "json", "flatbuffers", "lmdb-encrypted"]
KEY = generate_key()
RUN_ID = "refs-crash"
LIMIT = "2KiB"
#: The calls a killed run dies at (the N-th call of one of them): os functions, and
#: the store's record commit. ``os.write`` is both the blob's and the journal's.
KILLED = ("write", "fsync", "fdatasync", "rename", "replace", "utime", "_commit")


# -- the workflow ------------------------------------------------------------------------


def rows(k: int) -> list[int]:
    return list(range(k * 1000, k * 1000 + 1200))  # about 3.6 KB of msgpack: above LIMIT


CHUNKS = [random.Random(seed).randbytes(2500) for seed in range(3)]


def build(calls: list[str]) -> flowdag.Workflow:
    """Large outputs (``a`` and ``twin`` equal), two streamed ones, refs passed on."""
    wf = flowdag.Workflow("refs-crash")

    @wf.node
    def a() -> dict[str, Any]:
        calls.append("a")
        return {"k": 1, "rows": rows(1)}

    # After a, so that its blob is there when twin's is written: the write finds it
    # (a utime of the file, a step killed below) whatever the workers' timing.
    @wf.node(deps=["a"])
    def twin(a: Ref) -> dict[str, Any]:
        calls.append("twin")
        return {"k": 1, "rows": rows(1)}  # the same value: the same blob

    @wf.node
    def b() -> dict[str, Any]:
        calls.append("b")
        return {"k": 2, "rows": rows(2)}

    @wf.node
    def dump(ctx: flowdag.Context) -> None:
        calls.append("dump")
        with ctx.output_file() as f:
            for chunk in CHUNKS:
                f.write(chunk)

    @wf.node(deps=["a"])
    def nest(a: Ref) -> dict[str, Any]:
        calls.append("nest")
        return {"ref": a, "tag": "nested"}  # small: inline, holding a's ref

    @wf.node(deps=["nest"])
    def passed(nest: dict[str, Any]) -> Any:
        calls.append("passed")
        return nest["ref"]  # a Ref as the output: kept by reference, no new blob

    @wf.node(deps=["b", "dump", "passed"])
    def c(b: dict[str, Any], dump: bytes, passed: dict[str, Any]) -> dict[str, Any]:
        calls.append("c")
        return {"k": b["k"] + len(dump), "head": passed["rows"][:3], "rows": b["rows"][::-1]}

    @wf.node(deps=["b"])
    def d(b: dict[str, Any]) -> dict[str, Any]:
        calls.append("d")
        return {"k": 4, "rows": b["rows"][::2] + rows(4)}

    @wf.node(deps=["c"])
    def tail(ctx: flowdag.Context, c: dict[str, Any]) -> None:
        calls.append("tail")
        with ctx.output_file() as f:  # small, but a streamed output is always a ref
            f.write(bytes(x % 251 for x in c["rows"]))

    @wf.node(deps=["c", "twin", "d", "tail"])
    def total(c: dict[str, Any], twin: dict[str, Any], d: dict[str, Any], tail: bytes) -> Any:
        calls.append("total")
        return sum(c["rows"]) + twin["k"] + d["k"] + len(tail)

    return wf


def expected() -> dict[str, Any]:
    """The uninterrupted run's outputs, as `meaning` shows stored ones."""
    a = {"k": 1, "rows": rows(1)}
    c_rows = rows(2)[::-1]
    c = {"k": 2 + 7500, "head": rows(1)[:3], "rows": c_rows}
    return {
        "a": a,
        "twin": a,
        "b": {"k": 2, "rows": rows(2)},
        "dump": b"".join(CHUNKS),
        "nest": {"ref": ("ref", a), "tag": "nested"},
        "passed": a,
        "c": c,
        "d": {"k": 4, "rows": rows(2)[::2] + rows(4)},
        "tail": bytes(x % 251 for x in c_rows),
        "total": sum(c_rows) + 1 + 4 + len(c_rows),
    }


def meaning(value: Any, *, top: bool = True) -> Any:
    """A stored output as a value: a top-level Ref loaded, a nested one as ("ref", value)."""
    if isinstance(value, Ref):
        return value.load() if top else ("ref", value.load())
    if isinstance(value, dict):
        return {key: meaning(item, top=False) for key, item in value.items()}
    return value


def refs_in(value: Any) -> list[Ref]:
    if isinstance(value, Ref):
        return [value]
    if isinstance(value, dict):
        return [ref for item in value.values() for ref in refs_in(item)]
    return []


# -- the killed processes: forked from `tests.forkserver` ----------------------------------


def run_job(url: str, key: str, run_id: str, kill: list[Any] | None, executor: str) -> None:
    """In a forked child: run the workflow (resuming what the store holds).

    With ``kill`` ``[call, n]``, the child SIGKILLs itself at the n-th call of
    ``call`` (one of `KILLED`). A run that ends prints how often it made each call.
    """
    counts = dict.fromkeys(KILLED, 0)

    def killing(name: str, real: Callable[..., Any]) -> Callable[..., Any]:
        def step(*args: Any, **kwargs: Any) -> Any:
            counts[name] += 1
            if kill is not None and kill[0] == name and counts[name] == kill[1]:
                os.kill(os.getpid(), signal.SIGKILL)
            return real(*args, **kwargs)

        return step

    store = opened(url, key)
    cls = type(store)
    cls._commit = killing("_commit", cls._commit)  # type: ignore[method-assign]
    for name in KILLED[:-1]:
        setattr(os, name, killing(name, getattr(os, name)))
    result = flowdag.run(
        build([]), run_id=run_id, store=store, inline_limit=LIMIT, max_workers=2, executor=executor
    )
    store.close()
    print(json.dumps(counts))
    assert result.ok, f"the run failed: {result.errors}"


def warm_job() -> None:
    """In the fork server, once: what every run computes first (its nodes' fingerprints)."""
    node_fingerprints(build([]).build(), Fingerprinter())


@dataclass
class Ran:
    """How a run in a child ended: its exit status (0, or -SIGKILL), how long it took."""

    status: int
    seconds: float
    counts: dict[str, int]  # how often it made each killed call, if it ended


def run_child(
    server: ForkServer,
    url: str,
    key: str,
    *,
    run_id: str = RUN_ID,
    kill: tuple[str, int] | None = None,
    after: float | None = None,
    executor: str = "threads",
) -> Ran:
    """Run the workflow in a fresh child, killed at ``kill`` or ``after`` seconds in."""
    started = time.monotonic()
    child = server.start(run_job, url, key, run_id, kill, executor)
    if after is not None:
        time.sleep(after)
        child.kill()
    proc = child.wait()
    seconds = time.monotonic() - started
    assert proc.returncode in (0, -signal.SIGKILL), (
        f"the run failed (exit status {proc.returncode}): {proc.stderr}"
    )
    counts = json.loads(proc.stdout.splitlines()[-1]) if proc.returncode == 0 else {}
    return Ran(proc.returncode, seconds, counts)


@pytest.fixture
def scratch(tmp_path: Path) -> Iterator[Path]:
    """Where the stores go: a tmpfs when there is one.

    A SIGKILL loses nothing the kernel holds, so the file system does not change
    what the kills find; a tmpfs only makes each fsync, and so each kill point, cheap.
    """
    shm = Path("/dev/shm")
    if not (shm.is_dir() and os.access(shm, os.W_OK)):
        yield tmp_path
        return
    directory = Path(tempfile.mkdtemp(prefix="flowdag-refs-crash-", dir=shm))
    try:
        yield directory
    finally:
        shutil.rmtree(directory, ignore_errors=True)


def url_of(kind: str, directory: Path) -> tuple[str, str]:
    scheme, _, encrypted = kind.partition("-")
    return f"{scheme}://{directory}", KEY if encrypted else ""


def opened(url: str, key: str) -> Store:
    return open_store(url, key=key) if key else open_store(url)


# -- the checks ------------------------------------------------------------------------


def check_store(url: str, key: str, blobs: set[str], run_id: str = RUN_ID) -> set[str]:
    """The promises after a kill, before any resume; the completed nodes.

    ``blobs``: the sha256 of every blob the uninterrupted run wrote.
    """
    outputs = expected()
    with opened(url, key) as store:  # a store object of its own: what a new process sees
        area = store.blobs
        names = {area.name_of(sha256): sha256 for sha256 in blobs}
        for entry in area.entries():  # at most orphans: whole blobs of the run
            assert entry.name in names, f"{entry.name} is no blob of the run (a temp file?)"
            area.check(names[entry.name])
        assert all(entry.name.endswith(".tmp") for entry in area.temp_entries())
        try:
            state = store.load(run_id)
        except RunNotFoundError:  # killed before the run was first saved
            return set()
        done = {n for n, s in state.nodes.items() if s.status is NodeStatus.COMPLETED}
        held = {ref.sha256: ref for n in done for ref in refs_in(state.nodes[n].output)}
        for ref in held.values():  # never a record pointing at nothing
            area.check(ref.sha256, size=ref.size)
        assert set(store.life(run_id).blobs) == set(held)
        for name in done:
            assert meaning(state.nodes[name].output) == outputs[name], name
    return done


def check_resume(url: str, key: str, done: set[str], blobs: set[str], run_id: str = RUN_ID) -> None:
    """A resume from here calls no completed node and ends with the run's outputs."""
    calls: list[str] = []
    with opened(url, key) as store:
        result = flowdag.run(build(calls), run_id=run_id, store=store, inline_limit=LIMIT)
        assert result.ok, result.errors
        assert not set(calls) & done, f"completed nodes ran again: {sorted(set(calls) & done)}"
        assert {n: meaning(v) for n, v in result.outputs.items()} == expected()
        assert set(store.life(run_id).blobs) == blobs
        names = {store.blobs.name_of(sha256) for sha256 in blobs}
        assert {entry.name for entry in store.blobs.entries()} == names
        for entry in store.blobs.temp_entries():  # leftovers of the kill: swept, not blobs
            store.blobs.remove_temp(entry.name)
        state = store.load(run_id)
        assert {n: meaning(s.output) for n, s in state.nodes.items()} == expected()


def clean_run(
    server: ForkServer, kind: str, directory: Path, executor: str = "threads"
) -> tuple[set[str], Ran]:
    """The uninterrupted run: its blobs, and how it ran (how often it made each killed call)."""
    server.warm(warm_job)  # the children inherit what it read
    url, key = url_of(kind, directory)
    ran = run_child(server, url, key, executor=executor)
    assert ran.status == 0
    with opened(url, key) as store:
        blobs = set(store.life(RUN_ID).blobs)
        assert {n: meaning(s.output) for n, s in store.load(RUN_ID).nodes.items()} == expected()
    assert len(blobs) == 6  # a (= twin), b, dump, c, d, tail
    return blobs, ran


# -- the tests ---------------------------------------------------------------------------


@pytest.mark.slow
@pytest.mark.parametrize("kind", KINDS)
def test_kill_at_the_steps_of_blob_writes_and_commits(
    fork_server: ForkServer, scratch: Path, kind: str
) -> None:
    blobs, clean = clean_run(fork_server, kind, scratch / "clean")
    counts = clean.counts
    assert counts["rename"] >= 3 and counts["_commit"] >= 4 and counts["utime"] >= 1
    points = [(call, n) for call in KILLED for n in range(1, counts[call] + 1)]
    killed = 0
    for call, n in points:
        directory = scratch / f"{call}-{n}"
        url, key = url_of(kind, directory)
        # Two workers, so the steps interleave: the run may end before the n-th call.
        killed += run_child(fork_server, url, key, kill=(call, n)).status != 0
        done = check_store(url, key, blobs)
        check_resume(url, key, done, blobs)
        shutil.rmtree(directory)
    assert len(points) >= 30 and killed >= 30, (len(points), killed)


@pytest.mark.slow
@pytest.mark.parametrize("kind", ["lmdb", "json"])
def test_kill_at_the_steps_of_a_run_reusing_blobs(
    fork_server: ForkServer, scratch: Path, kind: str
) -> None:
    # The store already holds every blob (an earlier run): the run refreshes and
    # syncs them instead of writing, and is killed at each step of that.
    blobs, _ = clean_run(fork_server, kind, scratch / "clean")
    template = scratch / "clean"
    traced = scratch / "traced"
    shutil.copytree(template, traced)
    again = run_child(fork_server, *url_of(kind, traced), run_id="again")
    assert again.status == 0
    counts = again.counts
    assert counts["utime"] >= 6  # every blob is there already
    points = [(call, n) for call in KILLED for n in range(1, counts[call] + 1)]
    for call, n in points:
        directory = scratch / f"{call}-{n}"
        shutil.copytree(template, directory)
        url, key = url_of(kind, directory)
        run_child(fork_server, url, key, run_id="again", kill=(call, n))
        assert check_store(url, key, blobs) == set(expected())  # the earlier run is whole
        done = check_store(url, key, blobs, "again")
        check_resume(url, key, done, blobs, "again")
        shutil.rmtree(directory)
    assert len(points) >= 20


@pytest.mark.slow
@pytest.mark.parametrize(
    ("kind", "executor"),
    # Worker processes write blobs by path and the driver commits the refs; an
    # encrypted area (its key) never travels to them.
    [*((kind, "threads") for kind in KINDS), ("json", "processes")],
)
def test_kill_at_random_moments_then_resume(
    fork_server: ForkServer, scratch: Path, kind: str, executor: str
) -> None:
    # One store killed again and again, each run resuming the last: leftovers pile up.
    blobs, clean = clean_run(fork_server, kind, scratch / "clean", executor)
    whole = clean.seconds  # how long a run takes here: the kills land within it
    url, key = url_of(kind, scratch / "store")
    rng = random.Random(f"random-{kind}-{executor}")
    run = kills = 0
    done: set[str] = set()
    for _ in range(16 if executor == "threads" else 6):
        run_id = f"r{run}"
        after = rng.uniform(0.0, 0.8 * whole)
        status = run_child(
            fork_server, url, key, run_id=run_id, after=after, executor=executor
        ).status
        kills += status != 0
        now = check_store(url, key, blobs, run_id)
        assert done <= now, f"completed nodes were lost: {sorted(done - now)}"
        done = now
        if status == 0:  # the run finished: the next is a new one (its blobs exist)
            assert done == set(expected())
            run, done = run + 1, set()
    check_resume(url, key, done, blobs, f"r{run}")
    assert kills >= 2


# -- what a kill leaves that only a power loss could still lose -------------------------
#
# A SIGKILL loses nothing the kernel holds, but a writer killed between a rename
# or a mkdir and the fsync of its directory leaves an entry that a power loss
# may still drop. Whoever next relies on such an entry must sync it first.


def put_job(root: str, kill_at: int, byte: str) -> None:
    """In a forked child: put a value of ``byte`` repeated, killed at the ``kill_at``-th fsync."""
    kill = KillAt(kill_at)
    kill.patch(os, "fsync")
    DirectoryBlobs(root).put(bytes.fromhex(byte) * 1000)
    print("done", kill.calls)


def killed_put(server: ForkServer, root: Path, kill_at: int, byte: str) -> None:
    done = server.run(put_job, str(root), kill_at, byte, timeout=60)
    assert done.returncode == -signal.SIGKILL, done.stdout + done.stderr


class SyncLog:
    """The ``os`` module as ``_blobdir`` sees it, noting the inode of every fsync."""

    def __init__(self) -> None:
        self.inodes: set[int] = set()

    def fsync(self, fd: int) -> None:
        self.inodes.add(os.fstat(fd).st_ino)
        os.fsync(fd)

    def __getattr__(self, name: str) -> Any:
        return getattr(os, name)


def synced_by(monkeypatch: pytest.MonkeyPatch, action: Any) -> set[int]:
    log = SyncLog()
    with monkeypatch.context() as patch:
        patch.setattr(_blobdir, "os", log)
        action()
    return log.inodes


def test_a_blob_a_killed_writer_renamed_is_synced_by_the_next_put_of_it(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, fork_server: ForkServer
) -> None:
    # Killed at its third fsync: blobs/ (in the store directory) and the file were
    # synced, the file renamed into its shard, the shard not synced.
    killed_put(fork_server, tmp_path, 3, "01")
    data = b"\x01" * 1000
    area = DirectoryBlobs(tmp_path)
    sha256 = hashlib.sha256(data).hexdigest()
    assert area.exists(sha256)
    synced = synced_by(monkeypatch, lambda: area.put(data))  # found: not written again
    shard = Path(area.locate(area.name_of(sha256))).parent
    assert shard.stat().st_ino in synced, "the reused blob's rename was never synced"
    assert (tmp_path / "blobs").stat().st_ino in synced  # the shard's own entry
    assert tmp_path.stat().st_ino in synced  # and blobs/ in the store directory


def test_a_blob_area_a_killed_writer_made_is_synced_by_the_next_writer(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, fork_server: ForkServer
) -> None:
    # Killed at its first fsync: blobs/ made in the store directory, not synced.
    killed_put(fork_server, tmp_path, 1, "02")
    area = DirectoryBlobs(tmp_path)
    assert area.entries() == []
    synced = synced_by(monkeypatch, lambda: area.put(b"\x03" * 1000))
    assert tmp_path.stat().st_ino in synced, "blobs/ was never synced into the store directory"
