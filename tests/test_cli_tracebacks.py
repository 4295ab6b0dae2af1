"""``flowdag run`` and ``status`` print failed nodes' tracebacks: the last frames, all with -v.

Through real subprocesses (``python -m flowdag``), on a real store; the cutting
itself (`brief`) is pure and tested on tables of traceback texts.
"""

from __future__ import annotations

import json
import re
import subprocess
import textwrap
import traceback
from pathlib import Path

import pytest

from flowdag.cli.tracebacks import LAST_FRAMES, MAX_NODES, brief
from tests.executors.scripts import python

FLOW = textwrap.dedent(
    """\
    import flowdag

    wf = flowdag.Workflow("tracebacks")


    def helper(value):
        raise ValueError(f"bad value {value}")  # line 7


    @wf.node()
    def broken():
        return helper(1)  # line 12


    def deep(n):
        if n == 0:
            raise RecursionError("bottom")  # line 17
        return deeper(n - 1)  # line 18


    def deeper(n):  # deep and deeper alternate: Python collapses no repeated lines
        return deep(n)


    @wf.node()
    def recursive():
        return deep(10)


    @wf.node()
    def chained():
        try:
            {}["missing"]
        except KeyError as exc:
            raise RuntimeError("while reading the row") from exc


    @wf.node()
    def fine():
        return 1
    """
)
ATTEMPT_FRAME = '/flowdag/attempt.py", line'


def flowdag_cli(*args: str, cwd: Path) -> subprocess.CompletedProcess[str]:
    return python("-m", "flowdag", *args, cwd=cwd)


def section(out: str, node: str) -> str:
    """What the command printed for ``node``: from its header to the next node's or the end."""
    start = out.index(f"node {node} failed:\n")
    end = re.compile(r"\n\n(node \S+ failed:|run )").search(out, start)
    return (out[start:] if end is None else out[start : end.start()]).rstrip()


@pytest.fixture(scope="module")
def ran(
    tmp_path_factory: pytest.TempPathFactory,
) -> tuple[Path, str, subprocess.CompletedProcess[str]]:
    """One failed run of FLOW: (folder, store URL, what `flowdag run` printed)."""
    folder = tmp_path_factory.mktemp("flow")
    (folder / "flow.py").write_text(FLOW)
    store = f"json://{folder / 'store'}"
    done = flowdag_cli("run", "flow.py", "--run-id", "r", "--store", store, cwd=folder)
    return folder, store, done


def assert_last_frames(out: str) -> None:
    broken = section(out, "broken")
    path = "flow.py"  # named in full: the folder is a temporary one
    assert broken.splitlines()[1] == "Traceback (most recent call last):"
    assert f'{path}", line 12, in broken\n    return helper(1)  # line 12' in broken
    assert f'{path}", line 7, in helper\n    raise ValueError(f"bad value {{value}}")' in broken
    assert "\nValueError: bad value 1\n" in broken
    assert broken.endswith("(1 more frame hidden; -v shows the full traceback)")
    assert ATTEMPT_FRAME not in out  # flowdag's own frames are left out

    recursive = section(out, "recursive")
    assert recursive.count('  File "') == LAST_FRAMES
    assert '", line 17, in deep' in recursive and "RecursionError: bottom" in recursive
    assert recursive.endswith(
        f"({23 - LAST_FRAMES} more frames hidden; -v shows the full traceback)"
    )

    chained = section(out, "chained")
    assert "RuntimeError: while reading the row" in chained
    assert "KeyError" not in chained and "The above exception" not in chained
    assert chained.endswith(
        "(2 more frames and the exceptions that led to this one hidden; "
        "-v shows the full traceback)"
    )
    assert "node fine failed" not in out


def assert_full(out: str) -> None:
    for node in ("broken", "recursive", "chained"):
        assert ATTEMPT_FRAME in section(out, node)
        assert "hidden; -v" not in section(out, node)
    assert section(out, "recursive").count('", line 18, in deep') == 10
    assert "The above exception was the direct cause" in out


def test_run_prints_the_last_frames(
    ran: tuple[Path, str, subprocess.CompletedProcess[str]],
) -> None:
    folder, _, done = ran
    assert done.returncode == 1, done.stderr
    assert_last_frames(done.stdout)
    assert f'File "{folder / "flow.py"}", line 7, in helper' in done.stdout
    # The summary comes first, the verdict last.
    assert done.stdout.index("attempts") < done.stdout.index("node broken failed:")
    assert done.stdout.rstrip().splitlines()[-1].startswith("run r failed")
    assert "Traceback" not in done.stderr


