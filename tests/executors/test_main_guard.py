"""Worker processes from a main file without ``if __name__ == "__main__":``: one clear error.

Spawned workers import the main file again; a module-level ``flowdag.run`` with
``executor="processes"`` (or a local Dask cluster of processes) used to answer
with pages of multiprocessing tracebacks, or to run the file's code once more
per worker. Each case runs a real file in a real subprocess, as users do.
"""

from __future__ import annotations

import textwrap
from pathlib import Path

import pytest

from flowdag.executors._main_guard import _guarded
from tests.executors.scripts import WORKER_PROCESSES, python

GUARD = 'if __name__ == "__main__":'


def unguarded(executor: str) -> str:
    """A workflow file that runs itself at module level, with no guard (line 12)."""
    return textwrap.dedent(
        f"""\
        from pathlib import Path

        import flowdag

        wf = flowdag.Workflow("unguarded")


        @wf.node()
        def work():
            Path(__file__).with_name("ran").touch()

        result = flowdag.run(wf, executor={executor!r}, max_workers=1)
        print("run finished:", result.status)
        """
    )


@pytest.mark.parametrize("executor", WORKER_PROCESSES)
def test_python_flow_py_says_to_add_the_guard(tmp_path: Path, executor: str) -> None:
    (tmp_path / "flow.py").write_text(unguarded(executor))
    done = python("flow.py", cwd=tmp_path)
    assert done.returncode != 0
    last = done.stderr.strip().splitlines()[-1]
    assert last.startswith("flowdag.errors.MainGuardError: ")
    assert f'flow.py, line 12, starts worker processes (executor="{executor}")' in last
    assert GUARD in last
    # Raised before any worker started: a short traceback, nothing ran, nothing from workers.
    assert len(done.stderr.splitlines()) < 30, done.stderr
    assert "bootstrapping" not in done.stderr and "run finished" not in done.stdout
    assert not (tmp_path / "ran").exists()


@pytest.mark.parametrize("executor", WORKER_PROCESSES)
def test_flowdag_run_flow_py_says_to_add_the_guard(tmp_path: Path, executor: str) -> None:
    (tmp_path / "flow.py").write_text(unguarded(executor))
    done = python("-m", "flowdag", "run", "flow.py", "--store", "memory://", cwd=tmp_path)
    assert done.returncode == 2
    assert done.stderr.splitlines() == [
        f'flowdag: error: flow.py starts worker processes (executor="{executor}") as it is '
        "imported, with flowdag.run at module level; put that call under "
        f"`{GUARD}` and let `flowdag run` (or `python FILE.py`) start the run"
    ]
    assert not (tmp_path / "ran").exists()


def test_module_run_with_dash_m_is_refused_too(tmp_path: Path) -> None:
    # python -m NAME: the workers import NAME again, by name.
    (tmp_path / "flowmod.py").write_text(unguarded("processes"))
    done = python("-m", "flowmod", cwd=tmp_path)
    assert done.returncode != 0
    assert "MainGuardError" in done.stderr and GUARD in done.stderr
    assert not (tmp_path / "ran").exists()


def test_run_from_a_thread_the_unguarded_file_started_is_refused(tmp_path: Path) -> None:
    source = unguarded("processes").replace(
        "result = flowdag.run(wf, executor='processes', max_workers=1)",
        "import threading\n"
        "thread = threading.Thread(target=flowdag.run, args=(wf,), "
        "kwargs={'executor': 'processes'})\n"
        "thread.start()\n"
        "thread.join()\n"
        "result = flowdag.run(wf)",
    )
    (tmp_path / "flow.py").write_text(source)
    done = python("flow.py", cwd=tmp_path)
    assert "flowdag.errors.MainGuardError: " in done.stderr and GUARD in done.stderr
    assert "bootstrapping" not in done.stderr
    assert done.stdout.count("run finished") == 1  # the threads run, in this process only


UNGUARDED_BUT_SAFE = {
    # A package's __main__.py is never imported again by the workers.
    "package __main__.py": ("pkg/__main__.py", ["-m", "pkg"], unguarded("processes")),
    # Forked workers import nothing again.
    "fork": (
        "flow.py",
        ["flow.py"],
        unguarded("processes").replace(
            "result = flowdag.run(wf, executor='processes', max_workers=1)",
            "from flowdag.executors import ProcessExecutor\n"
            "with ProcessExecutor(1, start_method='fork') as pool:\n"
            "    result = flowdag.run(wf, executor=pool)",
        ),
    ),
}


@pytest.mark.parametrize("case", UNGUARDED_BUT_SAFE)
def test_no_error_where_workers_do_not_import_the_file_again(tmp_path: Path, case: str) -> None:
    name, args, source = UNGUARDED_BUT_SAFE[case]
    assert "ProcessExecutor" in source or "processes" in source
    (tmp_path / name).parent.mkdir(exist_ok=True)
    (tmp_path / name).write_text(source)
    done = python(*args, cwd=tmp_path)
    assert done.returncode == 0, done.stderr
    assert "run finished: completed" in done.stdout
    assert (tmp_path / name).with_name("ran").exists()


@pytest.mark.parametrize(
    ("source", "line", "guarded"),
    [
        ("run()\n", 1, False),
        (f"{GUARD}\n    run()\n", 2, True),
        ("if '__main__' == __name__:\n    run()\n", 2, True),
        ("import sys\n\nif __name__ != '__main__':\n    pass\nelse:\n    run()\n", 6, True),
        ("if True:\n    if __name__ == '__main__':\n        run()\n", 3, True),
        ("import multiprocessing as mp\nif mp.parent_process() is None:\n    run()\n", 3, True),
        (
            "from multiprocessing import current_process\n"
            "if current_process().name == 'MainProcess':\n    run()\n",
            3,
            True,
        ),
        ("if True:\n    run()\n", 2, False),
        ("with open('x') as f:\n    run()\n", 2, False),
        ("with run() as pool:\n    pass\n", 1, False),
        ("try:\n    run()\nexcept OSError:\n    pass\n", 2, False),
        ("try:\n    pass\nexcept OSError:\n    run()\n", 4, False),
        ("for i in range(2):\n    run()\n", 2, False),
        ("match 1:\n    case 1:\n        run()\n", 3, False),
        ("def main():\n    run()\n\n\nmain()\n", 5, False),
        # Unknown counts as guarded: the file changed since it started, or cannot be parsed.
        ("run()\n", 7, True),
        ("def broken(:\n", 1, True),
    ],
)
def test_guarded(tmp_path: Path, source: str, line: int, guarded: bool) -> None:
    path = tmp_path / "main.py"
    path.write_text(source)
    assert _guarded(str(path), line) is guarded


def test_unreadable_file_counts_as_guarded(tmp_path: Path) -> None:
    assert _guarded(str(tmp_path / "gone.py"), 1) is True
