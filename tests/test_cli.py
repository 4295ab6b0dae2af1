"""The command line: run, status, list, exit codes and one-line errors."""

from __future__ import annotations

import json
import math
import os
import re
import shlex
import shutil
import sqlite3
import subprocess
import sys
import textwrap
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

import flowdag
from flowdag.cli import main
from flowdag.cli.app import one_line
from flowdag.errors import RunLockedError, WorkflowChangedError
from flowdag.state import NodeRecord
from flowdag.stores import open_store
from flowdag.stores.base import StoredNode, StoredRun
from flowdag.stores.transfer import same_value
from tests.forkserver import python_m, shared

ROOT = Path(__file__).resolve().parent.parent
EXAMPLE = ROOT / "examples" / "etl_pipeline.py"

# Three nodes; every call appends the node's name to calls.log beside the file.
# Node "b" fails while a file named "fail" exists beside the workflow file.
PIPELINE = """
import pathlib
import flowdag

HERE = pathlib.Path(__file__).parent
wf = flowdag.Workflow("pipe")

def _called(name):
    with open(HERE / "calls.log", "a") as log:
        log.write(name + "\\n")

@wf.node
def a(ctx):
    _called("a")
    ctx.data["seen"] = 1
    return 1

@wf.node(deps=["a"])
def b(a):
    _called("b")
    if (HERE / "fail").exists():
        raise RuntimeError("b is broken")
    return a + 1

@wf.node(deps=["b"])
def c(b):
    _called("c")
    return b * 10
"""


