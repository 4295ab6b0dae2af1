"""Every attempt kept: ``NodeState.history`` over retries, timeouts, resumes and crashes.

The runner records each attempt's number, start, end and error; the node's
finish record commits them with the attempts of earlier calls, so a node that
failed twice and then succeeded still shows why it failed, on every store.
A crash loses only the attempts of nodes that had not finished.
"""

from __future__ import annotations

import contextlib
import json
import os
import signal
import subprocess
import textwrap
import time
from pathlib import Path

import pytest

import flowdag
from flowdag import AttemptInfo, NodeState, NodeStatus, RunState
from flowdag.stores import open_store
from tests.forkserver import python_m, python_script, shared

SCHEMES = ["memory", "lmdb", "json", "flatbuffers"]


def store_url(scheme: str, tmp_path: Path) -> str:
    return "memory://" if scheme == "memory" else f"{scheme}://{tmp_path / 'store'}"


def flaky_workflow(failures: int, retries: int, calls: list[int] | None = None) -> flowdag.Workflow:
    """``flaky`` fails its first ``failures`` attempts over the run's life (by ctx.attempt)."""
    wf = flowdag.Workflow("history")

    @wf.node(retries=retries)
    def flaky(ctx: flowdag.Context) -> str:
        if calls is not None:
            calls.append(ctx.attempt)
        if ctx.attempt <= failures:
            raise ValueError(f"boom {ctx.attempt}")
        return "ok"

    @wf.node(deps=["flaky"])
    def after(flaky: str) -> str:
        return flaky + "!"

    return wf


def check_history(node: NodeState) -> None:
    """Ordered, no duplicates, the last attempt the node's own, durations summed."""
    numbers = [attempt.number for attempt in node.history]
    assert numbers == sorted(set(numbers)) and numbers[-1] == node.attempts
    last = node.history[-1]
    assert (last.started_at, last.finished_at, last.error) == (
        node.started_at,
        node.finished_at,
        node.error,
    )
    for attempt in node.history:
        assert attempt.started_at.tzinfo is not None and attempt.started_at <= attempt.finished_at
    assert node.duration == pytest.approx(sum(a.duration for a in node.history))


@pytest.mark.parametrize("scheme", SCHEMES)
def test_a_node_that_fails_twice_then_succeeds_shows_both_errors(
    tmp_path: Path, scheme: str
) -> None:
    with open_store(store_url(scheme, tmp_path)) as store:
        result = flowdag.run(flaky_workflow(failures=2, retries=2), run_id="r", store=store)
        assert result.ok
        loaded = store.load("r")
        statuses = store.load_statuses("r")
    node = loaded.nodes["flaky"]
    assert node.status is NodeStatus.COMPLETED and node.attempts == 3 and node.error is None
    assert [a.number for a in node.history] == [1, 2, 3]
    errors = [a.error for a in node.history]
    assert [(e.type, e.message) for e in errors[:2] if e] == [
        ("ValueError", "boom 1"),
        ("ValueError", "boom 2"),
    ]
    assert errors[2] is None
    assert all(e and "raise ValueError" in e.traceback for e in errors[:2])
    check_history(node)
    assert result.nodes["flaky"] == node  # the result holds what the store holds
    assert statuses.nodes["flaky"].history == node.history
    assert [a.number for a in loaded.nodes["after"].history] == [1]


@pytest.mark.parametrize("scheme", SCHEMES)
def test_a_node_failed_in_one_run_and_resumed_keeps_its_history(
    tmp_path: Path, scheme: str
) -> None:
    url = store_url(scheme, tmp_path)
    with open_store(url) as store:
        first = flowdag.run(flaky_workflow(failures=3, retries=1), run_id="r", store=store)
        assert not first.ok
        failed = store.load("r").nodes["flaky"]
        assert failed.status is NodeStatus.FAILED
        assert [a.number for a in failed.history] == [1, 2]
        check_history(failed)
        if scheme == "memory":
            second = flowdag.run(flaky_workflow(failures=3, retries=1), run_id="r", store=store)
        else:
            second = None
    if second is None:  # a disk store: resumed by a new opener, as a new process would
        with open_store(url) as store:
            second = flowdag.run(flaky_workflow(failures=3, retries=1), run_id="r", store=store)
            node = store.load("r").nodes["flaky"]
    else:
        node = second.nodes["flaky"]
    assert second.ok
    assert [a.number for a in node.history] == [1, 2, 3, 4]
    assert node.history[:2] == failed.history  # the earlier run's attempts, exactly
    assert [a.error.message if a.error else None for a in node.history] == [
        "boom 1",
        "boom 2",
        "boom 3",
        None,
    ]
    check_history(node)


