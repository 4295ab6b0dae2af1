"""SIGKILL torture of ``gc``: collectors killed at random moments while runs write beside them.

One *gc torture run* is one seed on one disk store:

1. A store is filled with runs whose outputs are blobs (a tiny ``inline_limit``)
   drawn from a small pool of values, so runs share blobs: some runs live,
   some expired (``ttl=0``), plus orphan blobs of the same pool and temp
   leftovers; everything is made an hour old.
2. Each round starts a collector (``flowdag.gc(store, grace=GRACE)``) and a
   writer beside it: a new run whose outputs come from the same pool, so it
   reuses blobs the collector is sweeping at that moment (the race that
   mtime refreshes and the sweep's move-aside-then-recheck must win). The
   collector is killed with SIGKILL after a random delay; the writer finishes.
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
LIMIT = 64  # inline_limit: every pooled value is a blob
GRACE = 5.0  # seconds: longer than a writer's put-to-commit, much shorter than the blobs' age
POOL = 12
OLD = 3600.0


def value(index: int) -> bytes:
    """The pool's values: a few kilobytes, each distinct."""
    return (f"pooled value {index} ".encode() * 200)[: 1000 + 97 * index]


def _workflow(name: str, picks: list[int]) -> Any:
    import flowdag

    wf = flowdag.Workflow(name)
    for n, pick in enumerate(picks):
        wf.add_node(f"n{n}", _returns(value(pick)))
    return wf


def _returns(data: bytes) -> Any:
    return lambda: data


def _options(key: str | None) -> dict[str, Any]:
    return {"key": key} if key else {}


# -- the workers (this file as a script) ------------------------------------------------


def _worker(action: str, url: str, key: str | None, arg: str) -> int:
    import flowdag

    with flowdag.open_store(url, **_options(key)) as store:
        if action == "gc":
            print("collecting", flush=True)
            flowdag.gc(store, grace=GRACE)
            return 0
        run_id, picks = arg.split("=")
        flowdag.run(
            _workflow(run_id, [int(p) for p in picks.split(",")]),
            run_id=run_id,
            store=store,
            inline_limit=LIMIT,
        )
        return 0


# -- the parent --------------------------------------------------------------------------


@dataclasses.dataclass
class GCStats:
    """What gc torture runs did and found."""

    runs: int = 0
    kills: int = 0  # collectors killed before they finished
    rounds: int = 0
    writes: int = 0  # runs written beside a collector
    runs_deleted: int = 0  # by the final gcs
    violations: list[str] = dataclasses.field(default_factory=list)

    def add(self, other: GCStats) -> None:
        for field in dataclasses.fields(self):
            if field.name == "violations":
                self.violations.extend(other.violations)
            else:
                setattr(self, field.name, getattr(self, field.name) + getattr(other, field.name))


def _spawn(action: str, url: str, key: str | None, arg: str = "-") -> subprocess.Popen[str]:
    command = [sys.executable, str(HERE), action, url, key or "", arg]
    return subprocess.Popen(
        command, cwd=ROOT, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True
    )


def _age(store: Any) -> None:
    area = store.blobs
    for entry in area.entries():
        os.utime(area.locate(entry.name), (entry.mtime - OLD, entry.mtime - OLD))
    temp = Path(area.locate("0" * 64)).parent.parent / "tmp"
    for entry in area.temp_entries():
        os.utime(temp / entry.name, (entry.mtime - OLD, entry.mtime - OLD))


def _fill(store: Any, rng: random.Random, expected: dict[str, list[int]]) -> set[str]:
    """Live and expired runs, orphans and temp leftovers; the expired runs' ids."""
    import flowdag

    expired = set()
    for i in range(rng.randint(3, 6)):
        run_id = f"base-{i}"
        picks = [rng.randrange(POOL) for _ in range(rng.randint(1, 5))]
        gone = rng.random() < 0.5
        flowdag.run(
            _workflow(run_id, picks),
            run_id=run_id,
            store=store,
            inline_limit=LIMIT,
            ttl=0 if gone else None,
        )
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
    for round_ in range(kills):
        picks = [rng.randrange(POOL) for _ in range(rng.randint(1, 6))]
        run_id = f"written-{round_}"
        collector = _spawn("gc", url, key)
        assert collector.stdout is not None
        collector.stdout.readline()  # "collecting": the store is open, gc starts now
        writer = _spawn("write", url, key, f"{run_id}={','.join(map(str, picks))}")
        time.sleep(rng.uniform(0.0, 0.25))
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
