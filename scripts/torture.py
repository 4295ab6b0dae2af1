"""SIGKILL torture, the long version: many random DAGs per disk store, killed many times.

Reproduce the README's figures with::

    python scripts/torture.py --runs 50 --kills 5 --jobs 3

Each run is one seed on one store: a random DAG of 20-300 nodes, run in a
subprocess, killed with SIGKILL at random moments ``--kills`` times, checked
after every kill, then resumed to the end and compared with an uninterrupted
run (see ``tests/torture/harness.py``); a few nodes per DAG return 300 KiB,
kept by reference, and after every kill each completed one is read through its
ref and compared. Odd seeds use an encrypted store; on the JSON and FlatBuffers
stores, every third seed also loses its snapshot once after a kill (the run
must be refused, never resumed from the journal left behind, then is started
afresh); on LMDB, every third seed has its run rewritten once after a kill in
the previous release's layout (keys hashed from the names), which the next
resume moves to the new one, under kills. Then the gc rounds (``--gc-runs``,
see ``tests/torture/gc_torture.py``) and the edit rounds (``--edit-runs``, see
``tests/torture/edit_torture.py``): a completed run whose code is edited is
resumed under kills, and must run exactly the edited nodes and those whose
inputs changed, early cutoff included. Then the kv rounds (``--kv-runs``, see
``tests/torture/kv_torture.py``): runs whose nodes update shared kv counters
are killed at random moments; after every kill each counter must equal the
number of completed nodes that update it, and at the end the number of its
updaters. The wait rounds (``--waits N``, none by default, see
``tests/torture/wait_torture.py``): runs with input nodes and the processes
that provide their values are killed at random; after every kill a value is
recorded whole or not at all, a wait ends only with its node's completion,
and no key is stored in plain text. The map rounds (``--maps N``, none by
default, see ``tests/torture/map_torture.py``): runs with ``wf.map`` (cached
maps over repeated items, maps of maps, items failing some attempts, empty
lists) are killed at random and resumed until they complete; after every
kill each map node's record holds its expansion, no completed item is called
again, a cached map holds one entry per value of its completed items and
computes no value twice in one process, and at the end each list is its
function on each item, in order.
Prints the figures per store and exits 1 if any check failed.
"""

from __future__ import annotations

