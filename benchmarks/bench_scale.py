"""Scale: a fan-out of N nodes built, run and rerun, with networkx's own build beside it.

Reproduce (issue 16, "Scale"; each size in a fresh subprocess so peaks don't mix)::

    PYTHONPATH=$PWD python benchmarks/bench_scale.py                    # 10k and 100k
    PYTHONPATH=$PWD python benchmarks/bench_scale.py --sizes 10000 --repeat 3
    PYTHONPATH=$PWD python benchmarks/bench_scale.py --million          # adds 1,000,000

To compare two trees, run the script of either with ``PYTHONPATH=<tree>``: the
subprocesses run in a temporary folder, so the tree on ``PYTHONPATH`` is the
one imported (the first line names it).

The shape (``--shape leaves``, the default) is a ``source`` and N leaves that
need it, written as a newcomer writes a reusable ``leaf(i, source)`` without
constant arguments: one ``lambda source, i=i: leaf(i, source)`` per node.
``--shape bound`` is the same leaves written with the builder's constant
arguments (one ``leaf`` for all, ``args=(i,)``; the bare pool passes them too);
``--shape fanout`` is ``flowdag bench``'s 1 -> N -> 1 (a ``sink`` over all N).
For each N, in one subprocess, back to back:

- the networkx floor: a ``DiGraph`` built with the same nodes and edges (one
  ``add_node`` per node with an attribute, one ``add_edge`` per dependency, as
  a builder calls them) and ``topological_sort`` of it; ``nx peak RSS`` is the
  process's peak after it (it is freed before flowdag starts);
- build: ``add_node`` for every node + ``build()``; ``build / nx`` divides it
  by the floor's build + sort (issue 16 asks for at most 1.5x at 1M), in wall
  time and in CPU time;
- run: ``flowdag.run`` on a fresh store (LMDB by default: durable, 4 workers);
- rerun: ``flowdag.run`` again on the completed run (load + plan, no node called);
- peak RSS: ``ru_maxrss`` of the subprocess at the end.

Then the 10k comparison (graph prebuilt; rounds alternated, first dropped,
medians; each part after a ``gc.collect()``, so none pays for the one before):
a bare ``ThreadPoolExecutor`` of 4 threads running the same graph in
topological order (`_shapes.run_bare`) against ``flowdag.run`` on the memory
store and on a fresh LMDB store; then ``python -X importtime -c "import
flowdag"`` (flowdag's cumulative import time) and ``python -m flowdag status``
of the 10k run, end to end. ``--repeat K`` runs each size K times (fresh
subprocesses) and prints the median of each column with every value after it.
CPU times (the whole process, every thread) move less than wall times on a
shared, loaded machine.
"""

from __future__ import annotations

import argparse
import gc
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


# -- the shapes ---------------------------------------------------------------------------


def leaf(i: int, source: int) -> int:
    """A leaf's work: trivial, so what is measured is flowdag's cost per node."""
    return i + source


def leaves(size: int) -> Any:
    """``source`` and ``size`` leaves ``leaf{i}`` that need it, built as a newcomer would."""
    from flowdag.workflow import Workflow

    wf = Workflow(f"leaves-{size}")
    wf.add_node("source", lambda: 1)
    for i in range(size):
        wf.add_node(f"leaf{i}", lambda source, i=i: leaf(i, source), deps=["source"])
    return wf.build()


def bound(size: int) -> Any:
    """The same leaves written with constant arguments: one ``leaf`` for all, ``args=(i,)``."""
    from flowdag.workflow import Workflow

    wf = Workflow(f"bound-{size}")
    wf.add_node("source", lambda: 1)
    for i in range(size):
        wf.add_node(f"leaf{i}", leaf, deps=["source"], args=(i,))
    return wf.build()


def leaves_edges(size: int) -> dict[str, list[str]]:
    deps: dict[str, list[str]] = {"source": []}
    deps.update((f"leaf{i}", ["source"]) for i in range(size))
    return deps


def fanout(size: int) -> Any:
    """``flowdag bench``'s 1 -> N -> 1 fan-out: ``root``, ``n{i}``, ``sink`` over all."""
    from flowdag.cli.bench.shapes import fanout

    return fanout(size)


def fanout_edges(size: int) -> dict[str, list[str]]:
    middle = [f"n{i}" for i in range(size)]
    deps: dict[str, list[str]] = {"root": []}
    deps.update((name, ["root"]) for name in middle)
    deps["sink"] = middle
    return deps


#: Shape -> (build the DAG of a size, its nodes and their deps for the floor).
SHAPES = {
    "leaves": (leaves, leaves_edges),
    "bound": (bound, leaves_edges),
    "fanout": (fanout, fanout_edges),
}


