"""examples/purchase_order.py end to end, across processes, as its docstring says to use it.

Process 1 runs the example: it drafts the order, suspends at the approval,
prints the key and exits. Process 2 gives the approval: with ``flowdag
provide`` where the command line has it, else with `flowdag.provide_input`
from ``python -c``. Process 3 runs the example again: the order is sent.
"""

from __future__ import annotations

import contextlib
import io
import json
import os
import re
import subprocess
import sys
from pathlib import Path

import pytest

import flowdag
from flowdag import InputNotFoundError

ROOT = Path(__file__).resolve().parents[1]
EXAMPLE = ROOT / "examples" / "purchase_order.py"
PROVIDE = (
    "import json, sys, flowdag; "
    "flowdag.provide_input(sys.argv[1], sys.argv[2], json.loads(sys.argv[3]))"
)


def python(*args: str, cwd: Path, env: dict[str, str]) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, *args],
        cwd=cwd,
        env={**os.environ, "PYTHONPATH": str(ROOT), **env},
        capture_output=True,
        text=True,
        timeout=120,
    )


def cli_has_provide() -> bool:
    """Whether ``flowdag provide`` exists (the command line of waits may come later)."""
    from flowdag.cli.app import make_parser

    with contextlib.redirect_stdout(io.StringIO()), contextlib.redirect_stderr(io.StringIO()):
        try:
            make_parser().parse_args(["provide", "--help"])
        except SystemExit as exc:
            return exc.code == 0
    return False


def test_purchase_order_suspends_is_approved_elsewhere_and_is_sent(tmp_path: Path) -> None:
    url = f"lmdb://{tmp_path / 'store'}"
    outbox = tmp_path / "outbox"
    env = {"PO_STORE": url, "PO_OUTBOX": str(outbox)}

    first = python(str(EXAMPLE), "po-t", cwd=tmp_path, env=env)
    assert first.returncode == 0, first.stderr
    assert "po-t: waiting for approval: Send PO-17 to ACME Office for 1,463.00 EUR?" in first.stdout
    keys = set(re.findall(r"fdw_[A-Za-z0-9_-]{32}", first.stdout))
    assert len(keys) == 1, first.stdout
    [key] = keys
    assert f"flowdag provide {key} --json" in first.stdout  # the command to give the answer
    assert not outbox.exists()  # nothing sent before the approval

    answer = json.dumps({"approved": True, "by": "ana"})
    if cli_has_provide():
        given = python("-m", "flowdag", "provide", key, "--json", answer, "--store", url,
                       cwd=tmp_path, env=env)  # fmt: skip
    else:
        given = python("-c", PROVIDE, url, key, answer, cwd=tmp_path, env=env)
    assert given.returncode == 0, given.stderr
    assert key not in given.stdout + given.stderr  # never echoed back
    with flowdag.open_store(url) as store:
        [wait] = flowdag.list_waits(store)
        assert wait.state == "provided" and wait.key is None

    third = python(str(EXAMPLE), "po-t", cwd=tmp_path, env=env)
    assert third.returncode == 0, third.stderr
    sent = outbox / "PO-17.json"
    assert f"po-t: order sent: {sent}" in third.stdout
    order = json.loads(sent.read_text())
    assert (order["approved_by"], order["cost_centre"], order["total_cents"]) == (
        "ana",
        "CC-42",
        146_300,
    )
    with flowdag.open_store(url) as store:
        assert flowdag.list_waits(store) == []
        with pytest.raises(InputNotFoundError):  # the key worked once
            flowdag.provide_input(store, key, {"approved": False, "by": "eve"})
        assert store.load("po-t").nodes["approval"].output == {"approved": True, "by": "ana"}
