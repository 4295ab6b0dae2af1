"""SIGKILL torture of ``gc``: collectors killed at random moments while runs write beside them.

One *gc torture run* is one seed on one disk store:

1. A store is filled with runs whose outputs are refs to blobs drawn from a
   small pool of values, so runs share blobs: some runs live, some expired
   (finished three hours ago with a ttl of one hour), plus orphan blobs of the
   same pool and temp leftovers; everything is made an hour old.
2. Each round starts a collector (``flowdag.gc(store, grace=GRACE)``) and a
   writer beside it: a new run whose outputs come from the same pool, written
   as the runner writes them (each node's blob put, then the record holding
   its ref committed), so it reuses blobs the collector is sweeping at that
   moment: the race that mtime refreshes and the sweep's
   move-aside-then-recheck must win. The collector is killed with SIGKILL
   after a random delay; the writer finishes.
3. After every round: the store loads; every live run (the writers' included)
   loads with every output equal to what it returned, each blob read and
   checked, none missing.

At the end two gcs run to completion: no expired run is left, what remains in
the blob area is exactly what the live runs reference, and the second gc finds
nothing to do.

Run as a script it is a worker: ``gc_torture.py gc|write URL KEY ARG``.
``scripts/torture.py --gc-runs N`` drives many; ``test_gc_torture.py`` a short one.
"""

from __future__ import annotations

import contextlib
import dataclasses
import os
import random
import signal
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

HERE = Path(__file__).resolve()
ROOT = HERE.parents[2]
STORES = ("lmdb", "json", "flatbuffers")
TEST_KEY = "8f" * 32
GRACE = 5.0  # seconds: longer than a writer's put-to-commit, much shorter than the blobs' age
POOL = 12
OLD = 3600.0


def value(index: int) -> bytes:
    """The pool's values: a few kilobytes, each distinct."""
    return (f"pooled value {index} ".encode() * 200)[: 1000 + 97 * index]


def _options(key: str | None) -> dict[str, Any]:
    return {"key": key} if key else {}


def _put(store: Any, index: int) -> tuple[bytes, str]:
    """Put pooled value ``index`` as a node's output blob: (the encoded ref, its sha256)."""
    ref = store.blobs.put(store.codec.encode(value(index))).ref(encoding=store.codec.name)
    return store.codec.encode(ref), ref.sha256


def _write(store: Any, run_id: str, picks: list[int]) -> None:
    """Write a run as the runner does: each node's blob first, then the record that holds it."""
    from datetime import UTC, datetime

    from flowdag.state import AttemptInfo, NodeRecord, NodeState, NodeStatus, RunState

    store.save(RunState(run_id, "gc-torture", {f"n{n}": NodeState() for n in range(len(picks))}))
    with store.lock(run_id):
        for n, pick in enumerate(picks):
            output, sha256 = _put(store, pick)
            now = datetime.now(UTC)
            record = NodeRecord(
                f"n{n}",
                NodeStatus.COMPLETED,
                1,
                now,
                now,
                output=output,
                history=(AttemptInfo(1, now, now),),
                blobs={sha256: None},
            )
            store.commit(run_id, [record])
            time.sleep(0.002)  # nodes take time: the collector's sweep overlaps more of them


# -- the workers (this file as a script) ------------------------------------------------


def _worker(action: str, url: str, key: str | None, arg: str) -> int:
    import flowdag

    with flowdag.open_store(url, **_options(key)) as store:
        print("ready", flush=True)
        sys.stdin.readline()  # "go": collector and writer start together
        if action == "gc":
            flowdag.gc(store, grace=GRACE)
            return 0
        run_id, picks = arg.split("=")
        _write(store, run_id, [int(p) for p in picks.split(",")])
        return 0


# -- the parent --------------------------------------------------------------------------


@dataclasses.dataclass
class GCStats:
    """What gc torture runs did and found."""

    runs: int = 0
    kills: int = 0  # collectors killed before they finished
    rounds: int = 0
    writes: int = 0  # runs written beside a collector
    mid_sweep: int = 0  # kills that left a blob moved aside (killed inside a blob's delete)
    mid_delete: int = 0  # kills after some expired runs were deleted, before all were
    runs_deleted: int = 0  # by the final gcs
    violations: list[str] = dataclasses.field(default_factory=list)

    def add(self, other: GCStats) -> None:
        for field in dataclasses.fields(self):
            if field.name == "violations":
                self.violations.extend(other.violations)
            else:
                setattr(self, field.name, getattr(self, field.name) + getattr(other, field.name))


def _spawn(action: str, url: str, key: str | None, arg: str = "-") -> subprocess.Popen[str]:
    """A worker, once it has the store open and waits for "go" on its stdin."""
    command = [sys.executable, str(HERE), action, url, key or "", arg]
    proc = subprocess.Popen(
        command,
        cwd=ROOT,
        stdin=subprocess.PIPE,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )
    assert proc.stdout is not None
    proc.stdout.readline()  # "ready" (or nothing, if it failed: its exit code says so)
    return proc


def _go(*procs: subprocess.Popen[str]) -> None:
    for proc in procs:
        assert proc.stdin is not None
        with contextlib.suppress(BrokenPipeError):
            proc.stdin.write("go\n")
            proc.stdin.flush()


def _age(store: Any) -> None:
    area = store.blobs
    for entry in area.entries():
        os.utime(area.locate(entry.name), (entry.mtime - OLD, entry.mtime - OLD))
    temp = Path(area.locate("0" * 64)).parent.parent / "tmp"
    for entry in area.temp_entries():
        os.utime(temp / entry.name, (entry.mtime - OLD, entry.mtime - OLD))


