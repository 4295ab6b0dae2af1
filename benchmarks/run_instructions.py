"""One run of a prebuilt fan-out, for counting the instructions a run executes per node.

Wall time on a shared machine swings more than the changes measured; the
instructions a run executes (all threads, as valgrind counts them) do not. Per
node, at two widths, so the fixed cost of the process cancels::

    for w in 1000 3000; do
        PYTHONPATH=$PWD valgrind --tool=callgrind --callgrind-out-file=/dev/null \
            python benchmarks/run_instructions.py memory $w 2>&1 | grep Collected
    done

(count at 3000 - count at 1000) / 2000 per node. KIND is ``memory`` or ``lmdb``
(``flowdag.run``, 4 workers), ``bare`` (`_shapes.run_bare`: a
``ThreadPoolExecutor`` running the same graph) or ``none`` (the build alone,
which every count includes). The shape is `bench_scale.leaves`: a source and
N leaves, one lambda per leaf. Kernel work (LMDB's page writes and fsyncs) is
not counted.
"""

from __future__ import annotations

import sys
import tempfile
from pathlib import Path

sys.path.insert(0, str(Path(__file__).parent))

import bench_scale
from _shapes import run_bare

import flowdag

if __name__ == "__main__":
    kind, width = sys.argv[1], int(sys.argv[2])
    dag = bench_scale.leaves(width)
    if kind == "bare":
        run_bare(dag)
    elif kind != "none":
        with tempfile.TemporaryDirectory() as where:
            url = "memory://" if kind == "memory" else f"{kind}://{where}/store"
            assert flowdag.run(dag, run_id="r", store=url, max_workers=4).ok
