"""Concurrency across processes on one store.

- Two processes start the same run id at the same moment: exactly one runs it,
  the other gets `RunLockedError` (and calls no node).
- Many processes run different run ids on one store at once: every run
  completes, and each holds exactly its own outputs and ``ctx.data``.
"""

from __future__ import annotations

import os
import re
import textwrap
import time
from collections.abc import Iterable
from pathlib import Path

import pytest

import flowdag
from flowdag.stores.transfer import same_value
from tests.forkserver import Child, python_script, shared

STORES = ["lmdb", "json", "flatbuffers"]
LOCKED_EXIT = 3

WORKER = textwrap.dedent(
    """
    import os, sys, time
    import flowdag

    url, run_id, log, go, nodes, sleep = sys.argv[1:7]
    nodes, sleep = int(nodes), float(sleep)

    def make(i):
        def node(ctx):
            with open(log, "a") as out:
                out.write(f"{os.getpid()} {ctx.run_id} n{i}\\n")
            time.sleep(sleep)
            ctx.data[f"k{i}"] = [ctx.run_id, i]
            return f"{ctx.run_id}:{i}:" + "|".join(sorted(map(str, ctx.inputs.values())))
        return node

    wf = flowdag.Workflow("concurrent")
    for i in range(nodes):
        wf.add_node(f"n{i}", make(i), deps=[f"n{j}" for j in (i - 1, i // 3) if 0 <= j < i])

    open(f"{go}.ready.{os.getpid()}", "w").close()
    while not os.path.exists(go):  # start together
        time.sleep(0.001)
    options = {"compact_min_bytes": 512} if url.startswith(("json", "flatbuffers")) else {}
    with flowdag.open_store(url, **options) as store:
        try:
            result = flowdag.run(wf, run_id=run_id, store=store, max_workers=2)
        except flowdag.RunLockedError as exc:
            print(f"LOCKED {exc}", flush=True)
            sys.exit(3)
    sys.exit(0 if result.ok else 1)
    """
)


def expected(run_id: str, nodes: int) -> tuple[dict[str, str], dict[str, list[object]]]:
    outputs: dict[str, str] = {}
    for i in range(nodes):
        deps = sorted({j for j in (i - 1, i // 3) if 0 <= j < i})
        inputs = "|".join(sorted(str(outputs[f"n{j}"]) for j in deps))
        outputs[f"n{i}"] = f"{run_id}:{i}:{inputs}"
    return outputs, {f"k{i}": [run_id, i] for i in range(nodes)}


def start(tmp_path: Path, url: str, run_id: str, nodes: int, sleep: float) -> Child:
    """``python worker.py ...``, forked from the fork server (which imported flowdag once)."""
    script = tmp_path / "worker.py"
    if not script.exists():
        script.write_text(WORKER)
    args = [url, run_id, str(tmp_path / "calls.log"), str(tmp_path / "go"), str(nodes), str(sleep)]
    return shared().start(python_script, str(script), str(tmp_path), dict(os.environ), *args)


def go(tmp_path: Path, procs: Iterable[Child]) -> None:
    """Once every process waits at the start line, let them all start together."""
    waiting = {tmp_path / f"go.ready.{proc.pid}" for proc in procs}
    deadline = time.monotonic() + 60
    while not all(path.exists() for path in waiting):
        assert time.monotonic() < deadline, "a process never reached the start line"
        time.sleep(0.002)
    (tmp_path / "go").touch()


def calls(tmp_path: Path) -> list[tuple[str, str, str]]:
    log = tmp_path / "calls.log"
    lines = log.read_text().splitlines() if log.exists() else []
    return [(pid, run_id, node) for pid, run_id, node in (line.split() for line in lines)]


@pytest.mark.parametrize("scheme", STORES)
def test_same_run_id_in_two_processes_runs_once(tmp_path: Path, scheme: str) -> None:
    url = f"{scheme}://{tmp_path / 'store'}"
    nodes = 6
    procs = [start(tmp_path, url, "same", nodes, 0.1) for _ in range(2)]
    go(tmp_path, procs)
    done = [(d.returncode, d.stdout, d.stderr) for d in (p.wait(timeout=120) for p in procs)]
    codes = sorted(code for code, _, _ in done)
    assert codes == [0, LOCKED_EXIT], done
    locked_out = next(out for code, out, _ in done if code == LOCKED_EXIT)
    # Started together, the loser may look before the winner has written its pid.
    assert re.search(r"LOCKED run 'same' is locked by (pid \d+|another process)", locked_out)
    winner = next(p for p, (code, _, _) in zip(procs, done, strict=True) if code == 0)
    pids = {pid for pid, _, _ in calls(tmp_path)}
    assert pids == {str(winner.pid)}, "the locked-out process called nodes"
    assert len(calls(tmp_path)) == nodes  # each node once
    with flowdag.open_store(url) as store:
        state = store.load("same")
    outputs, data = expected("same", nodes)
    assert {n: s.output for n, s in state.nodes.items()} == outputs
    assert state.data == data


@pytest.mark.parametrize("scheme", STORES)
def test_many_runs_in_parallel_processes_on_one_store(tmp_path: Path, scheme: str) -> None:
    url = f"{scheme}://{tmp_path / 'store'}"
    nodes = 20
    run_ids = [f"run-{n}" for n in range(4)]
    procs = {run_id: start(tmp_path, url, run_id, nodes, 0.002) for run_id in run_ids}
    go(tmp_path, procs.values())
    for run_id, proc in procs.items():
        done = proc.wait(timeout=120)
        assert done.returncode == 0, (run_id, done)
    with flowdag.open_store(url) as store:
        assert store.list_runs() == sorted(run_ids)
        for run_id in run_ids:
            state = store.load(run_id)
            outputs, data = expected(run_id, nodes)
            assert same_value({n: s.output for n, s in state.nodes.items()}, outputs), run_id
            assert same_value(state.data, data), run_id
            assert all(s.status == "completed" and s.attempts == 1 for s in state.nodes.values())
    # Every run called each of its nodes exactly once, in its own process.
    seen = calls(tmp_path)
    assert len(seen) == len(run_ids) * nodes
    for run_id in run_ids:
        mine = [(pid, node) for pid, rid, node in seen if rid == run_id]
        assert {pid for pid, _ in mine} == {str(procs[run_id].pid)}
        assert sorted(node for _, node in mine) == sorted(f"n{i}" for i in range(nodes))
