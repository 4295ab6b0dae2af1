"""What the operator's commands cost on a large store.

Reproduce:

    pytest benchmarks/bench_cli.py --benchmark-only --benchmark-columns=min,median,max,rounds

``list-10k``: ``flowdag list`` (piped, so plain lines) of a store holding 10,000
runs of two nodes, per store kind; the store's own work (``list_runs`` plus one
``load_statuses`` per run) is measured beside it, so the difference is rendering.
"""

from __future__ import annotations

import contextlib
import io
from pathlib import Path
from typing import Any

import pytest

from flowdag.cli import main
from flowdag.state import NodeState, NodeStatus, RunState
from flowdag.stores import open_store

RUNS = 10_000


@pytest.fixture(scope="module", params=["lmdb", "json"])
def store_url(request: pytest.FixtureRequest, tmp_path_factory: pytest.TempPathFactory) -> str:
    where: Path = tmp_path_factory.mktemp("list") / "s"
    url = f"{request.param}://{where}"
    with open_store(url) as store:
        for i in range(RUNS):
            state = RunState(f"run-{i:05d}", "bulk")
            state.nodes["a"] = NodeState(NodeStatus.COMPLETED, 1)
            state.nodes["b"] = NodeState()
            store.save(state)
    return url


@pytest.mark.benchmark(group="list-10k")
def test_list_command(benchmark: Any, store_url: str) -> None:
    def go() -> None:
        with contextlib.redirect_stdout(io.StringIO()):
            assert main(["list", "--store", store_url]) == 0

    benchmark.pedantic(go, rounds=3, warmup_rounds=1)


@pytest.mark.benchmark(group="list-10k")
def test_store_work_alone(benchmark: Any, store_url: str) -> None:
    def go() -> None:
        with open_store(store_url, create=False) as store:
            for run_id in store.list_runs():
                store.load_statuses(run_id)

    benchmark.pedantic(go, rounds=3, warmup_rounds=1)
