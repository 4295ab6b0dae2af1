"""Scale: a fan-out of N nodes built, run and rerun, with networkx's own build beside it.

Reproduce (issue 16, "Scale"; each part in a fresh subprocess so peaks don't mix)::

    PYTHONPATH=$PWD python benchmarks/bench_scale.py                    # 10k and 100k
    PYTHONPATH=$PWD python benchmarks/bench_scale.py --sizes 10000 --repeat 3
    PYTHONPATH=$PWD python benchmarks/bench_scale.py --million          # adds 1,000,000

The shape is ``flowdag bench``'s fan-out (`flowdag.cli.bench.shapes.fanout`):
``root`` -> ``n0``..``n{N-1}`` -> ``sink``, one lambda per node as a user without
constant arguments writes it. For each N, in one subprocess:

- build: ``add_node`` for every node + ``build()``;
- run: ``flowdag.run`` on a fresh store (LMDB by default: durable, 4 workers);
- rerun: ``flowdag.run`` again on the completed run (load + plan, no node called);
- peak RSS: ``ru_maxrss`` of that subprocess.

Then, in another subprocess, the networkx floor: a ``DiGraph`` built with the
same nodes and edges (one ``add_node`` per node with its attribute, one
``add_edge`` per dependency, as a builder calls it) and ``topological_sort``
of it, and that subprocess's peak RSS. ``build / nx`` is the build against
the floor's build + sort (issue 16 asks for at most 1.5x at 1M).

Then the 10k comparison (graph prebuilt; rounds alternated, medians): a bare
``ThreadPoolExecutor`` of 4 threads running the same graph in topological order
(`_shapes.run_bare`) against ``flowdag.run`` on the memory store and on a fresh
LMDB store; then ``python -X importtime -c "import flowdag"`` (flowdag's
cumulative import time) and ``python -m flowdag status`` of the 10k run, end
to end. ``--repeat K`` runs each size K times (fresh subprocesses) and prints
the median of each column with every value beside it. Times are wall clock;
CPU time (the whole process) is shown for build and run, since on a shared,
loaded machine it moves less.
"""

from __future__ import annotations

import argparse
import json
import os
import re
import resource
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

WORKERS = 4
HERE = Path(__file__).resolve().parent


def _peak_mib() -> float:
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024  # KiB on Linux


def _clock() -> tuple[float, float]:
    return time.perf_counter(), time.process_time()


def _since(start: tuple[float, float]) -> tuple[float, float]:
    wall, cpu = _clock()
    return wall - start[0], cpu - start[1]


def _open(kind: str, where: str) -> Any:
    import flowdag

    return flowdag.open_store("memory://" if kind == "memory" else f"{kind}://{where}")


# -- the parts, each run in its own subprocess ------------------------------------------


def part_flowdag(size: int, kind: str, where: str) -> dict[str, Any]:
    """Build, run and rerun a fan-out of ``size``; the store stays in ``where`` for status."""
    import flowdag
    from flowdag.cli.bench.shapes import fanout

    start = _clock()
    dag = fanout(size)
    build = _since(start)
    with _open(kind, where) as store:
        start = _clock()
        result = flowdag.run(dag, run_id="scale", store=store, max_workers=WORKERS)
        run = _since(start)
        assert result.ok and result.outputs["sink"] == size, result.status
        start = _clock()
        again = flowdag.run(dag, run_id="scale", store=store, max_workers=WORKERS)
        rerun = _since(start)
        assert again.ok
    return {"build": build, "run": run, "rerun": rerun, "rss": _peak_mib(), "nodes": len(dag)}


def part_networkx(size: int) -> dict[str, Any]:
    """The floor: the same graph as a networkx ``DiGraph``, built and sorted."""
    import networkx as nx

    names = ["root", *(f"n{i}" for i in range(size)), "sink"]
    deps: dict[str, list[str]] = {"root": [], "sink": names[1:-1]}
    deps.update((name, ["root"]) for name in names[1:-1])
    start = _clock()
    graph: Any = nx.DiGraph()
    for name in names:
        graph.add_node(name, spec=None)
        for dep in deps[name]:
            graph.add_edge(dep, name)
    build = _since(start)
    start = _clock()
    order = list(nx.topological_sort(graph))
    sort = _since(start)
    assert len(order) == size + 2
    return {"build": build, "sort": sort, "rss": _peak_mib()}


def part_compare(size: int, rounds: int, where: str) -> dict[str, Any]:
    """A prebuilt fan-out: bare thread pool vs flowdag on memory and on LMDB, alternated."""
    sys.path.insert(0, str(HERE))
    from _shapes import run_bare

    import flowdag
    from flowdag.cli.bench.shapes import fanout

    dag = fanout(size)
    times: dict[str, list[float]] = {"bare": [], "memory": [], "lmdb": []}
    for i in range(rounds + 1):  # the first round warms up and is dropped
        start = time.perf_counter()
        assert run_bare(dag)["sink"] == size
        bare = time.perf_counter() - start
        with flowdag.open_store("memory://") as store:
            start = time.perf_counter()
            assert flowdag.run(dag, store=store, max_workers=WORKERS).ok
            memory = time.perf_counter() - start
        with flowdag.open_store(f"lmdb://{where}/compare{i}") as store:
            start = time.perf_counter()
            assert flowdag.run(dag, run_id="c", store=store, max_workers=WORKERS).ok
            lmdb = time.perf_counter() - start
        if i:
            times["bare"].append(bare)
            times["memory"].append(memory)
            times["lmdb"].append(lmdb)
    return times


PARTS = {"flowdag": part_flowdag, "networkx": part_networkx, "compare": part_compare}