@pytest.mark.parametrize("where", ["before", "after"])
def test_run_verbose_prints_full_tracebacks(tmp_path: Path, where: str) -> None:
    (tmp_path / "flow.py").write_text(FLOW)
    args = ["run", "flow.py", "--store", "memory://"]
    done = flowdag_cli(*(["-v", *args] if where == "before" else [*args, "-v"]), cwd=tmp_path)
    assert done.returncode == 1, done.stderr
    assert_full(done.stdout)


def test_status_prints_the_last_frames_and_all_with_verbose(
    ran: tuple[Path, str, subprocess.CompletedProcess[str]],
) -> None:
    folder, store, _ = ran
    done = flowdag_cli("status", "r", "--store", store, cwd=folder)
    assert done.returncode == 0, done.stderr
    assert_last_frames(done.stdout)

    for verbose in (
        ["status", "r", "--store", store, "-v"],
        ["-v", "status", "r", "--store", store],
    ):
        done = flowdag_cli(*verbose, cwd=folder)
        assert done.returncode == 0, done.stderr
        assert_full(done.stdout)


def test_status_json_has_full_tracebacks(
    ran: tuple[Path, str, subprocess.CompletedProcess[str]],
) -> None:
    folder, store, _ = ran
    done = flowdag_cli("status", "r", "--store", store, "--json", cwd=folder)
    nodes = json.loads(done.stdout)["nodes"]
    assert ATTEMPT_FRAME in nodes["broken"]["error"]["traceback"]
    assert nodes["recursive"]["error"]["traceback"].count('", line 18, in deep') == 10


def test_only_the_first_failed_nodes_get_a_traceback(tmp_path: Path) -> None:
    many = MAX_NODES + 2
    (tmp_path / "flow.py").write_text(
        "import flowdag\n\nwf = flowdag.Workflow('many')\n\n\n"
        "def fail():\n    raise OSError('no')\n\n\n"
        + "".join(f"wf.add_node('n{i}', fail)\n" for i in range(many))
    )
    done = flowdag_cli("run", "flow.py", "--store", "memory://", cwd=tmp_path)
    assert done.stdout.count("Traceback (most recent call last):") == MAX_NODES
    assert "\n2 more failed nodes: -v shows every traceback, flowdag show " in done.stdout
    done = flowdag_cli("run", "flow.py", "--store", "memory://", "-v", cwd=tmp_path)
    assert done.stdout.count("Traceback (most recent call last):") == many


def test_run_on_processes_names_the_workflow_file(tmp_path: Path) -> None:
    (tmp_path / "flow.py").write_text(FLOW)
    args = ["run", "flow.py", "--store", "memory://", "--executor", "processes", "--workers", "1"]
    done = flowdag_cli(*args, cwd=tmp_path)
    assert done.returncode == 1, done.stderr
    assert_last_frames(done.stdout)
    assert "<dynamic-code>" not in done.stdout


# -- brief, on texts ---------------------------------------------------------------------


def _formatted(exc: BaseException) -> str:
    return "".join(traceback.format_exception(exc))


def _raise(exc: BaseException) -> BaseException:
    try:
        raise exc
    except BaseException as caught:
        return caught


def test_brief_without_a_traceback_is_the_text() -> None:
    cut = brief("NodeTimeoutError: node 'a' timed out after 1s\n")
    assert cut.lines == ["NodeTimeoutError: node 'a' timed out after 1s"]
    assert (cut.hidden_frames, cut.chained) == (0, False)


def test_brief_of_a_traceback_with_only_flowdag_frames() -> None:
    text = (
        "Traceback (most recent call last):\n"
        '  File "/opt/venv/lib/python3.11/site-packages/flowdag/attempt.py", line 9, in _finish\n'
        "    output = _encode(codec, value)\n"
        "flowdag.errors.SerializationError: node 'a': output is not storable\n"
    )
    cut = brief(text)
    assert cut.lines == [
        "Traceback (most recent call last):",
        "flowdag.errors.SerializationError: node 'a': output is not storable",
    ]
    assert (cut.hidden_frames, cut.chained) == (1, False)


def test_brief_keeps_a_multiline_message_and_exception_notes() -> None:
    exc = ValueError("first line\nsecond line")
    exc.add_note("a note")
    cut = brief(_formatted(_raise(exc)))
    assert cut.lines[-3:] == ["ValueError: first line", "second line", "a note"]


def test_brief_of_an_exception_group_shows_it_whole() -> None:
    text = _formatted(_raise(ExceptionGroup("several", [ValueError("a"), KeyError("b")])))
    assert brief(text).lines == text.rstrip().splitlines()
