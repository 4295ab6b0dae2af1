"""``flowdag.gc`` over many expired runs and many blobs: time, and cost per item.

The store holds ``--runs`` expired runs (finished three hours ago, ttl one
hour), each with ``--nodes`` outputs kept by reference (one blob each),
``--live`` runs that stay (their blobs are marked: the same outputs as the
first expired runs, so those blobs stay too), and orphan blobs (written
without any run) up to ``--blobs`` blobs in all. Every blob is made two hours old, so the
default grace of one hour lets the sweep take every unreferenced one.

Reproduce the figures of issue 12 (10,000 expired runs, 100,000 blobs)::

    python benchmarks/bench_gc.py build /tmp/gcbench --store lmdb --runs 10000 --blobs 100000
    cp -a /tmp/gcbench /tmp/gcbench.orig          # gc deletes: keep a copy to time again
    python benchmarks/bench_gc.py time /tmp/gcbench --store lmdb

``build`` skips fsync (only the layout matters; LMDB still syncs its own
commits) and prints how long it took. ``time`` first runs a dry run (what gc
reads: listing, lifetimes, marks), then gc itself, then gc again (nothing left
to do: the cost of a gc that finds nothing), and prints each with the cost per
run deleted and per blob swept. A tiny smoke run: ``--runs 20 --blobs 200 --live 5``.
"""

from __future__ import annotations

import argparse
import os
import sys
import time
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

HOURS_2 = 2 * 3600.0


def build(where: Path, scheme: str, runs: int, nodes: int, live: int, blobs: int) -> None:
    import flowdag

    started = time.perf_counter()
    saved = os.fsync, os.fdatasync
    os.fsync = os.fdatasync = lambda fd: None  # the layout matters here, not durability
    try:
        with flowdag.open_store(f"{scheme}://{where}") as store:
            for i in range(runs):  # finished 3 hours ago, ttl 1 hour: expired
                store.save(_run(store, f"gone-{i:06d}", i, nodes, expired=True))
            for i in range(live):  # the same outputs as expired run i: their blobs stay
                store.save(_run(store, f"live-{i:06d}", i, nodes, expired=False))
            area = store.blobs
            for i in range(max(0, blobs - len(area.entries()))):
                area.put(b"orphan %d " % i + b"x" * 48)
            _age(area)
            total = len(area.entries())
    finally:
        os.fsync, os.fdatasync = saved
    print(
        f"built {scheme}://{where}: {runs} expired runs, {live} live runs, {total} blobs "
        f"in {time.perf_counter() - started:.1f} s"
    )


def _run(store: Any, run_id: str, index: int, nodes: int, *, expired: bool) -> Any:
    """A finished run whose ``nodes`` outputs are refs to blobs of their own."""
    from flowdag.state import AttemptInfo, NodeState, NodeStatus, RunState

    done = datetime.now(UTC) - timedelta(hours=3 if expired else 0)
    states = {}
    for n in range(nodes):
        data = store.codec.encode((b"%d/%d " % (index, n)).ljust(64, b"."))
        ref = store.blobs.put(data).ref(encoding=store.codec.name)
        history = (AttemptInfo(1, done, done),)
        states[f"n{n}"] = NodeState(NodeStatus.COMPLETED, 1, done, done, ref, history=history)
    return RunState(run_id, "gcbench", states, ttl=timedelta(hours=1) if expired else None)


def _age(area: Any) -> None:
    """Make every blob two hours old (as if the runs were that old)."""
    for entry in area.entries():
        path = area.locate(entry.name)
        os.utime(path, (entry.mtime - HOURS_2, entry.mtime - HOURS_2))


def measure(where: Path, scheme: str) -> None:
    import flowdag

    with flowdag.open_store(f"{scheme}://{where}", create=False) as store:
        runs, blobs = len(store.list_runs()), len(store.blobs.entries())
        print(f"{scheme}://{where}: {runs} runs, {blobs} blobs")
        for label, dry_run in (("dry run", True), ("gc", False), ("gc again", False)):
            started = time.perf_counter()
            report = flowdag.gc(store, dry_run=dry_run)
            seconds = time.perf_counter() - started
            items = report.runs + report.blobs
            per = f", {seconds / items * 1e6:.0f} us per run or blob" if items else ""
            print(
                f"{label:9} {seconds:8.2f} s: {report.runs} runs, {report.blobs} blobs, "
                f"{report.bytes_freed / 2**20:.1f} MiB{per}"
            )


def main(argv: list[str]) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("action", choices=("build", "time"))
    parser.add_argument("where", type=Path)
    parser.add_argument("--store", default="lmdb", choices=("lmdb", "json", "flatbuffers"))
    parser.add_argument("--runs", type=int, default=10_000, help="expired runs")
    parser.add_argument("--nodes", type=int, default=2, help="blobs per run")
    parser.add_argument("--live", type=int, default=1_000, help="runs that stay")
    parser.add_argument("--blobs", type=int, default=100_000, help="blobs in all")
    args = parser.parse_args(argv)
    if args.action == "build":
        build(args.where, args.store, args.runs, args.nodes, args.live, args.blobs)
    else:
        measure(args.where, args.store)


if __name__ == "__main__":
    main(sys.argv[1:])
