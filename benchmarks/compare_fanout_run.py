"""A fresh run of a 1 -> N -> 1 fan-out, timed, for comparing two trees back to back.

pytest imports this checkout's flowdag whatever ``PYTHONPATH`` says; this script
does not, so alternate trees in one sitting::

    PYTHONPATH=<tree> python benchmarks/compare_fanout_run.py KIND N

KIND is ``memory``, ``lmdb``, ``json`` or ``flatbuffers``. Each of 5 rounds runs
the fan-out under a new run id in a new store; the best 3 wall and CPU times
(CPU: the whole process, every thread) are printed. On a shared machine the CPU
times move less than the wall times.
"""

from __future__ import annotations

import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).parent))

from _shapes import WORKERS, fanout

import flowdag


def main(kind: str, size: int) -> None:
    shape = fanout(size)
    walls, cpus = [], []
    for _ in range(5):
        with tempfile.TemporaryDirectory() as where:
            url = "memory://" if kind == "memory" else f"{kind}://{where}/store"
            with flowdag.open_store(url) as store:
                wall, cpu = time.perf_counter(), time.process_time()
                assert flowdag.run(shape, run_id="r", store=store, max_workers=WORKERS).ok
                walls.append(time.perf_counter() - wall)
                cpus.append(time.process_time() - cpu)
    best = " ".join(f"{t:.3f}" for t in sorted(walls)[:3])
    best_cpu = " ".join(f"{t:.3f}" for t in sorted(cpus)[:3])
    print(f"{flowdag.__file__} {kind} {size}: {best} s wall, {best_cpu} s cpu")


if __name__ == "__main__":
    main(sys.argv[1], int(sys.argv[2]))