def test_timed_out_attempts_are_kept() -> None:
    wf = flowdag.Workflow("timeouts")

    @wf.node(timeout=0.2, retries=1)
    def slow(ctx: flowdag.Context) -> int:
        if ctx.attempt == 1:
            time.sleep(1)
        return ctx.attempt

    result = flowdag.run(wf, run_id="t", store=flowdag.MemoryStore())
    node = result.nodes["slow"]
    assert result.ok and [a.number for a in node.history] == [1, 2]
    first = node.history[0]
    assert first.error is not None and first.error.type == "NodeTimeoutError"
    assert 0.15 < first.duration < 0.9


def test_duration_counts_every_attempt() -> None:
    t0 = flowdag.NodeState().started_at  # None: no attempt, no duration
    assert flowdag.NodeState().duration is None and t0 is None
    from datetime import UTC, datetime, timedelta

    start = datetime(2026, 1, 1, tzinfo=UTC)
    history = (
        AttemptInfo(1, start, start + timedelta(seconds=2), flowdag.ErrorInfo("E", "m")),
        AttemptInfo(2, start + timedelta(seconds=10), start + timedelta(seconds=13)),
    )
    node = NodeState(NodeStatus.COMPLETED, 2, history[1].started_at, history[1].finished_at,
                     history=history)  # fmt: skip
    assert node.duration == 5.0  # 2 s + 3 s: the wait in between does not count
    assert NodeState(NodeStatus.COMPLETED, 2, start, start + timedelta(seconds=3)).duration == 3.0
    assert node != NodeState(NodeStatus.COMPLETED, 2, node.started_at, node.finished_at)


# -- kill -9 during a run with retries, then resume ---------------------------------------

WORKFLOW = textwrap.dedent(
    """
    import os, sys, time
    from pathlib import Path
    import flowdag

    MARKS = Path(os.environ["HISTORY_MARKS"])
    HANG = os.environ.get("HISTORY_HANG") == "1"

    wf = flowdag.Workflow("killed")

    @wf.node(retries=3)
    def steady(ctx):
        # Fails twice, then succeeds: committed (with its history) before the kill.
        if ctx.attempt <= 2:
            raise ValueError(f"steady {ctx.attempt}")
        return ctx.attempt

    @wf.node(deps=["steady"], retries=5)
    def shaky(ctx):
        (MARKS / f"shaky-{ctx.attempt}").touch()
        if ctx.attempt % 3 != 0:
            raise OSError(f"shaky {ctx.attempt}")
        if HANG:
            time.sleep(60)  # killed here
        return ctx.attempt

    if __name__ == "__main__":
        with flowdag.open_store(sys.argv[1]) as store:
            result = flowdag.run(wf, run_id="k", store=store)
        sys.exit(0 if result.ok else 1)
    """
)


@pytest.mark.parametrize("mark", ["shaky-1", "shaky-2", "shaky-3"])
@pytest.mark.parametrize("scheme", ["lmdb", "json", "flatbuffers"])
def test_kill_9_during_retries_then_resume(tmp_path: Path, scheme: str, mark: str) -> None:
    script = tmp_path / "killed_flow.py"
    script.write_text(WORKFLOW)
    marks = tmp_path / "marks"
    marks.mkdir()
    url = f"{scheme}://{tmp_path / 'store'}"
    env = {**os.environ, "HISTORY_MARKS": str(marks), "HISTORY_HANG": "1"}
    env["PYTHONPATH"] = os.pathsep.join([str(Path(__file__).parents[1]), env.get("PYTHONPATH", "")])
    proc = shared().start(python_script, str(script), str(tmp_path), env, url)
    try:
        deadline = time.monotonic() + 30
        while not (marks / mark).exists():
            assert proc.poll() is None, "the run ended before the kill"
            assert time.monotonic() < deadline, f"{mark} never appeared"
            time.sleep(0.005)
        proc.kill()
    finally:
        killed = proc.wait()
    assert killed.returncode == -signal.SIGKILL
    with open_store(url) as store:
        crashed = store.load("k")
    steady = crashed.nodes["steady"]
    assert steady.status is NodeStatus.COMPLETED and [a.number for a in steady.history] == [1, 2, 3]
    check_history(steady)
    # shaky's failed attempts (1 and 2) are handed to the store as they fail,
    # waited for by nothing: what the kill left of them is a prefix, in order.
    kept = [a.number for a in crashed.nodes["shaky"].history]
    assert kept == [1, 2][: len(kept)]
    assert all(attempt.error is not None for attempt in crashed.nodes["shaky"].history)

    env["HISTORY_HANG"] = "0"
    done = shared().run(python_script, str(script), str(tmp_path), env, url, timeout=60)
    assert done.returncode == 0
    with open_store(url) as store:
        resumed = store.load("k")
    assert resumed.nodes["steady"] == steady  # not run again, its history untouched
    shaky = resumed.nodes["shaky"]
    assert shaky.status is NodeStatus.COMPLETED
    assert [a.number for a in shaky.history] == [1, 2, 3]  # kept ones, then the new ones
    assert [a.error.message if a.error else None for a in shaky.history] == [
        "shaky 1",
        "shaky 2",
        None,
    ]
    check_history(shaky)
    assert isinstance(resumed, RunState)