import argparse
import json
import sys
import tempfile
import time
from concurrent.futures import ThreadPoolExecutor
from functools import partial
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from tests.torture import (  # noqa: E402
    edit_torture,
    gc_torture,
    harness,
    kv_torture,
    map_torture,
    wait_torture,
)


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--runs", type=int, default=50, help="runs per store (default 50)")
    parser.add_argument("--kills", type=int, default=5, help="kills per run (default 5)")
    parser.add_argument("--stores", nargs="+", default=list(harness.STORES), choices=harness.STORES)
    parser.add_argument("--max-nodes", type=int, default=300, help="largest DAG (default 300)")
    parser.add_argument("--seed", type=int, default=0, help="first seed (default 0)")
    parser.add_argument("--jobs", type=int, default=3, help="runs at once (default 3)")
    parser.add_argument("--json", type=Path, help="also write the figures to this file")
    parser.add_argument(
        "--gc-runs", type=int, default=10, help="gc torture runs per store (default 10)"
    )
    parser.add_argument(
        "--gc-kills", type=int, default=4, help="collectors killed per gc run (default 4)"
    )
    parser.add_argument(
        "--edit-runs",
        type=int,
        default=10,
        help="runs per store whose code is edited, then resumed under kills (default 10)",
    )
    parser.add_argument(
        "--kv-runs",
        type=int,
        default=10,
        help="runs per store updating kv counters, killed at random (default 10)",
    )
    parser.add_argument(
        "--waits",
        type=int,
        default=0,
        dest="wait_runs",
        metavar="N",
        help="runs per store with input nodes and providers, killed at random (default 0)",
    )
    parser.add_argument(
        "--maps",
        type=int,
        default=0,
        dest="map_runs",
        metavar="N",
        help="runs per store with maps, cached ones too, killed at random (default 0)",
    )
    args = parser.parse_args()

    started = time.monotonic()
    totals = {scheme: harness.Stats() for scheme in args.stores}
    gc_totals = {scheme: gc_torture.GCStats() for scheme in args.stores}
    edit_totals = {scheme: edit_torture.EditStats() for scheme in args.stores}
    kv_totals = {scheme: kv_torture.KVStats() for scheme in args.stores}
    wait_totals = {scheme: wait_torture.WaitStats() for scheme in args.stores}
    map_totals = {scheme: map_torture.MapStats() for scheme in args.stores}
    with tempfile.TemporaryDirectory(prefix="flowdag-torture-") as tmp:

        def rounds(kind: str, totals: dict[str, Any], runs: int, torture: Any) -> None:
            """``runs`` runs per store of ``torture(scheme, seed, where, encrypt=...)``
            (odd seeds encrypted), side by side: their figures added to ``totals``,
            their violations printed as they come."""

            def one(job: tuple[str, int]) -> tuple[str, Any]:
                scheme, seed = job
                where = Path(tmp) / f"{kind}-{scheme}-{seed}"
                return scheme, torture(scheme, seed, where, encrypt=seed % 2 == 1)

            jobs = [(scheme, args.seed + n) for n in range(runs) for scheme in args.stores]
            with ThreadPoolExecutor(args.jobs) as pool:  # each run waits on its subprocess
                for done, (scheme, stats) in enumerate(pool.map(one, jobs), 1):
                    totals[scheme].add(stats)
                    for text in stats.violations:
                        print(f"VIOLATION {text}", flush=True)
                    if done % 10 == 0 or done == len(jobs):
                        print(f"{done}/{len(jobs)} {kind} runs", file=sys.stderr, flush=True)

        sized = {"kills": args.kills, "max_nodes": args.max_nodes}
        rounds(
            "run",
            totals,
            args.runs,
            lambda scheme, seed, where, encrypt: harness.torture(
                scheme, seed, where, encrypt=encrypt, lose_snapshot=seed % 3 == 0, **sized
            ),
        )
        rounds("gc", gc_totals, args.gc_runs, partial(gc_torture.gc_torture, kills=args.gc_kills))
        rounds("edit", edit_totals, args.edit_runs, partial(edit_torture.edit_torture, **sized))
        rounds("kv", kv_totals, args.kv_runs, partial(kv_torture.kv_torture, **sized))
        rounds("wait", wait_totals, args.wait_runs, partial(wait_torture.wait_torture, **sized))
        rounds("map", map_totals, args.map_runs, partial(map_torture.map_torture, **sized))

    grand = _table(
        f"{'store':<12} {'runs':>5} {'nodes':>6} {'kills':>6} {'not saved':>9} "
        f"{'mid-compaction':>14} {'torn tail':>9} {'in flight':>9} {'interrupted':>11} "
        f"{'lost snap':>9} {'old layout':>10} {'refs read':>9} {'sealed':>7} {'violations':>10}",
        totals,
        harness.Stats(),
        _row,
    )
    gc_grand = gc_torture.GCStats()
    if args.gc_runs:
        gc_grand = _table(
            f"{'gc store':<12} {'runs':>5} {'kills':>6} {'writes':>6} {'mid-delete':>10} "
            f"{'mid-sweep':>9} {'violations':>10}",
            gc_totals,
            gc_grand,
            _gc_row,
        )
    edit_grand = edit_torture.EditStats()
    if args.edit_runs:
        edit_grand = _table(
            f"{'edit store':<12} {'runs':>5} {'nodes':>6} {'edited':>6} {'must run':>8} "
            f"{'cut off':>7} {'kills':>6} {'violations':>10}",
            edit_totals,
            edit_grand,
            _edit_row,
        )
    kv_grand = kv_torture.KVStats()
    if args.kv_runs:
        kv_grand = _table(
            f"{'kv store':<12} {'runs':>5} {'nodes':>6} {'updates':>7} {'kills':>6} "
            f"{'checked':>7} {'big read':>8} {'violations':>10}",
            kv_totals,
            kv_grand,
            _kv_row,
        )
    wait_grand = wait_torture.WaitStats()
    if args.wait_runs:
        wait_grand = _table(
            f"{'wait store':<12} {'runs':>5} {'nodes':>6} {'inputs':>6} {'kills':>6} "
            f"{'provides':>8} {'prov kills':>10} {'checked':>7} {'violations':>10}",
            wait_totals,
            wait_grand,
            _wait_row,
        )
    map_grand = map_torture.MapStats()
    if args.map_runs:
        map_grand = _table(
            f"{'map store':<12} {'runs':>5} {'maps':>5} {'items':>6} {'cached':>6} "
            f"{'repeats':>7} {'empty':>5} {'kills':>6} {'calls':>6} {'computed':>8} {'hits':>5} "
            f"{'failed':>6} {'checked':>7} {'violations':>10}",
            map_totals,
            map_grand,
            _map_row,
        )
    print(f"{time.monotonic() - started:.0f} s")
    if args.json:
        figures: dict[str, Any] = _figures([*totals.items(), ("total", grand)])
        figures["gc"] = _figures([*gc_totals.items(), ("total", gc_grand)])
        figures["edit"] = _figures([*edit_totals.items(), ("total", edit_grand)])
        figures["kv"] = _figures([*kv_totals.items(), ("total", kv_grand)])
        if args.wait_runs:
            figures["waits"] = _figures([*wait_totals.items(), ("total", wait_grand)])
        if args.map_runs:
            figures["maps"] = _figures([*map_totals.items(), ("total", map_grand)])
        args.json.write_text(json.dumps(figures, indent=2) + "\n")
    failed = grand.violations or gc_grand.violations or edit_grand.violations
    failed = failed or kv_grand.violations or wait_grand.violations
    return 1 if failed or map_grand.violations else 0


