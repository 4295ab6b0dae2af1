"""Crash safety: a real run in a child process, killed with SIGKILL, then resumed.

After every kill the store must load, and no node that the store held as
completed may be called again; after the final resume every output and
``ctx.data`` entry must equal what an uninterrupted run computes.
"""

from __future__ import annotations

import random
import sys
import time
from collections.abc import Callable
from pathlib import Path

import pytest

import flowdag
from tests.forkserver import ForkServer


def deps_of(i: int) -> list[int]:
    rng = random.Random(i)
    return sorted(rng.sample(range(i), min(i, rng.randint(0, 3))))


def crash_workflow(nodes: int, calls: str) -> flowdag.Workflow:
    """``nodes`` nodes on random deps; each node appends its name to the file ``calls``."""

    def make(i: int) -> Callable[[flowdag.Context], int]:
        def node(ctx: flowdag.Context) -> int:
            with open(calls, "a") as log:
                log.write(f"n{i}\n")
            time.sleep(0.004 * (1 + i % 3))
            ctx.data[f"k{i}"] = i * i
            total: int = i + sum(ctx.inputs.values())
            return total

        return node

    wf = flowdag.Workflow("crash")
    for i in range(nodes):
        wf.add_node(f"n{i}", make(i), deps=[f"n{d}" for d in deps_of(i)])
    return wf


def crash_job(url: str, nodes: int, calls: str) -> None:
    """In a forked child: run (or resume) the workflow; exit 0 if the run is ok, else 1."""
    store = flowdag.open_store(url)
    result = flowdag.run(
        crash_workflow(nodes, calls), run_id="crash-run", store=store, max_workers=4
    )
    sys.exit(0 if result.ok else 1)


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
def test_sigkill_mid_run_then_resume_loses_nothing(
    tmp_path: Path, fork_server: ForkServer, store_scheme: str
) -> None:
    nodes = 60
    log = tmp_path / "calls.log"
    url = f"{store_scheme}://{tmp_path / 'store'}"
    outputs, data = expected(nodes)
    rng = random.Random(7)
    kills = 0
    stored_done: set[str] = set()  # completed in the store before this process started
    for _ in range(30):  # kill repeatedly, each run a few nodes further in
        mark = len(calls(log))
        proc = fork_server.start(crash_job, url, nodes, str(log))
        target = mark + rng.randint(2, 10)
        deadline = time.monotonic() + 60
        while len(calls(log)) < target and proc.poll() is None:
            assert time.monotonic() < deadline, "the run made no progress"
            time.sleep(0.001)
        finished = proc.poll() is not None
        if not finished:
            proc.kill()
            kills += 1
        returncode = proc.wait().returncode

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
            assert returncode == 0
            break
    else:
        final = fork_server.run(crash_job, url, nodes, str(log), timeout=120)
        assert final.returncode == 0, final.stderr

    assert kills >= 3
    with flowdag.open_store(url) as store:
        state = store.load("crash-run")
    assert {n: s.output for n, s in state.nodes.items()} == outputs
    assert state.data == data
    assert all(s.status == "completed" for s in state.nodes.values())

    # A completed run re-run calls nothing.
    called = len(calls(log))
    again = fork_server.run(crash_job, url, nodes, str(log), timeout=60)
    assert again.returncode == 0, again.stderr
    assert len(calls(log)) == called
