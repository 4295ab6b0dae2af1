"""Tracebacks from worker processes name the workflow file and the raising line.

Node functions of a workflow file go to process-pool and Dask workers by value
(the workers cannot import the file by its name), and their tracebacks must
still read ``File "/path/to/flow.py", line 9, in helper``, never
``File "<dynamic-code>"``. Each case runs the file as users do, in a real
subprocess: ``python flow.py`` and ``flowdag run flow.py``, on a real process
pool and a real ``LocalCluster`` of worker processes; the test reads the
traceback the run stored.
"""

from __future__ import annotations

import textwrap
from pathlib import Path

import pytest

import flowdag
from tests.executors.scripts import WORKER_PROCESSES, python

FLOW = textwrap.dedent(
    """\
    import sys

    import flowdag

    wf = flowdag.Workflow("tracebacks")


    def helper(value):
        raise ValueError(f"bad value {value}")  # line 9


    @wf.node()
    def source():
        return 1


    @wf.node(deps=["source"])
    def broken(source):
        return helper(source)  # line 19


    if __name__ == "__main__":
        executor, store = sys.argv[1], sys.argv[2]
        options = {"max_workers": 1} if executor == "dask" else {}
        flowdag.run(wf, run_id="r", store=store, executor=executor, **options)
    """
)


def stored_traceback(store: str) -> str:
    with flowdag.open_store(store) as opened:
        error = opened.load("r").nodes["broken"].error
    assert error is not None
    assert (error.type, error.message) == ("ValueError", "bad value 1")
    return error.traceback


def assert_names_the_file(traceback: str, path: Path) -> None:
    assert "<dynamic-code>" not in traceback
    assert f'File "{path}", line 19, in broken' in traceback
    assert f'File "{path}", line 9, in helper' in traceback
    # The worker can read the file: the source lines are there too.
    assert "return helper(source)  # line 19" in traceback
    assert 'raise ValueError(f"bad value {value}")  # line 9' in traceback


@pytest.mark.parametrize("executor", WORKER_PROCESSES)
def test_python_flow_py(tmp_path: Path, executor: str) -> None:
    path = tmp_path / "flow.py"
    path.write_text(FLOW)
    store = f"json://{tmp_path / 'store'}"
    done = python(str(path), executor, store, cwd=tmp_path)
    assert done.returncode == 0, done.stderr
    assert_names_the_file(stored_traceback(store), path)


@pytest.mark.parametrize("executor", WORKER_PROCESSES)
def test_flowdag_run_flow_py(tmp_path: Path, executor: str) -> None:
    (tmp_path / "flow.py").write_text(FLOW)
    store = f"json://{tmp_path / 'store'}"
    # A relative path, as typed: the frames still name the file in full.
    args = ["-m", "flowdag", "run", "flow.py", "--run-id", "r", "--store", store]
    done = python(*args, "--executor", executor, "--workers", "1", cwd=tmp_path)
    assert done.returncode == 1, done.stderr
    assert_names_the_file(stored_traceback(store), tmp_path / "flow.py")
