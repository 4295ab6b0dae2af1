"""The ``flowdag`` command line: run a workflow file, show a run, list runs.

Design note: the CLI owns the screen, the library never prints. Results (the
summary table, ``status``, ``list``) go to stdout; progress, warnings and errors go
to stderr, so ``flowdag status ID --json > run.json`` stays clean. Live progress is
drawn only when stderr is a terminal; elsewhere (CI, pipes) the run prints one
plain line per failure and nothing else.

Exit codes: 0 the run completed (or the command worked), 1 the run failed, 2 bad
usage or bad input. Every expected error — a `FlowdagError`, an `OSError`, a
workflow file that cannot be loaded — becomes ONE line ``flowdag: error: ...`` on
stderr, never a traceback.
"""

from __future__ import annotations

import argparse
import importlib.util
import json
import logging
import secrets
import shlex
import sys
from collections.abc import Callable, Sequence
from datetime import datetime
from pathlib import Path
from types import ModuleType
from typing import Any, TypeAlias

from rich.console import Console
from rich.markup import escape
from rich.progress import (
    BarColumn,
    MofNCompleteColumn,
    Progress,
    SpinnerColumn,
    TaskID,
    TextColumn,
    TimeElapsedColumn,
)
from rich.table import Table

import flowdag
from flowdag.errors import FlowdagError, WorkflowChangedError
from flowdag.runner import RunEvent, new_run_id
from flowdag.state import ErrorInfo, NodeState, NodeStatus, RunState
from flowdag.stores import Store, open_store
from flowdag.stores.base import check_run_id

__all__ = ["DEFAULT_STORE", "main"]

#: Store URL used when ``--store`` is not given.
DEFAULT_STORE = "lmdb://.flowdag"

EXIT_OK = 0
EXIT_FAILED = 1
EXIT_USAGE = 2

_STATUS_STYLE = {  # node and run statuses alike
    "completed": "green",
    "failed": "bold red",
    "skipped": "yellow",
    "suspended": "yellow",
    "running": "cyan",
    "pending": "dim",
}
_log = logging.getLogger("flowdag")

_Target: TypeAlias = flowdag.Workflow | flowdag.DAG  # what a workflow file can provide


class CLIError(Exception):
    """Bad input the CLI detects itself; shown as one ``flowdag: error:`` line."""


# -- entry point --------------------------------------------------------------


def main(argv: Sequence[str] | None = None) -> int:
    """Run the ``flowdag`` command line and return its exit code."""
    parser = _parser()
    try:
        args = parser.parse_args(argv)
    except SystemExit as exc:  # usage error (2) or --help (0): report, don't exit
        return exc.code if isinstance(exc.code, int) else EXIT_USAGE
    err = Console(stderr=True, highlight=False)
    handler = _LogHandler(err, logging.INFO if args.verbose else logging.WARNING)
    old_level = _log.level
    _log.addHandler(handler)
    _log.setLevel(min(handler.level, _log.getEffectiveLevel()))
    try:
        command: Callable[[argparse.Namespace, Console], int] = args.command
        return command(args, err)
    except (CLIError, FlowdagError) as exc:
        return _error(_one_line(exc))
    except OSError as exc:
        return _error(_describe_os_error(exc))
    except KeyboardInterrupt:
        print(f"flowdag: interrupted{_resume_hint(args)}", file=sys.stderr)
        return 130
    finally:
        _log.removeHandler(handler)
        _log.setLevel(old_level)


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="flowdag",
        description="Run DAG workflows that checkpoint every node and resume after crashes.",
    )
    parser.add_argument("-v", "--verbose", action="store_true", help="log progress details")
    commands = parser.add_subparsers(title="commands", metavar="COMMAND", required=True)

    run = commands.add_parser(
        "run",
        help="run (or resume) a workflow from a Python file",
        description="Run a workflow; run again with the same --run-id to resume it.",
    )
    run.add_argument("target", metavar="FILE.py[:WORKFLOW]", help="workflow file, optional name")
    run.add_argument("--run-id", help="run id to start or resume (default: a new one)")
    _add_store_option(run)
    run.add_argument("--workers", type=_positive_int, metavar="N", help="parallel nodes")
    run.add_argument(
        "--executor",
        default="threads",
        metavar="KIND",
        help="how nodes run: threads (default), processes, asyncio, dask",
    )
    run.add_argument(
        "--allow-changes",
        action="store_true",
        help="resume even if the workflow's nodes or dependencies changed",
    )
    run.set_defaults(command=_cmd_run)

    status = commands.add_parser("status", help="show the nodes of one run")
    status.add_argument("run_id", metavar="RUN_ID")
    _add_store_option(status)
    status.add_argument("--json", action="store_true", help="machine-readable output")
    status.set_defaults(command=_cmd_status)

    listing = commands.add_parser("list", help="list the runs in a store")
    _add_store_option(listing)
    listing.set_defaults(command=_cmd_list)
    return parser


