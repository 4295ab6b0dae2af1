"""Nodes in flight at a crash: start records, shown as interrupted, run again on resume.

The kill tests SIGKILL a real ``flowdag run`` while a node sleeps mid-attempt,
then read the run back through the real CLI (``status``, ``status --json``,
``list``, ``show``, ``graph --run-id``) in other processes, and resume it. These
processes are ``python -m flowdag`` forked from the fork server (tests/forkserver.py),
which imported flowdag once, instead of fresh interpreters that would each import it.
"""

from __future__ import annotations

import json
import os
import random
import subprocess
import textwrap
import threading
import time
from collections.abc import Sequence
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import pytest
from hypothesis import given
from hypothesis import strategies as st

import flowdag
from flowdag._commit import START_RECORD_DELAY, Starts, latest
from flowdag.attempt import Attempt
from flowdag.errors import StoreError
from flowdag.state import NodeRecord, NodeState, NodeStatus, RunState
from flowdag.stores import JSONStore, LMDBStore, MemoryStore, open_store
from tests.forkserver import ForkServer, python_m

ROOT = Path(__file__).resolve().parents[1]
DISK_STORES = ["json", "flatbuffers", "lmdb"]
RUNNING = NodeStatus.RUNNING

WORKFLOW = textwrap.dedent(
    """
    import os, time
    import flowdag

    CALLS = os.environ["INFLIGHT_CALLS"]
    HANG = os.environ["INFLIGHT_HANG"]

    def log(line):
        with open(CALLS, "a") as f:
            f.write(line + "\\n")

    def first():
        log("first")
        return 1

    def slow(ctx, first):
        log(f"slow {ctx.attempt}")
        while os.path.exists(HANG):  # mid-attempt until the test removes the file
            time.sleep(0.02)
        return first + 1

    def last(slow):
        log("last")
        return slow * 10

    wf = flowdag.Workflow("inflight")
    wf.add_node("first", first)
    wf.add_node("slow", slow, deps=["first"], retries=0)
    wf.add_node("last", last, deps=["slow"])
    """
)


def flowdag_cli(
    server: ForkServer, *args: str, env: dict[str, str], cwd: Path
) -> subprocess.CompletedProcess[str]:
    return server.run(python_m, "flowdag", str(cwd), env, *args, timeout=60)


def status_json(
    server: ForkServer, run_id: str, url: str, env: dict[str, str], cwd: Path
) -> dict[str, Any]:
    done = flowdag_cli(server, "status", run_id, "--json", "--store", url, env=env, cwd=cwd)
    assert done.returncode == 0, done.stderr
    document: dict[str, Any] = json.loads(done.stdout)
    return document


