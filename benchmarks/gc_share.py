"""How much of a run the cyclic garbage collector takes: one run with it on, off or frozen.

Reproduce (from outside a tree, e.g. /tmp; one process per mode)::

    for m in on off freeze; do
        PYTHONPATH=<tree> python <tree>/benchmarks/gc_share.py 400000 $m
    done

``off`` disables the collector for the whole process (never do that around user
code: it may make cycles); ``freeze`` moves everything alive before the run
(the DAG) out of the collector's reach (`gc.freeze`). The last field is the
oldest generation's collection count over the process's whole life.
"""

from __future__ import annotations

import gc
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))

from bench_scale import leaves


def main() -> None:
    import flowdag

    size, mode = int(sys.argv[1]), sys.argv[2]
    dag = leaves(size)
    if mode == "off":
        gc.disable()
    elif mode == "freeze":
        gc.freeze()
    with tempfile.TemporaryDirectory() as where, flowdag.open_store(f"lmdb://{where}") as store:
        wall, cpu = time.perf_counter(), time.process_time()
        flowdag.run(dag, run_id="s", store=store, max_workers=4)
        wall, cpu = time.perf_counter() - wall, time.process_time() - cpu
    per_node = f"wall {wall / size * 1e6:.1f} cpu {cpu / size * 1e6:.1f} us/node"
    print(mode, size, per_node, gc.get_stats()[2])


if __name__ == "__main__":
    main()