def _add_store_option(parser: argparse.ArgumentParser) -> None:
    parser.add_argument(
        "--store",
        default=DEFAULT_STORE,
        metavar="URL",
        help="lmdb://DIR, memory://, ... (default: %(default)s)",
    )


def _positive_int(text: str) -> int:
    try:
        value = int(text)
    except ValueError:
        value = 0
    if value < 1:
        raise argparse.ArgumentTypeError(f"expected a positive integer, got {text!r}")
    return value


# -- flowdag run ----------------------------------------------------------------


def _cmd_run(args: argparse.Namespace, err: Console) -> int:
    if args.run_id is not None:
        check_run_id(args.run_id)  # before importing the file: bad input fails fast
    target = load_workflow(args.target)
    dag = target.build() if isinstance(target, flowdag.Workflow) else target  # DAGError now
    with open_store(args.store) as store:
        if args.run_id is None:
            args.run_id = new_run_id()
            # Printed before the run starts, so the id is known even if it is killed.
            err.print(f"flowdag: run id {args.run_id}", soft_wrap=True)
        with _Progress(err) as progress:
            result = flowdag.run(
                dag,
                run_id=args.run_id,
                store=store,
                max_workers=args.workers,
                executor=args.executor,
                allow_changes=args.allow_changes,
                on_event=progress.update,
            )
    out = Console(highlight=False)
    out.print(_summary_table(result.nodes))
    restored = len(result.nodes) - len(progress.ran)
    note = f"; {restored} of {len(result.nodes)} nodes were already completed" if restored else ""
    if result.ok:
        out.print(f"run {escape(result.run_id)} [green]completed[/]{note}", soft_wrap=True)
        return EXIT_OK
    counts = _count(result.nodes.values())
    out.print(
        f"run {escape(result.run_id)} {_styled(result.status)} ({_describe_counts(counts)});"
        f" fix and resume with: {escape(_resume_command(args))}",
        soft_wrap=True,
    )
    return EXIT_FAILED


def _resume_command(args: argparse.Namespace) -> str:
    words = ["flowdag", "run", args.target, "--run-id", args.run_id]
    if args.store != DEFAULT_STORE:
        words += ["--store", args.store]
    return shlex.join(words)


def _resume_hint(args: argparse.Namespace) -> str:
    if getattr(args, "command", None) is _cmd_run and getattr(args, "run_id", None):
        return f"; resume with: {_resume_command(args)}"
    return ""


