"""What a key-value update per node costs on a 10,000-node fan-out on LMDB.

Reproduce (read the ratios at the end):

    pytest benchmarks/bench_kv.py --benchmark-only --benchmark-group-by=group \
        --benchmark-columns=min,median,max,rounds

Group ``kv-update-10k``: a fresh run (new store each round) of ``root -> 10,000
leaves -> sink`` whose leaves take ``ctx`` and return at once (baseline), against
leaves that each also ``ctx.kv.update`` one shared counter. The updates ride
the group commit: the goal is within 1.2x of the baseline.
"""

from __future__ import annotations

from typing import Any

import pytest
from _shapes import WORKERS, DirMaker

import flowdag

WIDTH = 10_000


def kv_fanout(width: int, update: bool) -> flowdag.DAG:
    wf = flowdag.Workflow("kv-bench")
    wf.add_node("root", lambda: 1)

    def counted(root: int, ctx: Any) -> int:
        ctx.kv.update("bench:count", lambda old: (old or 0) + 1)
        return root

    def plain(root: int, ctx: Any) -> int:
        return root

    for i in range(width):
        wf.add_node(f"leaf{i}", counted if update else plain, deps=["root"])
    wf.add_node("sink", lambda **leaves: len(leaves), deps=[f"leaf{i}" for i in range(width)])
    return wf.build()


@pytest.mark.benchmark(group="kv-update-10k")
@pytest.mark.parametrize("update", [False, True], ids=["no-kv", "kv-update"])
def test_kv_update_per_node(benchmark: Any, fresh_dir: DirMaker, update: bool) -> None:
    dag = kv_fanout(WIDTH, update)
    benchmark.extra_info.update(
        label="kv-update" if update else "no-kv", baseline=not update, nodes=len(dag)
    )
    urls: list[str] = []

    def setup() -> tuple[tuple[str], dict[str, Any]]:
        urls.append(f"lmdb://{fresh_dir()}")
        return (urls[-1],), {}

    def run(url: str) -> flowdag.RunResult:
        return flowdag.run(dag, run_id="kv", store=url, max_workers=WORKERS)

    result = benchmark.pedantic(run, setup=setup, rounds=5, warmup_rounds=1)
    assert result.ok
    if update:
        with flowdag.open_store(urls[-1]) as store:
            assert store.kv().get("bench:count") == WIDTH
