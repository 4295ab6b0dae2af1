"""Executor kinds: per-node overhead on the 10k fan-out, and the speed-up on CPU-bound nodes.

Reproduce (all figures of one run are comparable; the speed-ups are printed at the end):

    pytest benchmarks/bench_executor_kinds.py --benchmark-only --benchmark-group-by=group \
        --benchmark-columns=min,median,max,rounds

Groups:

- ``executors-fanout-10k``: 1 -> 10,000 -> 1 trivial nodes (``fanout``, as in
  bench_runner.py) on a `MemoryStore`, 4 attempts in flight. ``threads`` is the
  baseline; ``asyncio``; ``processes`` (2 workers); ``dask-threads``
  (``LocalCluster(processes=False)``, 1 worker of 4 threads); ``dask-processes``
  (``LocalCluster(processes=True)``, 2 workers of 1 thread); and, for reference,
  ``dask-threads-alone``: Dask by itself running as many trivial tasks on the
  ``dask-threads`` cluster, all submitted at once. ``per_node_us`` in
  the JSON output is the median divided by the node count: the cost an executor
  adds to each node.
- ``executors-cpu-64x50ms``: 64 independent nodes of about 50 ms of pure-Python
  work each, 2 workers: ``threads`` (the baseline: the GIL lets one run at a
  time), ``processes``, ``dask-processes`` and ``dask-processes-noprofile``
  (the same with the Dask workers' profiler off, which otherwise samples every
  thread's stack every 10 ms and slows pure-Python nodes down noticeably).
  ``speedup`` is threads / this.

Executors and clusters are started (and warmed up with a small run) once per
module, outside the timings: the figures are steady-state costs, not start-up.
The slow members run one or two rounds: a Dask round of the fan-out takes a minute.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Iterator
from typing import Any

import pytest
from _shapes import WORKERS, fanout

import flowdag
from flowdag.executors import AsyncioExecutor, ProcessExecutor, ThreadExecutor

FANOUT = 10_000
CPU_NODES = 64
CPU_SECONDS = 0.05
CPU_WORKERS = 2

_medians: dict[str, float] = {}  # group/label -> median, for the speed-ups


def _spin_factory(loops: int) -> Callable[[], int]:
    """A node of ``loops`` iterations of pure-Python arithmetic (a closure: sent by value)."""

    def node() -> int:
        total = 0
        for i in range(loops):
            total += i * i % 7
        return total

    return node


@pytest.fixture(scope="module")
def cpu_loops() -> int:
    """Loops that take about CPU_SECONDS here."""
    probe = 200_000
    spin = _spin_factory(probe)
    spin()
    started = time.perf_counter()
    spin()
    return max(1, int(probe * CPU_SECONDS / (time.perf_counter() - started)))


def cpu_bound(loops: int) -> flowdag.DAG:
    wf = flowdag.Workflow("cpu")
    for i in range(CPU_NODES):
        wf.add_node(f"c{i}", _spin_factory(loops))
    return wf.build()


# -- executors, one of each for the module ----------------------------------------


@pytest.fixture(scope="module")
def executors() -> Iterator[dict[str, Any]]:
    made: dict[str, Any] = {}

    def get(kind: str) -> Any:
        if kind not in made:
            made[kind] = executor = _make(kind)
            # Warm up: workers import what attempts need on their first one.
            assert flowdag.run(fanout(2 * WORKERS), executor=executor).ok
        return made[kind]

    yield {"get": get}
    for executor in made.values():
        executor.shutdown(wait=False)


def _make(kind: str) -> Any:
    if kind == "threads":
        return ThreadExecutor(WORKERS)
    if kind == "threads-2":
        return ThreadExecutor(CPU_WORKERS)
    if kind == "asyncio":
        return AsyncioExecutor(WORKERS)
    if kind == "processes":
        return ProcessExecutor(max_workers=CPU_WORKERS)
    pytest.importorskip("distributed")
    from flowdag.executors import DaskExecutor

    if kind == "dask-threads":
        return DaskExecutor(
            processes=False, n_workers=1, threads_per_worker=WORKERS, dashboard_address=None
        )
    import dask

    # The workers' statistical profiler samples every thread's stack every 10 ms.
    profile = kind != "dask-processes-noprofile"
    with dask.config.set({"distributed.worker.profile.enabled": profile}):
        return DaskExecutor(
            processes=True, n_workers=CPU_WORKERS, threads_per_worker=1, dashboard_address=None
        )


def _record(benchmark: Any, group: str, label: str, nodes: int, baseline: bool) -> None:
    median = float(benchmark.stats.stats.median)
    _medians[f"{group}/{label}"] = median
    benchmark.extra_info.update(label=label, nodes=nodes, per_node_us=median / nodes * 1e6)
    if baseline:
        benchmark.extra_info["baseline"] = True
    base = _medians.get(f"{group}/threads")
    if base is not None:
        benchmark.extra_info["speedup"] = base / median


FANOUT_KINDS = ["threads", "asyncio", "processes", "dask-threads", "dask-processes"]


@pytest.mark.parametrize("kind", FANOUT_KINDS)
@pytest.mark.benchmark(group="executors-fanout-10k")
def test_fanout_overhead(benchmark: Any, executors: dict[str, Any], kind: str) -> None:
    dag = fanout(FANOUT)
    executor = executors["get"](kind)

    def go() -> flowdag.RunResult:
        return flowdag.run(dag, store=flowdag.MemoryStore(), executor=executor, max_workers=WORKERS)

    rounds = {"processes": 2, "dask-threads": 1, "dask-processes": 1}.get(kind, 5)
    result = benchmark.pedantic(go, rounds=rounds, warmup_rounds=1 if rounds == 5 else 0)
    assert result.outputs["sink"] == FANOUT
    _record(benchmark, "executors-fanout-10k", kind, FANOUT + 2, kind == "threads")


@pytest.mark.benchmark(group="executors-fanout-10k")
def test_fanout_dask_alone(benchmark: Any, executors: dict[str, Any]) -> None:
    """Reference: Dask's own cost for as many trivial tasks, all submitted at once."""
    from distributed import wait

    client = executors["get"]("dask-threads").client

    def go() -> None:
        futures = [client.submit(_one, pure=False) for _ in range(FANOUT + 2)]
        wait(futures)  # type: ignore[no-untyped-call]
        assert sum(client.gather(futures)) == FANOUT + 2

    benchmark.pedantic(go, rounds=1, warmup_rounds=0)
    _record(benchmark, "executors-fanout-10k", "dask-threads-alone", FANOUT + 2, False)


def _one() -> int:
    return 1


@pytest.mark.parametrize(
    "kind", ["threads", "processes", "dask-processes", "dask-processes-noprofile"]
)
@pytest.mark.benchmark(group="executors-cpu-64x50ms")
def test_cpu_bound(benchmark: Any, executors: dict[str, Any], cpu_loops: int, kind: str) -> None:
    dag = cpu_bound(cpu_loops)
    executor = executors["get"]("threads-2" if kind == "threads" else kind)

    def go() -> flowdag.RunResult:
        return flowdag.run(
            dag, store=flowdag.MemoryStore(), executor=executor, max_workers=CPU_WORKERS
        )

    result = benchmark.pedantic(go, rounds=3, warmup_rounds=1)
    assert result.ok
    _record(benchmark, "executors-cpu-64x50ms", kind, CPU_NODES, kind == "threads")
    benchmark.extra_info["loops_per_node"] = cpu_loops
