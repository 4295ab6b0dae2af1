"""``flowdag explain RUN_ID`` and `flowdag.explain`: why each stored node holds what it holds.

Stored runs are written whole (`Store.save`) with the provenance a run
records, on every store kind, and read back by the library and the CLI; a run
killed with SIGKILL mid-way and the fixture stores of the release before
provenance (run header format 3) explain too.
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import textwrap
import time
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import pytest

import flowdag
from flowdag.cli import main
from flowdag.explain import NO_REASON, Explanation, explain_state, explain_stored, topological
from flowdag.state import (
    AttemptInfo,
    ErrorInfo,
    NodeState,
    NodeStatus,
    Override,
    Provenance,
    Reason,
    RunState,
)
from flowdag.stores import open_store
from tests.stores.fixtures import legacy4
from tests.stores.test_history_fixtures import copy_fixture

ROOT = Path(__file__).resolve().parent.parent
T0 = datetime(2026, 11, 30, 12, 0, tzinfo=UTC)
SCHEMES = ("memory", "lmdb", "json", "flatbuffers")
DISK = ("lmdb", "json", "flatbuffers")

CHANGED = Reason("code_changed", "helper clean_rows (etl/helpers.py) changed")
PINNED = Reason("manual", "loaded by hand: ticket 12")
FORCED = Reason("forced", "invalidated by ann@host: bad rows")
INPUT = Reason("input_changed", "'clean' changed")


@pytest.fixture(autouse=True)
def _isolate(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> Iterator[None]:
    monkeypatch.setattr(sys, "path", list(sys.path))
    monkeypatch.chdir(tmp_path)
    monkeypatch.delenv("FORCE_COLOR", raising=False)
    monkeypatch.delenv("FLOWDAG_KEY", raising=False)
    monkeypatch.setenv("COLUMNS", "200")
    yield


def ran(
    minute: int,
    deps: tuple[str, ...] = (),
    reason: Reason | None = None,
    *,
    status: NodeStatus = NodeStatus.COMPLETED,
    error: ErrorInfo | None = None,
    manual: bool = False,
    audit: tuple[Override, ...] = (),
    provenance: bool = True,
) -> NodeState:
    """A node that ran, ``minute`` minutes after `T0`, with (or without) its provenance."""
    start, end = T0 + timedelta(minutes=minute), T0 + timedelta(minutes=minute, seconds=5)
    return NodeState(
        status=status,
        attempts=1,
        started_at=start,
        finished_at=None if status is NodeStatus.RUNNING else end,
        output=minute if status is NodeStatus.COMPLETED else None,
        error=error,
        deps=deps,
        history=() if status is NodeStatus.RUNNING else (AttemptInfo(1, start, end, error),),
        provenance=Provenance(fingerprint="f" * 32, reason=reason, manual=manual, audit=audit)
        if provenance
        else None,
    )


def etl_state() -> RunState:
    """Every kind of stored node, stored out of topological order."""
    boom = ErrorInfo("ValueError", "bad row 7\nsecond line", "Traceback ...")
    nodes = {
        "report": NodeState(deps=("load", "audit")),  # skipped below, through "load"
        "extract": ran(0, (), Reason("new", "never ran before")),
        "clean": ran(9, ("extract",), CHANGED),
        "legacy": ran(1, ("extract",), provenance=False),
        "load": ran(10, ("clean",), INPUT, status=NodeStatus.FAILED, error=boom),
        "fixed": ran(3, ("extract",), PINNED, manual=True),
        "audit": ran(4, ("fixed",), FORCED, status=NodeStatus.PENDING),
        "fresh": NodeState(deps=("extract",)),
        "slow": ran(11, ("extract",), status=NodeStatus.RUNNING, provenance=False),
    }
    nodes["report"].status = NodeStatus.SKIPPED
    nodes["audit"].output = None
    nodes["audit"].provenance = Provenance(
        reason=FORCED, audit=(Override("invalidate", "ann@host", T0, "bad rows"),)
    )
    return RunState("r1", "etl", nodes=nodes)


#: What `etl_state` explains to, in topological order (ties by name).
EXPECTED = [
    ("extract", "completed", "new", "never ran before"),
    ("clean", "completed", "code_changed", CHANGED.detail),
    ("fixed", "completed", "manual", PINNED.detail),
    ("audit", "pending", "forced", FORCED.detail),
    ("fresh", "pending", "new", "it never ran"),
    ("legacy", "completed", "reused", NO_REASON.detail),
    (
        "load",
        "failed",
        "new",
        "failed at attempt 1: ValueError: bad row 7; second line "
        "(it ran: input_changed: 'clean' changed)",
    ),
    ("report", "skipped", "new", "skipped: upstream node 'load' failed"),
    (
        "slow",
        "interrupted",
        "interrupted",
        "attempt 1 was in flight when the run stopped (a crash or a kill)",
    ),
]


def rows(explained: list[Explanation]) -> list[tuple[str, str, str | None, str | None]]:
    return [
        (e.node, e.status, None if e.reason is None else e.reason.code,
         None if e.reason is None else e.reason.detail)
        for e in explained
    ]  # fmt: skip


# -- the pure part -----------------------------------------------------------------------


def test_every_kind_of_stored_node_is_explained() -> None:
    assert rows(explain_state(etl_state())) == EXPECTED


def test_a_node_running_in_a_live_run_has_no_reason_yet() -> None:
    [slow] = [e for e in explain_state(etl_state(), live=True) if e.node == "slow"]
    assert (slow.status, slow.reason, slow.finished_at) == ("running", None, None)


def test_completed_nodes_say_when_they_ran() -> None:
    explained = {e.node: e for e in explain_state(etl_state())}
    assert explained["clean"].finished_at == T0 + timedelta(minutes=9, seconds=5)
    assert explained["fresh"].finished_at is None


@pytest.mark.parametrize(
    ("deps", "order"),
    [
        ({"c": ("b",), "b": ("a",), "a": ()}, ["a", "b", "c"]),
        ({"d": ("b", "c"), "c": ("a",), "b": ("a",), "a": ()}, ["a", "b", "c", "d"]),
        ({"b": (), "a": ("b",), "c": ()}, ["b", "a", "c"]),
        ({"x": (), "y": (), "z": ("x",)}, ["x", "y", "z"]),
        ({"a": ("gone",), "b": ()}, ["a", "b"]),  # a dep the run does not hold
        ({"a": ("b",), "b": ("a",), "c": ()}, ["c", "a", "b"]),  # damaged: a cycle comes last
    ],
)
def test_topological_order_ties_by_name(deps: dict[str, tuple[str, ...]], order: list[str]) -> None:
    state = RunState("r", "w", nodes={n: NodeState(deps=d) for n, d in deps.items()})
    assert topological(state) == order


def test_skipped_names_every_failed_upstream_through_skipped_nodes() -> None:
    failed = ErrorInfo("RuntimeError", "x")
    nodes = {
        "a": NodeState(NodeStatus.FAILED, 1, error=failed),
        "b": NodeState(NodeStatus.FAILED, 2, error=failed),
        "s": NodeState(NodeStatus.SKIPPED, deps=("a",)),
        "t": NodeState(NodeStatus.SKIPPED, deps=("s", "b")),
    }
    explained = {e.node: e.reason for e in explain_state(RunState("r", "w", nodes=nodes))}
    assert explained["t"] == Reason("new", "skipped: upstream nodes 'a', 'b' failed")
    assert explained["b"] == Reason("new", "failed at attempt 2: RuntimeError: x")


# -- every store kind, the library and the CLI --------------------------------------------


def url(scheme: str, tmp_path: Path) -> str:
    return "memory://" if scheme == "memory" else f"{scheme}://{tmp_path / scheme}"


def cli(capsys: pytest.CaptureFixture[str], *args: str) -> tuple[int, str, str]:
    code = main(list(args))
    captured = capsys.readouterr()
    return code, captured.out, captured.err


@pytest.mark.parametrize("scheme", SCHEMES)
def test_every_store_kind_explains_what_it_stored(
    scheme: str, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    with open_store(url(scheme, tmp_path)) as store:
        store.save(etl_state())
        explained = explain_stored(store, "r1")
    assert [(n, r.code if r else None, r.detail if r else None) for n, r in explained.items()] == [
        (node, code, detail) for node, _, code, detail in EXPECTED
    ]
    if scheme == "memory":
        return  # a memory store lives in its process: the CLI opens another
    code, out, err = cli(capsys, "explain", "r1", "--store", url(scheme, tmp_path))
    assert (code, err) == (0, "")
    lines = out.splitlines()
    last = (T0 + timedelta(minutes=10, seconds=5)).astimezone().strftime("%Y-%m-%d %H:%M:%S")
    assert lines[0] == f"run r1  workflow etl  interrupted (last commit {last})"
    assert lines[1].split() == ["node", "status", "code", "ran", "at", "why"]
    body = lines[2:]
    assert [line.split()[:3] for line in body] == [[n, s, c] for n, s, c, _ in EXPECTED]
    column = lines[1].index("code")  # codes aligned under their header
    assert [line[column:].split()[0] for line in body] == [c for _, _, c, _ in EXPECTED]
    for line, (_, _, _, detail) in zip(body, EXPECTED, strict=True):
        assert line.endswith(detail)  # the whole detail: the helper and its file, the error
    ran_at = (T0 + timedelta(minutes=9, seconds=5)).astimezone().strftime("%Y-%m-%d %H:%M:%S")
    assert ran_at in body[1]  # clean's line


def chain(broken: bool) -> flowdag.Workflow:
    """a -> b -> c, and d apart; b raises when ``broken``."""
    wf = flowdag.Workflow("chain")
    wf.add_node("a", lambda: 1)
    wf.add_node("b", _b(broken), deps=["a"])
    wf.add_node("c", lambda b: b + 1, deps=["b"])
    wf.add_node("d", lambda: 0)
    return wf


def _b(broken: bool) -> Any:
    def b(a: int) -> int:
        if broken:
            raise ValueError("b is broken")
        return a * 10

    return b


@pytest.mark.parametrize("scheme", SCHEMES)
def test_every_store_kind_explains_its_runs(
    scheme: str, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    with open_store(url(scheme, tmp_path)) as store:
        first = flowdag.run(chain(broken=True), run_id="r", store=store)
        explained = explain_stored(store, "r")
        reasons = getattr(first, "reasons", None)  # what the run says of its own nodes
        for name in ("a", "d"):
            assert explained[name] == (NO_REASON if reasons is None else reasons[name])
        assert explained["b"] is not None and explained["b"].code == "new"
        assert "ValueError: b is broken" in explained["b"].detail
        assert explained["c"] == Reason("new", "skipped: upstream node 'b' failed")
        before = {e.node: e for e in explain_state(store.load_statuses("r"))}
        mended = flowdag.run(chain(broken=False), run_id="r", store=store)
        assert mended.ok
        after = {e.node: e for e in explain_state(store.load_statuses("r"))}
    # Reused nodes keep what they said and when they ran; b and c ran in the second call.
    assert (after["a"], after["d"]) == (before["a"], before["d"])
    for name in ("b", "c"):
        assert after[name].status == "completed"
        assert after[name].finished_at != before[name].finished_at
        reasons = getattr(mended, "reasons", None)
        assert after[name].reason == (NO_REASON if reasons is None else reasons[name])
    if scheme == "memory":
        return  # a memory store lives in its process: the CLI opens another
    code, out, err = cli(capsys, "explain", "r", "--store", url(scheme, tmp_path), "--json")
    assert (code, err) == (0, "")
    shown = [(n["node"], n["status"], n["code"], n["detail"]) for n in json.loads(out)["nodes"]]
    assert shown == [
        (e.node, e.status, e.reason.code, e.reason.detail)
        for e in (after[n] for n in ("a", "b", "c", "d"))
        if e.reason is not None
    ]


@pytest.mark.parametrize("scheme", DISK)
def test_json_shape(scheme: str, tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    with open_store(url(scheme, tmp_path)) as store:
        store.save(etl_state())
    code, out, err = cli(capsys, "explain", "r1", "--store", url(scheme, tmp_path), "--json")
    assert (code, err) == (0, "")
    by_option = cli(capsys, "explain", "--run-id", "r1", "--store", url(scheme, tmp_path), "--json")
    assert by_option == (code, out, err)  # --run-id ID: as RUN_ID
    document = json.loads(out)
    assert list(document) == ["run_id", "workflow", "status", "plan", "nodes"]
    assert (document["run_id"], document["workflow"], document["status"], document["plan"]) == (
        "r1", "etl", "interrupted", False
    )  # fmt: skip
    for node in document["nodes"]:
        assert list(node) == ["node", "status", "code", "detail", "finished_at"]
    got = [(n["node"], n["status"], n["code"], n["detail"]) for n in document["nodes"]]
    assert got == EXPECTED
    finished = {n["node"]: n["finished_at"] for n in document["nodes"]}
    assert finished["clean"] == (T0 + timedelta(minutes=9, seconds=5)).isoformat()
    assert finished["fresh"] is None


# -- bad input: one line, exit 2 -----------------------------------------------------------


@pytest.mark.parametrize(
    ("args", "words"),
    [
        (["explain", "nope"], ["run 'nope' not found"]),
        (["explain", "r1", "--store", "lmdb://elsewhere"], ["no store at"]),
        (["explain", "bad id!"], ["run id"]),
        (["explain"], ["RUN_ID", "--plan"]),
        (["explain", "r1", "--rerun", "failed"], ["--rerun", "--plan"]),
        (["explain", "r1", "--run-id", "r2"], ["--run-id", "--plan"]),
        (["explain", "r1", "--rerun-from", "a"], ["--rerun-from", "--plan"]),
        (["explain", "r1", "--on-code-change", "warn"], ["--on-code-change", "--plan"]),
        (["explain", "--plan", "pipeline.py"], ["--run-id"]),
        (["explain", "--plan", "missing.py", "--run-id", "r1"], ["missing.py"]),
    ],
)
def test_bad_input_is_one_error_line(
    tmp_path: Path, capsys: pytest.CaptureFixture[str], args: list[str], words: list[str]
) -> None:
    with open_store(f"lmdb://{tmp_path / '.flowdag'}") as store:
        store.save(etl_state())
    (tmp_path / "pipeline.py").write_text("import flowdag\nwf = flowdag.Workflow('w')\n")
    code, out, err = cli(capsys, *args)
    assert code == 2 and out == ""
    assert err.startswith("flowdag: error: ") and err.count("\n") == 1, err
    for word in words:
        assert word in err


def test_explain_never_creates_a_store(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    code, _, err = cli(capsys, "explain", "r1", "--store", f"json://{tmp_path / 'none'}")
    assert code == 2 and "no store at" in err
    assert not (tmp_path / "none").exists()


# -- fixture stores of the release before provenance (format 3) ----------------------------


@pytest.mark.parametrize("encrypted", [False, True], ids=["plain", "encrypted"])
@pytest.mark.parametrize("scheme", legacy4.SCHEMES)
def test_a_store_of_the_release_before_explains(
    tmp_path: Path,
    capsys: pytest.CaptureFixture[str],
    monkeypatch: pytest.MonkeyPatch,
    scheme: str,
    encrypted: bool,
) -> None:
    where = copy_fixture(tmp_path, "legacy4", scheme, encrypted)
    if encrypted:
        monkeypatch.setenv("FLOWDAG_KEY", legacy4.KEY)
    code, out, err = cli(capsys, "explain", legacy4.RUN_ID, "--store", where, "--json")
    assert (code, err) == (0, "")
    nodes = {n["node"]: n for n in json.loads(out)["nodes"]}
    assert list(nodes) == ["dump", "extract", "flaky", "report", "wobbly", "wrap", "load"]
    for name in ("extract", "report", "dump", "wrap", "wobbly"):
        assert (nodes[name]["code"], nodes[name]["detail"]) == ("reused", NO_REASON.detail)
    assert (
        nodes["flaky"]["code"] == "new"
        and "RuntimeError: planned failure 2" in (nodes["flaky"]["detail"])
    )
    assert (nodes["load"]["status"], nodes["load"]["detail"]) == (
        "skipped", "skipped: upstream node 'flaky' failed"
    )  # fmt: skip
    code, out, err = cli(capsys, "explain", legacy4.RUN_ID, "--store", where)
    assert code == 0 and "flaky" in out and err == ""


# -- a run killed mid-way ------------------------------------------------------------------

SLOW = """
import pathlib, time
import flowdag

