"""The operator's command line, each through a real ``flowdag`` process: pipes closed early,
pools, dead and live runs. Most are ``python -m flowdag`` forked from the fork server
(tests/forkserver.py); a closed stdout, a terminal and Ctrl-C get fresh interpreters."""

from __future__ import annotations

import json
import os
import shlex
import shutil
import signal
import subprocess
import sys
import textwrap
import time
from pathlib import Path
from typing import Any

import pytest

from tests import forkserver
from tests.forkserver import Child, python_m

ROOT = Path(__file__).resolve().parents[1]

PIPELINE = """
import flowdag

wf = flowdag.Workflow("pipe")

@wf.node
def a():
    return list(range(3))

@wf.node(deps=["a"])
def b(a):
    return sum(a)
"""


def flowdag_cmd(*args: str) -> list[str]:
    return [sys.executable, "-m", "flowdag", *args]


def env() -> dict[str, str]:
    return {**os.environ, "PYTHONPATH": str(ROOT), "COLUMNS": "200"}


def cli(tmp_path: Path, *args: str) -> subprocess.CompletedProcess[str]:
    """``python -m flowdag *args``, forked from the fork server (which imported flowdag once)."""
    return forkserver.shared().run(python_m, "flowdag", str(tmp_path), env(), *args, timeout=120)


def write(tmp_path: Path, source: str, name: str = "pipeline.py") -> Path:
    path = tmp_path / name
    path.write_text(textwrap.dedent(source))
    return path


# -- | head: a closed stdout ----------------------------------------------------------


def run_once(tmp_path: Path, source: str, run_id: str, code: int) -> str:
    """``source`` run as run ``run_id`` in ``lmdb://s``, exiting with ``code``."""
    write(tmp_path, source)
    done = cli(tmp_path, "run", "pipeline.py", "--run-id", run_id, "--store", "lmdb://s")
    assert done.returncode == code, done.stderr
    return run_id


@pytest.fixture
def stored_run(tmp_path: Path) -> str:
    return run_once(tmp_path, PIPELINE, "r1", 0)


@pytest.mark.parametrize(
    "args",
    [
        ["list"],
        ["list", "--json"],
        ["status", "r1"],
        ["status", "r1", "--json"],
        ["run", "pipeline.py", "--run-id", "r1"],
    ],
)
def test_closed_stdout_exits_quietly(tmp_path: Path, stored_run: str, args: list[str]) -> None:
    # The reader is gone before the command writes a byte: as `| head -0` would be.
    proc = subprocess.Popen(
        flowdag_cmd(*args, "--store", "lmdb://s"),
        cwd=tmp_path,
        env=env(),
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
    )
    assert proc.stdout is not None and proc.stderr is not None
    proc.stdout.close()
    err = proc.stderr.read().decode()
    assert proc.wait(timeout=120) == 141
    assert err == ""


# -- pools: --pool NAME=N and Workflow(pools=) ------------------------------------------

POOLED = """
import os, time
import flowdag

wf = flowdag.Workflow("pooled", pools={WF_POOLS})

def call(ctx):
    mark = os.path.join("busy", ctx.node)
    open(mark, "w").close()
    with open("peaks.log", "a") as log:
        log.write(f"{len(os.listdir('busy'))}\\n")
    time.sleep(0.6)
    os.remove(mark)

for i in range(4):
    wf.add_node(f"api{i}", call, pool="api")
"""


def peak(tmp_path: Path, wf_pools: str, *pool_args: str) -> int:
    (tmp_path / "busy").mkdir(exist_ok=True)
    (tmp_path / "peaks.log").unlink(missing_ok=True)
    write(tmp_path, POOLED.replace("{WF_POOLS}", wf_pools))
    done = cli(tmp_path, "run", "pipeline.py", "--workers", "4", "--store", "memory://", *pool_args)
    assert done.returncode == 0, done.stderr
    return max(int(n) for n in (tmp_path / "peaks.log").read_text().split())


def test_pool_option_caps_the_pool(tmp_path: Path) -> None:
    assert peak(tmp_path, "None", "--pool", "api=1") == 1


def test_workflow_pools_cap_the_pool_under_the_cli(tmp_path: Path) -> None:
    assert peak(tmp_path, "{'api': 1}") == 1