class _Progress:
    """Turns `flowdag.RunEvent`s into live progress (terminal) or plain failure lines."""

    def __init__(self, err: Console) -> None:
        self._err = err
        self.ran: set[str] = set()  # nodes this process started (the rest were restored)
        self._running: dict[str, None] = {}  # insertion-ordered set
        self._bar: Progress | None = None
        self._task: TaskID | None = None
        if err.is_terminal:
            self._bar = Progress(
                SpinnerColumn(),
                BarColumn(),
                MofNCompleteColumn(),
                TimeElapsedColumn(),
                TextColumn("{task.description}"),
                console=err,
                transient=True,
            )

    def __enter__(self) -> _Progress:
        if self._bar is not None:
            self._bar.start()
        return self

    def __exit__(self, *exc_info: object) -> None:
        if self._bar is not None:
            self._bar.stop()

    def update(self, event: RunEvent) -> None:
        """Handle one `flowdag.RunEvent`; called on the runner's driver thread."""
        if event.kind == "node_started":
            self.ran.add(event.node)
            self._running[event.node] = None
        elif event.kind == "node_finished":
            self._running.pop(event.node, None)
            if event.status == NodeStatus.FAILED:
                self._say("[bold red]✗[/]", f"node {event.node} failed: {_error_text(event.error)}")
        elif event.kind == "node_retrying" and self._bar is not None:
            # Plain mode stays quiet: a retry that then succeeds is not news in a CI log.
            why = _error_text(event.error)
            self._say("[yellow]↻[/]", f"node {event.node} attempt {event.attempt} failed: {why}")
        self._draw(event.done, event.total)

    def _say(self, mark: str, text: str) -> None:
        if self._bar is not None:
            self._bar.console.print(f"{mark} {escape(text)}", soft_wrap=True)  # above the bar
        else:
            self._err.print(f"flowdag: {escape(text)}", soft_wrap=True)

    def _draw(self, done: int, total: int) -> None:
        if self._bar is None:
            return
        if self._task is None:
            self._task = self._bar.add_task("", total=total)
        names = list(self._running)
        running = ", ".join(names[:4]) + (f" +{len(names) - 4}" if len(names) > 4 else "")
        self._bar.update(
            self._task, completed=done, total=total, description=escape(f"running: {running}")
        )


def _summary_table(nodes: dict[str, NodeState]) -> Table:
    failed = any(node.error is not None for node in nodes.values())
    table = Table(title=None, box=None, header_style="bold", pad_edge=False)
    table.add_column("node")
    table.add_column("status")
    table.add_column("attempts", justify="right")
    table.add_column("duration", justify="right")
    if failed:
        table.add_column("error", overflow="fold")
    for name, node in nodes.items():
        row = [escape(name), _styled(node.status), str(node.attempts), _seconds(node.duration)]
        if failed:
            row.append(escape(_error_text(node.error)))
        table.add_row(*row)
    return table


# -- flowdag status -------------------------------------------------------------


def _cmd_status(args: argparse.Namespace, err: Console) -> int:
    with open_store(args.store) as store:
        state = store.load_statuses(args.run_id)
    if args.json:
        print(json.dumps(_state_json(state), indent=2))
        return EXIT_OK
    out = Console(highlight=False)
    counts = _count(state.nodes.values())
    out.print(
        f"run {escape(state.run_id)}  workflow {escape(state.workflow)}  "
        f"{_styled(state.status)}  ({_describe_counts(counts)})",
        soft_wrap=True,
    )
    table = Table(box=None, header_style="bold", pad_edge=False)
    for column in ("node", "status", "attempts", "started", "duration", "error"):
        table.add_column(column, justify="right" if column in {"attempts", "duration"} else "left")
    for name, node in state.nodes.items():
        table.add_row(
            escape(name),
            _styled(node.status),
            str(node.attempts),
            _local_time(node.started_at),
            _seconds(node.duration),
            escape(_error_text(node.error)),
        )
    out.print(table)
    return EXIT_OK