@pytest.mark.parametrize("scheme", DISK_STORES)
def test_sigkill_mid_attempt_shows_the_node_interrupted_and_resume_runs_it_once(
    tmp_path: Path, scheme: str, fork_server: ForkServer
) -> None:
    workflow = tmp_path / "wf.py"
    workflow.write_text(WORKFLOW)
    calls, hang = tmp_path / "calls.log", tmp_path / "hang"
    hang.touch()
    env = {
        **os.environ,
        "PYTHONPATH": str(ROOT),
        "INFLIGHT_CALLS": str(calls),
        "INFLIGHT_HANG": str(hang),
        "COLUMNS": "200",
    }
    url = f"{scheme}://{tmp_path / 'store'}"
    run = ["run", str(workflow), "--run-id", "r1", "--store", url, "--workers", "2"]
    proc = fork_server.start(python_m, "flowdag", str(tmp_path), env, *run)
    try:
        # While the process lives, the node is running, and so is the run (with its pid).
        deadline = time.monotonic() + 30
        while True:
            assert proc.poll() is None, "the run ended before it was killed"
            assert time.monotonic() < deadline, "the start record never reached the store"
            if "slow 1" in (calls.read_text() if calls.exists() else ""):
                live = status_json(fork_server, "r1", url, env, tmp_path)
                if live["nodes"]["slow"]["status"] == "running":
                    break
            time.sleep(0.05)
        assert (live["status"], live["pid"]) == ("running", proc.pid)
    finally:
        proc.kill()
        proc.wait()

    # The process is gone: the node in flight is interrupted, with its start time.
    document = status_json(fork_server, "r1", url, env, tmp_path)
    assert document["status"] == "interrupted" and document["pid"] is None
    slow = document["nodes"]["slow"]
    assert slow["status"] == "interrupted"
    assert slow["attempts"] == 1 and slow["finished_at"] is None
    started = datetime.fromisoformat(slow["started_at"])
    assert abs((datetime.now(UTC) - started).total_seconds()) < 60
    assert document["nodes"]["first"]["status"] == "completed"
    assert document["nodes"]["last"]["status"] == "pending"

    text = flowdag_cli(fork_server, "status", "r1", "--store", url, env=env, cwd=tmp_path)
    assert text.returncode == 0, text.stderr
    header, *rows = text.stdout.splitlines()
    assert "interrupted (last commit" in header and "1 interrupted" in header
    assert "running" not in text.stdout
    row = next(line for line in rows if line.split()[:1] == ["slow"])
    assert row.split()[1:3] == ["interrupted", "1"]

    listing = flowdag_cli(fork_server, "list", "--json", "--store", url, env=env, cwd=tmp_path)
    assert listing.returncode == 0, listing.stderr
    (entry,) = json.loads(listing.stdout)
    assert entry["status"] == "interrupted"
    assert entry["nodes"] == {"completed": 1, "pending": 1, "interrupted": 1, "total": 3}
    listing = flowdag_cli(fork_server, "list", "--store", url, env=env, cwd=tmp_path)
    assert "1/3 completed, 1 pending, 1 interrupted" in listing.stdout

    shown = flowdag_cli(fork_server, "show", "r1", "--store", url, env=env, cwd=tmp_path)
    assert shown.returncode == 0, shown.stderr
    row = next(line for line in shown.stdout.splitlines() if line.split()[:1] == ["slow"])
    assert "interrupted" in row and "started" in row

    graph = flowdag_cli(
        fork_server, "graph", str(workflow), "--run-id", "r1", "--store", url, env=env, cwd=tmp_path
    )
    assert graph.returncode == 0, graph.stderr
    assert "slow<br/>interrupted" in graph.stdout
    assert "classDef interrupted" in graph.stdout
    assert "running" not in graph.stdout

    # Resume: the interrupted node (retries=0) runs again, once, as attempt 2.
    hang.unlink()
    resumed = flowdag_cli(fork_server, *run, env=env, cwd=tmp_path)
    assert resumed.returncode == 0, resumed.stdout + resumed.stderr
    assert calls.read_text().split("\n") == ["first", "slow 1", "slow 2", "last", ""]
    document = status_json(fork_server, "r1", url, env, tmp_path)
    assert document["status"] == "completed"
    assert {name: node["status"] for name, node in document["nodes"].items()} == {
        "first": "completed",
        "slow": "completed",
        "last": "completed",
    }
    assert document["nodes"]["slow"]["attempts"] == 2


# -- start records in the driver ------------------------------------------------------------


class RecordingStore(JSONStore):
    """A real JSON store that also keeps every batch it commits, in order."""

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self.batches: list[list[NodeRecord]] = []
        self._guard = threading.Lock()

    def commit(self, run_id: str, records: Sequence[NodeRecord]) -> None:
        super().commit(run_id, records)
        with self._guard:
            self.batches.append(list(records))


