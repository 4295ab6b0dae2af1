"""``flowdag explain --plan``: what ``flowdag run`` would run and why, with nothing written.

A workflow file and a helper module beside it are edited between calls; each
plan must leave the store's files byte-identical and agree with the run that
follows it: the nodes it says run, run with those reasons; those it reuses
keep their records; a provisional node either ran because an input changed
or kept its record (early cutoff).
"""

from __future__ import annotations

import hashlib
import json
import os
import signal
import subprocess
import sys
import textwrap
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

import flowdag.resume
from flowdag.cli import main
from flowdag.cli.app import make_parser

pytestmark = pytest.mark.skipif(
    not hasattr(flowdag.resume, "plan_call"), reason="needs the planning of run() (plan_call)"
)

ROOT = Path(__file__).resolve().parent.parent
DISK = ("lmdb", "json", "flatbuffers")

HELPERS = """
def scale(x):
    return x * 2
"""

# A diamond a -> (b, c) -> d, and e apart; e fails while a file "fail" exists (in the cwd).
PIPELINE = """
import os
import flowdag
import helpers

wf = flowdag.Workflow("diamond")

@wf.node
def a():
    return 1

@wf.node(deps=["a"])
def b(a):
    return helpers.scale(a)

@wf.node(deps=["a"])
def c(a):
    return a + 100

@wf.node(deps=["b", "c"])
def d(b, c):
    return b + c

@wf.node
def e():
    if os.path.exists("fail"):
        raise RuntimeError("e is broken")
    return "e"
"""