def _state_json(state: RunState) -> dict[str, Any]:
    def error(info: ErrorInfo | None) -> dict[str, str] | None:
        if info is None:
            return None
        return {"type": info.type, "message": info.message, "traceback": info.traceback}

    def moment(value: datetime | None) -> str | None:
        return None if value is None else value.isoformat()

    return {
        "run_id": state.run_id,
        "workflow": state.workflow,
        "status": str(state.status),
        "nodes": {
            name: {
                "status": str(node.status),
                "attempts": node.attempts,
                "started_at": moment(node.started_at),
                "finished_at": moment(node.finished_at),
                "duration": node.duration,
                "deps": list(node.deps),
                "error": error(node.error),
            }
            for name, node in state.nodes.items()
        },
    }


# -- flowdag list -----------------------------------------------------------------


def _cmd_list(args: argparse.Namespace, err: Console) -> int:
    out = Console(highlight=False)
    with open_store(args.store) as store:
        run_ids = store.list_runs()
        if not run_ids:
            err.print(f"flowdag: no runs in {escape(args.store)}", soft_wrap=True)
            return EXIT_OK
        table = Table(box=None, header_style="bold", pad_edge=False)
        for column in ("run id", "workflow", "status", "nodes"):
            table.add_column(column)
        for run_id in run_ids:
            table.add_row(*_list_row(store, run_id))
    out.print(table)
    return EXIT_OK


def _list_row(store: Store, run_id: str) -> list[str]:
    try:
        state = store.load_statuses(run_id)
    except FlowdagError as exc:  # one damaged run must not hide the others
        _log.warning("%s", _flatten(str(exc)))
        return [escape(run_id), "?", "[bold red]damaged[/]", ""]
    counts = _count(state.nodes.values())
    return [
        escape(run_id),
        escape(state.workflow),
        _styled(state.status),
        _describe_counts(counts),
    ]


# -- loading a workflow file ------------------------------------------------------


def load_workflow(target: str) -> _Target:
    """Import ``FILE.py[:NAME]`` and return the `Workflow` or `DAG` it names.

    Without ``:NAME`` the file must hold exactly one workflow among its globals.
    ``NAME`` is a global variable name or a workflow's own name.

    Raises:
        CLIError: the file is missing, fails to import, or has no (or several)
            matching workflows.
    """
    path, name = _split_target(target)
    module = _import_file(path)
    found = _find_workflows(module)
    if name is not None:
        return _pick_named(found, name, path)
    distinct = _distinct(found)
    if len(distinct) == 1:
        return next(iter(distinct.values()))
    if not distinct:
        raise CLIError(f"no flowdag.Workflow found in {path}; define one, e.g. wf = Workflow(...)")
    listed = ", ".join(sorted(distinct))
    raise CLIError(f"several workflows in {path} ({listed}); choose one with {path}:NAME")


def _split_target(target: str) -> tuple[Path, str | None]:
    if Path(target).exists() or ":" not in target:
        return Path(target), None
    file, _, name = target.rpartition(":")
    if not name:
        raise CLIError(f"empty workflow name in {target!r}; use FILE.py:NAME")
    return Path(file), name


def _import_file(path: Path) -> ModuleType:
    if not path.is_file():
        raise CLIError(f"workflow file not found: {path}")
    module_name = f"_flowdag_workflow_{path.stem}_{secrets.token_hex(4)}"
    spec = importlib.util.spec_from_file_location(module_name, path)
    if spec is None or spec.loader is None:
        raise CLIError(f"cannot import {path}: not a Python file")
    module = importlib.util.module_from_spec(spec)
    folder = str(path.resolve().parent)
    if folder not in sys.path:
        sys.path.insert(0, folder)  # so the file can import its sibling modules
    # Registered in sys.modules so node functions can be pickled by reference.
    sys.modules[module_name] = module
    try:
        spec.loader.exec_module(module)
    except (Exception, SystemExit) as exc:  # the file's own bug, not ours: no traceback
        del sys.modules[module_name]
        raise CLIError(f"cannot load {path}: {type(exc).__name__}: {_flatten(str(exc))}") from exc
    return module