def test_start_records_precede_their_finish_and_small_nodes_get_none(tmp_path: Path) -> None:
    rng = random.Random(11)
    sleeps = {f"n{i}": rng.choice((0.0, 0.0, 0.03, 0.045, 0.055, 0.07, 0.2)) for i in range(40)}
    flaky: set[str] = set()

    def make(name: str) -> Any:
        def node(ctx: flowdag.Context) -> str:
            time.sleep(sleeps[name])
            if name in ("n3", "n17") and ctx.attempt == 1:
                flaky.add(name)
                raise RuntimeError("first attempt fails")  # a retry: a second start record
            return name

        return node

    wf = flowdag.Workflow("ordering")
    names = list(sleeps)
    for i, name in enumerate(names):
        deps = [names[d] for d in rng.sample(range(i), min(i, rng.randint(0, 2)))]
        wf.add_node(name, make(name), deps=deps, retries=1)
    with RecordingStore(tmp_path / "s") as store:
        result = flowdag.run(wf, run_id="r", store=store, max_workers=4)
        state = store.load("r")
    assert result.ok and flaky == {"n3", "n17"}
    assert {node.status for node in state.nodes.values()} == {NodeStatus.COMPLETED}
    history: dict[str, list[tuple[NodeStatus, int]]] = {}
    for batch in store.batches:
        for record in batch:
            history.setdefault(record.node, []).append((record.status, record.attempts))
    for name, records in history.items():
        *before, end = records
        assert end == (NodeStatus.COMPLETED, state.nodes[name].attempts), (name, records)
        # Only start records come before the finish, attempt numbers never going back.
        assert all(status is RUNNING for status, _ in before), (name, records)
        assert [n for _, n in before] == sorted(n for _, n in before), (name, records)
    started = {name for name, records in history.items() if len(records) > 1}
    slow = {name for name, seconds in sleeps.items() if seconds >= 0.2}
    assert slow <= started  # a node running long enough is recorded in flight
    quick = [name for name, seconds in sleeps.items() if seconds == 0 and name not in flaky]
    assert quick and len(started & set(quick)) <= len(quick) // 4  # small nodes: no record


def test_a_start_record_keeps_the_attempts_before_it(tmp_path: Path) -> None:
    # A commit replaces the node's stored state: a crash right after a start
    # record must not lose the attempts of this call or of earlier ones.
    calls: list[int] = []

    def flaky(ctx: flowdag.Context) -> int:
        calls.append(ctx.attempt)
        if ctx.attempt < 3:
            raise RuntimeError(f"attempt {ctx.attempt} fails")
        time.sleep(0.3)  # long enough for a start record
        return 1

    wf = flowdag.Workflow("kept")
    with RecordingStore(tmp_path / "s") as store:
        wf.add_node("flaky", flaky, retries=0)
        assert not flowdag.run(wf, run_id="r", store=store).ok  # attempt 1, in an earlier call
        wf = flowdag.Workflow("kept")
        wf.add_node("flaky", flaky, retries=1)
        assert flowdag.run(wf, run_id="r", store=store).ok  # attempts 2 (fails) and 3
        starts = [
            record
            for batch in store.batches
            for record in batch
            if record.status is RUNNING and record.attempts == 3
        ]
    assert calls == [1, 2, 3] and len(starts) == 1
    kept = [
        (attempt.number, attempt.error and attempt.error.message) for attempt in starts[0].history
    ]
    assert kept == [(1, "attempt 1 fails"), (2, "attempt 2 fails")]


def test_a_store_that_keeps_nothing_on_disk_gets_no_start_records() -> None:
    commits: list[NodeStatus] = []

    class Recording(MemoryStore):
        def commit(self, run_id: str, records: Sequence[NodeRecord]) -> None:
            commits.extend(record.status for record in records)
            super().commit(run_id, records)

    wf = flowdag.Workflow("memory")
    wf.add_node("slow", lambda: time.sleep(0.2))
    assert flowdag.run(wf, store=Recording()).ok
    assert commits == [NodeStatus.COMPLETED]


