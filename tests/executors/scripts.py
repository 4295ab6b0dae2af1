"""Running workflow files as users do, in real subprocesses: ``python FILE.py``, ``-m flowdag``."""

from __future__ import annotations

import importlib.util
import os
import subprocess
import sys
from pathlib import Path

import pytest

#: The executors whose workers are other processes, each a name ``run(executor=)`` takes.
WORKER_PROCESSES = [
    "processes",
    pytest.param(
        "dask",
        marks=pytest.mark.skipif(
            importlib.util.find_spec("distributed") is None, reason="needs distributed"
        ),
    ),
]


def python(*args: str, cwd: Path) -> subprocess.CompletedProcess[str]:
    """``python ARGS`` in ``cwd``, output captured as text, on a wide terminal."""
    return subprocess.run(
        [sys.executable, *args],
        cwd=cwd,
        env={**os.environ, "COLUMNS": "200"},
        capture_output=True,
        text=True,
        timeout=180,
    )
