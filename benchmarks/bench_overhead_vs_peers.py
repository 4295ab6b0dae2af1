"""Overhead against peers: flowdag on every store vs a bare thread pool and Dask's threads.

Reproduce (all figures of one run are comparable; read the ratios printed at the end):

    pytest benchmarks/bench_overhead_vs_peers.py --benchmark-only --benchmark-group-by=group \
        --benchmark-columns=min,median,max,rounds

Without the 100,000-node fan-out (the slow part): add ``-m "not slow"``.

Groups, one per shape and size, each with these members:

- ``bare`` (the baseline): a ``ThreadPoolExecutor`` of 4 threads driven in
  topological order, no persistence (``run_bare``, shared with bench_runner.py);
- ``dask-threaded``: ``dask.threaded.get`` with 4 workers on the same graph as a
  Dask dict (fan-out and chain, up to 10k nodes; skipped if dask is missing:
  ``pip install 'flowdag[bench]'``);
- ``memory``, ``lmdb``, ``json``, ``flatbuffers``: ``flowdag.run`` with 4
  workers; the disk stores are durable (every node checkpointed and synced
  before its dependents start, commits grouped);
- in ``chain-1k`` also ``synced-commit-STORE``: one synced commit of one small
  record per node and nothing else, the floor a durable chain cannot beat.

Shapes, trivial nodes: ``fanout`` 1 -> N -> 1 (1k, 10k, 100k), ``chain`` of N
(1k, 10k), ``grid`` a wide diamond grid of 10 layers of N/10 nodes, each node
needing two of the layer above (1k, 10k). ``extra_info.per_node_us`` is the
median divided by the node count; ``series`` lets the summary compare the
per-node cost at 100k with 1k.
"""

from __future__ import annotations

from typing import Any

import pytest
from _shapes import (
    DISK_STORES,
    SHAPES,
    STORES,
    WORKERS,
    DirMaker,
    dask_chain,
    dask_fanout,
    label,
    make_store,
    run_bare,
)

import flowdag
from flowdag.state import NodeRecord, NodeState, NodeStatus, RunState

SIZES = {
    "fanout": [1_000, 10_000, 100_000],
    "chain": [1_000, 10_000],
    "grid": [1_000, 10_000],
}
CASES = [
    pytest.param(shape, n, id=f"{shape}-{label(n)}", marks=[pytest.mark.slow] if n > 10_000 else [])
    for shape, sizes in SIZES.items()
    for n in sizes
]
DASK = {"fanout": dask_fanout, "chain": dask_chain}


def _rounds(nodes: int) -> dict[str, int]:
    if nodes <= 1_000:
        return {"rounds": 5, "warmup_rounds": 1}
    if nodes <= 10_000:
        return {"rounds": 3, "warmup_rounds": 1}
    return {"rounds": 2, "warmup_rounds": 1}


def _describe(benchmark: Any, what: str, shape: str, nodes: int, **extra: Any) -> None:
    benchmark.extra_info.update(label=what, nodes=nodes, series=f"{shape}/{what}", **extra)
    benchmark.extra_info["per_node_us"] = benchmark.stats.stats.median / nodes * 1e6


@pytest.mark.parametrize(("shape", "size"), CASES)
def test_bare(benchmark: Any, shape: str, size: int) -> None:
    dag = SHAPES[shape](size)
    benchmark.group = f"{shape}-{label(size)}"
    outputs = benchmark.pedantic(run_bare, args=(dag,), **_rounds(size))
    assert len(outputs) == len(dag)
    _describe(benchmark, "bare", shape, len(dag), baseline=True)


@pytest.mark.parametrize(("shape", "size"), [c for c in CASES if c.values[0] in DASK])
def test_dask_threaded(benchmark: Any, shape: str, size: int) -> None:
    if size > 10_000:
        pytest.skip("Dask at ~1 ms/node would take minutes at 100k; compared up to 10k")
    threaded = pytest.importorskip("dask.threaded", reason="pip install 'flowdag[bench]'")
    dsk, key = DASK[shape](size)
    benchmark.group = f"{shape}-{label(size)}"
    result = benchmark.pedantic(
        threaded.get, args=(dsk, key), kwargs={"num_workers": WORKERS}, **_rounds(size)
    )
    assert result == (size if shape == "fanout" else size - 1)
    _describe(benchmark, "dask-threaded", shape, len(dsk))


@pytest.mark.parametrize("store", STORES)
@pytest.mark.parametrize(("shape", "size"), CASES)
def test_flowdag(benchmark: Any, fresh_dir: DirMaker, shape: str, size: int, store: str) -> None:
    dag = SHAPES[shape](size)
    benchmark.group = f"{shape}-{label(size)}"
    opened: list[flowdag.Store] = []

    def setup() -> tuple[tuple[flowdag.Store], dict[str, Any]]:
        opened.append(make_store(store, fresh_dir()))  # a fresh store each round, untimed
        return (opened[-1],), {}

    def go(s: flowdag.Store) -> flowdag.RunResult:
        return flowdag.run(dag, run_id="bench", store=s, max_workers=WORKERS)

    try:
        result = benchmark.pedantic(go, setup=setup, **_rounds(size))
    finally:
        for s in opened:
            s.close()
    assert result.ok
    vs = f"synced-commit-{store}" if shape == "chain" and size == 1_000 else None
    _describe(benchmark, store, shape, len(dag), **({"vs": vs} if vs else {}))


def _commit_each(store: flowdag.Store, run_id: str, count: int) -> None:
    output = store.codec.encode(1)
    for i in range(count):
        store.commit(run_id, [NodeRecord(f"n{i}", NodeStatus.COMPLETED, 1, output=output)])


@pytest.mark.parametrize("store", DISK_STORES)
def test_chain_synced_commit(benchmark: Any, fresh_dir: DirMaker, store: str) -> None:
    """The floor of a durable chain: one synced single-record commit per node, nothing else."""
    nodes = 1_000
    benchmark.group = "chain-1k"
    opened: list[flowdag.Store] = []

    def setup() -> tuple[tuple[flowdag.Store], dict[str, Any]]:
        s = make_store(store, fresh_dir())
        opened.append(s)
        s.save(RunState("bench", "chain", nodes={f"n{i}": NodeState() for i in range(nodes)}))
        return (s,), {}

    try:
        benchmark.pedantic(lambda s: _commit_each(s, "bench", nodes), setup=setup, **_rounds(nodes))
    finally:
        for s in opened:
            s.close()
    benchmark.extra_info.update(label=f"synced-commit-{store}", nodes=nodes)
    benchmark.extra_info["per_node_us"] = benchmark.stats.stats.median / nodes * 1e6
