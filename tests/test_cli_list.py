"""``flowdag list``: plain lines when piped, colour on a terminal, --json, thousands of runs."""

from __future__ import annotations

import json
import os
import shlex
import shutil
import subprocess
import sys
from datetime import UTC, datetime
from pathlib import Path

import pytest

from flowdag.cli import main
from flowdag.state import NodeState, NodeStatus, RunState
from flowdag.stores import open_store
from flowdag.stores.base import StoredRun

ROOT = Path(__file__).resolve().parents[1]
NOW = datetime(2026, 11, 30, 12, 0, tzinfo=UTC)


def make_run(run_id: str, workflow: str, *statuses: NodeStatus) -> RunState:
    state = RunState(run_id, workflow)
    for i, status in enumerate(statuses):
        done = status is not NodeStatus.PENDING
        state.nodes[f"n{i}"] = NodeState(
            status=status,
            attempts=int(done),
            started_at=NOW if done else None,
            finished_at=NOW if done else None,
            output=i if status is NodeStatus.COMPLETED else None,
        )
    return state


def fill(url: str, count: int = 0) -> None:
    """A few runs of every kind, a damaged one, and ``count`` plain ones."""
    C, F, P = NodeStatus.COMPLETED, NodeStatus.FAILED, NodeStatus.PENDING
    with open_store(url) as store:
        store.save(make_run("done", "pipe", C, C, C))
        store.save(make_run("broke", "a much longer workflow name", C, F, NodeStatus.SKIPPED))
        store.save(make_run("odd", "tab\there\x1b[2Jnewline\nend", P))
        store.save(make_run("wide", "日本語のワークフロー", C))
        store._save("damaged", StoredRun(header=b"\x00 not a flowdag blob"))
        for i in range(count):
            store.save(make_run(f"bulk-{i:05d}", "bulk", C, P))


@pytest.fixture
def url(tmp_path: Path) -> str:
    url = f"lmdb://{tmp_path / 's'}"
    fill(url)
    return url


def test_piped_output_is_plain_aligned_lines(url: str, capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["list", "--store", url]) == 0
    out, err = capsys.readouterr()
    assert "\x1b" not in out  # no colour, no cursor movement, even from a workflow name
    lines = out.splitlines()
    assert len(lines) == 6  # a header and one line per run: nothing wrapped
    assert lines[0].split() == ["run", "id", "workflow", "status", "nodes"]
    rows = {line.split()[0]: line for line in lines[1:]}
    assert list(rows) == ["broke", "damaged", "done", "odd", "wide"]  # sorted
    assert "pipe" in rows["done"] and "3/3 completed" in rows["done"]
    assert "failed" in rows["broke"] and "1/3 completed, 1 failed, 1 skipped" in rows["broke"]
    assert "damaged" in rows["damaged"] and "damaged" in err  # and why, on stderr
    assert "tab\\x09here\\x1b[2Jnewline\\x0aend" in rows["odd"]
    # Columns line up: every status starts where the header's does (the wide
    # workflow name takes two cells a character, as on a terminal).
    column = lines[0].index("status")
    for run_id in ("broke", "damaged", "done", "odd"):
        # "odd" was left unfinished and no process holds it: interrupted, not pending.
        assert rows[run_id][column:].split()[0] in {"completed", "failed", "damaged", "interrupted"}
    assert rows["wide"].index("completed") == column - len("日本語のワークフロー")


def test_json(url: str, capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["list", "--json", "--store", url]) == 0
    runs = {run["run_id"]: run for run in json.loads(capsys.readouterr().out)}
    assert list(runs) == ["broke", "damaged", "done", "odd", "wide"]
    assert runs["done"] == {
        "run_id": "done",
        "workflow": "pipe",
        "status": "completed",
        "pid": None,
        "last_commit": NOW.isoformat(),
        "nodes": {"completed": 3, "total": 3},
        "error": None,
    }
    assert runs["broke"]["nodes"] == {"completed": 1, "failed": 1, "skipped": 1, "total": 3}
    assert runs["odd"]["workflow"] == "tab\there\x1b[2Jnewline\nend"  # JSON escapes it
    damaged = runs["damaged"]
    assert (damaged["status"], damaged["workflow"], damaged["nodes"]) == ("damaged", None, None)
    assert "run 'damaged'" in damaged["error"]


def test_json_of_an_empty_store(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    url = f"lmdb://{tmp_path / 's'}"
    open_store(url).close()
    assert main(["list", "--json", "--store", url]) == 0
    assert json.loads(capsys.readouterr().out) == []


@pytest.mark.skipif(shutil.which("script") is None, reason="needs script(1) for a terminal")
def test_terminal_output_is_coloured(url: str) -> None:
    command = [sys.executable, "-m", "flowdag", "list", "--store", url]
    env = {**os.environ, "PYTHONPATH": str(ROOT), "TERM": "xterm", "COLUMNS": "60"}
    env.pop("NO_COLOR", None)
    env.pop("FORCE_COLOR", None)
    result = subprocess.run(
        ["script", "-qec", shlex.join(command), "/dev/null"],
        capture_output=True,
        text=True,
        env=env,
        timeout=60,
    )
    assert result.returncode == 0, result.stdout + result.stderr
    lines = [line for line in result.stdout.replace("\r", "").splitlines() if "\x1b[" in line]
    assert any("\x1b[32mcompleted\x1b[0m" in line for line in lines), result.stdout
    assert any("\x1b[1mrun id\x1b[0m" in line for line in lines), result.stdout
    assert "\x1b[2J" not in result.stdout  # the workflow name's escape is shown, not obeyed
    broke = next(line for line in result.stdout.splitlines() if line.startswith("broke"))
    assert "1 skipped" in broke  # one line per run, even past the terminal's width


def test_thousands_of_runs_one_line_each(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    """A large store lists as one unwrapped line per run (speed: benchmarks/bench_cli.py)."""
    url = f"lmdb://{tmp_path / 's'}"
    fill(url, 2000)
    capsys.readouterr()
    assert main(["list", "--store", url]) == 0
    assert len(capsys.readouterr().out.splitlines()) == 2006
