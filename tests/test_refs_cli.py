"""``flowdag run --inline-limit`` and ``--ttl``."""

from __future__ import annotations

from datetime import timedelta
from pathlib import Path

import pytest

from flowdag.cli import main
from flowdag.stores import open_store

WORKFLOW = """
import flowdag

wf = flowdag.Workflow("cli-refs")


@wf.node
def text():
    return "x" * 5000
"""


@pytest.fixture
def flow(tmp_path: Path) -> Path:
    path = tmp_path / "flow.py"
    path.write_text(WORKFLOW)
    return path


def test_inline_limit_and_ttl_reach_the_run(
    tmp_path: Path, flow: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    url = f"lmdb://{tmp_path / 'store'}"
    args = ["run", str(flow), "--store", url, "--inline-limit", "1KiB", "--ttl", "30d"]
    assert main([*args, "--run-id", "small-limit"]) == 0
    assert main(["run", str(flow), "--store", url, "--inline-limit", "none", "--run-id", "no"]) == 0
    capsys.readouterr()
    with open_store(url) as store:
        state = store.load("small-limit")
        assert state.ttl == timedelta(days=30)
        assert state.nodes["text"].output.load() == "x" * 5000  # kept by reference
        assert store.load("no").nodes["text"].output == "x" * 5000  # inline
        assert store.load("no").ttl is None


@pytest.mark.parametrize(
    ("option", "value", "message"),
    [
        ("--inline-limit", "12xb", "--inline-limit='12xb' is not a size"),
        ("--ttl", "forever", "--ttl='forever' is not a duration"),
        ("--ttl", "0s", "--ttl must be above 0"),
    ],
)
def test_bad_values_are_one_error_line_before_the_file_runs(
    tmp_path: Path, option: str, value: str, message: str, capsys: pytest.CaptureFixture[str]
) -> None:
    flow = tmp_path / "flow.py"
    flow.write_text("raise SystemExit('the file must not be imported')\n")
    url = f"lmdb://{tmp_path / 'store'}"
    assert main(["run", str(flow), "--store", url, option, value]) == 2
    err = capsys.readouterr().err
    assert message in err and "Traceback" not in err


def test_list_leaves_out_expired_runs(
    tmp_path: Path, flow: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    from datetime import UTC, datetime

    from flowdag.state import NodeState, NodeStatus, RunState

    url = f"lmdb://{tmp_path / 'store'}"
    long_ago = datetime(2020, 1, 1, tzinfo=UTC)
    done = NodeState(NodeStatus.COMPLETED, 1, long_ago, long_ago, 1)
    with open_store(url) as store:
        store.save(RunState("old", "wf", {"a": done}, ttl=timedelta(days=1)))
        store.save(RunState("kept", "wf", {"a": done}))
    assert main(["list", "--store", url]) == 0
    out, err = capsys.readouterr()
    assert "kept" in out and "old" not in out and "damaged" not in out + err