WAITING = textwrap.dedent(
    """
    import sys
    import flowdag

    wf = flowdag.Workflow("waiting")

    @wf.node(retries=1, retry_delay=60)
    def fetch(ctx):
        if ctx.attempt == 1:
            raise ConnectionError("upstream said 503")
        return ctx.attempt

    if __name__ == "__main__":
        with flowdag.open_store(sys.argv[1]) as store:
            sys.exit(0 if flowdag.run(wf, run_id="w", store=store).ok else 1)
    """
)


@pytest.mark.parametrize("scheme", ["lmdb", "json", "flatbuffers"])
def test_a_failed_attempt_is_kept_by_a_kill_while_its_retry_waits(
    tmp_path: Path, scheme: str
) -> None:
    script = tmp_path / "waiting_flow.py"
    script.write_text(WAITING)
    url = f"{scheme}://{tmp_path / 'store'}"
    env = {**os.environ, "PYTHONPATH": str(Path(__file__).parents[1])}
    proc = shared().start(python_script, str(script), str(tmp_path), env, url)
    try:
        deadline = time.monotonic() + 30
        while True:  # until the store holds the failed attempt: then kill mid-wait
            assert proc.poll() is None, "the run ended before the kill"
            assert time.monotonic() < deadline, "the failed attempt never reached the store"
            with contextlib.suppress(flowdag.RunNotFoundError), open_store(url) as store:
                if store.load("w").nodes["fetch"].history:
                    break
            time.sleep(0.02)
        proc.kill()
    finally:
        proc.wait()
    with open_store(url) as store:
        crashed = store.load("w").nodes["fetch"]
    assert crashed.status is NodeStatus.RUNNING  # shown interrupted: it was retrying
    assert [(a.number, a.error.message if a.error else None) for a in crashed.history] == [
        (1, "upstream said 503")
    ]
    done = shared().run(python_script, str(script), str(tmp_path), env, url, timeout=60)
    assert done.returncode == 0  # a resume retries at once: its wait died with its process
    with open_store(url) as store:
        fetch = store.load("w").nodes["fetch"]
    assert fetch.status is NodeStatus.COMPLETED and fetch.output == 2
    assert [a.number for a in fetch.history] == [1, 2] and fetch.history[0].error is not None


# -- the command line, through real processes (forked from the fork server) ----------------

FLOW = textwrap.dedent(
    """
    import flowdag

    wf = flowdag.Workflow("attempts")

    @wf.node(retries=2)
    def flaky(ctx):
        if ctx.attempt <= 2:
            raise ValueError(f"boom {ctx.attempt}\\nsecond line")
        return "ok"

    @wf.node(retries=1)
    def doomed(ctx):
        raise KeyError(f"gone {ctx.attempt}")
    """
)


def cli(tmp_path: Path, *args: str) -> subprocess.CompletedProcess[str]:
    env = {**os.environ, "COLUMNS": "200", "PYTHONPATH": str(Path(__file__).parents[1])}
    return shared().run(
        python_m, "flowdag", str(tmp_path), env, *args, "--store", "lmdb://s", timeout=120
    )


def rows(text: str, title: str) -> list[list[str]]:
    """The rows of the table under ``title``, split on runs of two spaces or more."""
    lines = text.splitlines()
    start = lines.index(title) + 2  # the title, then the header
    table = []
    for line in lines[start:]:
        if not line.startswith(" ") and not line[:1].isalnum():
            break
        cells = [cell.strip() for cell in line.strip().split("  ") if cell.strip()]
        if not cells or not (cells[0].isdigit() or cells[0] in ("flaky", "doomed")):
            break
        table.append(cells)
    return table


