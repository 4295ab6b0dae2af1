"""The ``flowdag`` command line: run a workflow file; show, list, convert and verify runs;
compare the stores (``bench``); draw a DAG (``graph``).

Design note: the CLI owns the screen, the library never prints. Results (the
summary table, ``status``, ``list``) go to stdout; progress, warnings and errors go
to stderr, so ``flowdag status ID --json > run.json`` stays clean. Live progress is
drawn only when stderr is a terminal; elsewhere (CI, pipes) the run prints one
plain line per failure and nothing else.

Exit codes: 0 the run completed (or the command worked), 1 the run failed, 2 bad
usage or bad input. ``store convert`` and ``store verify`` go on past a damaged
run or a failed copy, report it on its own line and exit 1. Every expected error
— a `FlowdagError`, an `OSError`, a workflow file that cannot be loaded — becomes
ONE line ``flowdag: error: ...`` on stderr, never a traceback.
"""

from __future__ import annotations

import argparse
import contextlib
import importlib.util
import json
import logging
import secrets
import shlex
import sys
from collections.abc import Callable, Iterator, Sequence
from datetime import datetime
from pathlib import Path
from types import ModuleType
from typing import Any, Self, TypeAlias

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
from flowdag.errors import (
    CorruptStateError,
    FlowdagError,
    RunNotFoundError,
    StoreError,
    WorkflowChangedError,
)
from flowdag.executors import Executor
from flowdag.runner import RunEvent, new_run_id
from flowdag.state import ErrorInfo, NodeState, NodeStatus, RunState
from flowdag.stores import Store, parse_store_url
from flowdag.stores import open_store as _open_store
from flowdag.stores._crypto import Cipher
from flowdag.stores.base import check_run_id
from flowdag.stores.transfer import copy_run, verify_run

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
        epilog="Encrypted stores: set FLOWDAG_KEY to a 256-bit key (64 hex digits or base64); "
        "every command then opens disk stores with it.",
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
        choices=["threads", "processes", "asyncio", "dask"],
        metavar="KIND",
        help="how nodes run: threads (default), processes (CPU-bound work), "
        "asyncio (async def nodes on one event loop), dask (a local Dask cluster, "
        "or the one --dask-address names)",
    )
    run.add_argument(
        "--dask-address",
        metavar="ADDR",
        help="run nodes on the Dask scheduler at ADDR, e.g. tcp://scheduler:8786 "
        "(implies --executor dask)",
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

    store = commands.add_parser("store", help="convert or verify whole stores")
    store_commands = store.add_subparsers(title="commands", metavar="COMMAND", required=True)
    convert = store_commands.add_parser(
        "convert",
        help="copy runs from one store to another, verifying each copy",
        description="Copy runs (all by default) from SRC_URL to DST_URL, replacing runs "
        "of the same id there; each copy is loaded back and compared with the source.",
    )
    convert.add_argument("src", metavar="SRC_URL", help="store to copy from, e.g. json://old")
    convert.add_argument("dst", metavar="DST_URL", help="store to copy to, e.g. lmdb://.flowdag")
    convert.add_argument(
        "--run-id",
        dest="run_ids",
        action="append",  # one id per option: a list would swallow SRC_URL DST_URL
        metavar="ID",
        help="copy only this run; repeat for several",
    )
    convert.set_defaults(command=_cmd_store_convert)
    verify = store_commands.add_parser(
        "verify",
        help="load every run of a store and report damaged ones",
        description="Load every run in full; exit 1 if any run is damaged.",
    )
    verify.add_argument("url", metavar="URL", help="store to check, e.g. lmdb://.flowdag")
    verify.set_defaults(command=_cmd_store_verify)
    _add_bench_command(commands)
    _add_graph_command(commands)
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
    if args.dask_address is not None and args.executor not in (None, "dask"):
        raise CLIError(f"--dask-address runs nodes on Dask, not --executor {args.executor}")
    target = load_workflow(args.target)
    dag = target.build() if isinstance(target, flowdag.Workflow) else target  # DAGError now
    with open_store(args.store) as store, _executor(args) as executor:
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
                executor=executor,
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


@contextlib.contextmanager
def _executor(args: argparse.Namespace) -> Iterator[str | Executor]:
    """What ``--executor`` and ``--dask-address`` ask for; an executor built here is shut down."""
    if args.dask_address is None:
        yield args.executor or "threads"
        return
    from flowdag.executors import DaskExecutor

    executor = DaskExecutor(address=args.dask_address, max_workers=args.workers)
    try:
        yield executor
    finally:
        executor.shutdown()


def _resume_command(args: argparse.Namespace) -> str:
    words = ["flowdag", "run", args.target, "--run-id", args.run_id]
    if args.store != DEFAULT_STORE:
        words += ["--store", args.store]
    if args.dask_address is not None:
        words += ["--dask-address", args.dask_address]
    elif args.executor is not None:
        words += ["--executor", args.executor]
    return shlex.join(words)


def _resume_hint(args: argparse.Namespace) -> str:
    if getattr(args, "command", None) is _cmd_run and getattr(args, "run_id", None):
        return f"; resume with: {_resume_command(args)}"
    return ""


class _LiveBar:
    """A transient rich progress bar on stderr, drawn only when it is a terminal."""

    def __init__(self, err: Console) -> None:
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

    def __enter__(self) -> Self:
        if self._bar is not None:
            self._bar.start()
        return self

    def __exit__(self, *exc_info: object) -> None:
        if self._bar is not None:
            self._bar.stop()


class _Progress(_LiveBar):
    """Turns `flowdag.RunEvent`s into live progress (terminal) or plain failure lines."""

    def __init__(self, err: Console) -> None:
        super().__init__(err)
        self._err = err
        self.ran: set[str] = set()  # nodes this process started (the rest were restored)
        self._running: dict[str, None] = {}  # insertion-ordered set

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


# -- flowdag store convert / verify ---------------------------------------------------


def _cmd_store_convert(args: argparse.Namespace, err: Console) -> int:
    # Bad input fails before anything is opened or written.
    wanted = [check_run_id(run_id) for run_id in dict.fromkeys(args.run_ids or [])]
    _check_distinct(args.src, args.dst)
    out = Console(highlight=False)
    with _open_existing(args.src) as src:
        stored = src.list_runs()
        have = set(stored)
        missing = [run_id for run_id in wanted if run_id not in have]
        if missing:
            names = ", ".join(repr(run_id) for run_id in missing)
            raise CLIError(f"no run {names} in {args.src}; see: flowdag list --store {args.src}")
        copied = damaged = failed = 0
        with open_store(args.dst) as dst:
            for run_id in wanted or stored:
                try:
                    copy_run(src, dst, run_id)
                except CorruptStateError as exc:  # copy_run raises it for the source only
                    damaged += 1
                    _say_run(out, run_id, "[bold red]damaged in the source, skipped[/]", exc)
                except StoreError as exc:  # the copy differs, the run is locked there, I/O...
                    failed += 1
                    _say_run(out, run_id, "[bold red]not copied[/]", exc)
                else:
                    copied += 1
                    _say_run(out, run_id, "[green]copied[/]")
    total = copied + damaged + failed
    problems = []
    if damaged:
        problems.append(f"{damaged} damaged in the source")
    if failed:
        problems.append(f"{failed} not copied")
    out.print(
        f"copied {copied} of {_runs(total)} from {escape(args.src)} to {escape(args.dst)}"
        + "".join(f"; {part}" for part in problems),
        soft_wrap=True,
    )
    return EXIT_FAILED if problems else EXIT_OK


def _cmd_store_verify(args: argparse.Namespace, err: Console) -> int:
    out = Console(highlight=False)
    damaged = checked = 0
    with _open_existing(args.url) as store:
        for run_id in store.list_runs():
            try:
                reason = verify_run(store, run_id)
            except RunNotFoundError:
                continue  # deleted while we were checking: nothing left to verify
            checked += 1
            if reason is None:
                _say_run(out, run_id, "[green]ok[/]")
            else:
                damaged += 1
                _say_run(out, run_id, "[bold red]damaged[/]", reason)
    verdict = f"{damaged} damaged" if damaged else "all ok"
    out.print(f"checked {_runs(checked)} in {escape(args.url)}: {verdict}", soft_wrap=True)
    return EXIT_FAILED if damaged else EXIT_OK


def open_store(url: str) -> Store:
    """Open the store a URL names; disk stores use the key in ``FLOWDAG_KEY`` when it is set."""
    _, directory = parse_store_url(url)
    cipher = Cipher.from_env() if directory is not None else None
    if cipher is None:
        return _open_store(url)
    return _open_store(url, key=cipher)


def _open_existing(url: str) -> Store:
    """Open a store that must exist already, so a mistyped path is not a new, empty store."""
    _, directory = parse_store_url(url)
    if directory is not None and not directory.is_dir():
        raise CLIError(f"no store at {url}: {directory} is not a directory")
    return open_store(url)


def _check_distinct(src: str, dst: str) -> None:
    """Refuse to convert a store into its own directory: both would share files."""
    src_dir, dst_dir = parse_store_url(src)[1], parse_store_url(dst)[1]
    if src_dir is not None and dst_dir is not None and src_dir.resolve() == dst_dir.resolve():
        raise CLIError(
            f"{src} and {dst} are in the same directory ({src_dir}); convert into another one"
        )


def _say_run(out: Console, run_id: str, verdict: str, why: object = None) -> None:
    reason = "" if why is None else f": {escape(_flatten(str(why)))}"
    out.print(f"{escape(run_id)}: {verdict}{reason}", soft_wrap=True)


def _runs(count: int) -> str:
    return f"{count} run" if count == 1 else f"{count} runs"


# -- flowdag bench --------------------------------------------------------------------


def _add_bench_command(commands: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    bench = commands.add_parser(
        "bench",
        help="compare the stores on this machine: table, JSON and chart",
        description="Measure each store's per-node commit cost (a durable fan-out run), "
        "save, load and resume times and size on disk, after warm-up runs; about a "
        "minute, seconds with --quick. The stores live in a temporary directory (under "
        "TMPDIR) that is removed afterwards.",
    )
    bench.add_argument(
        "--stores",
        type=_bench_stores,
        default="json,flatbuffers,lmdb,memory",
        metavar="LIST",
        help="comma-separated stores to compare (default: %(default)s)",
    )
    bench.add_argument(
        "--nodes",
        type=_int_list(3),
        metavar="LIST",
        help="run sizes in nodes, comma-separated (default: 1000,10000; with --quick: 1000)",
    )
    bench.add_argument(
        "--payload",
        type=_int_list(0),
        metavar="LIST",
        help="bytes each node returns, comma-separated (default: 100,10240; with --quick: 100)",
    )
    bench.add_argument(
        "--out",
        default="flowdag-bench",
        metavar="DIR",
        help="folder for the results JSON and the chart PNG (default: %(default)s)",
    )
    bench.add_argument("--quick", action="store_true", help="a small comparison: seconds")
    bench.set_defaults(command=_cmd_bench)


def _bench_stores(text: str) -> list[str]:
    from flowdag.bench import STORES

    names = [name.strip() for name in text.split(",") if name.strip()]
    unknown = [name for name in names if name not in STORES]
    if unknown or not names:
        raise argparse.ArgumentTypeError(
            f"unknown store {', '.join(unknown) or repr(text)}: choose from {','.join(STORES)}"
        )
    return names


def _int_list(least: int) -> Callable[[str], list[int]]:
    def parse(text: str) -> list[int]:
        try:
            values = [int(part) for part in text.split(",") if part.strip()]
        except ValueError:
            values = []
        if not values or min(values) < least:
            raise argparse.ArgumentTypeError(
                f"expected whole numbers >= {least} separated by commas, got {text!r}"
            )
        return values

    return parse


def _cmd_bench(args: argparse.Namespace, err: Console) -> int:
    from flowdag._plot import INSTALL_HINT, plot_available
    from flowdag.bench import run_bench, write_chart

    folder = Path(args.out)
    folder.mkdir(parents=True, exist_ok=True)  # before the long part: a bad --out fails now
    with _BenchProgress(err) as progress:
        results = run_bench(
            args.stores, args.nodes, args.payload, quick=args.quick, progress=progress.update
        )
    out = Console(highlight=False)
    out.print(_bench_table(results))
    stem = folder / f"bench-{results.started_at:%Y%m%d-%H%M%S}"
    written = results.write_json(stem.with_suffix(".json"))
    out.print(f"results: {escape(str(written))}", soft_wrap=True)
    if plot_available():
        chart = write_chart(results, stem.with_suffix(".png"))
        out.print(f"chart: {escape(str(chart))}", soft_wrap=True)
    else:
        hint = escape(INSTALL_HINT)  # [plot] is not markup
        out.print(
            f"chart: not drawn, matplotlib is not installed; {hint} to get it", soft_wrap=True
        )
    return EXIT_OK


class _BenchProgress(_LiveBar):
    """A transient progress bar for `flowdag.bench.run_bench` (terminal only)."""

    def update(self, step: Any) -> None:
        """Show one `flowdag.bench.BenchProgress`."""
        if self._bar is None:
            return
        if self._task is None:
            self._task = self._bar.add_task("", total=step.total)
        self._bar.update(self._task, completed=step.done, description=escape(step.what))


def _bench_table(results: Any) -> Table:
    m = results.machine
    table = Table(
        caption=f"{escape(m['cpu'])} ({m['cpus']} CPUs), Python {m['python']}, "
        f"{results.seconds:.0f}s; best of the repetitions after a warm-up; "
        "commit: a durable fan-out run, per node; x mem: commit / the in-memory store's",
        caption_justify="left",
        box=None,
        header_style="bold",
        pad_edge=False,
        padding=(0, 2, 0, 0),
    )
    for column in (
        "store",
        "nodes",
        "payload\nbytes",
        "commit\nµs/node",
        "x mem",
        "save\nms",
        "load\nms",
        "resume\nms",
        "disk\nMB",
    ):
        table.add_column(column, justify="left" if column == "store" else "right", no_wrap=True)
    for row in results.rows:
        table.add_row(
            row.store,
            f"{row.nodes:,}",
            f"{row.payload:,}",
            f"{row.commit_us_per_node:,.1f}",
            f"{row.ratio_to_memory:.2f}",
            f"{row.save_ms:,.1f}",
            f"{row.load_ms:,.1f}",
            f"{row.resume_ms:,.1f}",
            "-" if row.disk_mb is None else f"{row.disk_mb:,.2f}",
        )
    return table


# -- flowdag graph ---------------------------------------------------------------------

_GRAPH_SUFFIXES = {".png": "png", ".dot": "dot", ".gv": "dot", ".mmd": "mermaid"}


def _add_graph_command(commands: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    graph = commands.add_parser(
        "graph",
        help="draw a workflow's DAG as Mermaid, DOT or PNG",
        description="Print a workflow's DAG as Mermaid (default) or Graphviz DOT text, or "
        "draw it as a PNG (needs matplotlib: pip install 'flowdag[plot]'). With --run-id, "
        "nodes are coloured by their status in that run and labelled with durations. "
        "Large DAGs are grouped, and the output says so.",
    )
    graph.add_argument("target", metavar="FILE.py[:WORKFLOW]", help="workflow file, optional name")
    graph.add_argument("--run-id", help="colour the nodes by their status in this run")
    graph.add_argument(
        "--store",
        metavar="URL",
        help=f"store that holds the run (default: {DEFAULT_STORE})",
    )
    graph.add_argument(
        "--format",
        choices=("mermaid", "dot", "png"),
        help="output format (default: from --out's suffix .png/.dot/.gv/.mmd, else mermaid)",
    )
    graph.add_argument(
        "--out", metavar="FILE", help="write to FILE instead of stdout (needed for png)"
    )
    graph.add_argument(
        "--max-nodes",
        type=_positive_int,
        default=200,
        metavar="N",
        help="group the DAG when it has more than N nodes (default: %(default)s)",
    )
    graph.set_defaults(command=_cmd_graph)


def _cmd_graph(args: argparse.Namespace, err: Console) -> int:
    from flowdag.graph import graph_view, to_dot, to_mermaid, write_png

    if args.run_id is not None:
        check_run_id(args.run_id)  # before importing the file: bad input fails fast
    elif args.store is not None:
        raise CLIError("--store names where a run is; add --run-id ID to colour by that run")
    suffix = Path(args.out).suffix.lower() if args.out else ""
    form = args.format or _GRAPH_SUFFIXES.get(suffix, "mermaid")
    if form == "png" and not args.out:
        raise CLIError("--format png writes a file: add --out FILE.png")
    target = load_workflow(args.target)
    dag = target.build() if isinstance(target, flowdag.Workflow) else target  # DAGError now
    state = None
    if args.run_id is not None:
        with open_store(args.store or DEFAULT_STORE) as store:
            state = store.load_statuses(args.run_id)
        if state.workflow != dag.name:
            _log.warning(
                "run %s belongs to workflow %r, not %r; statuses are shown where node names match",
                args.run_id,
                state.workflow,
                dag.name,
            )
    view = graph_view(dag, state, max_nodes=args.max_nodes)
    if view.note:
        err.print(f"flowdag: {escape(view.note)}; --max-nodes N shows more", soft_wrap=True)
    if form == "png":
        written = write_png(view, args.out)
    else:
        text = to_mermaid(view) if form == "mermaid" else to_dot(view)
        if not args.out:
            sys.stdout.write(text)
            return EXIT_OK
        written = Path(args.out)
        written.write_text(text, encoding="utf-8")
    err.print(f"flowdag: wrote {escape(str(written))}", soft_wrap=True)
    return EXIT_OK


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
    # Registered in sys.modules, as pickling (by reference in this process, by
    # value for workers: see below) and dataclasses in the file expect.
    sys.modules[module_name] = module
    try:
        spec.loader.exec_module(module)
    except (Exception, SystemExit) as exc:  # the file's own bug, not ours: no traceback
        del sys.modules[module_name]
        raise CLIError(f"cannot load {path}: {type(exc).__name__}: {_flatten(str(exc))}") from exc
    # Worker processes (processes, Dask) cannot import the module by that unique
    # name, so its functions travel by value, code and all.
    import cloudpickle

    cloudpickle.register_pickle_by_value(module)
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
