"""Resident memory of one `flowdag.run` of `bench_scale.leaves` on a fresh LMDB store.

Prints RSS after the build, after the run (result alive) and once the result is
dropped, each with the peak so far (``ru_maxrss``), and the run's CPU per node.
Reproduce (alternate trees in one sitting; run from outside a tree, e.g. /tmp)::

    PYTHONPATH=<tree> python /work/main/benchmarks/run_memory.py 200000
"""

from __future__ import annotations

import gc
import resource
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))

from bench_scale import leaves


def _mib() -> str:
    """Resident memory now and the peak so far."""
    with open("/proc/self/statm") as statm:
        resident = int(statm.read().split()[1]) * resource.getpagesize()
    peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss  # KiB on Linux
    return f"RSS {resident >> 20} MiB, peak {peak >> 10} MiB"


def main() -> None:
    import flowdag

    size = int(sys.argv[1]) if len(sys.argv) > 1 else 200_000
    dag = leaves(size)
    gc.collect()
    print("built:", _mib())
    with tempfile.TemporaryDirectory() as where, flowdag.open_store(f"lmdb://{where}") as store:
        cpu = time.process_time()
        result = flowdag.run(dag, run_id="m", store=store, max_workers=4)
        cpu = time.process_time() - cpu
        print("ran:", _mib(), f"(CPU {cpu / size * 1e6:.1f} us/node)")
        del result
        gc.collect()
        print("result dropped:", _mib())


if __name__ == "__main__":
    main()
