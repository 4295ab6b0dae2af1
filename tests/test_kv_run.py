"""ctx.kv inside runs: writes commit with the node's completion, exactly once, on every store."""

from __future__ import annotations

import os
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import pytest

import flowdag
from flowdag import Context, NodeStatus, Workflow
from flowdag.stores.base import Store
from tests import kv_stores
from tests.kv_stores import open_kind
from tests.stores.conformance import ROOT

store, disk_store = kv_stores.store, kv_stores.disk_store  # fixtures: every store kind


BIG = list(range(100_000))  # above the 256 KiB inline limit


def add_one(ctx: Context) -> None:
    ctx.kv.update("count", lambda old: (old or 0) + 1)


def counter_workflow(n: int) -> Workflow:
    wf = Workflow("counter")
    for i in range(n):
        wf.add_node(f"n{i}", add_one)
    return wf


def test_concurrent_updates_compose(store: Store) -> None:
    result = flowdag.run(counter_workflow(100), store=store, max_workers=16)
    assert result.status == "completed"
    assert store.kv().get("count") == 100


def test_entries_record_the_writing_run_and_node(store: Store) -> None:
    wf = Workflow("w")

    @wf.node()
    def advance(ctx: Context) -> None:
        ctx.kv.set("billing:cursor", ctx.kv.get("billing:cursor", default=0) + 1, ttl="14d")

    flowdag.run(wf, run_id="r1", store=store)
    entry = store.kv().entry("billing:cursor")
    assert entry is not None
    assert (entry.value, entry.run_id, entry.node) == (1, "r1", "advance")
    assert entry.expires_at is not None
    flowdag.run(wf, run_id="r2", store=store)  # a later run reads what r1 wrote
    entry = store.kv().entry("billing:cursor")
    assert entry is not None and (entry.value, entry.run_id) == (2, "r2")


def test_reads_see_committed_values_and_the_nodes_own_writes(store: Store) -> None:
    store.kv().set("seen", "committed")
    store.kv().set("old", 1)
    wf = Workflow("w")
    seen: dict[str, Any] = {}

    @wf.node()
    def writer(ctx: Context) -> None:
        seen["before"] = ctx.kv.get("seen")
        ctx.kv.set("seen", "mine")
        seen["after_set"] = ctx.kv.get("seen")
        ctx.kv.update("seen", lambda old: old + "+1")
        seen["after_update"] = ctx.kv.get("seen")
        seen["deleted"] = ctx.kv.delete("old")
        seen["after_delete"] = ctx.kv.get("old", default="absent")
        seen["committed_meanwhile"] = store.kv().get("seen")  # staged, not committed

    @wf.node(deps=["writer"])
    def reader(writer: None, ctx: Context) -> None:
        seen["downstream"] = ctx.kv.get("seen")

    assert flowdag.run(wf, store=store).status == "completed"
    assert seen == {
        "before": "committed",
        "after_set": "mine",
        "after_update": "mine+1",
        "deleted": True,
        "after_delete": "absent",
        "committed_meanwhile": "committed",
        "downstream": "mine+1",
    }
    assert store.kv().get("old") is None


def test_a_failing_node_writes_nothing(store: Store) -> None:
    wf = Workflow("w")

    @wf.node()
    def fails(ctx: Context) -> None:
        ctx.kv.set("a", 1)
        ctx.kv.update("count", lambda old: (old or 0) + 1)
        raise RuntimeError("boom")

    @wf.node()
    def fine(ctx: Context) -> None:
        ctx.kv.set("b", 2)

    result = flowdag.run(wf, store=store)
    assert result.nodes["fails"].status is NodeStatus.FAILED
    assert store.kv().items() == [("b", 2)]


def test_a_timed_out_node_writes_nothing(store: Store) -> None:
    wf = Workflow("w")

    @wf.node(timeout=0.05)
    def slow(ctx: Context) -> None:
        ctx.kv.set("late", 1)
        time.sleep(0.5)  # abandoned: its thread runs on, its result discarded

    result = flowdag.run(wf, store=store)
    assert result.nodes["slow"].status is NodeStatus.FAILED
    time.sleep(0.6)  # the abandoned attempt has returned by now
    assert store.kv().items() == []


def test_retries_apply_only_the_successful_attempts_writes(store: Store) -> None:
    wf = Workflow("w")

    @wf.node(retries=2, retry_delay=0)
    def flaky(ctx: Context) -> None:
        ctx.kv.update("count", lambda old: (old or 0) + 1)
        ctx.kv.set(f"attempt:{ctx.attempt}", True)
        if ctx.attempt < 3:
            raise RuntimeError("not yet")

    result = flowdag.run(wf, store=store)
    assert result.status == "completed"
    assert store.kv().items() == [("attempt:3", True), ("count", 1)]


def test_a_resume_never_applies_a_completed_nodes_writes_again(store: Store) -> None:
    wf = Workflow("w")
    fixed = {"b": False}

    @wf.node()
    def a(ctx: Context) -> None:
        ctx.kv.update("count", lambda old: (old or 0) + 1)

    @wf.node(deps=["a"])
    def b(a: None, ctx: Context) -> None:
        if not fixed["b"]:
            raise RuntimeError("broken")
        ctx.kv.update("count", lambda old: (old or 0) + 10)

    assert flowdag.run(wf, run_id="r", store=store).status == "failed"
    assert store.kv().get("count") == 1
    fixed["b"] = True
    assert flowdag.run(wf, run_id="r", store=store).status == "completed"  # resumes: b only
    assert store.kv().get("count") == 11
    assert flowdag.run(wf, run_id="r", store=store).status == "completed"  # nothing to do
    assert store.kv().get("count") == 11


