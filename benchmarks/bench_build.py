"""Building a workflow: ``add_node`` for every node + ``build()``, against networkx's own.

Reproduce, and compare two trees in one sitting (pytest imports this checkout's
flowdag; ``--benchmark-save``/``--benchmark-compare`` keep the figures apart)::

    pytest benchmarks/bench_build.py --benchmark-only --benchmark-columns=min,median,max,rounds

Group ``build``: ``leaves`` is a ``source`` and 10,000 leaves, one lambda per
node (the shape of ``bench_scale.py``); ``fanout`` is ``flowdag bench``'s
1 -> 10,000 -> 1; ``networkx`` (the baseline) builds the leaves' graph with
networkx alone (one ``add_node`` and one ``add_edge`` per node) and sorts it
topologically. The summary prints each against the baseline.

Run as a script, it compares trees without pytest:

- ``python benchmarks/bench_build.py compare N ROUNDS TREE...``: each round,
  for each tree in turn, a fresh interpreter (``PYTHONPATH=TREE``, flowdag
  imported first) builds the networkx floor, then the leaves shape of N nodes,
  as ``bench_scale.py`` does; it prints each tree's
  median build time and the build / floor ratios, wall and CPU, per round.
- ``python benchmarks/bench_build.py once SHAPE N``: build once (``nx``,
  ``leaves`` or ``fanout``), for an instruction count. Instructions per node
  are the difference between two sizes, which cancels the start-up::

    for n in 10000 20000; do PYTHONPATH=TREE valgrind --tool=cachegrind --cache-sim=no \\
      --cachegrind-out-file=/dev/null python benchmarks/bench_build.py once leaves $n \\
      2>&1 | grep 'I *refs'; done      # (second - first) / 10000
"""

from __future__ import annotations

import json
import statistics
import subprocess
import sys
from pathlib import Path
from typing import Any

import bench_scale
import pytest

SIZE = 10_000
ROUNDS = {"rounds": 7, "warmup_rounds": 1}


@pytest.mark.benchmark(group="build")
def test_build_networkx(benchmark: Any) -> None:
    deps = bench_scale.leaves_edges(SIZE)
    benchmark.pedantic(bench_scale.floor, args=(deps,), **ROUNDS)
    benchmark.extra_info.update(label="networkx", baseline=True, nodes=SIZE + 1)


@pytest.mark.benchmark(group="build")
@pytest.mark.parametrize("shape", ["leaves", "fanout"])
def test_build_flowdag(benchmark: Any, shape: str) -> None:
    dag = benchmark.pedantic(bench_scale.SHAPES[shape][0], args=(SIZE,), **ROUNDS)
    benchmark.extra_info.update(label=shape, nodes=len(dag))


def once(shape: str, size: int) -> None:
    """Build ``shape`` of ``size`` nodes once (``nx``: the networkx floor of the leaves)."""
    if shape == "nx":
        bench_scale.floor(bench_scale.leaves_edges(size))
    else:
        bench_scale.SHAPES[shape][0](size)


_CHILD = """
import gc, json, sys
sys.path.insert(0, {here!r})
import bench_scale as b
import flowdag.workflow  # imported before the clock starts
size = {size}
deps = b.leaves_edges(size)
floor = b.floor(deps)
del deps
gc.collect()
start = b._clock()
dag = b.leaves(size)
print(json.dumps({{"nx": floor, "build": b._since(start)}}))
"""


def compare(size: int, rounds: int, trees: list[str]) -> None:
    """Build + floor in a fresh interpreter per tree, the trees alternated round by round."""
    code = _CHILD.format(here=str(Path(__file__).resolve().parent), size=size)
    rows: dict[str, list[dict[str, Any]]] = {tree: [] for tree in trees}
    for _ in range(rounds):
        for tree in trees:
            done = subprocess.run(
                [sys.executable, "-c", code],
                env={"PYTHONPATH": tree},
                capture_output=True,
                text=True,
                check=True,
                cwd="/",
            )
            rows[tree].append(json.loads(done.stdout))
    for tree, found in rows.items():
        wall = [row["build"][0] / row["nx"][0] for row in found]
        cpu = [row["build"][1] / row["nx"][1] for row in found]
        print(
            f"{tree}: build {statistics.median(r['build'][0] for r in found):.3f} s, "
            f"nx {statistics.median(r['nx'][0] for r in found):.3f} s; build / nx wall "
            f"{statistics.median(wall):.2f}x ({', '.join(f'{x:.2f}' for x in wall)}), "
            f"cpu {statistics.median(cpu):.2f}x ({', '.join(f'{x:.2f}' for x in cpu)})"
        )


if __name__ == "__main__":
    if sys.argv[1:2] == ["once"]:
        once(sys.argv[2], int(sys.argv[3]))
    elif sys.argv[1:2] == ["compare"]:
        compare(int(sys.argv[2]), int(sys.argv[3]), sys.argv[4:])
    else:
        sys.exit(__doc__)