def test_status_and_show_list_every_attempt(tmp_path: Path) -> None:
    (tmp_path / "flow.py").write_text(FLOW)
    assert cli(tmp_path, "run", "flow.py", "--run-id", "r").returncode == 1

    status = cli(tmp_path, "status", "r")
    assert status.returncode == 0, status.stderr
    failed = rows(status.stdout, "failed attempts:")
    assert sorted((row[0], row[1], row[-1]) for row in failed) == [
        ("doomed", "1", "KeyError: 'gone 1'"),
        ("doomed", "2", "KeyError: 'gone 2'"),
        ("flaky", "1", "ValueError: boom 1; second line"),
        ("flaky", "2", "ValueError: boom 2; second line"),
    ]

    show = cli(tmp_path, "show", "r", "flaky")
    assert show.returncode == 0, show.stderr
    attempts = rows(show.stdout, "attempts:")
    assert [row[0] for row in attempts] == ["1", "2", "3"]
    assert attempts[0][-1] == "ValueError: boom 1; second line"
    assert attempts[2][-1].endswith("s")  # attempt 3 succeeded: a duration, no error
    assert all(row[-2].endswith("s") for row in attempts[:2])  # durations

    node = json.loads(cli(tmp_path, "show", "r", "flaky", "--json").stdout)
    history = node["history"]
    assert [a["number"] for a in history] == [1, 2, 3]
    assert history[0]["error"]["message"] == "boom 1\nsecond line"
    assert 'flow.py", line 9, in flaky' in history[0]["error"]["traceback"]  # in full
    assert history[2]["error"] is None
    assert node["duration"] == pytest.approx(sum(a["duration"] for a in history))

    # Resumed: the failed node's earlier attempts stay, the new ones follow.
    assert cli(tmp_path, "run", "flow.py", "--run-id", "r").returncode == 1
    document = json.loads(cli(tmp_path, "status", "r", "--json").stdout)
    doomed = document["nodes"]["doomed"]
    assert [a["number"] for a in doomed["history"]] == [1, 2, 3, 4]
    assert [a["error"]["message"] for a in doomed["history"]] == [
        f"'gone {i}'" for i in range(1, 5)
    ]
    assert "Traceback (most recent call last)" in doomed["history"][0]["error"]["traceback"]
    assert [a["number"] for a in document["nodes"]["flaky"]["history"]] == [1, 2, 3]

    # store verify accepts the histories; store convert carries them exactly.
    env = {**os.environ, "PYTHONPATH": str(Path(__file__).parents[1])}
    for command in (["store", "verify", "lmdb://s"], ["store", "convert", "lmdb://s", "json://j"]):
        done = shared().run(python_m, "flowdag", str(tmp_path), env, *command, timeout=120)
        assert done.returncode == 0, done.stdout + done.stderr
    converted = shared().run(
        python_m, "flowdag", str(tmp_path), env, "status", "r", "--json", "--store", "json://j"
    )
    assert json.loads(converted.stdout)["nodes"] == document["nodes"]


def test_status_of_a_run_without_failed_attempts_adds_nothing(tmp_path: Path) -> None:
    (tmp_path / "flow.py").write_text("import flowdag\nwf = flowdag.Workflow('w')\n"
                                      "@wf.node\ndef a():\n    return 1\n")  # fmt: skip
    assert cli(tmp_path, "run", "flow.py", "--run-id", "ok").returncode == 0
    status = cli(tmp_path, "status", "ok")
    assert status.returncode == 0 and "failed attempts" not in status.stdout


def test_an_attempt_lost_with_its_worker_is_kept_under_the_number_its_retry_takes(
    tmp_path: Path,
) -> None:
    marker = tmp_path / "died-once"

    def dies_once() -> int:
        if not marker.exists():
            marker.touch()
            os._exit(1)  # the worker process dies mid-attempt
        return 7

    wf = flowdag.Workflow("lost")
    wf.add_node("dies_once", dies_once)  # no retries: a lost worker is not the node's fault
    with open_store(f"lmdb://{tmp_path / 'store'}") as store:
        result = flowdag.run(wf, run_id="l", store=store, executor="processes", max_workers=1)
        assert result.ok, result.errors
        node = store.load("l").nodes["dies_once"]
    assert node.attempts == 1 and [a.number for a in node.history] == [1, 1]
    lost, kept = node.history
    assert lost.error is not None and kept.error is None
    assert lost.finished_at <= kept.started_at
