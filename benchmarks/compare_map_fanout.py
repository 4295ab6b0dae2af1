"""A map over N items (``wf.map``) beside the same fan-out declared node by node.

    PYTHONPATH=$PWD python benchmarks/compare_map_fanout.py [N]       # default 10000

On LMDB, in a fresh store each: the map's first run (expansion, N item nodes,
the list of results), the rerun of the completed run (load + plan, nothing
called), and a static 1 -> N fan-out's build plus run. One sitting, wall times.
"""

from __future__ import annotations

import sys
import tempfile
import time

import flowdag


def leaf(item: int) -> int:
    return item + 1


def main(size: int) -> None:
    root = tempfile.mkdtemp()
    mapped = flowdag.Workflow("map")
    mapped.add_node("src", lambda: list(range(size)))
    mapped.map("leaf", leaf, over="src")
    started = time.perf_counter()
    result = flowdag.run(mapped, store=f"lmdb://{root}/map", run_id="r")
    ran = time.perf_counter()
    assert result.status == "completed"
    flowdag.run(mapped, store=f"lmdb://{root}/map", run_id="r")
    reran = time.perf_counter()
    static = flowdag.Workflow("static")
    static.add_node("src", lambda: 0)
    for i in range(size):
        static.add_node(f"n{i}", lambda src, i=i: i + 1, deps=["src"])
    flowdag.run(static, store=f"lmdb://{root}/static", run_id="r")
    done = time.perf_counter()
    print(
        f"map of {size:,}: run {ran - started:.2f}s, rerun {reran - ran:.2f}s; "
        f"static fan-out of {size:,}: build + run {done - reran:.2f}s"
    )


if __name__ == "__main__":
    main(int(sys.argv[1]) if len(sys.argv) > 1 else 10_000)
