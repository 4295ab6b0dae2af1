"""One run of the cold-cache fan-out of ``bench_cache.py``, for counting its instructions.

Wall time on a shared machine swings more than the 10% the cold cache may
cost; the instructions a run executes (all threads, as valgrind counts them)
do not. Per node, at two widths, so the fixed cost of the process cancels:

    for w in 300 900; do for c in 0 1; do
        PYTHONPATH=$PWD valgrind --tool=callgrind --callgrind-out-file=/dev/null \
            python benchmarks/cold_cache_instructions.py $c $w 2>&1 | grep Collected
    done; done

(instructions at 900 - at 300) / 600 per node, ``1`` (cache=True) over ``0``.
Kernel work (LMDB's page writes and fsyncs) is not counted.
"""

from __future__ import annotations

import sys
import tempfile

from bench_cache import cached_fanout

import flowdag

if __name__ == "__main__":
    cache, width = sys.argv[1] == "1", int(sys.argv[2])
    with tempfile.TemporaryDirectory() as path:
        dag = cached_fanout(width, cache)
        assert flowdag.run(dag, run_id="cold", store=f"lmdb://{path}", max_workers=4).ok