def _fill(store: Any, rng: random.Random, expected: dict[str, list[int]]) -> set[str]:
    """Live and expired runs, orphans and temp leftovers; the expired runs' ids."""
    from datetime import UTC, datetime, timedelta

    from flowdag.state import AttemptInfo, NodeState, NodeStatus, RunState

    expired = set()
    for i in range(rng.randint(3, 6)):
        run_id = f"base-{i}"
        picks = [rng.randrange(POOL) for _ in range(rng.randint(1, 5))]
        gone = rng.random() < 0.5
        done = datetime.now(UTC) - timedelta(hours=3 if gone else 0)
        nodes = {
            f"n{n}": NodeState(
                NodeStatus.COMPLETED,
                1,
                done,
                done,
                store.codec.decode(_put(store, pick)[0]),
                history=(AttemptInfo(1, done, done),),
            )
            for n, pick in enumerate(picks)
        }
        ttl = timedelta(hours=1) if gone else None
        store.save(RunState(run_id, "gc-torture", nodes, ttl=ttl))
        if gone:
            expired.add(run_id)
        else:
            expected[run_id] = picks
    for _ in range(rng.randint(0, 4)):
        store.blobs.put(store.codec.encode(value(rng.randrange(POOL))))
    temp = Path(store.blobs.locate("0" * 64)).parent.parent / "tmp"
    temp.mkdir(parents=True, exist_ok=True)
    (temp / f"left-{rng.randrange(1 << 30)}.tmp").write_bytes(b"cut short" * 10)
    _age(store)
    return expired


def _check(store: Any, expected: dict[str, list[int]], violation: Any) -> None:
    import flowdag

    for run_id, picks in expected.items():
        try:
            state = store.load(run_id)
            for n, pick in enumerate(picks):
                output = state.nodes[f"n{n}"].output
                got = output.load() if isinstance(output, flowdag.Ref) else output
                if got != value(pick):
                    violation(f"run {run_id} node n{n} has a wrong output")
        except flowdag.FlowdagError as exc:
            violation(f"live run {run_id} does not load: {type(exc).__name__}: {exc}")


def gc_torture(
    scheme: str, seed: int, workdir: Path, *, kills: int, encrypt: bool = False
) -> GCStats:
    """One gc torture run (see the module docstring); violations are collected, not raised."""
    import flowdag

    stats = GCStats(runs=1)
    rng = random.Random(seed ^ 0x6C)
    url = f"{scheme}://{workdir / 'store'}"
    key = TEST_KEY if encrypt else None

    def violation(text: str) -> None:
        stats.violations.append(f"gc {scheme} seed {seed}: {text}")

    expected: dict[str, list[int]] = {}
    with flowdag.open_store(url, **_options(key)) as store:
        expired = _fill(store, rng, expected)
    remaining = set(expired)
    for round_ in range(kills):
        picks = [rng.randrange(POOL) for _ in range(rng.randint(2, 8))]
        run_id = f"written-{round_}"
        collector = _spawn("gc", url, key)
        writer = _spawn("write", url, key, f"{run_id}={','.join(map(str, picks))}")
        _go(writer, collector)
        time.sleep(rng.choice((0.0, 0.001, 0.003, 0.006, 0.01, 0.02, 0.04)))
        if collector.poll() is None:
            collector.send_signal(signal.SIGKILL)
            stats.kills += 1
        collector.wait(timeout=120)
        _, err = writer.communicate(timeout=120)
        stats.rounds += 1
        if collector.returncode not in (0, -signal.SIGKILL):
            violation(
                f"the collector failed: {collector.stderr.read() if collector.stderr else ''}"
            )
        if writer.returncode != 0:
            violation(f"the writer failed beside a collector: {err.strip()[-300:]}")
        else:
            expected[run_id] = picks
            stats.writes += 1
        with flowdag.open_store(url, **_options(key)) as store:
            _check(store, expected, violation)
            temp = Path(store.blobs.locate("0" * 64)).parent.parent / "tmp"
            aside = temp.is_dir() and any(p.name.endswith(".gc.tmp") for p in temp.iterdir())
            left = expired & set(store.list_runs())
            stats.mid_sweep += bool(aside)
            stats.mid_delete += 0 < len(left) < len(remaining)
            remaining = left
    # Two gcs to the end: the first finishes the work, the second finds none.
    with flowdag.open_store(url, **_options(key)) as store:
        first = flowdag.gc(store, grace=0)
        stats.runs_deleted += first.runs
        second = flowdag.gc(store, grace=0)
        if (second.runs, second.blobs, second.temp) != (0, 0, 0):
            violation(f"a second gc still found work: {second}")
        left = set(store.list_runs())
        if left & expired:
            violation(f"expired runs left after gc: {sorted(left & expired)}")
        if left != set(expected):
            violation(f"runs after gc {sorted(left)} are not the live ones {sorted(expected)}")
        held = {store.blobs.name_of(s) for r in expected for s in store.life(r).blobs}
        stored = {entry.name for entry in store.blobs.entries()}
        if stored != held:
            violation(f"{len(held - stored)} live blobs lost, {len(stored - held)} orphans left")
        _check(store, expected, violation)
    return stats


if __name__ == "__main__":
    if len(sys.argv) == 5 and sys.argv[1] in ("gc", "write"):
        sys.exit(_worker(sys.argv[1], sys.argv[2], sys.argv[3] or None, sys.argv[4]))
    sys.exit("usage: gc_torture.py gc|write URL KEY ARG")