def test_an_interrupted_node_runs_again_without_using_its_retries(tmp_path: Path) -> None:
    seen: list[int] = []

    def slow(ctx: flowdag.Context) -> int:
        seen.append(ctx.attempt)
        return 1

    wf = flowdag.Workflow("again")
    wf.add_node("slow", slow, retries=0)
    started = datetime(2026, 11, 30, 9, 0, tzinfo=UTC)
    with LMDBStore(tmp_path / "s") as store:
        # As a crash leaves it: the start record of attempt 3 (two of an earlier call failed).
        store.save(RunState("r", "again", {"slow": NodeState(RUNNING, 3, started)}))
        result = flowdag.run(wf, run_id="r", store=store)
        assert result.ok and seen == [4]  # the interrupted attempt counts in ctx.attempt
        assert store.load("r").nodes["slow"].attempts == 4


class StoreRefusingStarts(LMDBStore):
    """A real LMDB store whose disk "fills up" as soon as a start record comes."""

    def commit(self, run_id: str, records: Sequence[NodeRecord]) -> None:
        if any(record.status is RUNNING for record in records):
            raise StoreError("no space left on device (test)")
        super().commit(run_id, records)


def test_a_refused_start_record_fails_the_run_cleanly_with_the_stores_error(
    tmp_path: Path,
) -> None:
    returned: list[str] = []

    def slow() -> int:
        time.sleep(0.3)
        returned.append("slow")
        return 1

    wf = flowdag.Workflow("refused")
    wf.add_node("slow", slow)
    wf.add_node("last", lambda slow: slow + 1, deps=["slow"])
    with StoreRefusingStarts(tmp_path / "s") as store:
        result = flowdag.run(wf, run_id="r", store=store)
    assert returned == ["slow"]  # the run ended once its attempt returned
    assert result.status is flowdag.RunStatus.FAILED
    assert result.node_status["slow"] is NodeStatus.FAILED
    assert result.node_status["last"] is NodeStatus.PENDING  # nothing new started
    error = result.errors["slow"]
    assert (error.type, error.message) == ("StoreError", "no space left on device (test)")
    # The store still loads, the attempt's result was not committed, and a resume finishes.
    with LMDBStore(tmp_path / "s") as store:
        assert store.load("r").nodes["slow"].status is NodeStatus.PENDING
        result = flowdag.run(wf, run_id="r", store=store)
    assert result.ok and result.outputs == {"slow": 1, "last": 2}


def test_starts_are_due_after_the_delay_only_for_attempts_still_running() -> None:
    wf = flowdag.Workflow("w")
    for name in "abc":
        wf.add_node(name, lambda: 1)
    dag, codec = wf.build(), MemoryStore().codec
    a, b, c = (Attempt(dag.specs[name], "r", 1, {}, {}, codec) for name in "abc")
    retried = Attempt(dag.specs["c"], "r", 2, {}, {}, codec)
    starts = Starts()
    for i, attempt in enumerate((a, b, c)):
        starts.add(attempt, 100.0 + i)
    running = {"a": a, "b": b, "c": c}
    assert starts.next_at(running) == 100.0 + START_RECORD_DELAY
    assert starts.due(100.0 + START_RECORD_DELAY / 2, running) == []
    del running["a"]  # a returned: it is due no record
    running["c"] = retried  # c's first attempt failed and a retry runs: not yet due
    assert starts.next_at(running) == 101.0 + START_RECORD_DELAY
    before = datetime.now(UTC)
    (due,) = starts.due(103.0, running)
    assert due[0] is b
    assert abs((before - due[1]).total_seconds() - 2.0) < 0.5  # launched 2 s before "now"
    assert starts.next_at(running) is None


