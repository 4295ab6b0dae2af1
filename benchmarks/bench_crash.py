"""Crash-resume: SIGKILL a run half way, resume it, time the resume, count re-runs (must be 0).

Reproduce:

    pytest benchmarks/bench_crash.py --benchmark-only --benchmark-columns=min,median,max,rounds

Per disk store, each round (untimed setup): a subprocess runs a 2,000-node
diamond grid (20 layers of 100; every node appends its name to a log, then
sleeps 0.5 ms) with 4 workers on a fresh store, and is killed with SIGKILL once
half the nodes have been called. The timed part is the resume in this process:
``flowdag.run`` with the same run id and store until the run is done
(time-to-done). Afterwards every round is checked: the run completed, and no
node that the store held as completed at the kill was called again
(``extra_info.rerun_completed``, asserted to be 0). ``completed_at_kill`` and
``ran_on_resume`` (the rest, including nodes in flight at the kill) are recorded
too.
"""

from __future__ import annotations

import importlib.util
import os
import signal
import subprocess
import sys
import textwrap
import time
from pathlib import Path
from types import ModuleType
from typing import Any

import pytest
from _shapes import DISK_STORES, WORKERS, DirMaker, require_store

import flowdag

NODES = 2_000
WIDTH = 100
RUN_ID = "crash"

WORKFLOW = textwrap.dedent(
    f"""
    import os, sys, time
    import flowdag

    CALLS = os.environ.get("BENCH_CALLS", "calls.log")
    WIDTH, DEPTH = {WIDTH}, {NODES // WIDTH}

    def make(name):
        def node(**inputs):
            with open(CALLS, "a") as log:
                log.write(name + "\\n")
            time.sleep(0.0005)
            return len(inputs)
        return node

    wf = flowdag.Workflow("crash-bench")
    for layer in range(DEPTH):
        for i in range(WIDTH):
            name = f"g{{layer}}_{{i}}"
            above = [f"g{{layer - 1}}_{{i}}", f"g{{layer - 1}}_{{(i + 1) % WIDTH}}"]
            deps = above if layer else []
            wf.add_node(name, make(name), deps=deps)

    if __name__ == "__main__":
        store = flowdag.open_store(sys.argv[1])
        flowdag.run(wf, run_id="{RUN_ID}", store=store, max_workers={WORKERS})
    """
)


def _calls(log: Path) -> list[str]:
    return log.read_text().split() if log.exists() else []


def _import(script: Path) -> ModuleType:
    spec = importlib.util.spec_from_file_location("crash_bench_flow", script)
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def _kill_half_way(script: Path, url: str, log: Path) -> None:
    env = {**os.environ, "BENCH_CALLS": str(log)}
    proc = subprocess.Popen([sys.executable, str(script), url], env=env)
    deadline = time.monotonic() + 120
    try:
        while len(_calls(log)) < NODES // 2:
            assert proc.poll() is None, "the run ended before half way"
            assert time.monotonic() < deadline, "the run made no progress"
            time.sleep(0.001)
    finally:
        proc.send_signal(signal.SIGKILL)
        proc.wait()


@pytest.mark.parametrize("store", DISK_STORES)
def test_crash_resume(benchmark: Any, fresh_dir: DirMaker, tmp_path: Path, store: str) -> None:
    require_store(store)
    script = tmp_path / "crash_flow.py"
    script.write_text(WORKFLOW)
    flow = _import(script)
    rounds: list[dict[str, Any]] = []

    def setup() -> tuple[tuple[flowdag.Store], dict[str, Any]]:
        where = fresh_dir()
        log = where.with_suffix(".log")
        url = f"{store}://{where}"
        _kill_half_way(script, url, log)
        opened = flowdag.open_store(url)
        done = {n for n, s in opened.load_statuses(RUN_ID).nodes.items() if s.status == "completed"}
        rounds.append({"store": opened, "log": log, "done": done, "mark": len(_calls(log))})
        setattr(flow, "CALLS", str(log))  # noqa: B010 - the resumed nodes log to the same file
        return (opened,), {}

    def resume(opened: flowdag.Store) -> flowdag.RunResult:
        return flowdag.run(flow.wf, run_id=RUN_ID, store=opened, max_workers=WORKERS)

    benchmark.group = "crash-resume"
    try:
        result = benchmark.pedantic(resume, setup=setup, rounds=3, warmup_rounds=0)
    finally:
        for r in rounds:
            r["store"].close()
    assert result.ok
    reruns = []
    for r in rounds:
        ran = set(_calls(r["log"])[r["mark"] :])
        reruns.append(len(ran & r["done"]))
        r["ran"] = len(ran)
    benchmark.extra_info.update(
        label=store,
        nodes=NODES,
        completed_at_kill=[len(r["done"]) for r in rounds],
        ran_on_resume=[r["ran"] for r in rounds],
        rerun_completed=sum(reruns),
    )
    assert sum(reruns) == 0, f"completed nodes ran again on resume: {reruns} per round"
