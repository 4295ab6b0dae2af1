"""flowdag and every store work without the ``flatbuffers`` package (a dev dependency)."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]

# None in sys.modules makes ``import flatbuffers`` fail, as if it were not installed.
CODE = """
import sys
sys.modules["flatbuffers"] = None
import flowdag
from flowdag.stores import open_store

wf = flowdag.Workflow("w")

@wf.node()
def a():
    return 1

@wf.node(deps=["a"])
def b(a):
    return a + 1

for url in ("memory://", "lmdb://{d}/l", "json://{d}/j", "flatbuffers://{d}/f"):
    with open_store(url.format(d=sys.argv[1])) as store:
        assert flowdag.run(wf, run_id="r", store=store).ok
        assert store.load("r").nodes["b"].output == 2, url
assert "flatbuffers" not in [m for m in sys.modules if sys.modules[m] is not None]
print("ok")
"""


def test_every_store_works_without_flatbuffers(tmp_path: Path) -> None:
    proc = subprocess.run(
        [sys.executable, "-c", CODE, str(tmp_path)],
        capture_output=True,
        text=True,
        env={"PYTHONPATH": str(ROOT), "PATH": "/usr/bin:/bin"},
        timeout=120,
    )
    assert proc.returncode == 0, proc.stderr
    assert proc.stdout.strip() == "ok"