def test_an_attempt_queued_in_the_executor_is_due_a_start_record_only_once_taken() -> None:
    wf = flowdag.Workflow("w")
    for name in "ab":
        wf.add_node(name, lambda: 1)
    dag, codec = wf.build(), MemoryStore().codec
    a, b = (Attempt(dag.specs[name], "r", 1, {}, {}, codec) for name in "ab")
    starts = Starts(queued=True)
    starts.add(a, 100.0)
    starts.add(b, 100.0)
    running = {"a": a, "b": b}
    taken = datetime.now(UTC)
    a.started_at = taken  # a worker took a; b still waits in the executor's queue
    assert starts.due(101.0, running) == [(a, taken)]
    assert starts.next_at(running) == 101.0 + START_RECORD_DELAY  # b: looked at again
    assert starts.due(101.0 + START_RECORD_DELAY / 2, running) == []
    b.started_at = later = datetime.now(UTC)
    assert starts.due(102.0, running) == [(b, later)]
    assert starts.next_at(running) is None


# -- dropping superseded start records (pure) -----------------------------------------------

NOW = datetime(2026, 11, 30, 12, 0, tzinfo=UTC)
ONE = MemoryStore().codec.encode(1)


def record(node: str, status: NodeStatus, attempts: int = 1) -> NodeRecord:
    done = status is not RUNNING
    return NodeRecord(
        node,
        status,
        attempts,
        NOW,
        NOW if done else None,
        data={f"{node}-{attempts}": ONE} if status is NodeStatus.COMPLETED else {},
    )


S, C, F = RUNNING, NodeStatus.COMPLETED, NodeStatus.FAILED


@pytest.mark.parametrize(
    ("batch", "kept"),
    [
        ([], []),
        ([("a", C)], [0]),
        ([("a", S)], [0]),
        ([("a", S), ("a", C)], [1]),
        ([("a", S), ("b", S), ("a", C)], [1, 2]),
        ([("a", S), ("a", S)], [1]),  # a retry's start supersedes the first
        ([("a", C), ("b", S), ("c", F), ("b", C)], [0, 2, 3]),
        ([("a", C), ("a", S)], [0, 1]),  # never happens, but a later start is kept
    ],
)
def test_latest_drops_superseded_start_records(
    batch: list[tuple[str, NodeStatus]], kept: list[int]
) -> None:
    records = [record(node, status) for node, status in batch]
    assert latest(records) == [records[i] for i in kept]


statuses = st.sampled_from([RUNNING, RUNNING, NodeStatus.COMPLETED, NodeStatus.FAILED])
batches = st.lists(
    st.tuples(st.sampled_from("abcd"), statuses, st.integers(1, 3)).map(lambda item: record(*item)),
    max_size=12,
)


@given(batches)
def test_committing_latest_is_committing_the_batch(batch: list[NodeRecord]) -> None:
    def committed(records: list[NodeRecord]) -> RunState:
        with MemoryStore() as store:
            store.save(RunState("r", "w", {name: NodeState() for name in "abcd"}))
            if records:
                store.commit("r", records)
            return store.load("r")

    kept = latest(batch)
    assert committed(kept) == committed(batch)
    assert [r for r in batch if r.status is not RUNNING] == [
        r for r in kept if r.status is not RUNNING
    ]
    for i, r in enumerate(kept):  # no start record is followed by a record of its node
        assert r.status is not RUNNING or all(later.node != r.node for later in kept[i + 1 :])


@pytest.mark.parametrize("scheme", ["memory", *DISK_STORES])
def test_every_store_keeps_a_start_record_and_its_finish_replaces_it(
    tmp_path: Path, scheme: str
) -> None:
    url = "memory://" if scheme == "memory" else f"{scheme}://{tmp_path / 's'}"
    with open_store(url) as store:
        store.save(RunState("r", "w", {"a": NodeState()}))
        store.commit("r", [NodeRecord("a", RUNNING, 2, NOW)])
        assert store.load_statuses("r").nodes["a"] == NodeState(RUNNING, 2, NOW)
        assert store.load("r").status is flowdag.RunStatus.RUNNING
        output = store.codec.encode(7)
        store.commit("r", [NodeRecord("a", NodeStatus.COMPLETED, 2, NOW, NOW, None, output)])
        assert store.load("r").nodes["a"] == NodeState(NodeStatus.COMPLETED, 2, NOW, NOW, 7)