@pytest.fixture(autouse=True)
def _isolate(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> Iterator[None]:
    # main() puts workflow folders on sys.path: undo that.
    monkeypatch.setattr(sys, "path", list(sys.path))
    monkeypatch.chdir(tmp_path)
    monkeypatch.delenv("FORCE_COLOR", raising=False)
    monkeypatch.setenv("COLUMNS", "200")  # no wrapped table cells
    yield


def write(tmp_path: Path, source: str, name: str = "pipeline.py") -> Path:
    path = tmp_path / name
    path.write_text(textwrap.dedent(source))
    return path


def calls(tmp_path: Path) -> list[str]:
    log = tmp_path / "calls.log"
    return log.read_text().split() if log.exists() else []


def store_url(tmp_path: Path) -> str:
    return f"lmdb://{tmp_path / 's'}"


def assert_one_error_line(err: str, *fragments: str) -> None:
    lines = [line for line in err.splitlines() if line.strip()]
    assert len(lines) == 1, err
    assert lines[0].startswith("flowdag: error: "), err
    assert "Traceback" not in err
    for fragment in fragments:
        assert fragment in lines[0], lines[0]


# -- run ------------------------------------------------------------------------


def test_run_completes_and_prints_summary(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    path = write(tmp_path, PIPELINE)
    code = main(["run", str(path), "--run-id", "r1", "--store", store_url(tmp_path)])
    out, err = capsys.readouterr()
    assert code == 0, err
    assert calls(tmp_path) == ["a", "b", "c"]
    for name in ("a", "b", "c"):
        assert name in out
    assert "completed" in out
    assert "r1" in out.splitlines()[-1]
    assert "Traceback" not in err


def test_run_failure_exits_1_and_tells_how_to_resume(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    path = write(tmp_path, PIPELINE)
    (tmp_path / "fail").touch()
    code = main(["run", str(path), "--run-id", "r1", "--store", store_url(tmp_path)])
    out, err = capsys.readouterr()
    assert code == 1
    assert "failed" in out and "skipped" in out
    assert "RuntimeError: b is broken" in out
    last = out.splitlines()[-1]
    assert "r1" in last and "--run-id r1" in last and "--store" in last
    # Not a terminal: failures only, as plain lines; no progress bar noise.
    assert "node b failed: RuntimeError: b is broken" in err
    assert "Traceback" not in err


def test_resume_skips_completed_nodes(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    path = write(tmp_path, PIPELINE)
    args = ["run", str(path), "--run-id", "r1", "--store", store_url(tmp_path)]
    (tmp_path / "fail").touch()
    assert main(args) == 1
    assert calls(tmp_path) == ["a", "b"]

    (tmp_path / "fail").unlink()
    assert main(args) == 0
    assert calls(tmp_path) == ["a", "b", "b", "c"]  # a was not called again

    assert main(args) == 0  # a completed run: nothing is called
    assert calls(tmp_path) == ["a", "b", "b", "c"]
    capsys.readouterr()


def test_run_without_run_id_prints_a_new_one(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    path = write(tmp_path, PIPELINE)
    assert main(["run", str(path), "--store", store_url(tmp_path)]) == 0
    out, err = capsys.readouterr()
    first = err.splitlines()[0]
    assert first.startswith("flowdag: run id ")
    run_id = first.removeprefix("flowdag: run id ").strip()
    assert run_id in out
    assert main(["status", run_id, "--store", store_url(tmp_path)]) == 0


def test_default_store_is_lmdb_dot_flowdag(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    write(tmp_path, PIPELINE)
    assert main(["run", "pipeline.py", "--run-id", "here"]) == 0
    assert (tmp_path / ".flowdag").is_dir()
    assert main(["list"]) == 0
    assert "here" in capsys.readouterr().out


def test_run_options_workers_executor(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    path = write(tmp_path, PIPELINE)
    argv = ["run", str(path), "--run-id", "w", "--store", "memory://", "--workers", "2"]
    assert main([*argv, "--executor", "threads"]) == 0
    assert main(["run", str(path), "--workers", "0"]) == 2
    assert main(["run", str(path), "--executor", "carrier-pigeon"]) == 2
    capsys.readouterr()


def test_run_shows_live_progress_on_a_terminal(
    tmp_path: Path, capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("TTY_COMPATIBLE", "1")  # rich: treat stderr as a terminal
    path = write(tmp_path, PIPELINE)
    (tmp_path / "fail").touch()
    assert main(["run", str(path), "--run-id", "t", "--store", "memory://"]) == 1
    out, err = capsys.readouterr()
    assert "b failed" in err
    # No traceback of flowdag's own; the failed node's last frames, after the summary.
    assert "Traceback" not in err
    assert out.count("Traceback (most recent call last):") == 1
    assert f'File "{path}", line 22, in b' in out


def test_sibling_modules_import(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    write(tmp_path, "def double(x):\n    return 2 * x\n", name="helpers.py")
    path = write(
        tmp_path,
        """
        import flowdag
        from helpers import double

        wf = flowdag.Workflow("sib")
        wf.add_node("x", lambda: double(21))
        """,
        name="sib.py",
    )
    assert main(["run", str(path), "--run-id", "s", "--store", "memory://"]) == 0
    capsys.readouterr()


# -- choosing the workflow in a file ------------------------------------------------

TWO = """
import flowdag

first = flowdag.Workflow("first")
first.add_node("one", lambda: 1)

second = flowdag.Workflow("second")
second.add_node("two", lambda: 2)
"""


def test_several_workflows_need_a_name(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    path = write(tmp_path, TWO)
    assert main(["run", str(path), "--store", "memory://"]) == 2
    assert_one_error_line(capsys.readouterr().err, "first", "second", ":NAME")


@pytest.mark.parametrize("name", ["second", "two"])
def test_workflow_chosen_by_variable_or_workflow_name(
    tmp_path: Path, capsys: pytest.CaptureFixture[str], name: str
) -> None:
    source = TWO + '\ntwo = flowdag.Workflow("two")\ntwo.add_node("deux", lambda: 2)\n'
    path = write(tmp_path, source)
    assert main(["run", f"{path}:{name}", "--run-id", "n", "--store", "memory://"]) == 0
    out = capsys.readouterr().out
    assert ("two" if name == "second" else "deux") in out


def test_workflow_and_its_built_dag_count_as_one(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    path = write(
        tmp_path,
        """
        import flowdag
        wf = flowdag.Workflow("one")
        wf.add_node("x", lambda: 1)
        dag = wf.build()
        """,
    )
    assert main(["run", str(path), "--run-id", "d", "--store", "memory://"]) == 0
    capsys.readouterr()


def test_unknown_workflow_name(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    path = write(tmp_path, TWO)
    assert main(["run", f"{path}:third", "--store", "memory://"]) == 2
    assert_one_error_line(capsys.readouterr().err, "'third'", "first", "second")


def test_file_without_workflow(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    path = write(tmp_path, "x = 1\n")
    assert main(["run", str(path), "--store", "memory://"]) == 2
    assert_one_error_line(capsys.readouterr().err, "no flowdag.Workflow", str(path))


# -- bad input: one line, exit 2, no traceback ------------------------------------------


def test_missing_file(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["run", str(tmp_path / "nope.py"), "--store", "memory://"]) == 2
    assert_one_error_line(capsys.readouterr().err, "not found", "nope.py")


def test_file_that_raises_at_import(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    path = write(tmp_path, "import flowdag\nwf = flowdag.Workflow('x')\n1 / 0\n")
    assert main(["run", str(path), "--store", "memory://"]) == 2
    assert_one_error_line(capsys.readouterr().err, str(path), "ZeroDivisionError", "division")


def test_file_with_syntax_error(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    path = write(tmp_path, "def broken(:\n")
    assert main(["run", str(path), "--store", "memory://"]) == 2
    assert_one_error_line(capsys.readouterr().err, "SyntaxError")


def test_invalid_dag(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    path = write(
        tmp_path,
        """
        import flowdag
        wf = flowdag.Workflow("cyc")
        wf.add_node("a", lambda b: b, deps=["b"])
        wf.add_node("b", lambda a: a, deps=["a"])
        """,
    )
    assert main(["run", str(path), "--store", "memory://"]) == 2
    assert_one_error_line(capsys.readouterr().err, "a -> b")


@pytest.mark.parametrize("run_id", ["../escape", ".hidden", "a/b", "x" * 201])
def test_invalid_run_id(tmp_path: Path, capsys: pytest.CaptureFixture[str], run_id: str) -> None:
    path = write(tmp_path, PIPELINE)
    assert main(["run", str(path), "--run-id", run_id, "--store", store_url(tmp_path)]) == 2
    assert_one_error_line(capsys.readouterr().err, "invalid run id")
    assert calls(tmp_path) == []
    assert main(["status", run_id, "--store", store_url(tmp_path)]) == 2
    assert_one_error_line(capsys.readouterr().err, "invalid run id")


@pytest.mark.parametrize("command", [["list"], ["status", "r1"]])
def test_unknown_store_scheme(
    tmp_path: Path, capsys: pytest.CaptureFixture[str], command: list[str]
) -> None:
    assert main([*command, "--store", "bogus://x"]) == 2
    assert_one_error_line(capsys.readouterr().err, "bogus")


def test_unknown_store_scheme_on_run(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    path = write(tmp_path, PIPELINE)
    assert main(["run", str(path), "--store", "bogus://x", "--run-id", "r"]) == 2
    assert_one_error_line(capsys.readouterr().err, "bogus")
    assert calls(tmp_path) == []


def test_unknown_run(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    open_store(store_url(tmp_path)).close()  # a store, without that run
    assert main(["status", "ghost", "--store", store_url(tmp_path)]) == 2
    assert_one_error_line(capsys.readouterr().err, "ghost")


def test_locked_run(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    path = write(tmp_path, PIPELINE)
    holder = subprocess.Popen(
        [
            sys.executable,
            "-c",
            "import sys, flowdag.stores as s\n"
            "store = s.open_store(sys.argv[1])\n"
            "with store.lock('busy'):\n"
            "    print('locked', flush=True)\n"
            "    sys.stdin.read()\n",
            store_url(tmp_path),
        ],
        stdin=subprocess.PIPE,
        stdout=subprocess.PIPE,
        text=True,
    )
    try:
        assert holder.stdout is not None
        assert holder.stdout.readline().strip() == "locked"
        code = main(["run", str(path), "--run-id", "busy", "--store", store_url(tmp_path)])
    finally:
        holder.communicate("", timeout=30)
    assert code == 2
    err = capsys.readouterr().err
    assert_one_error_line(err, "busy", "--run-id")
    assert err.count("--run-id") == 1
    assert calls(tmp_path) == []


def test_changed_workflow(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    path = write(tmp_path, PIPELINE)
    args = ["run", str(path), "--run-id", "r1", "--store", store_url(tmp_path)]
    assert main(args) == 0
    changed = PIPELINE.replace('@wf.node(deps=["b"])\ndef c(b):', '@wf.node(deps=["a"])\ndef c(a):')
    changed = changed.replace("return b * 10", "return a * 10")
    path.write_text(changed)
    capsys.readouterr()

    assert main(args) == 2
    err = capsys.readouterr().err
    assert_one_error_line(err, "--allow-changes")
    assert err.count("--allow-changes") == 1
    assert main([*args, "--allow-changes"]) == 0
    capsys.readouterr()


def test_damaged_store(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    with open_store(store_url(tmp_path)) as store:
        store._save("broken", StoredRun(header=b"\x00 not a flowdag blob"))
    assert main(["status", "broken", "--store", store_url(tmp_path)]) == 2
    assert_one_error_line(capsys.readouterr().err, "broken")

    path = write(tmp_path, PIPELINE)
    assert main(["run", str(path), "--run-id", "broken", "--store", store_url(tmp_path)]) == 2
    assert_one_error_line(capsys.readouterr().err, "broken")

    assert main(["list", "--store", store_url(tmp_path)]) == 0  # one bad run is shown, not fatal
    assert "damaged" in capsys.readouterr().out


@pytest.mark.parametrize(
    "argv",
    [
        [],
        ["run"],
        ["status"],
        ["frobnicate"],
        ["status", "r", "--bogus"],
        ["run", "x.py", "--workers", "many"],
    ],
)
def test_usage_errors_exit_2(argv: list[str], capsys: pytest.CaptureFixture[str]) -> None:
    assert main(argv) == 2
    err = capsys.readouterr().err
    assert "usage:" in err and "Traceback" not in err


@pytest.mark.parametrize(
    ("error", "hint"),
    [
        (
            WorkflowChangedError("run 'r1' of 'pipe': node c changed; pass allow_changes=True"),
            "rerun with --allow-changes to accept them",
        ),
        (
            RunLockedError("run 'r1' is locked by pid 7; wait or use another run id"),
            "the command line takes another with --run-id",
        ),
    ],
)
def test_library_errors_get_the_cli_flag(
    tmp_path: Path,
    capsys: pytest.CaptureFixture[str],
    monkeypatch: pytest.MonkeyPatch,
    error: Exception,
    hint: str,
) -> None:
    # The library names no CLI flag; the CLI adds its own, whatever the library's wording.
    def refuse(*args: object, **kwargs: object) -> None:
        raise error

    monkeypatch.setattr(flowdag, "run", refuse)
    path = write(tmp_path, PIPELINE)
    assert main(["run", str(path), "--run-id", "r1", "--store", store_url(tmp_path)]) == 2
    err = capsys.readouterr().err
    assert_one_error_line(err, str(error), hint)
    assert err.rstrip().endswith(hint)


@pytest.mark.parametrize(
    "error",
    [
        WorkflowChangedError("node c changed; pass allow_changes=True (--allow-changes)"),
        RunLockedError("run 'r1' is locked by pid 7; wait or pass another --run-id"),
    ],
)
def test_a_flag_the_library_already_names_is_not_repeated(error: Exception) -> None:
    flag = "--allow-changes" if isinstance(error, WorkflowChangedError) else "--run-id"
    assert one_line(error) == str(error)
    assert one_line(error).count(flag) == 1


def test_help_exits_0(capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["--help"]) == 0
    assert "run" in capsys.readouterr().out


# -- read-only commands never create a store ------------------------------------------


@pytest.mark.parametrize(
    "argv",
    [
        ["status", "X"],
        ["status", "X", "--json"],
        ["list"],
        ["list", "--store", "json://missing"],
        ["list", "--store", "flatbuffers://empty"],
        ["status", "X", "--store", "lmdb://empty"],
        ["store", "verify", "lmdb://.flowdag"],
        ["store", "verify", "json://empty"],
        ["store", "convert", "json://missing", "json://dst"],
        ["store", "convert", "flatbuffers://empty", "json://dst"],
        ["graph", "pipeline.py", "--run-id", "X"],
        ["graph", "pipeline.py", "--run-id", "X", "--store", "json://missing"],
    ],
)
def test_read_only_commands_never_create_a_store(
    tmp_path: Path, capsys: pytest.CaptureFixture[str], argv: list[str]
) -> None:
    write(tmp_path, PIPELINE)
    (tmp_path / "empty").mkdir()  # a folder, but no store in it
    assert main(argv) == 2
    assert_one_error_line(capsys.readouterr().err, "no store at")
    assert sorted(p.name for p in tmp_path.rglob("*")) == ["empty", "pipeline.py"]


# -- status and list ---------------------------------------------------------------


def test_status_table(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    path = write(tmp_path, PIPELINE)
    (tmp_path / "fail").touch()
    main(["run", str(path), "--run-id", "r1", "--store", store_url(tmp_path)])
    capsys.readouterr()

    assert main(["status", "r1", "--store", store_url(tmp_path)]) == 0
    out = capsys.readouterr().out
    assert "pipe" in out and "failed" in out
    for column in ("node", "status", "attempts", "started", "duration", "error"):
        assert column in out
    assert "RuntimeError: b is broken" in out
    assert "skipped" in out


def test_status_json(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    path = write(tmp_path, PIPELINE)
    (tmp_path / "fail").touch()
    main(["run", str(path), "--run-id", "r1", "--store", store_url(tmp_path)])
    capsys.readouterr()

    assert main(["status", "r1", "--json", "--store", store_url(tmp_path)]) == 0
    doc = json.loads(capsys.readouterr().out)
    assert doc["run_id"] == "r1" and doc["workflow"] == "pipe" and doc["status"] == "failed"
    a, b, c = doc["nodes"]["a"], doc["nodes"]["b"], doc["nodes"]["c"]
    assert a["status"] == "completed" and a["attempts"] == 1 and a["error"] is None
    assert a["started_at"] and a["finished_at"] and a["duration"] >= 0
    assert b["status"] == "failed"
    assert b["error"]["type"] == "RuntimeError" and b["error"]["message"] == "b is broken"
    assert "Traceback" in b["error"]["traceback"]
    assert c["status"] == "skipped" and c["deps"] == ["b"]


def test_list(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    url = store_url(tmp_path)
    path = write(tmp_path, PIPELINE)
    open_store(url).close()  # a store without runs
    assert main(["list", "--store", url]) == 0
    assert "no runs" in capsys.readouterr().err

    main(["run", str(path), "--run-id", "good", "--store", url])
    (tmp_path / "fail").touch()
    main(["run", str(path), "--run-id", "bad", "--store", url])
    capsys.readouterr()

    assert main(["list", "--store", url]) == 0
    rows = {line.split()[0]: line for line in capsys.readouterr().out.splitlines()[1:]}
    assert "pipe" in rows["good"] and "completed" in rows["good"] and "3/3" in rows["good"]
    assert "failed" in rows["bad"] and "1/3" in rows["bad"]


# -- real processes --------------------------------------------------------------------


def run_cli(
    *args: str, cwd: Path, env: dict[str, str] | None = None, fresh: bool = False
) -> subprocess.CompletedProcess[str]:
    """``python -m flowdag *args``: forked from the fork server (which imported flowdag
    once), or with ``fresh`` a new interpreter."""
    environment = {**os.environ, "COLUMNS": "200", **(env or {})}
    if not fresh:
        return shared().run(python_m, "flowdag", str(cwd), environment, *args, timeout=120)
    return subprocess.run(
        [sys.executable, "-m", "flowdag", *args],
        cwd=cwd,
        env=environment,
        capture_output=True,
        text=True,
        timeout=120,
    )


def test_python_dash_m_flowdag(tmp_path: Path) -> None:
    path = write(tmp_path, PIPELINE)
    url = store_url(tmp_path)
    done = run_cli("run", str(path), "--run-id", "p1", "--store", url, cwd=tmp_path, fresh=True)
    assert done.returncode == 0, done.stderr
    assert "completed" in done.stdout
    assert calls(tmp_path) == ["a", "b", "c"]

    bad = run_cli("status", "nobody", "--store", url, cwd=tmp_path, fresh=True)
    assert bad.returncode == 2
    assert_one_error_line(bad.stderr, "nobody")


@pytest.mark.slow
def test_example_etl_pipeline(tmp_path: Path) -> None:
    env = {"ETL_WORK_DIR": str(tmp_path / "work"), "ETL_ROWS": "4000"}
    args = ("run", str(EXAMPLE), "--run-id", "etl", "--store", store_url(tmp_path))
    done = run_cli(*args, cwd=tmp_path, env=env)
    assert done.returncode == 0, done.stderr
    for node in ("generate", "extract_7", "aggregate_0", "merge", "load", "report"):
        assert node in done.stdout
    assert f"etl: results in {tmp_path / 'work'}: report.md" in done.stdout  # where to look
    assert (tmp_path / "work" / "report.md").exists()

    with open_store(store_url(tmp_path)) as store:
        state = store.load("etl")
    assert state.data["rows_read"] == 4000
    assert 0 < state.data["rows_dropped"] < 400
    report = Path(state.nodes["report"].output)
    assert "rows read: 4,000" in report.read_text()

    db = tmp_path / "work" / "sales.db"
    summary = "SELECT count(*), sum(orders) FROM sales_summary"
    with sqlite3.connect(db) as conn:
        first = conn.execute(summary).fetchone()
    assert first[1] == 4000 - state.data["rows_dropped"]

    # A second run (new id) reloads the same data: no duplicated rows.
    again = run_cli(
        "run",
        str(EXAMPLE),
        "--run-id",
        "etl2",
        "--store",
        store_url(tmp_path),
        cwd=tmp_path,
        env=env,
    )
    assert again.returncode == 0, again.stderr
    with sqlite3.connect(db) as conn:
        assert conn.execute(summary).fetchone() == first


def test_flowdag_run_result_is_what_the_cli_shows(tmp_path: Path) -> None:
    # The CLI's numbers come from flowdag.run; check the library agrees on a store.
    path = write(tmp_path, PIPELINE)
    assert main(["run", str(path), "--run-id", "lib", "--store", store_url(tmp_path)]) == 0
    with open_store(store_url(tmp_path)) as store:
        state = store.load("lib")
    assert state.status is flowdag.RunStatus.COMPLETED
    assert state.nodes["c"].output == 20
    assert state.data == {"seen": 1}


# -- store convert / store verify --------------------------------------------------------


def save_runs(url: str, *run_ids: str) -> dict[str, flowdag.RunState]:
    """Runs with completed, failed and pending nodes, outputs of several types, and data."""
    states = {}
    with open_store(url) as store:
        for run_id in run_ids:
            state = flowdag.RunState(run_id, "pipe")
            state.nodes["a"] = flowdag.NodeState(flowdag.NodeStatus.COMPLETED, 1, output=(1, 5.0))
            state.nodes["b"] = flowdag.NodeState(
                flowdag.NodeStatus.FAILED, 2, error=flowdag.ErrorInfo("E", "m"), deps=("a",)
            )
            state.nodes["c"] = flowdag.NodeState(deps=("b",))
            state.data = {"seen": {b"x", b"y"}, "run": run_id}
            store.save(state)
            states[run_id] = state
    return states


def load_all(url: str) -> dict[str, flowdag.RunState]:
    with open_store(url) as store:
        return {run_id: store.load(run_id) for run_id in store.list_runs()}


def damage_snapshot(tmp_path: Path, store_dir: str, run_id: str) -> Path:
    """Flip a byte in the middle of a JSON or FlatBuffers run's snapshot."""
    (path,) = (tmp_path / store_dir / "runs" / run_id).glob("snapshot.*")
    content = bytearray(path.read_bytes())
    content[len(content) // 2] ^= 0x01
    path.write_bytes(content)
    return path


def result_lines(out: str) -> dict[str, str]:
    """Run id -> its line, for the per-run lines of store convert / verify."""
    return {line.split(":")[0]: line for line in out.splitlines() if ": " in line}


@pytest.mark.parametrize(
    ("src", "dst"),
    [("json://src", "flatbuffers://dst"), ("flatbuffers://src", "lmdb://dst"),
     ("lmdb://src", "json://dst")],
)  # fmt: skip
def test_store_convert_copies_every_run(
    tmp_path: Path, capsys: pytest.CaptureFixture[str], src: str, dst: str
) -> None:
    states = save_runs(src, "r1", "r2", "r3")
    assert main(["store", "convert", src, dst]) == 0
    out, err = capsys.readouterr()
    assert err == ""
    lines = result_lines(out)
    assert all("copied" in lines[run_id] for run_id in states), out
    assert out.splitlines()[-1] == f"copied 3 of 3 runs from {src} to {dst}"
    assert load_all(dst) == states
    assert load_all(src) == states  # the source is untouched

    assert main(["store", "verify", dst]) == 0
    out = capsys.readouterr().out
    assert all(result_lines(out)[run_id] == f"{run_id}: ok" for run_id in states)
    assert out.splitlines()[-1] == f"checked 3 runs in {dst}: all ok"


def test_store_convert_selected_runs(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    states = save_runs("json://src", "r1", "r2", "r3", "r4")
    argv = ["store", "convert", "json://src", "lmdb://dst"]
    assert main([*argv, "--run-id", "r1", "--run-id", "r3", "--run-id", "r1"]) == 0
    out = capsys.readouterr().out
    assert sorted(result_lines(out)) == ["r1", "r3"]  # each run once
    assert "copied 2 of 2 runs" in out
    assert load_all("lmdb://dst") == {"r1": states["r1"], "r3": states["r3"]}


def test_store_convert_replaces_runs_of_the_same_id(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    states = save_runs("json://src", "r1")
    save_runs("lmdb://dst", "r1", "other")
    with open_store("lmdb://dst") as store:
        store.commit("r1", [NodeRecord("c", flowdag.NodeStatus.COMPLETED, 1)])
    assert main(["store", "convert", "json://src", "lmdb://dst"]) == 0
    capsys.readouterr()
    assert load_all("lmdb://dst")["r1"] == states["r1"]
    assert "other" in load_all("lmdb://dst")


def test_store_convert_unknown_run_copies_nothing(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    save_runs("json://src", "r1")
    argv = ["store", "convert", "json://src", "lmdb://dst", "--run-id", "r1", "--run-id", "nope"]
    assert main(argv) == 2
    assert_one_error_line(capsys.readouterr().err, "'nope'", "json://src")
    assert not (tmp_path / "dst").exists()


@pytest.mark.parametrize(
    ("argv", "fragment"),
    [
        (["json://src", "lmdb://dst", "--run-id", "../escape"], "invalid run id"),
        (["bogus://src", "lmdb://dst"], "bogus"),
        (["json://src", "bogus://dst"], "bogus"),
        (["json://src", "lmdb://"], "names no directory"),
        (["json://missing", "lmdb://dst"], "no store at"),
        (["json://src", "flatbuffers://src"], "same directory"),
        (["json://src", "json://./sub/../src/"], "same directory"),
    ],
)
def test_store_convert_bad_input(
    tmp_path: Path, capsys: pytest.CaptureFixture[str], argv: list[str], fragment: str
) -> None:
    states = save_runs("json://src", "r1")
    assert main(["store", "convert", *argv]) == 2
    assert_one_error_line(capsys.readouterr().err, fragment)
    assert sorted(p.name for p in tmp_path.iterdir()) == ["src"]  # nothing else created
    assert load_all("json://src") == states


def test_store_convert_skips_a_damaged_run(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    states = save_runs("flatbuffers://src", "bad", "good")
    path = damage_snapshot(tmp_path, "src", "bad")
    assert main(["store", "convert", "flatbuffers://src", "json://dst"]) == 1
    out, err = capsys.readouterr()
    lines = result_lines(out)
    assert lines["bad"].startswith("bad: damaged in the source, skipped: ")
    assert str(path) in lines["bad"]
    assert lines["good"] == "good: copied"
    summary = "copied 1 of 2 runs from flatbuffers://src to json://dst; 1 damaged in the source"
    assert out.splitlines()[-1] == summary
    assert "Traceback" not in out + err
    assert load_all("json://dst") == {"good": states["good"]}


def test_store_convert_reports_a_copy_that_fails(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    save_runs("json://src", "r1", "r2")
    with open_store("lmdb://dst") as dst, dst.lock("r1"):  # r1 is running there
        assert main(["store", "convert", "json://src", "lmdb://dst"]) == 1
    out = capsys.readouterr().out
    lines = result_lines(out)
    assert lines["r1"].startswith("r1: not copied: run 'r1' is locked")
    assert lines["r2"] == "r2: copied"
    assert out.splitlines()[-1].endswith("; 1 not copied")


def test_store_convert_reports_a_copy_that_differs(
    tmp_path: Path, capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    save_runs("json://src", "r1")

    def differs(src: object, dst: object, run_id: str) -> None:
        raise flowdag.StoreError(f"copy of run '{run_id}' to X differs from the source: data")

    monkeypatch.setattr("flowdag.cli.store.copy_run", differs)
    assert main(["store", "convert", "json://src", "lmdb://dst"]) == 1
    out = capsys.readouterr().out
    assert "r1: not copied: copy of run 'r1' to X differs from the source" in out


@pytest.mark.parametrize("dst", ["json://dst", "flatbuffers://dst"])
def test_store_convert_reports_each_run_it_cannot_copy(
    tmp_path: Path, capsys: pytest.CaptureFixture[str], dst: str
) -> None:
    deep: object = 0
    for _ in range(1000):  # inside the codec's 1024 levels, over JSON's 256
        deep = [deep]
    states = save_runs("lmdb://src", "a", "deep", "z")
    with open_store("lmdb://src") as store:
        states["deep"].nodes["a"].output = deep
        store.save(states["deep"])
    code = main(["store", "convert", "lmdb://src", dst])
    out, err = capsys.readouterr()
    assert "Traceback" not in out + err and err == ""
    lines = result_lines(out)
    assert lines["a"] == "a: copied" and lines["z"] == "z: copied"
    copied = load_all(dst)
    if dst.startswith("json"):
        assert code == 1
        assert lines["deep"].startswith("deep: not copied: run 'deep' cannot be stored in ")
        assert "256 levels" in lines["deep"]
        assert out.splitlines()[-1] == (
            f"copied 2 of 3 runs from lmdb://src to {dst}; 1 not copied"
        )
        del states["deep"]
        assert not list((tmp_path / "dst" / "runs").glob("deep/*"))  # nothing unverified left
    else:
        assert code == 0 and lines["deep"] == "deep: copied"
        # RunState's == recurses: compare the deep output apart.
        assert same_value(copied["deep"].nodes["a"].output, deep)
        states["deep"].nodes["a"].output = copied["deep"].nodes["a"].output = None
    assert copied == states


def test_store_convert_of_a_key_no_other_store_can_keep(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    # The JSON store of earlier releases took a ctx.data key UTF-8 cannot encode.
    states = save_runs("json://src", "a", "odd")
    with open_store("json://src") as store:
        stored = store._to_stored(states["odd"])
        stored.data["\ud800"] = store.codec.encode(1)
        store._save("odd", stored)
        assert store.load("odd").data["\ud800"] == 1  # it still loads where it is
    assert main(["store", "convert", "json://src", "lmdb://dst"]) == 1
    out, err = capsys.readouterr()
    assert "Traceback" not in out + err and err == ""
    lines = result_lines(out)
    assert lines["a"] == "a: copied"
    assert lines["odd"].startswith("odd: not copied: run 'odd' cannot be stored in ")
    assert "ctx.data key '\\ud800'" in lines["odd"] and "lone surrogate" in lines["odd"]
    assert load_all("lmdb://dst") == {"a": states["a"]}


def test_store_convert_empty_store(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    open_store("json://empty").close()
    assert main(["store", "convert", "json://empty", "memory://"]) == 0
    assert capsys.readouterr().out.strip() == "copied 0 of 0 runs from json://empty to memory://"


def test_store_verify_reports_damaged_runs(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    save_runs("json://s", "a", "b", "c")
    path = damage_snapshot(tmp_path, "s", "b")
    assert main(["store", "verify", "json://s"]) == 1
    out, err = capsys.readouterr()
    lines = result_lines(out)
    assert lines["a"] == "a: ok" and lines["c"] == "c: ok"
    assert lines["b"].startswith("b: damaged: run 'b'") and str(path) in lines["b"]
    assert out.splitlines()[-1] == "checked 3 runs in json://s: 1 damaged"
    assert "Traceback" not in out + err


FORGED = {
    "started_at 2**62": (None, ["completed", 1, 2**62, None, None]),
    "attempts inf": (None, ["completed", math.inf, None, None, None]),
    "deps a list": ({"format": 1, "workflow": "pipe", "metadata": {}, "deps": ["a"]}, None),
    "workflow None": ({"format": 1, "workflow": None, "metadata": {}, "deps": {"a": []}}, None),
}


@pytest.mark.parametrize("url", ["lmdb://s", "json://s", "flatbuffers://s"])
@pytest.mark.parametrize(("header", "meta"), FORGED.values(), ids=FORGED.keys())
def test_forged_records_are_damage_everywhere(
    tmp_path: Path, capsys: pytest.CaptureFixture[str], url: str, header: Any, meta: Any
) -> None:
    # Well-formed blobs of the wrong shape, written by the store itself: valid checksums.
    save_runs(url, "a", "forged", "z")
    with open_store(url) as store:
        if header is not None:
            store._save("forged", StoredRun(store.codec.encode(header)))
        else:
            store._commit("forged", {"a": StoredNode(store.codec.encode(meta))}, {})
        where = store.describe("forged")
    assert main(["store", "verify", url]) == 1
    out, err = capsys.readouterr()
    assert "Traceback" not in out + err
    lines = result_lines(out)
    assert lines["a"] == "a: ok" and lines["z"] == "z: ok"  # verify goes on
    assert lines["forged"].startswith("forged: damaged: run 'forged' in ")
    assert where in lines["forged"]
    assert main(["status", "forged", "--store", url]) == 2
    assert_one_error_line(capsys.readouterr().err, "run 'forged'", "damaged", where)
    path = write(tmp_path, PIPELINE)
    assert main(["run", str(path), "--run-id", "forged", "--store", url]) == 2
    assert_one_error_line(capsys.readouterr().err, "run 'forged'", "damaged")
    assert main(["list", "--store", url]) == 0
    out, err = capsys.readouterr()
    assert "Traceback" not in out + err
    assert "damaged" in out


def test_store_verify_loads_outputs(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    with open_store(store_url(tmp_path)) as store:
        store._save("broken", StoredRun(header=b"\x00 not a flowdag blob"))
    assert main(["store", "verify", store_url(tmp_path)]) == 1
    assert "broken: damaged: " in capsys.readouterr().out


@pytest.mark.parametrize(
    ("url", "code", "expected"),
    [
        ("memory://", 0, "checked 0 runs in memory://: all ok"),
        ("json://empty", 0, "checked 0 runs in json://empty: all ok"),
    ],
)
def test_store_verify_empty(
    tmp_path: Path, capsys: pytest.CaptureFixture[str], url: str, code: int, expected: str
) -> None:
    open_store("json://empty").close()
    assert main(["store", "verify", url]) == code
    assert capsys.readouterr().out.strip() == expected


@pytest.mark.parametrize(
    ("url", "fragment"),
    [("json://missing", "no store at"), ("bogus://x", "bogus")],
)
def test_store_verify_bad_input(
    tmp_path: Path, capsys: pytest.CaptureFixture[str], url: str, fragment: str
) -> None:
    assert main(["store", "verify", url]) == 2
    assert_one_error_line(capsys.readouterr().err, fragment)
    assert list(tmp_path.iterdir()) == []


@pytest.mark.parametrize(
    "argv",
    [
        ["store"],
        ["store", "convert", "json://a"],
        ["store", "convert", "json://a", "json://b", "--run-id"],
        ["store", "convert", "json://a", "json://b", "--run-id", "r1", "r2"],
        ["store", "verify"],
        ["store", "x"],
    ],
)
def test_store_usage_errors(argv: list[str], capsys: pytest.CaptureFixture[str]) -> None:
    assert main(argv) == 2
    assert "usage:" in capsys.readouterr().err


def test_store_verify_exit_code_from_a_real_process(tmp_path: Path) -> None:
    save_runs("flatbuffers://s", "a")
    assert run_cli("store", "verify", "flatbuffers://s", cwd=tmp_path).returncode == 0
    damage_snapshot(tmp_path, "s", "a")
    done = run_cli("store", "verify", "flatbuffers://s", cwd=tmp_path)
    assert done.returncode == 1
    assert "a: damaged: " in done.stdout and done.stderr == ""


# -- executors ------------------------------------------------------------------------


def test_run_with_the_processes_executor(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    # The file's module has a name no worker can import: its functions go by value.
    path = write(tmp_path, PIPELINE)
    args = ["run", str(path), "--run-id", "p", "--store", store_url(tmp_path)]
    (tmp_path / "fail").touch()
    assert main([*args, "--executor", "processes", "--workers", "1"]) == 1
    out, err = capsys.readouterr()
    assert "b is broken" in out + err
    assert "--executor processes" in out.splitlines()[-1]  # the resume command keeps it
    assert calls(tmp_path) == ["a", "b"]

    (tmp_path / "fail").unlink()
    assert main([*args, "--executor", "processes", "--workers", "1"]) == 0
    assert calls(tmp_path) == ["a", "b", "b", "c"]
    with open_store(store_url(tmp_path)) as store:
        state = store.load("p")
    assert state.nodes["c"].output == 20
    assert state.data == {"seen": 1}


def test_unknown_executor_is_a_usage_error(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    path = write(tmp_path, PIPELINE)
    assert main(["run", str(path), "--executor", "fibers"]) == 2
    err = capsys.readouterr().err
    assert "invalid choice: 'fibers'" in err
    assert "threads" in err and "dask" in err
    assert calls(tmp_path) == []


def test_dask_address_with_another_executor_is_refused(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    path = write(tmp_path, PIPELINE)
    argv = ["run", str(path), "--executor", "processes", "--dask-address", "tcp://x:8786"]
    assert main(argv) == 2
    assert_one_error_line(capsys.readouterr().err, "--dask-address", "processes")
    assert calls(tmp_path) == []


# Node "flaky" fails its first attempt with a long message, then succeeds;
# "broken" always fails, so "after" is skipped.
EVENTS = """
import flowdag
wf = flowdag.Workflow("ci")

@wf.node(retries=1)
def flaky(ctx):
    if ctx.attempt == 1:
        raise ValueError("first try " + "x" * 100)
    return 1

@wf.node(deps=["flaky"])
def broken(flaky):
    raise RuntimeError("broken on purpose")

@wf.node(deps=["broken"])
def after(broken):
    return 2
"""


def test_run_piped_prints_one_line_per_node_event(tmp_path: Path) -> None:
    path = write(tmp_path, EVENTS)
    args = ("run", str(path), "--run-id", "ci", "--store", store_url(tmp_path))
    done = run_cli(*args, cwd=tmp_path, env={"COLUMNS": "80"})  # stderr is no terminal
    assert done.returncode == 1, done.stderr
    lines = [line.removeprefix("flowdag: ") for line in done.stderr.splitlines()]
    events = [line for line in lines if line.startswith("node ")]
    assert events[:2] == [
        "node flaky started (attempt 1)",
        f"node flaky attempt 1 failed: ValueError: first try {'x' * 100}; retrying",
    ]  # a long line is not wrapped at 80 columns
    assert events[2] == "node flaky started (attempt 2)"
    assert events[3].startswith("node flaky completed in ") and events[3].endswith("s")
    assert events[4:] == [
        "node broken started (attempt 1)",
        "node broken failed: RuntimeError: broken on purpose",
        "node after skipped",
    ]


# -- a terminal ------------------------------------------------------------------------

# Three nodes in a chain, slow enough for the bar to be drawn part-way; the names
# are long, so "running: ..." would not fit in 80 columns. The last node fails
# while a file named "fail" exists beside the workflow file.
SLOW = """
import pathlib
import time
import flowdag

HERE = pathlib.Path(__file__).parent
wf = flowdag.Workflow("slow")

@wf.node
def a_node_with_a_rather_long_name_that_fills_the_line():
    time.sleep(0.4)

@wf.node(deps=["a_node_with_a_rather_long_name_that_fills_the_line"])
def another_node_with_a_rather_long_name_too(a_node_with_a_rather_long_name_that_fills_the_line):
    time.sleep(0.4)

@wf.node(deps=["another_node_with_a_rather_long_name_too"])
def last(another_node_with_a_rather_long_name_too):
    time.sleep(0.4)
    if (HERE / "fail").exists():
        raise RuntimeError("last is broken")
"""
_ANSI = re.compile(r"\x1b\[[0-9;?]*[A-Za-z]")
_RICH_PINK = "\x1b[38;2;249;38;114m"  # rich's default colour of a bar's done part


def run_in_terminal(tmp_path: Path, *args: str) -> str:
    """What ``flowdag ARGS`` draws on an 80-column pseudo-terminal (via script(1))."""
    command = shlex.join([sys.executable, "-m", "flowdag", *args])
    done = subprocess.run(
        ["script", "-qec", command, "/dev/null"],
        cwd=tmp_path,
        env={**os.environ, "COLUMNS": "80", "LINES": "24", "TERM": "xterm-256color"},
        capture_output=True,
        text=True,
        timeout=120,
    )
    return done.stdout


def bar_frames(output: str) -> list[str]:
    """The frames of the progress bar: the lines that show ``done/total``."""
    lines = re.split(r"[\r\n]", output)
    return [line for line in lines if re.search(r"\d+/3\b", _ANSI.sub("", line))]


@pytest.mark.skipif(shutil.which("script") is None, reason="needs script(1)")
def test_run_bar_on_a_terminal_is_green_and_keeps_the_elapsed_time(tmp_path: Path) -> None:
    path = write(tmp_path, SLOW)
    args = ("run", str(path), "--run-id", "t1", "--store", store_url(tmp_path))
    frames = bar_frames(run_in_terminal(tmp_path, *args))
    assert frames, "no progress bar drawn"
    assert any(re.search(r"\b[12]/3\b", _ANSI.sub("", frame)) for frame in frames)
    for frame in frames:
        plain = _ANSI.sub("", frame)
        assert len(plain) <= 80, plain
        assert re.search(r" \d+/3 \d+:\d\d:\d\d( |$)", plain), plain  # the elapsed time, whole
        assert _RICH_PINK not in frame and "\x1b[31m" not in frame, repr(frame)  # never red
    assert any("\x1b[32m━" in frame for frame in frames)  # done part in green

    (tmp_path / "fail").touch()
    args = ("run", str(path), "--run-id", "t2", "--store", store_url(tmp_path))
    frames = bar_frames(run_in_terminal(tmp_path, *args))
    assert any("\x1b[31m━" in frame for frame in frames)  # red once a node failed


LONG_ERROR_FLOW = """
import flowdag
wf = flowdag.Workflow("long")

@wf.node(retries=1)
def fetch():
    raise ConnectionError("the upstream API at https://example.invalid/v1/orders?page=17 "
                          "answered 503 Service Unavailable after 30 seconds")

@wf.node(deps=["fetch"])
def report(fetch):
    return fetch
"""


def test_tables_written_to_a_pipe_do_not_wrap_at_80_columns(tmp_path: Path) -> None:
    flow = tmp_path / "flow.py"
    flow.write_text(LONG_ERROR_FLOW)
    narrow = {"COLUMNS": "80"}  # what CI runners often claim
    ran = run_cli("run", str(flow), "--run-id", "r", cwd=tmp_path, env=narrow)
    assert ran.returncode == 1, ran.stderr
    status = run_cli("status", "r", cwd=tmp_path, env=narrow)
    show = run_cli("show", "r", cwd=tmp_path, env=narrow)
    error = "ConnectionError: the upstream API at https://example.invalid/v1/orders?page=17"
    for output in (ran.stdout, status.stdout, show.stdout):
        rows = [line for line in output.splitlines() if line.startswith("fetch ")]
        # Each node's row (and each failed attempt's, in status) is one whole line.
        assert rows and all(error in row and row.rstrip().endswith("30 seconds") for row in rows)
    assert len([line for line in status.stdout.splitlines() if line.startswith("fetch ")]) == 3
