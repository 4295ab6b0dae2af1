"""What the cross-run cache costs cold, and saves warm, on a 10,000-node fan-out on LMDB.

Reproduce (read the ratios at the end):

    pytest benchmarks/bench_cache.py --benchmark-only --benchmark-group-by=group \
        --benchmark-columns=min,median,max,rounds

Groups:
- ``cache-cold-10k``: a fresh run (new store each round) of ``root -> 10,000
  leaves -> sink`` whose leaves are trivial, with ``cache=False`` (baseline) and
  ``cache=True`` on an empty cache: every leaf is looked up, misses, and its
  entry rides its completion's commit. The goal: within 10% of the baseline.
  ``cache-cold-10k-memory``: the same in a `MemoryStore`.
- ``cache-warm-10k``: the same fan-out whose leaves each work 5 ms (a sleep,
  as an I/O-bound step would), computed in a new store (baseline) against a
  new run id over a warm cache (every leaf a hit, nothing called). The goal:
  the warm run at least 5x faster.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from typing import Any

import pytest
from _shapes import WORKERS, DirMaker

import flowdag
from flowdag.stores import Store
from flowdag.stores.memory import MemoryStore

WIDTH = 10_000
WORK_SECONDS = 0.005


def cached_fanout(width: int, cache: bool, work: float = 0.0) -> flowdag.DAG:
    wf = flowdag.Workflow("cache-bench")
    wf.add_node("root", lambda: 1)

    def leaf(root: int, i: int = 0) -> int:
        if work:
            time.sleep(work)
        return root + i

    for i in range(width):
        # One function, one fingerprint; the index comes in as a default.
        wf.add_node(f"leaf{i}", _with_index(leaf, i), deps=["root"], cache=cache)
    wf.add_node("sink", lambda **leaves: len(leaves), deps=[f"leaf{i}" for i in range(width)])
    return wf.build()


def _with_index(leaf: Callable[..., int], i: int) -> Callable[[int], int]:
    def indexed(root: int, i: int = i) -> int:
        return leaf(root, i)

    return indexed


@pytest.mark.benchmark(group="cache-cold-10k")
@pytest.mark.parametrize("kind", ["lmdb", "memory"])
@pytest.mark.parametrize("cache", [False, True], ids=["no-cache", "cache-cold"])
def test_cold_cache_costs_little(
    benchmark: Any, fresh_dir: DirMaker, cache: bool, kind: str
) -> None:
    dag = cached_fanout(WIDTH, cache)
    if kind != "lmdb":
        benchmark.group = f"cache-cold-10k-{kind}"
    benchmark.extra_info.update(
        label="cache-cold" if cache else "no-cache", baseline=not cache, nodes=len(dag)
    )

    def setup() -> tuple[tuple[Store | str], dict[str, Any]]:
        return (MemoryStore() if kind == "memory" else f"lmdb://{fresh_dir()}",), {}

    def run(store: Store | str) -> flowdag.RunResult:
        return flowdag.run(dag, run_id="cold", store=store, max_workers=WORKERS)

    result = benchmark.pedantic(run, setup=setup, rounds=5, warmup_rounds=1)
    assert result.ok and result.nodes["sink"].output == WIDTH


@pytest.mark.benchmark(group="cache-warm-10k")
@pytest.mark.parametrize("warm", [False, True], ids=["computed", "cache-warm"])
def test_warm_cache_skips_the_work(benchmark: Any, fresh_dir: DirMaker, warm: bool) -> None:
    dag = cached_fanout(WIDTH, True, WORK_SECONDS)
    benchmark.extra_info.update(
        label="cache-warm" if warm else "computed", baseline=not warm, nodes=len(dag)
    )
    warm_url = f"lmdb://{fresh_dir()}"
    if warm:
        assert flowdag.run(dag, run_id="fill", store=warm_url, max_workers=8).ok
    counter = iter(range(1_000_000))

    def setup() -> tuple[tuple[str, str], dict[str, Any]]:
        url = warm_url if warm else f"lmdb://{fresh_dir()}"
        return (url, f"r{next(counter)}"), {}

    def run(url: str, run_id: str) -> flowdag.RunResult:
        return flowdag.run(dag, run_id=run_id, store=url, max_workers=8)

    result = benchmark.pedantic(run, setup=setup, rounds=3, warmup_rounds=0)
    assert result.ok
    if warm:
        assert all(result.reasons[f"leaf{i}"].code == "cached" for i in range(0, WIDTH, 997))
