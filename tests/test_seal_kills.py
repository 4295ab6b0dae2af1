"""SIGKILL while a resume completes a run and seals it, on every disk store.

A run whose node ``b`` failed is resumed by a child process that kills itself
at the N-th step that changes the store (LMDB: its record and commit writers,
the marker that holds the seal; the journal stores: every write, sync and
rename, the seal file's included), at every step. After each kill, from the store
opened afresh here: a seal, if there is one, is the truth (the run is
completed and a full plan reuses every node); a resume completes the run;
running it again then calls nothing and gives the stored run.
"""

from __future__ import annotations

import os
import shutil
from pathlib import Path

import pytest

import flowdag
from flowdag import Workflow
from flowdag._decide import UNCHANGED
from flowdag._fingerprint import node_fingerprints
from flowdag.resume import plan_call
from flowdag.stores import lmdb_store, open_store
from flowdag.stores._lmdb_runs import RunEntries
from tests.forkserver import ForkServer
from tests.stores.kill_steps import KillAt


def node_b(a: int) -> int:
    if os.environ.get("FLOWDAG_SEAL_FAIL"):
        raise RuntimeError("b fails")
    return a * 2


def workflow() -> Workflow:
    wf = Workflow("seal-kills")
    wf.add_node("a", lambda: 3)
    wf.add_node("b", node_b, deps=["a"])
    wf.add_node("c", lambda a, b: [a, b], deps=["a", "b"])
    for i in range(4):  # a few more records to commit
        wf.add_node(f"d{i}", lambda c, i=i: [*c, i], deps=["c"])
    return wf


CALLS = ("write", "pwrite", "fsync", "fdatasync", "ftruncate", "rename", "replace", "unlink")


def run_job(url: str, kill_at: int, fail: bool, at_close: bool = False) -> None:
    """In a forked child: run `workflow`, SIGKILLing itself at the ``kill_at``-th step
    (``at_close``: at the store's close, after the run and its seal)."""
    if fail:
        os.environ["FLOWDAG_SEAL_FAIL"] = "1"
    else:
        os.environ.pop("FLOWDAG_SEAL_FAIL", None)
    kill = KillAt(kill_at)
    store = open_store(url, create=False)
    if at_close:
        kill.patch(type(store), "_close")
    elif url.startswith("lmdb"):  # LMDB writes and syncs in C: kill around it
        kill.patch(lmdb_store, "put_entry")
        kill.patch(RunEntries, "_header", "_put_commit", "_put_marker")
    else:
        kill.patch(os, *CALLS)
    result = flowdag.run(workflow(), run_id="r", store=store, max_workers=1)
    store.close()
    print("steps", kill.calls, result.status)


def full_plan_reuses_all(url: str) -> bool:
    dag = workflow().build()
    with open_store(url, create=False) as store:
        state = store.load("r")
    plan = plan_call(dag, state, "r", allow_changes=False, fingerprints=node_fingerprints(dag))
    return state.status == "completed" and all(v is UNCHANGED for v in plan.verdicts.values())


@pytest.mark.parametrize("kind", ["lmdb", "json", "flatbuffers"])
def test_a_seal_written_is_always_the_truth(
    fork_server: ForkServer, tmp_path: Path, kind: str
) -> None:
    template = f"{kind}://{tmp_path / 'template'}"
    with open_store(template):  # a new store
        pass
    failed = fork_server.run(run_job, template, 0, True)
    assert failed.returncode == 0 and "failed" in failed.stdout, failed.stderr
    shutil.copytree(tmp_path / "template", tmp_path / "whole")
    whole = fork_server.run(run_job, f"{kind}://{tmp_path / 'whole'}", 0, False)
    assert whole.returncode == 0 and "completed" in whole.stdout, whole.stderr
    total = int(whole.stdout.split()[1])
    killed = sealed = 0
    for kill_at in range(total + 1):  # 0: killed as the store closes, after the seal
        root = tmp_path / str(kill_at)
        shutil.copytree(tmp_path / "template", root)
        url = f"{kind}://{root}"
        at_close = kill_at == 0
        code = fork_server.run(run_job, url, kill_at or 1, False, at_close).returncode
        assert code in (-9, 0), f"the child exited {code} at kill point {kill_at} of {total}"
        killed += code == -9
        with open_store(url, create=False) as store:
            seal = store._sealed("r")
        if seal is not None:
            sealed += 1
            assert full_plan_reuses_all(url), f"kill at {kill_at}: a seal on an unfinished run"
        resumed = fork_server.run(run_job, url, 0, False)
        assert resumed.returncode == 0 and "completed" in resumed.stdout, resumed.stderr
        with open_store(url, create=False) as store:
            assert store._sealed("r") is not None, f"kill at {kill_at}: resumed, not sealed"
            again = flowdag.run(workflow(), run_id="r", store=store)
            assert dict(again.nodes) == store.load("r").nodes
            assert again.outputs["d3"] == [3, 6, 3]
        shutil.rmtree(root)
    # Group commit batches as the thread goes: a run may make fewer steps than the first.
    assert killed >= total * 3 // 4, f"killed at {killed} of {total} points only"
    assert sealed >= 1  # killed at close, after the seal's write, at least