# -- the parts, each run in its own subprocess ------------------------------------------


def floor(deps: dict[str, list[str]]) -> tuple[float, float]:
    """networkx's own build + topological sort of the graph ``deps`` describes."""
    import networkx as nx

    start = _clock()
    graph: Any = nx.DiGraph()
    for name, node_deps in deps.items():
        graph.add_node(name, spec=None)
        for dep in node_deps:
            graph.add_edge(dep, name)
    order = list(nx.topological_sort(graph))
    took = _since(start)
    assert len(order) == len(deps)
    return took


def part_scale(size: int, shape: str, kind: str, where: str) -> dict[str, Any]:
    """The floor, then build, run and rerun; the store stays in ``where`` for status."""
    import flowdag

    build_dag, edges = SHAPES[shape]
    deps = edges(size)
    nx_took = floor(deps)
    nx_rss = _peak_mib()
    del deps
    gc.collect()
    start = _clock()
    dag = build_dag(size)
    build = _since(start)
    url = "memory://" if kind == "memory" else f"{kind}://{where}"
    with flowdag.open_store(url) as store:
        start = _clock()
        result = flowdag.run(dag, run_id="scale", store=store, max_workers=WORKERS)
        run = _since(start)
        assert result.ok, result.status
        start = _clock()
        again = flowdag.run(dag, run_id="scale", store=store, max_workers=WORKERS)
        rerun = _since(start)
        assert again.ok, again.status
    return {
        "nx": nx_took,
        "nx_rss": nx_rss,
        "build": build,
        "run": run,
        "rerun": rerun,
        "rss": _peak_mib(),
        "nodes": len(dag),
    }


def part_compare(size: int, shape: str, rounds: int, where: str) -> dict[str, Any]:
    """A prebuilt fan-out: bare thread pool vs flowdag on memory and on LMDB, alternated."""
    sys.path.insert(0, str(HERE))
    from _shapes import run_bare

    import flowdag

    dag = SHAPES[shape][0](size)
    times: dict[str, list[float]] = {"bare": [], "memory": [], "lmdb": []}
    for i in range(rounds + 1):  # the first round warms up and is dropped
        # Each part starts with no garbage of the one before to collect: the part
        # after would pay for it.
        gc.collect()
        start = time.perf_counter()
        assert len(run_bare(dag)) == len(dag)
        bare = time.perf_counter() - start
        gc.collect()
        with flowdag.open_store("memory://") as store:
            start = time.perf_counter()
            assert flowdag.run(dag, store=store, max_workers=WORKERS).ok
            memory = time.perf_counter() - start
        gc.collect()
        with flowdag.open_store(f"lmdb://{where}/compare{i}") as store:
            start = time.perf_counter()
            assert flowdag.run(dag, run_id="c", store=store, max_workers=WORKERS).ok
            lmdb = time.perf_counter() - start
        if i:
            times["bare"].append(bare)
            times["memory"].append(memory)
            times["lmdb"].append(lmdb)
    return times


def part_where() -> str:
    import flowdag

    return str(Path(flowdag.__file__).parent)


PARTS = {"scale": part_scale, "compare": part_compare, "where": part_where}


def _child(cwd: str, part: str, *args: Any) -> Any:
    """Run one part in a fresh interpreter (same ``PYTHONPATH``) and return its JSON.

    ``cwd`` is a neutral folder: ``python -c`` puts the working directory first
    on ``sys.path``, which must not shadow the tree on ``PYTHONPATH``.
    """
    code = (
        f"import json, sys; sys.path.insert(1, {str(HERE)!r}); import bench_scale as b; "
        f"print(json.dumps(b.PARTS[{part!r}](*{args!r})))"
    )
    done = subprocess.run(
        [sys.executable, "-c", code], capture_output=True, text=True, check=False, cwd=cwd
    )
    if done.returncode:
        sys.exit(f"{part}{args} failed:\n{done.stderr}")
    return json.loads(done.stdout.strip().splitlines()[-1])


def import_time(cwd: str) -> float:
    """flowdag's cumulative import time in ms (``-X importtime``)."""
    done = subprocess.run(
        [sys.executable, "-X", "importtime", "-c", "import flowdag"],
        capture_output=True,
        text=True,
        check=True,
        cwd=cwd,
    )
    for line in done.stderr.splitlines():
        match = re.match(r"import time:\s+\d+ \|\s+(\d+) \| flowdag$", line)
        if match:
            return int(match.group(1)) / 1000
    raise RuntimeError("no 'flowdag' line in -X importtime output")


