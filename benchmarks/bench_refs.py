"""Large outputs by reference: what keeping outputs in the blob area costs and saves.

Reproduce (all figures of one run are comparable; read the ratios printed at the end):

    pytest benchmarks/bench_refs.py --benchmark-only --benchmark-group-by=group \
        --benchmark-columns=min,median,max,rounds

Groups (``STORE`` is ``lmdb``, ``json`` or ``flatbuffers``):

- ``50x1MiB-STORE-DATA``: 50 independent nodes, each returning 1 MiB of bytes,
  ``random`` (incompressible) or ``text`` (CSV-like lines zstd shrinks about
  4.4x), on a fresh store per round. ``inline`` (the baseline) runs with
  ``inline_limit=None``: each output is in its node's record. ``by-ref`` runs with
  the default limit (256 KiB): each output is a blob and its record holds a Ref.
  ``by-ref-identical``: the 50 nodes return the same 1 MiB, which is one blob.
  ``extra_info``: ``disk_bytes`` (allocated, as ``du`` counts) and ``blobs`` of
  the store after a round.
- ``status-1k-STORE``: `Store.load_statuses` of a completed run of 1,000 nodes
  whose outputs are 1 MiB each (``1MiB``: 1,000 blobs) or 100 B (``100B``, the
  baseline: inline). ``status-cli-1k-STORE``: ``flowdag status`` on the same runs,
  as a subprocess (so about half of it is the interpreter starting).
  ``resume-1k-STORE``: `flowdag.run` of the same DAG on the completed run:
  load, plan, nothing to run. Each of these should not depend on the output
  size (the goal: within 1.5x). The two stores per kind are built once per
  session (module fixtures), by real runs.
"""

from __future__ import annotations

import os
import subprocess
import sys
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest
from _shapes import WORKERS, DirMaker, disk_usage, make_store, payload_pool

import flowdag
from flowdag.stores import open_store

MiB = 1 << 20
DISK = ["lmdb", "json", "flatbuffers"]
RUN_ID = "bench"


def _payloads(data: str, count: int, size: int) -> list[bytes]:
    """``count`` distinct outputs of ``size`` bytes (slices of the pool at distinct offsets)."""
    pool = payload_pool(data)
    step = (len(pool) - size) // count
    return [pool[i * step : i * step + size] for i in range(count)]


def _returns(value: Any) -> Callable[[], Any]:
    def node() -> Any:
        return value

    return node


def _workflow(outputs: list[Any]) -> flowdag.Workflow:
    wf = flowdag.Workflow("refs")
    for i, value in enumerate(outputs):
        wf.add_node(f"n{i:04d}", _returns(value))
    return wf


# -- 50 nodes of 1 MiB ------------------------------------------------------------------------

NODES = 50
VARIANTS = {"inline": None, "by-ref": "256KiB", "by-ref-identical": "256KiB"}


@pytest.mark.parametrize("variant", list(VARIANTS))
@pytest.mark.parametrize("data", ["random", "text"])
@pytest.mark.parametrize("kind", DISK)
def test_fifty_outputs_of_1mib(
    benchmark: Any, fresh_dir: DirMaker, kind: str, data: str, variant: str
) -> None:
    benchmark.group = f"50x1MiB-{kind}-{data}"
    benchmark.extra_info.update(label=variant, nodes=NODES, baseline=variant == "inline")
    if variant == "by-ref-identical":
        outputs = [_payloads(data, 1, MiB)[0]] * NODES
    else:
        outputs = _payloads(data, NODES, MiB)
    wf = _workflow(outputs)
    limit = VARIANTS[variant]
    where: list[Path] = []

    def go() -> flowdag.RunResult:
        where.append(fresh_dir())
        with make_store(kind, where[-1]) as store:
            return flowdag.run(
                wf, run_id=RUN_ID, store=store, max_workers=WORKERS, inline_limit=limit
            )

    result = benchmark.pedantic(go, rounds=5, warmup_rounds=1)
    assert result.ok, result.errors
    assert len(result.refs) == (0 if limit is None else NODES)
    allocated, apparent = disk_usage(where[-1])
    blobs = where[-1] / "blobs"
    count = sum(len(files) for root, _, files in os.walk(blobs) if not root.endswith("tmp"))
    benchmark.extra_info.update(disk_bytes=allocated, file_bytes=apparent, blobs=count)
    assert count == {"inline": 0, "by-ref": NODES, "by-ref-identical": 1}[variant]


# -- status and resume of 1,000 outputs: independent of their size ---------------------------

RUN_NODES = 1_000
SIZES = {"100B": 100, "1MiB": MiB}


Built = Callable[[str, str], tuple[str, flowdag.Workflow]]


@pytest.fixture(scope="module")
def built(tmp_path_factory: pytest.TempPathFactory) -> Built:
    """(kind, size label) -> (store url, workflow) of a completed run, built on first use."""
    made: dict[tuple[str, str], tuple[str, flowdag.Workflow]] = {}

    def get(kind: str, size: str) -> tuple[str, flowdag.Workflow]:
        if (kind, size) not in made:
            where = tmp_path_factory.mktemp(f"{kind}-{size}") / "s"
            wf = _workflow(_payloads("random", RUN_NODES, SIZES[size]))
            with make_store(kind, where) as store:
                result = flowdag.run(wf, run_id=RUN_ID, store=store, max_workers=WORKERS)
            assert result.ok, result.errors
            assert len(result.refs) == (RUN_NODES if size == "1MiB" else 0)
            made[kind, size] = (f"{kind}://{where}", wf)
        return made[kind, size]

    return get


def _status(url: str, wf: flowdag.Workflow) -> None:
    with open_store(url, create=False) as store:
        statuses = store.load_statuses(RUN_ID)
    assert len(statuses.nodes) == RUN_NODES


def _status_command(url: str, wf: flowdag.Workflow) -> None:
    command = [sys.executable, "-m", "flowdag", "status", RUN_ID, "--store", url]
    subprocess.run(command, check=True, stdout=subprocess.DEVNULL)


def _resume(url: str, wf: flowdag.Workflow) -> None:
    with open_store(url) as store:
        result = flowdag.run(wf, run_id=RUN_ID, store=store, max_workers=WORKERS)
    assert result.ok
    assert all(node.attempts == 1 for node in result.nodes.values())  # none ran again


#: Operation -> (what it does, rounds): a few milliseconds get more rounds.
READS: dict[str, tuple[Callable[[str, flowdag.Workflow], None], int]] = {
    "status": (_status, 15),
    "status-cli": (_status_command, 5),
    "resume": (_resume, 9),
}


@pytest.mark.parametrize("size", list(SIZES))
@pytest.mark.parametrize("kind", DISK)
@pytest.mark.parametrize("operation", list(READS))
def test_read_completed_run(
    benchmark: Any, built: Built, operation: str, kind: str, size: str
) -> None:
    benchmark.group = f"{operation}-1k-{kind}"
    benchmark.extra_info.update(label=size, baseline=size == "100B")
    action, rounds = READS[operation]
    benchmark.pedantic(action, args=built(kind, size), rounds=rounds, warmup_rounds=1)
