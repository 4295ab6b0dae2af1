"""What change-aware resume costs: code fingerprints, and planning the resume of a large run.

Reproduce (read the ratios):

    pytest benchmarks/bench_resume.py --benchmark-only --benchmark-group-by=group \
        --benchmark-columns=min,median,max,rounds

To compare releases, run it as a script with each tree first on the path,
alternating trees in one sitting (pytest would import this checkout's flowdag
whatever ``PYTHONPATH`` says; the script does not): it writes a completed
fan-out of WIDTH nodes to DIR on LMDB if DIR is empty, then times ``run()`` of
it three times (load and plan, nothing runs), printing wall and CPU times::

    PYTHONPATH=<tree> python benchmarks/bench_resume.py DIR-for-that-tree 100000

Groups:
- ``fingerprint-10k``: fingerprinting every node of a 10,000-node workflow whose
  nodes share 5 distinct functions, as `flowdag.run` does once per call (a
  fresh fingerprinter each round: nothing is remembered between calls).
- ``resume-plan``: `flowdag.run` of a completed fan-out (1 -> N -> 1) on LMDB:
  the store is loaded, every node's verdict made, and nothing runs. The run is
  written once per size (not timed). ``-m "not slow"`` keeps 10,000 nodes;
  the 100,000-node case is marked slow.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import pytest
from _shapes import WORKERS, fanout, label

import flowdag
from flowdag._fingerprint import Fingerprinter

RATE = 3


def _double(x: int) -> int:
    return 2 * x


def _scale(x: int) -> int:
    return _double(x) * RATE


def _one(i: int) -> Callable[..., int]:
    def leaf(src: int) -> int:
        return src + i

    return leaf


def five_function_workflow(nodes: int) -> flowdag.DAG:
    """``nodes`` nodes: a source, then leaves over 5 functions (closures of 4, two helpers)."""
    wf = flowdag.Workflow("fingerprints")
    wf.add_node("src", lambda: 1)
    kinds = [_one(0), _one(1), _one(2), _one(3), lambda src: _scale(src)]
    for i in range(nodes - 1):
        wf.add_node(f"n{i}", kinds[i % 5], deps=["src"])
    return wf.build()


def fingerprint_all(dag: flowdag.DAG) -> dict[str, Any]:
    """What `flowdag.run` does for fingerprints: one fingerprinter, every node."""
    try:
        from flowdag._fingerprint import node_fingerprints  # type: ignore[attr-defined]
    except ImportError:  # a release before change-aware resume: the same walk by hand
        fingerprinter = Fingerprinter()
        return {name: fingerprinter.fingerprint(dag.specs[name].fn) for name in dag.nodes}
    found: dict[str, Any] = node_fingerprints(dag)
    return found


@pytest.mark.benchmark(group="fingerprint-10k")
def test_fingerprint_10k_nodes_of_5_functions(benchmark: Any) -> None:
    dag = five_function_workflow(10_000)
    benchmark.extra_info.update(label="fingerprints", nodes=len(dag))
    found = benchmark.pedantic(fingerprint_all, args=(dag,), rounds=20, warmup_rounds=2)
    assert len(found) == 10_000
    assert len({fp.digest for fp in found.values()}) == 6  # 5 functions and the source


@pytest.mark.benchmark(group="resume-plan")
@pytest.mark.parametrize(
    "width", [10_000, pytest.param(100_000, marks=pytest.mark.slow)], ids=label
)
def test_resume_of_a_completed_fanout(
    benchmark: Any, tmp_path_factory: pytest.TempPathFactory, width: int
) -> None:
    dag = fanout(width)
    where = tmp_path_factory.mktemp("resume") / "store"
    url = f"lmdb://{where}"
    first = flowdag.run(dag, run_id="big", store=url, max_workers=WORKERS)
    assert first.ok

    def resume() -> flowdag.RunResult:
        return flowdag.run(dag, run_id="big", store=url, max_workers=WORKERS)

    benchmark.extra_info.update(label=f"lmdb-{label(width)}", nodes=len(dag))
    again = benchmark.pedantic(resume, rounds=5 if width <= 10_000 else 3, warmup_rounds=1)
    assert again.ok
    assert again.nodes["sink"].attempts == 1  # nothing ran again


if __name__ == "__main__":
    import sys
    import time
    from pathlib import Path

    where, size = Path(sys.argv[1]), int(sys.argv[2])
    shape, url = fanout(size), f"lmdb://{sys.argv[1]}"
    if not where.exists():
        assert flowdag.run(shape, run_id="big", store=url, max_workers=WORKERS).ok
    times, cpu = [], []
    for _ in range(3):
        started, cpu_started = time.perf_counter(), time.process_time()
        assert flowdag.run(shape, run_id="big", store=url, max_workers=WORKERS).ok
        times.append(time.perf_counter() - started)
        cpu.append(time.process_time() - cpu_started)
    # CPU time of the process too: on a shared machine it moves less than wall time.
    print(
        f"{flowdag.__file__}: "
        + " ".join(f"{t:.2f}" for t in times)
        + " s wall, "
        + " ".join(f"{t:.2f}" for t in cpu)
        + " s cpu"
    )
