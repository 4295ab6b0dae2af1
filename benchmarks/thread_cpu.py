"""Where one `flowdag.run` spends its CPU, thread by thread, and how often each sleeps.

A fan-out (`bench_scale.leaves`) on a fresh LMDB store; for each thread of the
process, its CPU per node and its voluntary and involuntary context switches per
node (``/proc/self/task``, Linux), read as the last node ends. The busiest
thread is the driver, the next the committer, then the workers. Reproduce::

    PYTHONPATH=<tree> python /work/main/benchmarks/thread_cpu.py 100000
"""

from __future__ import annotations

import os
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parent))

from bench_scale import leaves

_TICK = os.sysconf("SC_CLK_TCK")


def _threads() -> dict[str, tuple[float, int, int]]:
    """Thread id -> (CPU seconds, voluntary, involuntary context switches)."""
    found = {}
    for tid in os.listdir("/proc/self/task"):
        try:
            with open(f"/proc/self/task/{tid}/stat") as stat:
                fields = stat.read().rsplit(")", 1)[1].split()
            with open(f"/proc/self/task/{tid}/status") as status:
                counts = dict(line.split(":\t") for line in status.read().splitlines())
        except FileNotFoundError:  # ended meanwhile
            continue
        cpu = (int(fields[11]) + int(fields[12])) / _TICK
        switches = int(counts["voluntary_ctxt_switches"]), int(counts["nonvoluntary_ctxt_switches"])
        found[tid] = (cpu, *switches)
    return found


def main() -> None:
    import flowdag

    size = int(sys.argv[1]) if len(sys.argv) > 1 else 100_000
    dag = leaves(size)
    at_end: dict[str, tuple[float, int, int]] = {}

    def on_event(event: Any) -> None:
        if event.done == len(dag) and not at_end:  # the last node: every thread alive
            at_end.update(_threads())

    before = _threads()
    with tempfile.TemporaryDirectory() as where, flowdag.open_store(f"lmdb://{where}") as store:
        wall, cpu = time.perf_counter(), time.process_time()
        flowdag.run(dag, run_id="t", store=store, max_workers=4, on_event=on_event)
        wall, cpu = time.perf_counter() - wall, time.process_time() - cpu
    print(f"wall {wall / size * 1e6:.1f} us/node, CPU {cpu / size * 1e6:.1f} us/node")
    for tid, (used, voluntary, involuntary) in sorted(at_end.items(), key=lambda t: -t[1][0]):
        was = before.get(tid, (0.0, 0, 0))
        print(
            f"  thread {tid}: CPU {(used - was[0]) / size * 1e6:6.1f} us/node, "
            f"switches {(voluntary - was[1]) / size:.2f} voluntary, "
            f"{(involuntary - was[2]) / size:.2f} involuntary per node"
        )


if __name__ == "__main__":
    main()
