"""What the operator's commands cost on a large store.

Reproduce:

    pytest benchmarks/bench_cli.py --benchmark-only --benchmark-columns=min,median,max,rounds

``list-10k``: ``flowdag list`` (piped, so plain lines) of a store holding 10,000
runs of two nodes, per store kind; the store's own work (``list_runs`` plus one
``load_statuses`` per run) is measured beside it, so the difference is rendering.

``status-10k``: ``flowdag status`` of one run of 10,001 nodes (10 failed), by
default (the nodes not completed) and with ``--all`` (every node, as plain
lines), beside the store's own read (``load_brief``), on LMDB.

The whole command in a new process, as a user runs it (import included)::

    python -m flowdag status RUN --store lmdb://DIR > /dev/null
    python -X importtime -c "import flowdag"
"""

from __future__ import annotations

import contextlib
import io
from pathlib import Path
from typing import Any

import pytest

from flowdag.cli import main
from flowdag.state import ErrorInfo, NodeState, NodeStatus, RunState
from flowdag.stores import open_store
from flowdag.stores._refwalk import load_brief

RUNS = 10_000
NODES = 10_000


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


@pytest.fixture(scope="module")
def big_run(tmp_path_factory: pytest.TempPathFactory) -> str:
    url = f"lmdb://{tmp_path_factory.mktemp('status') / 's'}"
    state = RunState("big", "fan")
    state.nodes["src"] = NodeState(NodeStatus.COMPLETED, 1)
    for i in range(NODES):
        failed = i % 1000 == 7
        state.nodes[f"n{i}"] = NodeState(
            NodeStatus.FAILED if failed else NodeStatus.COMPLETED,
            1,
            deps=("src",),
            error=ErrorInfo("ValueError", "bad", "") if failed else None,
        )
    with open_store(url) as store:
        store.save(state)
    return url


@pytest.mark.benchmark(group="status-10k")
@pytest.mark.parametrize("every", [False, True], ids=["default", "all"])
def test_status_command(benchmark: Any, big_run: str, every: bool) -> None:
    argv = ["status", "big", "--store", big_run, *(["--all"] if every else [])]

    def go() -> None:
        with contextlib.redirect_stdout(io.StringIO()):
            assert main(argv) == 0

    benchmark.pedantic(go, rounds=3, warmup_rounds=1)


@pytest.mark.benchmark(group="status-10k")
def test_status_store_read_alone(benchmark: Any, big_run: str) -> None:
    def go() -> None:
        with open_store(big_run, create=False) as store:
            load_brief(store, "big")

    benchmark.pedantic(go, rounds=3, warmup_rounds=1)
