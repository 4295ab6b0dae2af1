"""Refuse to start worker processes from a main file that has no ``__main__`` guard.

A worker process started with ``spawn`` or ``forkserver`` (the process pool's and
Dask's default) imports the parent's main file again, as ``__mp_main__``, before it
runs anything. Code of that file outside an ``if __name__ == "__main__":`` block
then runs in every worker: a module-level ``flowdag.run(wf, executor="processes")``
starts a run there too, which tries to start processes of its own, and
multiprocessing answers with pages of tracebacks. `check_main_guard` turns that into
one `MainGuardError` raised in the parent, before any worker starts:

- the main file is still being run (its module frame is on the stack, or on the
  main thread's for a call from a thread the file started) and the statement
  running is not inside an ``if __name__ ...`` block: the file is read and parsed
  to tell, and when it cannot be, nothing is refused;
- ``flowdag run FILE.py`` is importing the workflow file (`importing` is set), so
  the file starts workers as it is imported;
- this process is itself a worker importing the main file (a last resort: the
  parent's check could not see the call).
"""

from __future__ import annotations

import ast
import multiprocessing
import sys
import threading
from contextvars import ContextVar
from pathlib import Path
from types import FrameType, ModuleType

from flowdag.errors import MainGuardError

__all__ = ["check_main_guard", "importing"]

#: The workflow file ``flowdag run`` is importing, while it imports it.
importing: ContextVar[Path | None] = ContextVar("importing", default=None)

_GUARD = 'if __name__ == "__main__":'


def check_main_guard(what: str) -> None:
    """Raise `MainGuardError` if starting worker processes now would re-run the main file.

    Call it before starting processes with ``spawn`` or ``forkserver``; ``what``
    names them in the message, e.g. ``executor="processes"``.
    """
    workflow_file = importing.get()
    if workflow_file is not None:
        raise MainGuardError(
            f"{workflow_file} starts worker processes ({what}) as it is imported, "
            f"with flowdag.run at module level; put that call under `{_GUARD}` "
            "and let `flowdag run` (or `python FILE.py`) start the run"
        )
    if getattr(multiprocessing.current_process(), "_inheriting", False):
        raise MainGuardError(
            f"a worker process, importing the main file again, was asked to start worker "
            f"processes ({what}); put the code that starts the run under `{_GUARD}`"
        )
    main = sys.modules.get("__main__")
    if main is None or not _reimported_by_workers(main):
        return
    frame = _main_frame(main, sys._getframe(1))
    if frame is None and threading.current_thread() is not threading.main_thread():
        # Called from a thread the main file started, while the main file still runs.
        frame = _main_frame(main, sys._current_frames().get(threading.main_thread().ident or 0))
    if frame is None:
        return  # the main file has finished running (or never ran): nothing re-runs the call
    path, line = main.__file__ or "", frame.f_lineno
    if _guarded(path, line):
        return
    raise MainGuardError(
        f"{path}, line {line}, starts worker processes ({what}) outside an "
        f"`{_GUARD}` block; each worker process imports {Path(path).name} again and "
        f"would run that line too: put it (or the code that calls it) under `{_GUARD}`"
    )


def _reimported_by_workers(main: ModuleType) -> bool:
    """Whether spawned workers import this main module again (as multiprocessing decides)."""
    spec_name = getattr(getattr(main, "__spec__", None), "name", None)
    if spec_name is not None:  # python -m NAME: re-imported by name, unless a __main__.py
        return spec_name != "__main__" and not spec_name.endswith(".__main__")
    path = getattr(main, "__file__", None)
    return path is not None and Path(path).stem not in ("__main__", "ipython")


def _main_frame(main: ModuleType, frame: FrameType | None) -> FrameType | None:
    """The frame running the main file's own top-level code, if it is still running."""
    namespace = vars(main)
    while frame is not None:
        if frame.f_code.co_name == "<module>" and frame.f_globals is namespace:
            return frame
        frame = frame.f_back
    return None


#: Names whose test in an ``if`` makes a guard: ``__name__``, and the process checks of
#: ``if multiprocessing.parent_process() is None:`` or ``current_process().name == ...``.
_GUARD_NAMES = frozenset({"__name__", "parent_process", "current_process"})


def _guarded(path: str, line: int) -> bool:
    """Whether ``line`` of the file is inside an ``if`` that tests ``__name__`` (or the process).

    Unknown (the file cannot be read or parsed, or has changed since it started)
    counts as guarded: this check must never refuse a correct program.
    """
    try:
        tree = ast.parse(Path(path).read_bytes(), filename=path)
    except (OSError, SyntaxError, ValueError):
        return True
    body, top = tree.body, True
    while True:  # down the statements that hold the line, outermost first
        statement = next((s for s in body if s.lineno <= line <= (s.end_lineno or s.lineno)), None)
        if statement is None:
            return top  # nested: the line is this statement's own header, unguarded
        if isinstance(statement, ast.If) and any(
            (isinstance(node, ast.Name) and node.id in _GUARD_NAMES)
            or (isinstance(node, ast.Attribute) and node.attr in _GUARD_NAMES)
            for node in ast.walk(statement.test)
        ):
            return True
        body, top = _inner_statements(statement), False


def _inner_statements(statement: ast.stmt) -> list[ast.stmt]:
    """The statements nested in ``statement``: bodies, branches, handlers, cases."""
    inner: list[ast.stmt] = []
    for field in ("body", "orelse", "finalbody", "handlers", "cases"):
        for child in getattr(statement, field, None) or []:
            is_clause = isinstance(child, ast.excepthandler | ast.match_case)
            inner.extend(child.body if is_clause else [child])
    return inner
