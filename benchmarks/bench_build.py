"""Building a workflow: ``add_node`` for every node + ``build()``, at 10,000 nodes.

Reproduce, and compare two trees in one sitting (pytest imports this checkout's
flowdag; ``--benchmark-save``/``--benchmark-compare`` keep the figures apart)::

    pytest benchmarks/bench_build.py --benchmark-only --benchmark-columns=min,median,max,rounds

Group ``build``: ``leaves`` is a ``source`` and 10,000 leaves, one lambda per
node (the shape of ``bench_scale.py``); ``fanout`` is ``flowdag bench``'s
1 -> 10,000 -> 1; ``networkx`` (the baseline) builds the leaves' graph with
networkx alone (one ``add_node`` and one ``add_edge`` per node) and sorts it
topologically. The summary prints each against the baseline.
"""

from __future__ import annotations

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
