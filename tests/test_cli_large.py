"""Large runs on the command line: ``status`` capped (``--all`` for every node), a map
shown as a group in ``status``, ``explain`` and ``flowdag run``'s progress, and an
input node that ``explain`` says waits. In process (`flowdag.cli.main`), small stores."""

from __future__ import annotations

import subprocess
import sys
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import pytest

import flowdag
from flowdag.cli import main
from flowdag.cli.render import RICH_ROWS, ROWS
from flowdag.state import ErrorInfo, NodeState, NodeStatus, RunState
from flowdag.stores import open_store

C, F, P, S = NodeStatus.COMPLETED, NodeStatus.FAILED, NodeStatus.PENDING, NodeStatus.SKIPPED
NOW = datetime(2026, 11, 30, 12, 0, tzinfo=UTC)


@pytest.fixture(autouse=True)
def _wide(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("FORCE_COLOR", raising=False)
    monkeypatch.setenv("COLUMNS", "200")


def save_run(url: str, statuses: list[NodeStatus]) -> None:
    """A run ``r`` of nodes ``n0``, ``n1``, ... with these statuses."""
    state = RunState("r", "big")
    for i, status in enumerate(statuses):
        ran = status in (C, F)
        state.nodes[f"n{i}"] = NodeState(
            status=status,
            attempts=int(ran),
            started_at=NOW if ran else None,
            finished_at=NOW if ran else None,
            error=ErrorInfo("ValueError", f"bad {i}", "") if status is F else None,
        )
    with open_store(url) as store:
        store.save(state)


def body(out: str) -> list[str]:
    """The node table's lines: after the run line, up to the first line of another kind."""
    lines = out.splitlines()[2:]
    return [line for line in lines if line.startswith("n") and line[1].isdigit()]


def test_a_small_run_shows_every_node(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    url = f"lmdb://{tmp_path / 's'}"
    save_run(url, [C] * (ROWS - 1) + [F])
    assert main(["status", "r", "--store", url]) == 0
    out = capsys.readouterr().out
    assert len(body(out)) == ROWS and "not shown" not in out


def test_a_large_run_shows_what_is_not_completed_failed_first(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    url = f"lmdb://{tmp_path / 's'}"
    statuses = [C] * 100 + [P] * 60 + [S] * 3 + [F] * 2  # 65 not completed: more than ROWS
    save_run(url, statuses)
    assert main(["status", "r", "--store", url]) == 0
    out = capsys.readouterr().out
    assert out.splitlines()[0].endswith("(100/165 completed, 60 pending, 2 failed, 3 skipped)")
    rows = body(out)
    assert len(rows) == ROWS
    assert [row.split()[:2] for row in rows[:5]] == [
        ["n163", "failed"],
        ["n164", "failed"],
        ["n160", "skipped"],
        ["n161", "skipped"],
        ["n162", "skipped"],
    ]
    assert all(row.split()[1] == "pending" for row in rows[5:])
    assert "and 15 more nodes not completed (15 pending)" in out
    assert "100 completed nodes not shown" in out
    assert "--all lists every node" in out
    assert "ValueError: bad 163" in out  # the failed attempts' table

    assert main(["status", "r", "--store", url, "--all"]) == 0
    out = capsys.readouterr().out
    assert [row.split()[0] for row in body(out)] == [f"n{i}" for i in range(165)]
    assert "not shown" not in out


def test_every_node_of_a_very_large_run_as_aligned_lines(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    url = f"lmdb://{tmp_path / 's'}"
    save_run(url, [C] * (RICH_ROWS + 1))
    assert main(["status", "r", "--store", url, "--all"]) == 0
    out = capsys.readouterr().out
    lines = out.splitlines()
    assert lines[1].split() == ["node", "status", "attempts", "started", "duration", "error"]
    rows = body(out)
    assert len(rows) == RICH_ROWS + 1
    # Written by hand, not by rich: the same columns, numbers flush right, no trailing blanks.
    assert lines[1].index("attempts") + len("attempts") == rows[0].index(" 1 ") + 2
    assert all(row == row.rstrip() for row in rows)
    assert main(["status", "r", "--store", url]) == 0
    assert f"{RICH_ROWS + 1} completed nodes not shown" in capsys.readouterr().out


# -- maps ---------------------------------------------------------------------------


def square(item: int) -> int:
    if item in (3, 5):
        raise ValueError(f"bad item {item}")
    return item * item


def map_workflow() -> flowdag.Workflow:
    wf = flowdag.Workflow("maps")
    wf.add_node("extract", lambda: list(range(8)))
    wf.map("work", square, over="extract")
    wf.add_node("total", lambda work: sum(work), deps=["work"])
    return wf


@pytest.fixture
def map_run(tmp_path: Path) -> str:
    url = f"lmdb://{tmp_path / 's'}"
    flowdag.run(map_workflow(), run_id="m", store=url)
    return url


def test_explain_groups_a_maps_items(map_run: str, capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["explain", "m", "--store", map_run]) == 0
    lines = capsys.readouterr().out.splitlines()
    cells = [line.split()[:3] for line in lines[2:]]
    assert cells == [
        ["extract", "completed", "new"],
        ["work", "failed", "new"],
        ["work[...]", "completed", "new"],
        ["work[...]", "failed", "new"],
        ["total", "skipped", "new"],
    ]
    assert "6 items (work[0], work[1], work[2], ...)" in lines[4]
    assert "2 items (work[3], work[5])" in lines[5] and "bad item 3" in lines[5]

    assert main(["explain", "m", "--store", map_run, "-v"]) == 0
    names = [line.split()[0] for line in capsys.readouterr().out.splitlines()[2:]]
    assert names == ["extract", "work", *(f"work[{i}]" for i in range(8)), "total"]

    assert main(["explain", "m", "--store", map_run, "--node", "work[5]"]) == 0
    lines = capsys.readouterr().out.splitlines()[2:]
    assert len(lines) == 1 and lines[0].split()[:2] == ["work[5]", "failed"]

    assert main(["explain", "m", "--store", map_run, "--node", "nope"]) == 2
    assert "has no node 'nope'" in capsys.readouterr().err
    assert main(["explain", "--plan", "flow.py", "--run-id", "m", "--node", "work"]) == 2
    assert "--node explains a stored run" in capsys.readouterr().err


def test_status_and_the_run_summary_show_a_map_as_one_line(
    map_run: str, tmp_path: Path, capsys: pytest.CaptureFixture[str], monkeypatch: Any
) -> None:
    assert main(["status", "m", "--store", map_run]) == 0
    out = capsys.readouterr().out
    assert "6/8 items completed, 2 failed" in out and "work[0]" not in out

    path = tmp_path / "flow.py"
    path.write_text(
        "import flowdag\nfrom tests.test_cli_large import map_workflow\nwf = map_workflow()\n"
    )
    monkeypatch.setattr(sys, "path", [str(Path(__file__).parents[1]), *sys.path])
    url = f"lmdb://{tmp_path / 'other'}"
    assert main(["run", str(path), "--run-id", "x", "--store", url]) == 1
    captured = capsys.readouterr()
    assert "6/8 items completed, 2 failed" in captured.out
    assert "work[0]" not in captured.out
    log = captured.err.splitlines()
    assert "flowdag: map work started its items" in log
    assert not any("work[0]" in line for line in log)  # an item that completed is not said
    assert any(line.startswith("flowdag: node work[3] failed: ValueError") for line in log)
    assert any(
        line.startswith("flowdag: node work failed")
        and "items run here: 6 completed, 2 failed" in line
        for line in log
    )


def test_explain_says_an_input_node_waits(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    wf = flowdag.Workflow("po")
    wf.add_node("draft", lambda: {"total": 5})
    wf.add_input("approval", deps=["draft"], schema={"type": "object"}, timeout="2h")
    wf.add_node("send", lambda approval: approval, deps=["approval"])
    url = f"lmdb://{tmp_path / 's'}"
    assert flowdag.run(wf, run_id="po", store=url).status == "suspended"
    assert main(["explain", "po", "--store", url]) == 0
    [line] = [line for line in capsys.readouterr().out.splitlines() if line.startswith("approval")]
    assert line.split()[:3] == ["approval", "waiting", "new"]
    assert "waiting for input since" in line and "never ran" not in line
    assert "deadline" in line and "then it fails (InputTimeoutError)" in line
    with open_store(url) as store:
        reason = flowdag.explain.explain_stored(store, "po")["approval"]
    assert reason is not None and reason.detail.startswith("waiting for input since")


def test_run_result_outputs_are_built_once() -> None:
    wf = flowdag.Workflow("w")
    wf.add_node("a", lambda: 1)
    wf.add_node("b", lambda a: a + 1, deps=["a"])
    result = flowdag.run(wf)
    outputs = result.outputs
    assert outputs is result.outputs  # the same mapping, not rebuilt on each access
    result.nodes.clear()  # what a rebuild would read
    assert result.outputs is outputs and dict(result.outputs) == {"a": 1, "b": 2}


def test_a_command_imports_only_its_own_module(tmp_path: Path) -> None:
    # `flowdag status` pays for the status command, not for the runner, asyncio,
    # the pools or the other commands; `flowdag --help` still lists every command.
    script = (
        "import contextlib, io, sys\n"
        "from flowdag.cli import main\n"
        f"main(['status', 'r', '--store', 'lmdb://{tmp_path / 'none'}'])\n"
        "heavy = ['asyncio', 'flowdag.runner', 'flowdag.cli.run', 'flowdag.cli.explain']\n"
        "print(sorted(m for m in heavy if m in sys.modules))\n"
        "with contextlib.redirect_stdout(io.StringIO()) as out:\n"
        "    main(['--help'])\n"
        "assert 'mark-done' in out.getvalue() and 'provide' in out.getvalue()\n"
    )
    done = subprocess.run(
        [sys.executable, "-c", script], capture_output=True, text=True, timeout=60
    )
    assert done.returncode == 0, done.stderr
    assert done.stdout.strip() == "[]"
    assert "no store at" in done.stderr