def test_an_update_that_raises_at_commit_fails_its_node_alone(store: Store) -> None:
    store.kv().set("text", "not a number")
    wf = Workflow("w")

    @wf.node()
    def bad(ctx: Context) -> str:
        ctx.kv.set("bad:other", 1)
        ctx.kv.update("text", lambda old: old + 1)  # raises TypeError at commit
        return "out"

    @wf.node(deps=["bad"])
    def after(bad: str) -> None: ...

    @wf.node()
    def good(ctx: Context) -> None:
        ctx.kv.update("count", lambda old: (old or 0) + 1)

    result = flowdag.run(wf, store=store)
    state = result.nodes["bad"]
    assert state.status is NodeStatus.FAILED
    assert state.error is not None and "'text'" in state.error.message
    assert result.nodes["after"].status is NodeStatus.SKIPPED
    assert result.nodes["good"].status is NodeStatus.COMPLETED
    assert store.kv().items() == [("count", 1), ("text", "not a number")]
    assert store.load(result.run_id).nodes["bad"].status is NodeStatus.FAILED


def test_a_value_that_cannot_be_stored_fails_the_node_naming_key_and_type(store: Store) -> None:
    wf = Workflow("w")

    @wf.node()
    def bad(ctx: Context) -> None:
        ctx.kv.set("k", object())

    result = flowdag.run(wf, store=store)
    error = result.nodes["bad"].error
    assert error is not None and error.type == "SerializationError"
    assert "'k'" in error.message and "object" in error.message
    assert store.kv().items() == []


def test_ttl_inside_a_node(store: Store) -> None:
    wf = Workflow("w")

    @wf.node()
    def write(ctx: Context) -> None:
        ctx.kv.set("gone", 1, ttl=0)
        ctx.kv.set("kept", 2, ttl="1h")

    flowdag.run(wf, store=store)
    assert store.kv().items() == [("kept", 2)]


def test_a_large_value_from_a_node_becomes_a_blob(store: Store) -> None:
    wf = Workflow("w")

    @wf.node()
    def write(ctx: Context) -> None:
        ctx.kv.set("big", BIG)

    flowdag.run(wf, store=store)
    assert store.kv().get("big") == BIG
    assert len(store.blobs.entries()) == 1


def test_process_workers_send_back_writes_and_lambda_updates(tmp_path: Path) -> None:
    # A memory store: the workers cannot read it, yet their writes and lambdas come back.
    with open_kind("memory", tmp_path) as store:
        result = flowdag.run(counter_workflow(4), store=store, executor="processes", max_workers=2)
        assert result.status == "completed"
        assert store.kv().get("count") == 4


def test_process_workers_read_committed_values(disk_store: Store) -> None:
    disk_store.kv().set("base", 10)
    result = flowdag.run(reader_workflow(), store=disk_store, executor="processes", max_workers=1)
    assert result.status == "completed"
    assert disk_store.kv().get("copy") == 11


def copy_plus_one(ctx: Context) -> None:
    ctx.kv.set("copy", ctx.kv.get("base") + 1)


def reader_workflow() -> Workflow:
    wf = Workflow("reader")
    wf.add_node("copy", copy_plus_one)
    return wf


@pytest.mark.parametrize("executor", ["threads", "asyncio"])
def test_every_in_process_executor(store: Store, executor: str) -> None:
    assert flowdag.run(counter_workflow(10), store=store, executor=executor).status == "completed"
    assert store.kv().get("count") == 10


# Runs 100 nodes, each adding 1 to "count", in its own run of the store at argv[1].
COUNT_IN_A_PROCESS = """
import sys
import flowdag
from flowdag.stores import open_store
wf = flowdag.Workflow("counter")
for i in range(100):
    wf.add_node(f"n{i}", lambda ctx: ctx.kv.update("count", lambda old: (old or 0) + 1))
print("ready", flush=True)
sys.stdin.readline()  # both start together
with open_store(sys.argv[1]) as store:
    print(flowdag.run(wf, store=store, max_workers=4).status, flush=True)
"""


def test_two_processes_updating_one_key_compose(disk_store: Store) -> None:
    url = f"{disk_store.scheme}://{disk_store.path}"  # type: ignore[attr-defined]
    procs = [
        subprocess.Popen(
            [sys.executable, "-c", COUNT_IN_A_PROCESS, url],
            stdin=subprocess.PIPE,
            stdout=subprocess.PIPE,
            text=True,
            env={**os.environ, "PYTHONPATH": str(ROOT)},
        )
        for _ in range(2)
    ]
    try:
        for proc in procs:
            assert proc.stdout is not None and proc.stdout.readline() == "ready\n"
        for proc in procs:
            assert proc.stdin is not None
            proc.stdin.write("go\n")
            proc.stdin.flush()
        outputs = [proc.communicate(timeout=120)[0] for proc in procs]
    finally:
        for proc in procs:
            proc.kill()
    assert outputs == ["completed\n", "completed\n"]
    assert disk_store.kv().get("count") == 200
