"""The 10k comparison of ``bench_scale.py`` with CPU times beside the wall times.

A prebuilt fan-out (`bench_scale.leaves`) run by a bare ``ThreadPoolExecutor``
(`_shapes.run_bare`), by ``flowdag.run`` on the memory store and on a fresh
LMDB store, in turn, ROUNDS rounds after a dropped warm-up; medians per node
and their ratios to the bare pool. Alternate trees in one sitting::

    PYTHONPATH=<tree> python benchmarks/compare_run_cpu.py 10000 3 [leaves|fanout]

The shape is `bench_scale.leaves` (a lambda per node) unless ``fanout`` is
given (``flowdag bench``'s 1 -> N -> 1, one function for the middle nodes).

CPU time is the whole process's (every thread): on a shared, loaded machine it
moves less than wall time.
"""

from __future__ import annotations

import statistics
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).parent))

import bench_scale
from _shapes import WORKERS, run_bare

import flowdag


def _clock() -> tuple[float, float]:
    return time.perf_counter(), time.process_time()


def _since(start: tuple[float, float]) -> tuple[float, float]:
    wall, cpu = _clock()
    return wall - start[0], cpu - start[1]


def main(size: int, rounds: int, shape: str = "leaves") -> None:
    dag = bench_scale.SHAPES[shape][0](size)
    times: dict[str, list[tuple[float, float]]] = {"bare": [], "memory": [], "lmdb": []}
    with tempfile.TemporaryDirectory() as where:
        for i in range(rounds + 1):  # the first round warms up and is dropped
            start = _clock()
            run_bare(dag)
            bare = _since(start)
            with flowdag.open_store("memory://") as store:
                start = _clock()
                assert flowdag.run(dag, store=store, max_workers=WORKERS).ok
                memory = _since(start)
            with flowdag.open_store(f"lmdb://{where}/store{i}") as store:
                start = _clock()
                assert flowdag.run(dag, run_id="c", store=store, max_workers=WORKERS).ok
                lmdb = _since(start)
            if i:
                times["bare"].append(bare)
                times["memory"].append(memory)
                times["lmdb"].append(lmdb)
    print(flowdag.__file__)
    for index, what in ((0, "wall"), (1, "cpu")):
        bare_s, memory_s, lmdb_s = (
            statistics.median(t[index] for t in times[k]) for k in ("bare", "memory", "lmdb")
        )
        print(
            f"{what}: bare {bare_s * 1e6 / size:.1f} us/node; memory "
            f"{memory_s * 1e6 / size:.1f} ({memory_s / bare_s:.2f}x); LMDB "
            f"{lmdb_s * 1e6 / size:.1f} ({lmdb_s / bare_s:.2f}x)"
        )


if __name__ == "__main__":
    main(int(sys.argv[1]), int(sys.argv[2]), *sys.argv[3:4])