def _child(part: str, *args: Any) -> dict[str, Any]:
    """Run one part in a fresh interpreter (same ``PYTHONPATH``) and return its JSON."""
    code = (
        f"import json, sys; sys.path.insert(0, {str(HERE)!r}); import bench_scale as b; "
        f"print(json.dumps(b.PARTS[{part!r}](*{args!r})))"
    )
    done = subprocess.run(
        [sys.executable, "-c", code], capture_output=True, text=True, check=False
    )
    if done.returncode:
        sys.exit(f"{part}{args} failed:\n{done.stderr}")
    result: dict[str, Any] = json.loads(done.stdout.strip().splitlines()[-1])
    return result


def import_time() -> float:
    """flowdag's cumulative import time in ms (``-X importtime``)."""
    done = subprocess.run(
        [sys.executable, "-X", "importtime", "-c", "import flowdag"],
        capture_output=True,
        text=True,
        check=True,
    )
    for line in done.stderr.splitlines():
        match = re.match(r"import time:\s+\d+ \|\s+(\d+) \| flowdag$", line)
        if match:
            return int(match.group(1)) / 1000
    raise RuntimeError("no 'flowdag' line in -X importtime output")


def status_time(where: str, kind: str) -> float:
    """``python -m flowdag status scale`` end to end, in s (output discarded)."""
    start = time.perf_counter()
    subprocess.run(
        [sys.executable, "-m", "flowdag", "status", "scale", "--store", f"{kind}://{where}"],
        stdout=subprocess.DEVNULL,
        check=True,
    )
    return time.perf_counter() - start


# -- the table ----------------------------------------------------------------------------


def _median(values: list[float]) -> float:
    return statistics.median(values)


def _cell(values: list[float], unit: str = "s", digits: int = 2) -> str:
    head = f"{_median(values):,.{digits}f} {unit}"
    if len(values) == 1:
        return head
    return head + " (" + ", ".join(f"{v:,.{digits}f}" for v in values) + ")"


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--sizes", default="10000,100000", help="fan-out widths, comma-separated")
    parser.add_argument("--million", action="store_true", help="add N=1,000,000")
    parser.add_argument("--store", choices=["lmdb", "memory"], default="lmdb")
    parser.add_argument("--dir", help="where the stores go (default: a temporary folder)")
    parser.add_argument("--repeat", type=int, default=1, help="runs of each size (medians)")
    parser.add_argument("--rounds", type=int, default=5, help="rounds of the 10k comparison")
    parser.add_argument("--skip-compare", action="store_true", help="no 10k comparison")
    args = parser.parse_args(argv)
    sizes = [int(s) for s in args.sizes.split(",") if s]
    if args.million:
        sizes.append(1_000_000)

    with tempfile.TemporaryDirectory(dir=args.dir) as base:
        import flowdag

        print(f"flowdag from {Path(flowdag.__file__).parent}; store {args.store}; "
              f"{os.cpu_count()} cpus; load {os.getloadavg()[0]:.1f}")
        print()
        print("| N | build | build cpu | nx build + sort | build / nx | run | run cpu "
              "| µs/node | rerun | peak RSS | nx peak RSS |")
        print("|---|---|---|---|---|---|---|---|---|---|---|")
        status_store = ""
        for size in sizes:
            ours: list[dict[str, Any]] = []
            floor: list[dict[str, Any]] = []
            for k in range(args.repeat):
                where = f"{base}/scale-{size}-{k}"
                ours.append(_child("flowdag", size, args.store, where))
                floor.append(_child("networkx", size))
                if size == 10_000 and not status_store:
                    status_store = where
            nx_total = [f["build"][0] + f["sort"][0] for f in floor]
            ratio = [o["build"][0] / t for o, t in zip(ours, nx_total, strict=True)]
            per_node = [o["run"][0] / o["nodes"] * 1e6 for o in ours]
            print(
                f"| {size:,} | {_cell([o['build'][0] for o in ours])} "
                f"| {_cell([o['build'][1] for o in ours])} | {_cell(nx_total)} "
                f"| {_cell(ratio, 'x')} | {_cell([o['run'][0] for o in ours])} "
                f"| {_cell([o['run'][1] for o in ours])} | {_cell(per_node, 'µs', 1)} "
                f"| {_cell([o['rerun'][0] for o in ours])} "
                f"| {_cell([o['rss'] for o in ours], 'MiB', 0)} "
                f"| {_cell([f['rss'] for f in floor], 'MiB', 0)} |",
                flush=True,
            )
        print()
        if not args.skip_compare:
            times = _child("compare", 10_000, args.rounds, base)
            bare = _median(times["bare"])
            print(f"10k fan-out, graph prebuilt, {args.rounds} rounds alternated (medians): "
                  f"bare pool {bare:.3f} s; memory {_median(times['memory']):.3f} s "
                  f"({_median(times['memory']) / bare:.2f}x); LMDB durable "
                  f"{_median(times['lmdb']):.3f} s ({_median(times['lmdb']) / bare:.2f}x)")
            ratios = [
                f"{m / b:.2f}/{d / b:.2f}"
                for b, m, d in zip(times["bare"], times["memory"], times["lmdb"], strict=True)
            ]
            print(f"  per round (memory/bare, lmdb/bare): {', '.join(ratios)}")
        print(f"import flowdag (-X importtime, cumulative): {import_time():.0f} ms")
        if status_store and args.store != "memory":
            print(f"flowdag status of the 10k run, end to end: "
                  f"{status_time(status_store, args.store):.2f} s")


if __name__ == "__main__":
    main()
