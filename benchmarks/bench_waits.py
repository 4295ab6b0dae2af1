"""Durable waits (issue 15): ``flowdag waits`` and ``flowdag list`` on a store of 10,000 runs.

Reproduce:

    pytest benchmarks/bench_waits.py --benchmark-only --benchmark-columns=min,median,max,rounds

The store (LMDB, built once per session): 10,000 runs of two nodes, 100 of
them waiting for input (their input node pending, one wait each in the
``waits`` table). Measured:

- ``list_waits``: `flowdag.list_waits` on the store's URL (open, one scan, close);
- ``waits``, ``waits-json``: the ``flowdag waits`` command in this process
  (stdout captured): the scan, plus one ``load_statuses`` per waiting run to
  leave out runs that are gone, plus rendering;
- ``list``: ``flowdag list``, which reads the waits table once to show the
  100 runs as suspended;
- ``waits-process``: ``python -m flowdag waits`` end to end in a new process
  (interpreter start and imports included).
"""

from __future__ import annotations

import contextlib
import io
import os
import subprocess
import sys
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import pytest

from flowdag._wait_entries import WaitEntry
from flowdag.cli import main
from flowdag.state import NodeState, NodeStatus, RunState
from flowdag.stores import open_store
from flowdag.waits import list_waits, start_wait

RUNS = 10_000
WAITING = 100
ROOT = Path(__file__).resolve().parent.parent
SCHEMA = {"type": "object", "properties": {"ok": {"type": "boolean"}}, "required": ["ok"]}


@pytest.fixture(scope="session")
def store_url(tmp_path_factory: pytest.TempPathFactory) -> str:
    url = f"lmdb://{tmp_path_factory.mktemp('waits') / 's'}"
    now = datetime.now(UTC)
    with open_store(url) as store:
        for i in range(RUNS):
            run_id = f"run-{i:05d}"
            state = RunState(run_id, "bulk")
            state.nodes["a"] = NodeState(NodeStatus.COMPLETED, 1, now, now)
            state.nodes["approve"] = NodeState()
            store.save(state)
            if i % (RUNS // WAITING) == 0:
                prompt = f"approve order {i}?"
                entry = WaitEntry(
                    run_id, "approve", "", SCHEMA, "d", prompt, now, now + timedelta(days=1)
                )
                start_wait(store, entry)
    return url


def _quiet(argv: list[str]) -> None:
    with contextlib.redirect_stdout(io.StringIO()):
        assert main(argv) == 0


@pytest.mark.benchmark(group="waits-10k")
def test_list_waits(benchmark: Any, store_url: str) -> None:
    benchmark.extra_info["label"] = "list_waits"
    waits = benchmark.pedantic(list_waits, args=(store_url,), rounds=5, warmup_rounds=1)
    assert len(waits) == WAITING


@pytest.mark.benchmark(group="waits-10k")
def test_waits_command(benchmark: Any, store_url: str) -> None:
    benchmark.extra_info["label"] = "waits"
    benchmark.pedantic(_quiet, args=(["waits", "--store", store_url],), rounds=5, warmup_rounds=1)


@pytest.mark.benchmark(group="waits-10k")
def test_waits_json_command(benchmark: Any, store_url: str) -> None:
    benchmark.extra_info["label"] = "waits-json"
    argv = ["waits", "--json", "--store", store_url]
    benchmark.pedantic(_quiet, args=(argv,), rounds=5, warmup_rounds=1)


@pytest.mark.benchmark(group="waits-10k")
def test_list_command(benchmark: Any, store_url: str) -> None:
    benchmark.extra_info["label"] = "list"
    benchmark.pedantic(_quiet, args=(["list", "--store", store_url],), rounds=3, warmup_rounds=1)


@pytest.mark.benchmark(group="waits-10k")
def test_waits_process(benchmark: Any, store_url: str) -> None:
    benchmark.extra_info["label"] = "waits-process"
    env = {**os.environ, "PYTHONPATH": str(ROOT)}

    def go() -> None:
        done = subprocess.run(
            [sys.executable, "-m", "flowdag", "waits", "--store", store_url],
            capture_output=True,
            text=True,
            env=env,
            check=True,
        )
        assert done.stdout.count("\n") == WAITING + 1

    benchmark.pedantic(go, rounds=3, warmup_rounds=1)
