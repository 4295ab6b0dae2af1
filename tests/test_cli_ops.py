"""The operator's command line, each through a real ``flowdag`` process: pipes closed early,
pools, dead and live runs."""

from __future__ import annotations

import os
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest

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
    return subprocess.run(
        flowdag_cmd(*args), cwd=tmp_path, env=env(), capture_output=True, text=True, timeout=120
    )


def write(tmp_path: Path, source: str, name: str = "pipeline.py") -> Path:
    path = tmp_path / name
    path.write_text(textwrap.dedent(source))
    return path


# -- | head: a closed stdout ----------------------------------------------------------


@pytest.fixture
def stored_run(tmp_path: Path) -> str:
    write(tmp_path, PIPELINE)
    done = cli(tmp_path, "run", "pipeline.py", "--run-id", "r1", "--store", "lmdb://s")
    assert done.returncode == 0, done.stderr
    return "r1"


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
