"""Runner overhead against a bare thread pool, and checkpoint cost against run size.

Reproduce (all figures of one run are comparable; read the ratios):

    pytest benchmarks/bench_runner.py --benchmark-only --benchmark-group-by=group \
        --benchmark-columns=min,median,max,rounds

Groups:
- ``fanout-10k``: 1 -> 10,000 -> 1 trivial nodes. ``bare`` is a ThreadPoolExecutor
  driven in topological order with no persistence; ``memory`` and ``lmdb`` are
  flowdag runs (LMDB durable: synced commits, grouped).
- ``chain-1k``: 1,000 nodes in a line on LMDB, against ``synced-commit``: one
  synced LMDB commit of one small record per node, nothing else.
- ``fanout-per-node-by-size-lmdb``: whole durable fan-out runs of 1,000 and 100,000
  nodes; ``per_node_us`` in the JSON output (``--benchmark-json``) is median / width.
- ``commit-in-run-of-N``: the cost of committing 1,000 single-node records into an
  LMDB run that holds N nodes, for N = 1,000 and 100,000 (constant per node).
"""

from __future__ import annotations

from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest
from _shapes import WORKERS, chain, fanout, run_bare

import flowdag
from flowdag.state import NodeRecord, NodeState, NodeStatus, RunState


@pytest.fixture
def fresh_dir(tmp_path: Path) -> Iterator[Callable[[], Path]]:
    counter = iter(range(1_000_000))

    def make() -> Path:
        return tmp_path / f"s{next(counter)}"

    yield make


FANOUT = 10_000


@pytest.mark.benchmark(group="fanout-10k")
def test_fanout_bare(benchmark: Any) -> None:
    dag = fanout(FANOUT)
    outputs = benchmark.pedantic(run_bare, args=(dag,), rounds=5, warmup_rounds=1)
    assert outputs["sink"] == FANOUT


@pytest.mark.benchmark(group="fanout-10k")
def test_fanout_memory(benchmark: Any) -> None:
    dag = fanout(FANOUT)

    def go() -> flowdag.RunResult:
        return flowdag.run(dag, store=flowdag.MemoryStore(), max_workers=WORKERS)

    result = benchmark.pedantic(go, rounds=5, warmup_rounds=1)
    assert result.ok


@pytest.mark.benchmark(group="fanout-10k")
def test_fanout_lmdb(benchmark: Any, fresh_dir: Callable[[], Path]) -> None:
    dag = fanout(FANOUT)

    def go() -> flowdag.RunResult:
        with flowdag.LMDBStore(fresh_dir()) as store:
            return flowdag.run(dag, run_id="bench", store=store, max_workers=WORKERS)

    result = benchmark.pedantic(go, rounds=5, warmup_rounds=1)
    assert result.ok


CHAIN = 1_000


@pytest.mark.benchmark(group="chain-1k")
def test_chain_lmdb(benchmark: Any, fresh_dir: Callable[[], Path]) -> None:
    dag = chain(CHAIN)

    def go() -> flowdag.RunResult:
        with flowdag.LMDBStore(fresh_dir()) as store:
            return flowdag.run(dag, run_id="bench", store=store, max_workers=WORKERS)

    result = benchmark.pedantic(go, rounds=3, warmup_rounds=1)
    assert result.outputs[f"n{CHAIN - 1}"] == CHAIN - 1


def _empty_run(run_id: str, nodes: int) -> RunState:
    return RunState(run_id, "bench", nodes={f"n{i}": NodeState() for i in range(nodes)})


def _commit_each(store: flowdag.Store, run_id: str, count: int) -> None:
    output = store.codec.encode(1)
    for i in range(count):
        store.commit(run_id, [NodeRecord(f"n{i}", NodeStatus.COMPLETED, 1, output=output)])


@pytest.mark.benchmark(group="chain-1k")
def test_chain_synced_commit(benchmark: Any, fresh_dir: Callable[[], Path]) -> None:
    def go() -> None:
        with flowdag.LMDBStore(fresh_dir()) as store:
            store.save(_empty_run("bench", CHAIN))
            _commit_each(store, "bench", CHAIN)

    benchmark.pedantic(go, rounds=3, warmup_rounds=1)


@pytest.mark.parametrize("run_size", [1_000, 100_000])
@pytest.mark.benchmark(group="commit-in-run-of-N")
def test_commit_cost_by_run_size(
    benchmark: Any, fresh_dir: Callable[[], Path], run_size: int
) -> None:
    with flowdag.LMDBStore(fresh_dir()) as store:
        store.save(_empty_run("bench", run_size))
        benchmark.pedantic(_commit_each, args=(store, "bench", 1_000), rounds=3, warmup_rounds=1)


@pytest.mark.parametrize("width", [1_000, 100_000])
@pytest.mark.benchmark(group="fanout-per-node-by-size-lmdb")
def test_fanout_lmdb_by_size(benchmark: Any, fresh_dir: Callable[[], Path], width: int) -> None:
    """Whole durable runs of 1k and 100k nodes: compare time per node (divide by width)."""
    dag = fanout(width)

    def go() -> flowdag.RunResult:
        with flowdag.LMDBStore(fresh_dir()) as store:
            return flowdag.run(dag, run_id="bench", store=store, max_workers=WORKERS)

    rounds = 5 if width <= 1_000 else 2
    result = benchmark.pedantic(go, rounds=rounds, warmup_rounds=1)
    benchmark.extra_info["per_node_us"] = benchmark.stats.stats.median / width * 1e6
    assert result.ok