@pytest.fixture(autouse=True)
def _isolate(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> Iterator[None]:
    monkeypatch.setattr(sys, "path", list(sys.path))
    monkeypatch.setattr(sys, "dont_write_bytecode", True)  # an edit within a second counts
    monkeypatch.chdir(tmp_path)
    monkeypatch.delenv("FORCE_COLOR", raising=False)
    monkeypatch.delenv("FLOWDAG_KEY", raising=False)
    monkeypatch.setenv("COLUMNS", "200")
    (tmp_path / "helpers.py").write_text(textwrap.dedent(HELPERS))
    (tmp_path / "pipeline.py").write_text(textwrap.dedent(PIPELINE))
    yield
    sys.modules.pop("helpers", None)


def cli(capsys: pytest.CaptureFixture[str], *args: str) -> tuple[int, str, str]:
    sys.modules.pop("helpers", None)  # as a new process would: the edited module afresh
    code = main(list(args))
    captured = capsys.readouterr()
    return code, captured.out, captured.err


def edit(path: Path, old: str, new: str) -> None:
    text = path.read_text()
    assert old in text
    path.write_text(text.replace(old, new))


def files(root: Path) -> dict[str, str]:
    """Every file under ``root`` and its sha256; directories as None-like markers."""
    found: dict[str, str] = {}
    for path in sorted(root.rglob("*")):
        name = str(path.relative_to(root))
        if path.is_dir():
            found[name] = "dir"
        elif path.name != "lock.mdb":  # LMDB's reader table: every reader writes it
            found[name] = hashlib.sha256(path.read_bytes()).hexdigest()
    return found


def explained(capsys: pytest.CaptureFixture[str], store: str) -> dict[str, dict[str, Any]]:
    code, out, err = cli(capsys, "explain", "r", "--store", store, "--json")
    assert code == 0, err
    return {node["node"]: node for node in json.loads(out)["nodes"]}


def planned(
    capsys: pytest.CaptureFixture[str], tmp_path: Path, store: str, *options: str
) -> dict[str, dict[str, Any]]:
    """The plan, checked to leave the store's files as they were."""
    before = files(tmp_path / "s")
    code, out, err = cli(
        capsys, "explain", "--plan", "pipeline.py", "--run-id", "r", "--store", store,
        "--json", *options,
    )  # fmt: skip
    assert code == 0, err
    assert files(tmp_path / "s") == before  # nothing written, nothing created
    document = json.loads(out)
    assert document["plan"] is True
    for node in document["nodes"]:
        assert list(node) == [
            "node", "status", "action", "code", "detail", "warning", "finished_at"
        ]  # fmt: skip
    return {node["node"]: node for node in document["nodes"]}


def run_and_check(
    capsys: pytest.CaptureFixture[str], tmp_path: Path, store: str, *options: str
) -> dict[str, str]:
    """Plan, run with the same options, and check they agree; node -> its plan action."""
    before = explained(capsys, store)
    plan = planned(capsys, tmp_path, store, *options)
    code, _, err = cli(capsys, "run", "pipeline.py", "--run-id", "r", "--store", store, *options)
    assert code in (0, 1), err
    after = explained(capsys, store)
    for name, verdict in plan.items():
        old, new = before.get(name), after[name]  # None: a node new to the run
        ran = old is None or new["finished_at"] != old["finished_at"]
        if verdict["action"] == "run":
            assert ran, name
            if new["status"] == "completed":
                assert (new["code"], new["detail"]) == (verdict["code"], verdict["detail"]), name
        elif verdict["action"] == "reuse":
            assert new == old, name
        else:
            assert verdict["action"] == "provisional", name
            assert new == old or (ran and new["code"] == "input_changed"), (name, new)
    return {name: verdict["action"] for name, verdict in plan.items()}


@pytest.mark.parametrize("scheme", DISK)
def test_plans_leave_the_store_as_it_was_and_agree_with_the_runs(
    scheme: str, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    store = f"{scheme}://{tmp_path / 's'}"
    (tmp_path / "fail").touch()
    assert cli(capsys, "run", "pipeline.py", "--run-id", "r", "--store", store)[0] == 1

    # A helper edited, same output: b runs, d waits for b and is cut off; e failed: runs.
    edit(tmp_path / "helpers.py", "x * 2", "x + x")
    plan = planned(capsys, tmp_path, store)
    assert plan["b"]["code"] == "code_changed" and "helpers.py" in plan["b"]["detail"]
    assert plan["d"]["detail"] == "runs unless 'b' comes back unchanged (early cutoff)"
    assert run_and_check(capsys, tmp_path, store) == {
        "a": "reuse", "b": "run", "c": "reuse", "d": "provisional", "e": "run"
    }  # fmt: skip
    assert explained(capsys, store)["d"]["code"] == "new"  # cut off: its record kept

    # c edited, another output: d runs because its input changed; e still fails.
    edit(tmp_path / "pipeline.py", "a + 100", "a + 200")
    assert run_and_check(capsys, tmp_path, store) == {
        "a": "reuse", "b": "reuse", "c": "run", "d": "provisional", "e": "run"
    }  # fmt: skip
    assert explained(capsys, store)["d"]["code"] == "input_changed"

    # e mended: it runs (it had failed); then nothing changed: every node is reused.
    (tmp_path / "fail").unlink()
    assert set(run_and_check(capsys, tmp_path, store).values()) == {"reuse", "run"}
    assert set(run_and_check(capsys, tmp_path, store).values()) == {"reuse"}


def run_takes(option: str) -> bool:
    """Whether ``flowdag run`` takes ``option`` (added with the overrides)."""
    try:
        make_parser().parse_args(["run", "pipeline.py", option, "a"])
    except SystemExit:
        return False
    return True


@pytest.mark.skipif(not run_takes("--rerun-from"), reason="flowdag run has no --rerun-from yet")
@pytest.mark.parametrize("scheme", ["lmdb", "json"])
def test_plans_of_reruns_asked_for_agree_with_the_runs(
    scheme: str, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    store = f"{scheme}://{tmp_path / 's'}"
    (tmp_path / "fail").touch()
    assert cli(capsys, "run", "pipeline.py", "--run-id", "r", "--store", store)[0] == 1
    (tmp_path / "fail").unlink()
    actions = run_and_check(capsys, tmp_path, store, "--rerun-from", "b")
    # b and d asked for; e failed before, so any resume runs it.
    assert {n for n, action in actions.items() if action == "run"} == {"b", "d", "e"}
    assert [explained(capsys, store)[n]["code"] for n in "bde"] == ["forced", "forced", "new"]
    (tmp_path / "fail").touch()  # e asked for again, and failing
    run = ["run", "pipeline.py", "--run-id", "r", "--store", store, "--rerun-from", "e"]
    assert cli(capsys, *run)[0] == 1
    (tmp_path / "fail").unlink()
    edit(tmp_path / "helpers.py", "x * 2", "x * 3")
    actions = run_and_check(capsys, tmp_path, store, "--rerun", "failed")
    assert actions == {"a": "reuse", "b": "reuse", "c": "reuse", "d": "reuse", "e": "run"}
    # Nothing changed since but b's helper: b runs, and d after it.
    actions = run_and_check(capsys, tmp_path, store)
    assert (actions["b"], actions["d"], actions["e"]) == ("run", "provisional", "reuse")


def test_a_run_not_stored_yet_runs_every_node_and_no_store_is_made(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    for store in (f"lmdb://{tmp_path / 'none'}", "memory://"):
        code, out, err = cli(
            capsys, "explain", "--plan", "pipeline.py", "--run-id", "r", "--store", store
        )
        assert (code, err) == (0, "")
        lines = out.splitlines()
        assert "5 run, 0 provisional, 0 reused" in lines[0] and "a new run" in lines[0]
        assert [line.split()[:3] for line in lines[2:]] == [
            [name, "run", "new"] for name in ("a", "b", "c", "d", "e")
        ]
    assert not (tmp_path / "none").exists()


@pytest.mark.parametrize(
    ("options", "words"),
    [
        (["--rerun-from", "nope"], ["nope", "'a'"]),
        (["--run-id", "other", "r"], ["two run ids"]),
    ],
)
def test_bad_plan_input_is_one_error_line(
    tmp_path: Path, capsys: pytest.CaptureFixture[str], options: list[str], words: list[str]
) -> None:
    code, out, err = cli(capsys, "explain", "--plan", "pipeline.py", "--run-id", "r", *options)
    assert code == 2 and out == ""
    assert err.startswith("flowdag: error: ") and err.count("\n") == 1, err
    for word in words:
        assert word in err


# b hangs while a file "hang" exists (in the cwd), after saying it started.
HANGING = """
import os, pathlib, time
import flowdag

wf = flowdag.Workflow("hanging")

@wf.node
def a():
    return 1

@wf.node(deps=["a"])
def b(a):
    pathlib.Path("b-started").touch()
    while os.path.exists("hang"):
        time.sleep(0.05)
    return a + 1

@wf.node(deps=["b"])
def c(b):
    return b * 10
"""


def test_a_live_run_is_refused_and_a_killed_one_runs_its_interrupted_node(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    (tmp_path / "pipeline.py").write_text(textwrap.dedent(HANGING))
    (tmp_path / "hang").touch()
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
        # The start record of b is committed apart from b's own start: wait for it.
        while explained(capsys, store)["b"]["status"] != "running":
            assert runner.poll() is None and time.monotonic() < deadline
            time.sleep(0.05)
        code, out, err = cli(
            capsys, "explain", "--plan", "pipeline.py", "--run-id", "r", "--store", store
        )
        assert code == 2 and out == "" and err.count("\n") == 1, err
        assert f"pid {runner.pid}" in err and "flowdag run would be refused" in err
    finally:
        runner.send_signal(signal.SIGKILL)
        runner.wait(timeout=30)
    (tmp_path / "hang").unlink()
    actions = run_and_check(capsys, tmp_path, store)
    assert actions == {"a": "reuse", "b": "run", "c": "run"}
    after = explained(capsys, store)
    assert (after["b"]["code"], after["c"]["code"]) == ("interrupted", "new")


def test_a_new_node_needs_allow_changes_as_run_does(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    store = f"json://{tmp_path / 's'}"
    assert cli(capsys, "run", "pipeline.py", "--run-id", "r", "--store", store)[0] == 0
    with (tmp_path / "pipeline.py").open("a") as file:
        file.write('\n@wf.node(deps=["d"])\ndef f(d):\n    return -d\n')
    plan = ["explain", "--plan", "pipeline.py", "--run-id", "r", "--store", store]
    code, out, err = cli(capsys, *plan)
    assert code == 2 and out == "" and err.count("\n") == 1
    assert "node 'f' is new" in err and "--allow-changes" in err
    code, out, err = cli(capsys, *plan, "--allow-changes")
    assert (code, err) == (0, "")
    assert "warning: accepted change: node 'f' is new" in out.splitlines()
    actions = run_and_check(capsys, tmp_path, store, "--allow-changes")
    assert actions == {"a": "reuse", "b": "reuse", "c": "reuse", "d": "reuse", "e": "reuse"} | {
        "f": "run"
    }


def test_a_lost_blob_is_planned_as_run_finds_it(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    store = f"lmdb://{tmp_path / 's'}"
    run = ["run", "pipeline.py", "--run-id", "r", "--store", store, "--inline-limit", "1"]
    assert cli(capsys, *run)[0] == 0  # every output kept by reference
    blobs = [path for path in (tmp_path / "s" / "blobs").rglob("*") if path.is_file()]
    assert len(blobs) >= 4
    for path in blobs:
        path.unlink()  # deleted by hand: every ref is lost
    edit(tmp_path / "pipeline.py", "a + 100", "a + 200")  # c runs: it needs a's output
    code, out, err = cli(
        capsys, "explain", "--plan", "pipeline.py", "--run-id", "r", "--store", store, "--json"
    )
    assert code == 0, err
    document = json.loads(out)
    plan = {node["node"]: node for node in document["nodes"]}
    assert plan["a"]["action"] == "run" and "blob" in plan["a"]["detail"]
    assert any("'a'" in warning and "blob" in warning for warning in document["warnings"])
    actions = run_and_check(capsys, tmp_path, store)
    assert actions["a"] == actions["c"] == "run" and actions["e"] == "reuse"