def _find_workflows(module: ModuleType) -> dict[str, _Target]:
    kinds = (flowdag.Workflow, flowdag.DAG)
    return {
        attr: value
        for attr, value in vars(module).items()
        if isinstance(value, kinds) and not attr.startswith("__")
    }


def _distinct(found: dict[str, _Target]) -> dict[str, _Target]:
    """Label -> object, one entry per workflow name.

    ``wf = Workflow("etl"); dag = wf.build()`` is one workflow, not two: the built
    DAG wins because it is what the file chose to run.
    """
    by_name: dict[str, tuple[str, _Target]] = {}
    for attr, value in found.items():
        key = value.name
        if key not in by_name or isinstance(value, flowdag.DAG):
            by_name[key] = (attr, value)
    return {f"{attr} ({key})" if attr != key else attr: v for key, (attr, v) in by_name.items()}


def _pick_named(found: dict[str, _Target], name: str, path: Path) -> _Target:
    if name in found:
        return found[name]
    same_name = _distinct({attr: v for attr, v in found.items() if v.name == name})
    if len(same_name) == 1:
        return next(iter(same_name.values()))
    have = ", ".join(sorted(_distinct(found))) or "none"
    raise CLIError(f"no workflow named {name!r} in {path} (found: {have})")


# -- formatting helpers -------------------------------------------------------------


def _count(nodes: Any) -> dict[NodeStatus, int]:
    counts = dict.fromkeys(NodeStatus, 0)
    for node in nodes:
        counts[node.status] += 1
    return counts


def _describe_counts(counts: dict[NodeStatus, int]) -> str:
    total = sum(counts.values())
    parts = [f"{counts[NodeStatus.COMPLETED]}/{total} completed"]
    parts += [f"{counts[s]} {s}" for s in NodeStatus if s is not NodeStatus.COMPLETED and counts[s]]
    return ", ".join(parts)


def _styled(status: str) -> str:
    style = _STATUS_STYLE.get(str(status))
    return f"[{style}]{status}[/]" if style else escape(str(status))


def _seconds(value: float | None) -> str:
    if value is None:
        return "-"
    if value < 60:
        return f"{value:.2f}s"
    minutes, seconds = divmod(int(value), 60)
    return f"{minutes}m{seconds:02d}s"


def _local_time(moment: datetime | None) -> str:
    return "-" if moment is None else moment.astimezone().strftime("%Y-%m-%d %H:%M:%S")


def _error_text(error: ErrorInfo | None) -> str:
    return "" if error is None else _flatten(f"{error.type}: {error.message}")


def _flatten(text: str) -> str:
    """Several lines as one: ``a; b``."""
    return "; ".join(line.strip() for line in text.splitlines() if line.strip())


# -- errors -------------------------------------------------------------------------


def _one_line(exc: Exception) -> str:
    message = _flatten(str(exc)) or type(exc).__name__
    if isinstance(exc, WorkflowChangedError) and "--allow-changes" not in message:
        message += "; rerun with --allow-changes to accept the changes"
    return message


def _describe_os_error(exc: OSError) -> str:
    if exc.strerror and exc.filename:
        return f"{exc.strerror}: {exc.filename}"
    return _flatten(str(exc)) or type(exc).__name__


def _error(message: str) -> int:
    print(f"flowdag: error: {message}", file=sys.stderr)
    return EXIT_USAGE


class _LogHandler(logging.Handler):
    """Library log records as ``flowdag: warning: ...`` lines on the CLI's stderr."""

    def __init__(self, console: Console, level: int) -> None:
        super().__init__(level)
        self._console = console

    def emit(self, record: logging.LogRecord) -> None:
        try:
            text = _flatten(record.getMessage())
            # Through the console, so lines land above a live progress bar.
            line = f"flowdag: {record.levelname.lower()}: {escape(text)}"
            self._console.print(line, soft_wrap=True)
        except Exception:
            self.handleError(record)


if __name__ == "__main__":  # pragma: no cover
    sys.exit(main())