def test_pool_option_overrides_the_workflow(tmp_path: Path) -> None:
    assert peak(tmp_path, "{'api': 1}", "--pool", "other=1", "--pool", "api=4") > 1


@pytest.mark.parametrize("value", ["api", "api=0", "=2", "api=x", "api=-1", "api=1.5"])
def test_bad_pool_option_is_one_error_line(tmp_path: Path, value: str) -> None:
    write(tmp_path, POOLED.replace("{WF_POOLS}", "None"))
    done = cli(tmp_path, "run", "pipeline.py", "--store", "memory://", "--pool", value)
    assert done.returncode == 2
    lines = done.stderr.splitlines()
    assert len(lines) == 1 and lines[0].startswith("flowdag: error: --pool takes NAME=N"), lines
    assert repr(value) in lines[0]
    assert not (tmp_path / "peaks.log").exists()


# -- a dead run, a live run ---------------------------------------------------------------

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
"""


def wait_for_b(tmp_path: Path, proc: subprocess.Popen[Any] | Child) -> None:
    """Until node ``b`` of `SLOW` has started (``a`` is committed by then)."""
    deadline = time.monotonic() + 60
    while not (tmp_path / "b-started").exists():
        assert proc.poll() is None and time.monotonic() < deadline
        time.sleep(0.05)


def status_json(tmp_path: Path, store: str) -> dict[str, Any]:
    done = cli(tmp_path, "status", "r", "--json", "--store", store)
    assert done.returncode == 0, done.stderr
    return json.loads(done.stdout)  # type: ignore[no-any-return]


@pytest.mark.parametrize("scheme", ["lmdb", "json"])
def test_live_run_shows_its_pid_and_a_killed_one_is_interrupted(
    tmp_path: Path, scheme: str
) -> None:
    write(tmp_path, SLOW)
    store = f"{scheme}://s"
    runner = forkserver.shared().start(
        python_m, "flowdag", str(tmp_path), env(), "run", "pipeline.py", "--run-id", "r",
        "--store", store,
    )  # fmt: skip
    try:
        wait_for_b(tmp_path, runner)
        live = status_json(tmp_path, store)
        assert (live["status"], live["pid"]) == ("running", runner.pid)
        assert live["nodes"]["a"]["status"] == "completed"
        text = cli(tmp_path, "status", "r", "--store", store).stdout
        assert f"running (pid {runner.pid})" in text.splitlines()[0]
        listed = cli(tmp_path, "list", "--json", "--store", store)
        assert [(r["status"], r["pid"]) for r in json.loads(listed.stdout)] == [
            ("running", runner.pid)
        ]
        # The probe never takes the lock from the runner: it is still running.
        assert runner.poll() is None
    finally:
        runner.kill()
        runner.wait(timeout=30)
    dead = status_json(tmp_path, store)
    assert (dead["status"], dead["pid"]) == ("interrupted", None)
    assert dead["last_commit"] == dead["nodes"]["a"]["finished_at"] is not None
    text = cli(tmp_path, "status", "r", "--store", store).stdout
    assert "interrupted (last commit " in text.splitlines()[0]
    assert "running" not in text
    listed_text = cli(tmp_path, "list", "--store", store).stdout
    assert "interrupted (last commit " in listed_text and "running" not in listed_text
    if shutil.which("script"):  # on a terminal: coloured as a status, pid or time aside
        pty = subprocess.run(
            ["script", "-qec", shlex.join(flowdag_cmd("list", "--store", store)), "/dev/null"],
            cwd=tmp_path, env={**env(), "TERM": "xterm"}, capture_output=True, text=True,
            timeout=120,
        )  # fmt: skip
        assert "\x1b[35minterrupted (last commit " in pty.stdout, pty.stdout
    [row] = json.loads(cli(tmp_path, "list", "--json", "--store", store).stdout)
    assert (row["status"], row["pid"], row["last_commit"]) == (
        "interrupted", None, dead["last_commit"]
    )  # fmt: skip


def test_finished_runs_keep_their_status(tmp_path: Path, stored_run: str) -> None:
    row = json.loads(cli(tmp_path, "list", "--json", "--store", "lmdb://s").stdout)[0]
    assert (row["status"], row["pid"]) == ("completed", None)


# -- flowdag show, status --json --outputs ------------------------------------------------

MIXED = """
import flowdag