def _table(header: str, totals: dict[str, Any], grand: Any, row: Any) -> Any:
    """Print one line per store and their total (added into ``grand``, returned)."""
    print(header)
    for scheme, stats in totals.items():
        grand.add(stats)
        print(row(scheme, stats))
    print(row("total", grand))
    return grand


def _figures(rows: list[tuple[str, Any]]) -> dict[str, Any]:
    """Each row's counts, violations counted, for ``--json``."""
    return {
        name: {k: v for k, v in vars(s).items() if k != "violations"}
        | {"violations": len(s.violations)}
        for name, s in rows
    }


def _row(name: str, s: harness.Stats) -> str:
    return (
        f"{name:<12} {s.runs:>5} {s.nodes:>6} {s.kills:>6} {s.not_saved_yet:>9} "
        f"{s.mid_compaction:>14} {s.torn_tails:>9} {s.in_flight:>9} {s.interrupted:>11} "
        f"{s.lost_snapshots:>9} {s.old_layouts:>10} {s.refs:>9} {s.sealed:>7} "
        f"{len(s.violations):>10}"
    )


def _gc_row(name: str, s: gc_torture.GCStats) -> str:
    return (
        f"{name:<12} {s.runs:>5} {s.kills:>6} {s.writes:>6} {s.mid_delete:>10} "
        f"{s.mid_sweep:>9} {len(s.violations):>10}"
    )


def _edit_row(name: str, s: edit_torture.EditStats) -> str:
    return (
        f"{name:<12} {s.runs:>5} {s.nodes:>6} {s.edited:>6} {s.must_run:>8} "
        f"{s.cut_off:>7} {s.kills:>6} {len(s.violations):>10}"
    )


def _kv_row(name: str, s: kv_torture.KVStats) -> str:
    return (
        f"{name:<12} {s.runs:>5} {s.nodes:>6} {s.updates:>7} {s.kills:>6} "
        f"{s.checked:>7} {s.big:>8} {len(s.violations):>10}"
    )


def _wait_row(name: str, s: wait_torture.WaitStats) -> str:
    return (
        f"{name:<12} {s.runs:>5} {s.nodes:>6} {s.inputs:>6} {s.kills:>6} {s.provides:>8} "
        f"{s.provider_kills:>10} {s.checked:>7} {len(s.violations):>10}"
    )


def _map_row(name: str, s: map_torture.MapStats) -> str:
    return (
        f"{name:<12} {s.runs:>5} {s.maps:>5} {s.items:>6} {s.cached:>6} {s.repeats:>7} "
        f"{s.empty:>5} {s.kills:>6} {s.calls:>6} {s.computed:>8} {s.hits:>5} {s.failed_runs:>6} "
        f"{s.checked:>7} {len(s.violations):>10}"
    )


if __name__ == "__main__":
    sys.exit(main())
