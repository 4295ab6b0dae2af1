"""One `flowdag.run` of `bench_scale.leaves` on a fresh LMDB store: wall and CPU per node.

Reproduce (alternate trees in one sitting; run from outside a tree, e.g. /tmp)::

    PYTHONPATH=<tree> python /work/main/benchmarks/run_per_node.py 200000
"""

from __future__ import annotations

import os
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))

from bench_scale import leaves


def main() -> None:
    import flowdag

    size = int(sys.argv[1]) if len(sys.argv) > 1 else 200_000
    dag = leaves(size)
    with tempfile.TemporaryDirectory() as where, flowdag.open_store(f"lmdb://{where}") as store:
        wall, cpu = time.perf_counter(), time.process_time()
        flowdag.run(dag, run_id="s", store=store, max_workers=4)
        wall, cpu = time.perf_counter() - wall, time.process_time() - cpu
    print(
        f"{os.path.dirname(flowdag.__file__)}: wall {wall / size * 1e6:.1f} us/node "
        f"cpu {cpu / size * 1e6:.1f} us/node"
    )


if __name__ == "__main__":
    main()