wf = flowdag.Workflow("mixed")

@wf.node
def big(ctx):
    ctx.data["rows"] = 3
    return {"items": list(range(500)), "name": "x", "t": (1, 2)}

@wf.node(deps=["big"], retries=1)
def bad(big):
    raise ValueError("no good " + str(len(big["items"])))

@wf.node
def small():
    return 42
"""


@pytest.fixture
def mixed_run(tmp_path: Path) -> str:
    return run_once(tmp_path, MIXED, "m", 1)


def test_show_lists_the_nodes_in_brief(tmp_path: Path, mixed_run: str) -> None:
    done = cli(tmp_path, "show", "m", "--store", "lmdb://s")
    assert done.returncode == 0, done.stderr
    lines = done.stdout.splitlines()
    assert lines[0].split()[:5] == ["run", "m", "workflow", "mixed", "failed"]
    rows = {line.split()[0]: line for line in lines[2:5]}
    assert "ValueError: no good 500" in rows["bad"] and " 2 " in rows["bad"]  # attempts
    assert rows["small"].rstrip().endswith("42")
    assert "{'items': [0, 1, 2" in rows["big"]
    assert "{'rows': 3}" in done.stdout  # ctx.data


def test_show_node_output_is_cut_with_a_note(tmp_path: Path, mixed_run: str) -> None:
    done = cli(tmp_path, "show", "m", "big", "--store", "lmdb://s")
    assert done.returncode == 0, done.stderr
    assert "output:" in done.stdout
    assert "more of" in done.stdout and "--json shows all" in done.stdout
    assert "499" not in done.stdout


def test_show_node_error_has_the_full_traceback(tmp_path: Path, mixed_run: str) -> None:
    done = cli(tmp_path, "show", "m", "bad", "--store", "lmdb://s")
    assert done.returncode == 0, done.stderr
    assert "attempts 2" in done.stdout
    assert "error: ValueError: no good 500" in done.stdout
    assert "Traceback (most recent call last):" in done.stdout
    assert 'pipeline.py", line 13, in bad' in done.stdout


def test_show_json_has_values_in_full(tmp_path: Path, mixed_run: str) -> None:
    node = json.loads(cli(tmp_path, "show", "m", "big", "--json", "--store", "lmdb://s").stdout)
    assert node["output"] == {"items": list(range(500)), "name": "x", "t": {"$tuple": [1, 2]}}
    assert node["data"] == {"rows": 3} and node["node"] == "big"
    run = json.loads(cli(tmp_path, "show", "m", "--json", "--store", "lmdb://s").stdout)
    assert run["nodes"]["small"]["output"] == 42 and run["data"] == {"rows": 3}
    assert "Traceback" in run["nodes"]["bad"]["error"]["traceback"]


def test_status_json_outputs_on_request(tmp_path: Path, mixed_run: str) -> None:
    plain = json.loads(cli(tmp_path, "status", "m", "--json", "--store", "lmdb://s").stdout)
    assert "output" not in plain["nodes"]["small"] and "data" not in plain
    full = cli(tmp_path, "status", "m", "--json", "--outputs", "--store", "lmdb://s")
    document = json.loads(full.stdout)
    assert document["nodes"]["small"]["output"] == 42
    assert document["nodes"]["big"]["output"]["items"] == list(range(500))
    assert document["data"] == {"rows": 3}


def test_show_unknown_node_is_one_error_line(tmp_path: Path, mixed_run: str) -> None:
    done = cli(tmp_path, "show", "m", "nope", "--store", "lmdb://s")
    assert done.returncode == 2
    assert done.stderr.splitlines() == [
        "flowdag: error: run 'm' has no node 'nope'; its nodes: big, bad, small"
    ]


def test_show_never_creates_a_store(tmp_path: Path) -> None:
    done = cli(tmp_path, "show", "m", "--store", "lmdb://missing")
    assert done.returncode == 2 and "no store at" in done.stderr
    assert not (tmp_path / "missing").exists()


# -- a workflow file that runs itself -----------------------------------------------------

SELF_RUNNING = """
import flowdag

