"""The README's ``jq`` commands give a run's latest state, journal included, through real
processes; the JSON store's snapshot file alone does not."""

from __future__ import annotations

import json
import os
import re
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]

WORKFLOW = """
import os
import flowdag

wf = flowdag.Workflow("nightly")


@wf.node()
def load():
    return [1, 2, 3]


@wf.node(deps=["load"])
def report(load):
    if os.environ.get("REPORT_FAILS"):
        raise RuntimeError("not yet")
    return {"rows": len(load), "ids": (7, 8)}
"""


def readme_jq_commands() -> list[str]:
    """The README's ``flowdag ... | jq`` lines, as documented."""
    text = (ROOT / "README.md").read_text()
    return re.findall(r"^\s*(flowdag [^\n]*\| jq [^\n]*)$", text, re.MULTILINE)


@pytest.mark.skipif(shutil.which("jq") is None, reason="needs jq")
def test_readme_jq_commands_show_the_latest_state(tmp_path: Path) -> None:
    commands = readme_jq_commands()
    assert len(commands) >= 2, commands
    (tmp_path / "wf.py").write_text(WORKFLOW)
    # ``flowdag`` on PATH runs this tree's CLI, as an installed one would.
    bin_dir = tmp_path / "bin"
    bin_dir.mkdir()
    (bin_dir / "flowdag").write_text(f'#!/bin/sh\nexec "{sys.executable}" -m flowdag "$@"\n')
    (bin_dir / "flowdag").chmod(0o755)
    env = {
        **os.environ,
        "PYTHONPATH": str(ROOT),
        "PATH": f"{bin_dir}{os.pathsep}{os.environ['PATH']}",
    }

    def flowdag(*args: str, **extra: str) -> None:
        subprocess.run(
            [sys.executable, "-m", "flowdag", *args],
            cwd=tmp_path,
            env={**env, **extra},
            capture_output=True,
            timeout=120,
        )

    # A first run fails at report; the resume completes it. Both stay in the journal.
    flowdag("run", "wf.py", "--run-id", "nightly", "--store", "json://runs", REPORT_FAILS="1")
    flowdag("run", "wf.py", "--run-id", "nightly", "--store", "json://runs")
    snapshot = tmp_path / "runs" / "runs" / "nightly" / "snapshot.json"
    assert snapshot.exists()
    # The snapshot file lags: jq on it (past its checksum line) does not see the output.
    stale = subprocess.run(
        f"tail -n +2 {snapshot} | jq '.nodes.report'",
        shell=True,
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert stale.returncode == 0, stale.stderr
    assert '"rows": 3' not in stale.stdout
    latest = {"rows": 3, "ids": {"$tuple": [7, 8]}}
    for command in commands:
        done = subprocess.run(
            ["bash", "-o", "pipefail", "-c", command],
            cwd=tmp_path,
            env=env,
            capture_output=True,
            text=True,
            timeout=120,
        )
        assert done.returncode == 0, (command, done.stderr)
        assert json.loads(done.stdout) == latest, (command, done.stdout)