def status_time(cwd: str, url: str) -> float:
    """``python -m flowdag status scale`` end to end, in s (its output discarded)."""
    start = time.perf_counter()
    subprocess.run(
        [sys.executable, "-m", "flowdag", "status", "scale", "--store", url],
        stdout=subprocess.DEVNULL,
        check=True,
        cwd=cwd,
    )
    return time.perf_counter() - start


# -- the table ----------------------------------------------------------------------------


def _cell(values: list[float], unit: str = "s", digits: int = 2) -> str:
    head = f"{statistics.median(values):,.{digits}f} {unit}"
    if len(values) == 1:
        return head
    return head + " (" + ", ".join(f"{v:,.{digits}f}" for v in values) + ")"


def _row(size: int, rows: list[dict[str, Any]]) -> str:
    def column(key: str, index: int | None = None) -> list[float]:
        return [row[key] if index is None else row[key][index] for row in rows]

    wall, cpu = column("build", 0), column("build", 1)
    nx_wall, nx_cpu = column("nx", 0), column("nx", 1)
    per_node = [row["run"][0] / row["nodes"] * 1e6 for row in rows]
    cells = [
        f"{size:,}",
        _cell(wall),
        _cell(nx_wall),
        _cell([a / b for a, b in zip(wall, nx_wall, strict=True)], "x"),
        _cell([a / b for a, b in zip(cpu, nx_cpu, strict=True)], "x"),
        _cell(column("run", 0)),
        _cell(per_node, "µs", 1),
        _cell(column("rerun", 0)),
        _cell(column("rss"), "MiB", 0),
        _cell(column("nx_rss"), "MiB", 0),
    ]
    return "| " + " | ".join(cells) + " |"


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=(__doc__ or "").split("\n\n")[0])
    parser.add_argument("--sizes", default="10000,100000", help="fan-out widths, comma-separated")
    parser.add_argument("--million", action="store_true", help="add N=1,000,000")
    parser.add_argument("--store", choices=["lmdb", "memory"], default="lmdb")
    parser.add_argument("--shape", choices=sorted(SHAPES), default="leaves")
    parser.add_argument("--dir", help="where the stores go (default: a temporary folder)")
    parser.add_argument("--repeat", type=int, default=1, help="runs of each size (medians)")
    parser.add_argument("--rounds", type=int, default=5, help="rounds of the 10k comparison")
    parser.add_argument("--skip-compare", action="store_true", help="no 10k comparison")
    args = parser.parse_args(argv)
    sizes = [int(s) for s in args.sizes.split(",") if s]
    if args.million:
        sizes.append(1_000_000)

    with tempfile.TemporaryDirectory(dir=args.dir) as base:
        print(
            f"flowdag from {_child(base, 'where')}; shape {args.shape}; store {args.store}; "
            f"{os.cpu_count()} cpus; load {os.getloadavg()[0]:.1f}"
        )
        print()
        print(
            "| N | build | nx build + sort | build / nx | build / nx (cpu) | run | run per node "
            "| rerun | peak RSS | nx peak RSS |"
        )
        print("|---|---|---|---|---|---|---|---|---|---|")
        status_url = ""
        for size in sizes:
            rows = []
            for k in range(args.repeat):
                where = f"{base}/scale-{size}-{k}"
                rows.append(_child(base, "scale", size, args.shape, args.store, where))
                if size == 10_000 and not status_url:
                    status_url = f"{args.store}://{where}"
            print(_row(size, rows), flush=True)
        print()
        if not args.skip_compare:
            times = _child(base, "compare", 10_000, args.shape, args.rounds, base)
            bare, memory, lmdb = (statistics.median(times[k]) for k in ("bare", "memory", "lmdb"))
            print(
                f"10k {args.shape}, graph prebuilt, {args.rounds} rounds alternated (medians): "
                f"bare pool {bare:.3f} s; memory {memory:.3f} s ({memory / bare:.2f}x); "
                f"LMDB durable {lmdb:.3f} s ({lmdb / bare:.2f}x)"
            )
            ratios = [
                f"{m / b:.2f}/{d / b:.2f}"
                for b, m, d in zip(times["bare"], times["memory"], times["lmdb"], strict=True)
            ]
            print(f"  per round (memory/bare, lmdb/bare): {', '.join(ratios)}")
        print(f"import flowdag (-X importtime, cumulative): {import_time(base):.0f} ms")
        if status_url and args.store != "memory":
            took = status_time(base, status_url)
            print(f"flowdag status of the 10k run, end to end: {took:.2f} s")


if __name__ == "__main__":
    main()
