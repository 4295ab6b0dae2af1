"""SIGKILL at every step of operator overrides: the run is as before or as after, never a mix.

A child process makes a sequence of overrides (`SEQUENCE`: mark_done of a
failed node, of a node whose output is kept by reference, of one whose blob is
already there; invalidate with and without downstream) on a run of a diamond
with a tail, and kills itself at the N-th call of any step that changes the
disk (``write``, ``fsync``, ``rename``, ``ftruncate``...) or of the store's
``_commit`` (LMDB syncs inside its C library: killed before the commit, and at
the lock's release after it), for N = 1, 2, ... until the sequence finishes.
After each kill, from the store opened afresh in this process:

- the run loads, equal (times aside) to the state after the overrides the
  child finished, or after the next one: never a part of an override;
- every ref a completed node holds reads back whole, and every blob the
  run's records list is there: a blob is durable before its record;
- the run's lock is free again.

The children are forked from `tests.forkserver`, a process that imported
flowdag once, so a kill point costs a fork, not an interpreter start.
"""

from __future__ import annotations

import json
import os
import shutil
import signal
import tempfile
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest

import flowdag
from flowdag import NodeStatus, Ref
from flowdag.stores import open_store
from flowdag.stores.base import Store
from tests.forkserver import ForkServer
from tests.gc_stores import open_kind, options_of, url_of
from tests.stores.kill_steps import KillAt
from tests.test_overrides import workflow

#: The calls a child is killed at: every one that changes what is on the disk.
CALLS = (
    "write",
    "pwrite",
    "fsync",
    "fdatasync",
    "ftruncate",
    "rename",
    "replace",
    "link",
    "unlink",
)

BIG = bytes(range(256)) * 1100  # encoded above the inline limit (256 KiB)
OTHER = b"other " * 50_000


def _sequence() -> list[Callable[[Store], Any]]:
    """The overrides the child makes, in order, on the run of `template`."""
    return [
        lambda s: flowdag.mark_done(s, "r", "b", output=2, reason="one"),  # frees d and e
        lambda s: flowdag.invalidate(s, "r", ["a"], downstream=False, reason="two"),
        lambda s: flowdag.mark_done(s, "r", "a", output=BIG),  # a blob, then its record
        lambda s: flowdag.mark_done(s, "r", "e", output=OTHER, reason="four"),
        lambda s: flowdag.invalidate(s, "r", "c"),  # c and e: e's blob let go
        lambda s: flowdag.mark_done(s, "r", "c", output=BIG),  # its blob is there: refreshed
    ]


SEQUENCE = _sequence()


def overrides_job(url: str, key: str, kill_at: int, progress_path: str) -> None:
    """In a forked child: the overrides of `SEQUENCE`, each noted in the progress file when
    finished; dies at the ``kill_at``-th call of `CALLS` or of the store's ``_commit``."""
    kill = KillAt(kill_at)
    options = {"key": key} if key else {}
    store = open_store(url, create=False, **options)
    kill.patch(type(store), "_commit")
    kill.patch(os, *CALLS)
    with open(progress_path, "a") as progress:
        for override in SEQUENCE:
            override(store)
            progress.write("done\n")
            progress.flush()  # the C file object: no os.write, no kill point
        progress.write(f"calls {kill.calls}\n")
    os._exit(0)


@pytest.fixture
def scratch(tmp_path: Path) -> Iterator[Path]:
    """Where the stores go: a tmpfs when there is one (a SIGKILL loses nothing the
    kernel holds, so only the cost of each fsync changes)."""
    shm = Path("/dev/shm")
    if not (shm.is_dir() and os.access(shm, os.W_OK)):
        yield tmp_path
        return
    directory = Path(tempfile.mkdtemp(prefix="flowdag-override-kills-", dir=shm))
    try:
        yield directory
    finally:
        shutil.rmtree(directory, ignore_errors=True)


def template(kind: str, root: Path) -> None:
    """A run of a diamond a -> b, c -> d with a tail d -> e; b failed, d and e skipped."""
    calls: list[str] = []
    wf = workflow("diamond", calls, {"b"})
    wf.add_node("e", lambda d: d + 1, deps="d")
    with open_kind(kind, root) as store:
        result = flowdag.run(wf, run_id="r", store=store)
        assert result.node_status["e"] is NodeStatus.SKIPPED


def seen(store: Store) -> dict[str, Any]:
    """The run as an override leaves it, times aside (the child's and ours differ)."""
    nodes = {}
    for name, node in store.load("r").nodes.items():
        output = ("ref", node.output.sha256) if type(node.output) is Ref else node.output
        provenance = node.provenance
        if provenance is not None:
            audit = tuple((e.action, e.by, e.reason) for e in provenance.audit)
            provenance = provenance.__class__(
                provenance.fingerprint,
                provenance.source,
                provenance.parts,
                provenance.output,
                provenance.inputs,
                provenance.reason,
                provenance.manual,
                audit,  # type: ignore[arg-type]
            )
        nodes[name] = (node.status, node.attempts, output, len(node.history), provenance)
    return nodes


def expected_states(kind: str, root: Path) -> list[dict[str, Any]]:
    """The run before the overrides, then after each one, made here without kills."""
    with open_kind(kind, root, create=False) as store:
        states = [seen(store)]
        for override in SEQUENCE:
            override(store)
            states.append(seen(store))
    return states


def check_whole(store: Store) -> None:
    """Every ref a completed node holds reads back; every blob the records list is there."""
    state = store.load("r")
    for name, node in state.nodes.items():
        if node.status is NodeStatus.COMPLETED and type(node.output) is Ref:
            assert node.output.load() in (BIG, OTHER), name
    for sha256 in store.life("r").blobs:
        assert store.blobs.exists(sha256)
    with store.lock("r"):  # free: the killed child's lock went with it
        pass


@pytest.mark.parametrize(
    "kind", ["lmdb", "json", "flatbuffers", "lmdb-encrypted", "json-encrypted"]
)
def test_overrides_killed_at_every_step(scratch: Path, fork_server: ForkServer, kind: str) -> None:
    base = scratch / "template"
    template(kind, base)
    shutil.copytree(base, scratch / "expected")
    states = expected_states(kind, scratch / "expected")
    assert len({json.dumps(s, default=repr) for s in states}) == len(states)  # each one changes
    key = options_of(kind).get("key", "")
    # To keep the suite's time: an encrypted store takes the steps of its plain kind
    # plus its sealing, and FlatBuffers those of JSON (the same journal engine), so
    # every third (second) step is enough there.
    stride = 3 if kind.endswith("-encrypted") else 2 if kind == "flatbuffers" else 1
    for points, kill_at in enumerate(range(1, 2000, stride)):
        root = scratch / f"k{kill_at}"
        shutil.copytree(base, root)
        progress = root / "progress"
        job = fork_server.run(overrides_job, url_of(kind, root), key, kill_at, str(progress))
        status = job.returncode
        assert status in (0, -signal.SIGKILL), f"the overrides failed: {job.stderr}"
        lines = progress.read_text().splitlines() if progress.exists() else []
        done = lines.count("done")
        with open_kind(kind, root, create=False) as store:
            now = seen(store)
            if status == 0:
                assert now == states[-1]
            else:
                assert now in states[done : done + 2], f"kill {kill_at}: not a whole override"
            check_whole(store)
        shutil.rmtree(root)
        if status == 0:
            calls = int(lines[-1].split()[1])
            # Killed at 20 steps or more (every third one encrypted); LMDB takes 39.
            assert points >= (20 if stride < 3 else 10) and calls >= 30
            return
    pytest.fail("the overrides never finished")