wf = flowdag.Workflow("slow")

@wf.node
def a():
    return 1

@wf.node(deps=["a"])
def b(a):
    pathlib.Path("b-started").touch()
    time.sleep(600)

@wf.node(deps=["b"])
def c(b):
    return b
"""


def explain_json(tmp_path: Path, store: str) -> dict[str, Any]:
    done = subprocess.run(
        [sys.executable, "-m", "flowdag", "explain", "r", "--json", "--store", store],
        cwd=tmp_path, env={**os.environ, "PYTHONPATH": str(ROOT)}, capture_output=True,
        text=True, timeout=120,
    )  # fmt: skip
    assert done.returncode == 0, done.stderr
    return json.loads(done.stdout)  # type: ignore[no-any-return]


def test_a_live_run_then_the_same_run_killed(tmp_path: Path) -> None:
    (tmp_path / "pipeline.py").write_text(textwrap.dedent(SLOW))
    store = f"lmdb://{tmp_path / 's'}"
    runner = subprocess.Popen(
        [sys.executable, "-m", "flowdag", "run", "pipeline.py", "--run-id", "r", "--store", store],
        cwd=tmp_path, env={**os.environ, "PYTHONPATH": str(ROOT)},
        stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
    )  # fmt: skip
    try:
        deadline = time.monotonic() + 60
        while not (tmp_path / "b-started").exists():
            assert runner.poll() is None and time.monotonic() < deadline
            time.sleep(0.05)
        live = explain_json(tmp_path, store)
        while live["nodes"][1]["status"] != "running":  # b's start record is committed apart
            assert runner.poll() is None and time.monotonic() < deadline
            time.sleep(0.05)
            live = explain_json(tmp_path, store)
        assert live["status"] == "running"
        b = live["nodes"][1]
        assert (b["node"], b["status"], b["code"], b["detail"]) == (
            "b", "running", None, "running now"
        )  # fmt: skip
    finally:
        runner.send_signal(signal.SIGKILL)
        runner.wait(timeout=30)
    dead = explain_json(tmp_path, store)
    assert dead["status"] == "interrupted"
    got = [(n["node"], n["status"], n["code"]) for n in dead["nodes"]]
    assert got[1:] == [("b", "interrupted", "interrupted"), ("c", "pending", "new")]
    assert got[0][:2] == ("a", "completed") and dead["nodes"][0]["finished_at"] is not None
