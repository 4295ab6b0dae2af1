"""Crash safety: a real run in a subprocess, killed with SIGKILL, then resumed.

After every kill the store must load, and no node that the store held as
completed may be called again; after the final resume every output and
``ctx.data`` entry must equal what an uninterrupted run computes.
"""

from __future__ import annotations

import os
import random
import signal
import subprocess
import sys
import textwrap
import time
from pathlib import Path

import pytest

import flowdag

WORKFLOW = textwrap.dedent(
    """
    import os, random, sys, time
    import flowdag

    NODES = int(os.environ["CRASH_NODES"])
    CALLS = os.environ["CRASH_CALLS"]

    def deps_of(i):
        rng = random.Random(i)
        return sorted(rng.sample(range(i), min(i, rng.randint(0, 3))))

    def make(i):
        def node(ctx):
            with open(CALLS, "a") as log:
                log.write(f"n{i}\\n")
            time.sleep(0.004 * (1 + i % 3))
            ctx.data[f"k{i}"] = i * i
            return i + sum(ctx.inputs.values())
        return node

    wf = flowdag.Workflow("crash")
    for i in range(NODES):
        wf.add_node(f"n{i}", make(i), deps=[f"n{d}" for d in deps_of(i)])

    if __name__ == "__main__":
        store = flowdag.open_store(sys.argv[1])
        result = flowdag.run(wf, run_id="crash-run", store=store, max_workers=4)
        sys.exit(0 if result.ok else 1)
    """
)


def expected(nodes: int) -> tuple[dict[str, int], dict[str, int]]:
    """Outputs and data of an uninterrupted run, computed directly."""
    outputs: dict[str, int] = {}
    for i in range(nodes):
        rng = random.Random(i)
        deps = sorted(rng.sample(range(i), min(i, rng.randint(0, 3))))
        outputs[f"n{i}"] = i + sum(outputs[f"n{d}"] for d in deps)
    return outputs, {f"k{i}": i * i for i in range(nodes)}


def calls(log: Path) -> list[str]:
    return log.read_text().split() if log.exists() else []


@pytest.mark.parametrize("store_scheme", ["lmdb", "json", "flatbuffers"])
def test_sigkill_mid_run_then_resume_loses_nothing(tmp_path: Path, store_scheme: str) -> None:
    nodes = 60
    script = tmp_path / "crash_flow.py"
    script.write_text(WORKFLOW)
    log = tmp_path / "calls.log"
    url = f"{store_scheme}://{tmp_path / 'store'}"
    env = {**os.environ, "CRASH_NODES": str(nodes), "CRASH_CALLS": str(log)}
    outputs, data = expected(nodes)
    rng = random.Random(7)
    kills = 0
    stored_done: set[str] = set()  # completed in the store before this process started
    for _ in range(30):  # kill repeatedly, each run a few nodes further in
        mark = len(calls(log))
        proc = subprocess.Popen([sys.executable, str(script), url], env=env)
        target = mark + rng.randint(2, 10)
        deadline = time.monotonic() + 60
        while len(calls(log)) < target and proc.poll() is None:
            assert time.monotonic() < deadline, "the run made no progress"
            time.sleep(0.001)
        finished = proc.poll() is not None
        if not finished:
            proc.send_signal(signal.SIGKILL)
            kills += 1
        proc.wait()

        ran = set(calls(log)[mark:])
        assert not ran & stored_done, f"completed nodes ran again: {sorted(ran & stored_done)}"
        with flowdag.open_store(url) as store:  # the store loads after every kill
            state = store.load("crash-run")
        done = {n for n, s in state.nodes.items() if s.status == "completed"}
        assert stored_done <= done, f"completed nodes were lost: {sorted(stored_done - done)}"
        for name in done:
            assert state.nodes[name].output == outputs[name]
            assert state.data[f"k{name[1:]}"] == data[f"k{name[1:]}"]
        stored_done = done
        if finished:
            assert proc.returncode == 0
            break
    else:
        final = subprocess.run([sys.executable, str(script), url], env=env, timeout=120)
        assert final.returncode == 0

    assert kills >= 3
    with flowdag.open_store(url) as store:
        state = store.load("crash-run")
    assert {n: s.output for n, s in state.nodes.items()} == outputs
    assert state.data == data
    assert all(s.status == "completed" for s in state.nodes.values())

    # A completed run re-run calls nothing.
    called = len(calls(log))
    again = subprocess.run([sys.executable, str(script), url], env=env, timeout=60)
    assert again.returncode == 0
    assert len(calls(log)) == called
