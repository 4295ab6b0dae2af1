"""The rerun of a completed fan-out (load + plan, no node called): CPU time per phase and memory.

Reproduce (issue 16, "Scale"; one tree per call, the one on ``PYTHONPATH``)::

    PYTHONPATH=$PWD python benchmarks/bench_rerun.py            # 100,000 leaves
    PYTHONPATH=$PWD python benchmarks/bench_rerun.py 20000 --trace

Builds ``bench_scale``'s shape (a ``source`` and N leaves, one ``lambda
source, i=i: leaf(i, source)`` each), runs it on a fresh LMDB store, then runs
it again on the completed run, and prints:

- the CPU time (``time.process_time``, every thread) of the rerun, and of its
  phases: the code fingerprints, the seal (``reuse_sealed``: the digest of the
  DAG's code and shape checked against the run's seal, `flowdag._seal`), and,
  without a seal (the journal stores, or trees before seals), the load
  (``Store._load_known``, or ``Store.load`` in trees before it), the plan, the
  driver;
- ``VmRSS``/``RssAnon``/``RssFile`` of the process after build, run and rerun,
  and its peak (``VmHWM``): ``RssFile`` is the LMDB map's pages;
- with ``--trace``: what the rerun allocated and still holds at its end
  (``tracemalloc``, the first run's result alive beside it, as in
  ``bench_scale``), and the 12 lines holding the most. Slow: use N <= 20,000.

The phase timers wrap functions of ``flowdag.runner`` and ``flowdag._driver``
by name; a tree without one of them shows no figure for it.
"""

from __future__ import annotations

import argparse
import gc
import sys
import tempfile
import time
import tracemalloc
from collections.abc import Callable
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parent))

from bench_scale import leaves


def _memory() -> str:
    found = {}
    with open("/proc/self/status") as status:
        for line in status:
            key, _, value = line.partition(":")
            if key in ("VmRSS", "RssAnon", "RssFile", "VmHWM"):
                found[key] = int(value.split()[0]) // 1024
    return " ".join(f"{key} {value} MiB" for key, value in found.items())


def _timed(times: dict[str, float], label: str, fn: Callable[..., Any]) -> Callable[..., Any]:
    def timed(*args: Any, **kwargs: Any) -> Any:
        start = time.process_time()
        try:
            return fn(*args, **kwargs)
        finally:
            times[label] = times.get(label, 0.0) + time.process_time() - start

    return timed


def main() -> None:
    parser = argparse.ArgumentParser(description=(__doc__ or "").split("\n\n")[0])
    parser.add_argument("size", type=int, nargs="?", default=100_000, help="leaves")
    parser.add_argument("--trace", action="store_true", help="tracemalloc of the rerun")
    args = parser.parse_args()

    import flowdag
    import flowdag._driver as driver
    import flowdag.runner as runner

    start = time.process_time()
    dag = leaves(args.size)
    print(f"flowdag from {Path(flowdag.__file__).parent}; {args.size:,} leaves")
    print(f"build  cpu {time.process_time() - start:6.2f} s   {_memory()}")
    times: dict[str, float] = {}
    for module, name, label in (
        (runner, "reuse_sealed", "seal"),
        (runner, "_load_or_none", "load"),
        (runner, "node_fingerprints", "fingerprints"),
        (runner, "plan_call", "plan"),
        (driver._Driver, "__init__", "driver"),
        (driver._Driver, "drive", "driver"),
    ):
        if hasattr(module, name):
            setattr(module, name, _timed(times, label, getattr(module, name)))
    with tempfile.TemporaryDirectory() as where, flowdag.open_store(f"lmdb://{where}") as store:
        start = time.process_time()
        result = flowdag.run(dag, run_id="scale", store=store, max_workers=4)
        assert result.ok, result.status
        print(f"run    cpu {time.process_time() - start:6.2f} s   {_memory()}")
        times.clear()
        gc.collect()
        if args.trace:
            tracemalloc.start()
        start, wall = time.process_time(), time.perf_counter()
        again = flowdag.run(dag, run_id="scale", store=store, max_workers=4)
        took, wall = time.process_time() - start, time.perf_counter() - wall
        assert again.ok, again.status
        phases = ", ".join(f"{label} {value:.2f} s" for label, value in times.items())
        print(f"rerun  cpu {took:6.2f} s   {_memory()}   (wall {wall:.2f} s)")
        sealed = type(again.nodes).__name__ == "SealedNodes"  # nothing loaded (`flowdag._seal`)
        print(f"rerun phases (cpu): {phases}; {'sealed' if sealed else 'loaded and planned'}")
        if args.trace:
            gc.collect()
            snapshot = tracemalloc.take_snapshot()
            held, peak = tracemalloc.get_traced_memory()
            print(
                f"rerun holds {held / 2**20:.1f} MiB at its end "
                f"({held / args.size:.0f} B per node), peak {peak / 2**20:.1f} MiB"
            )
            for stat in snapshot.statistics("lineno")[:12]:
                print(f"  {stat}")


if __name__ == "__main__":
    main()
