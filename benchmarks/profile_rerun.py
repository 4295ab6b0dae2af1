"""Where a rerun of a completed fan-out spends its time: cProfile of the second run.

    python benchmarks/profile_rerun.py [N] [DIR]

Builds one source and N leaves (a lambda per leaf, default N=20,000), runs it
on LMDB in DIR (default: a temporary folder), then profiles a second `run` of
the same run id (load + plan, no node called) and prints the rerun's wall time
and the top of the profile by cumulative time.
"""

from __future__ import annotations

import cProfile
import pstats
import sys
import tempfile
import time
from pathlib import Path

import flowdag
from flowdag import Workflow


def leaf(i: int, source: int) -> int:
    return i + source


def main() -> None:
    n = int(sys.argv[1]) if len(sys.argv) > 1 else 20_000
    root = Path(sys.argv[2]) if len(sys.argv) > 2 else Path(tempfile.mkdtemp())
    wf = Workflow("fan-out")
    wf.add_node("source", lambda: 1)
    for i in range(n):
        wf.add_node(f"leaf{i:07d}", lambda source, i=i: leaf(i, source), deps=["source"])
    dag = wf.build()
    with flowdag.open_store(f"lmdb://{root / 'store'}") as store:
        flowdag.run(dag, run_id="r", store=store)
        profile = cProfile.Profile()
        started = time.perf_counter()
        profile.runcall(flowdag.run, dag, run_id="r", store=store)
        print(f"rerun of {n:,} leaves (profiled): {time.perf_counter() - started:.2f} s")
    pstats.Stats(profile).sort_stats("cumulative").print_stats(15)


if __name__ == "__main__":
    main()