wf = flowdag.Workflow("selfish")

@wf.node
def a():
    with open("calls.log", "a") as log:
        log.write("a\\n")
    return 1

{RUN}
"""


def test_a_file_that_runs_itself_runs_once_with_a_warning(tmp_path: Path) -> None:
    write(tmp_path, SELF_RUNNING.replace("{RUN}", 'result = flowdag.run(wf, run_id="own")'))
    done = cli(tmp_path, "run", "pipeline.py", "--store", "lmdb://s")
    assert done.returncode == 0, done.stderr
    assert (tmp_path / "calls.log").read_text() == "a\n"  # once, not twice
    assert "flowdag: warning: importing pipeline.py ran the workflow itself" in done.stderr
    assert 'if __name__ == "__main__":' in done.stderr
    assert "run own completed" in done.stdout
    assert not (tmp_path / "s").exists()  # the CLI's store was never needed


def test_a_guarded_file_runs_once_without_a_warning(tmp_path: Path) -> None:
    guarded = 'if __name__ == "__main__":\n    flowdag.run(wf, run_id="own")'
    write(tmp_path, SELF_RUNNING.replace("{RUN}", guarded))
    done = cli(tmp_path, "run", "pipeline.py", "--run-id", "cli", "--store", "lmdb://s")
    assert done.returncode == 0, done.stderr
    assert (tmp_path / "calls.log").read_text() == "a\n"
    assert "warning" not in done.stderr
    assert "run cli completed" in done.stdout


# -- small ones: positional-only parameters, the resume hint ------------------------------

FAILING = """
import flowdag

wf = flowdag.Workflow("failing")

@wf.node
def a():
    raise RuntimeError("boom")
"""


def test_resume_hint_keeps_workers_store_and_executor(tmp_path: Path) -> None:
    write(tmp_path, FAILING)
    args = ["--store", "json://st", "--workers", "3", "--executor", "processes"]
    done = cli(tmp_path, "run", "pipeline.py", "--run-id", "r", *args)
    assert done.returncode == 1, done.stderr
    last = done.stdout.splitlines()[-1]
    hint = "flowdag run pipeline.py --run-id r --store json://st --workers 3 --executor processes"
    assert last.endswith(f"fix and resume with: {hint}"), last


def test_no_resume_hint_for_a_memory_store(tmp_path: Path) -> None:
    write(tmp_path, FAILING)
    done = cli(tmp_path, "run", "pipeline.py", "--run-id", "r", "--store", "memory://")
    assert done.returncode == 1, done.stderr
    last = done.stdout.splitlines()[-1]
    # "resume with", not "resume": the node's traceback names this test's folder.
    assert last.startswith("run r failed") and "resume with" not in done.stdout + done.stderr


@pytest.mark.parametrize(
    ("store", "hint"),
    [
        (
            "lmdb://s",
            "; resume with: flowdag run pipeline.py --run-id r --store lmdb://s --workers 2",
        ),
        ("memory://", ""),
    ],
)
def test_interrupted_run_hint(tmp_path: Path, store: str, hint: str) -> None:
    write(tmp_path, SLOW)
    proc = subprocess.Popen(
        flowdag_cmd("run", "pipeline.py", "--run-id", "r", "--store", store, "--workers", "2"),
        cwd=tmp_path, env=env(), stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
    )  # fmt: skip
    try:
        wait_for_b(tmp_path, proc)
        proc.send_signal(signal.SIGINT)
        _, err = proc.communicate(timeout=60)
    finally:
        proc.kill()
    assert proc.returncode == 130
    assert err.splitlines()[-1] == f"flowdag: interrupted{hint}"


def test_positional_only_parameter_has_its_own_message(tmp_path: Path) -> None:
    write(
        tmp_path,
        """
        import flowdag

        wf = flowdag.Workflow("posonly")

        @wf.node
        def a():
            return 1

        @wf.node(deps=["a"])
        def b(a, /):
            return a
        """,
    )
    done = cli(tmp_path, "run", "pipeline.py", "--store", "memory://")
    assert done.returncode == 2
    [line] = done.stderr.splitlines()
    assert "parameter 'a' is positional-only (before '/')" in line
    assert "remove the '/'" in line and "neither a dependency" not in line
