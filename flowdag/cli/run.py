"""``flowdag run``: run (or resume) a workflow file, with live progress and a summary."""

from __future__ import annotations

import argparse
import contextlib
import shlex
from collections.abc import Iterator
from typing import Any

from rich.console import Console
from rich.markup import escape

import flowdag
from flowdag._seal import SealedNodes
from flowdag._units import parse_duration, parse_size
from flowdag.cli.base import (
    DEFAULT_STORE,
    CLIError,
    Commands,
    Exit,
    add_command,
    add_store_option,
    open_store,
    positive_int,
)
from flowdag.cli.loader import load_dag
from flowdag.cli.progress import RunProgress
from flowdag.cli.render import (
    ROWS,
    count,
    describe_counts,
    node_rows,
    output_console,
    print_table,
    styled,
)
from flowdag.cli.tracebacks import add_verbose_option, print_tracebacks
from flowdag.cli.waits import print_waits
from flowdag.executors import Executor
from flowdag.runner import RunResult, new_run_id
from flowdag.state import NodeStatus, RunStatus
from flowdag.stores import parse_store_url
from flowdag.stores.base import check_run_id

__all__ = ["add_parser", "cmd_run", "resume_command"]


def add_parser(commands: Commands) -> None:
    """Add ``flowdag run`` to ``commands``."""
    run = add_command(commands, "run", cmd_run)
    run.add_argument("target", metavar="FILE.py[:WORKFLOW]", help="workflow file, optional name")
    run.add_argument("--run-id", help="run id to start or resume (default: a new one)")
    add_store_option(run)
    run.add_argument("--workers", type=positive_int, metavar="N", help="parallel nodes")
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
        "--pool",
        dest="pools",
        action="append",  # checked in cmd_run, so a bad value is one error line
        metavar="NAME=N",
        help="at most N nodes tagged pool=NAME at once; repeat for several pools "
        "(overrides the workflow's pools=)",
    )
    run.add_argument(
        "--inline-limit",
        metavar="SIZE",
        help="keep outputs encoded above SIZE in the store's blob area, by reference "
        "(default 256KiB; 'none': keep every output inline)",
    )
    run.add_argument(
        "--ttl",
        metavar="DURATION",
        help="the run expires DURATION after it finishes, e.g. 30d; `flowdag gc` "
        "then deletes it (default: never)",
    )
    add_verbose_option(run)
    run.add_argument(
        "--allow-changes",
        action="store_true",
        help="resume even if the workflow's nodes or dependencies changed",
    )
    run.add_argument(
        "--on-code-change",
        choices=["rerun", "warn", "ignore"],
        default="rerun",
        help="a completed node whose code changed: run it again (default), keep its "
        "output with a warning, or keep it",
    )
    run.add_argument(
        "--rerun", choices=["failed"], help="run the failed and skipped nodes again, keep the rest"
    )
    run.add_argument(
        "--rerun-from",
        action="append",
        metavar="NODE",
        help="run NODE and every node below it again; repeat for several",
    )


def cmd_run(args: argparse.Namespace, err: Console) -> int:
    """Run (or resume) a workflow from a Python file.

    Run a workflow; run again with the same --run-id to resume it. Exit code:
    0 completed, 1 failed, 2 bad input, 3 suspended: input nodes wait for
    values and nothing else can run; each wait is printed with the command
    that answers it (flowdag provide KEY ...; the key is shown this once), and
    the next run with the same --run-id continues.
    """
    if args.run_id is not None:
        check_run_id(args.run_id)  # before importing the file: bad input fails fast
    if args.dask_address is not None and args.executor not in (None, "dask"):
        raise CLIError(f"--dask-address runs nodes on Dask, not --executor {args.executor}")
    pools = parse_pools(args.pools or [])
    lifetimes = _lifetimes(args)
    ran_at_import: list[RunResult] = []
    dag = load_dag(args.target, ran_at_import)
    if ran_at_import:
        return _ran_at_import(args, ran_at_import, err)
    with open_store(args.store) as store, _executor(args) as executor:
        if args.run_id is None:
            args.run_id = new_run_id()
            # Printed before the run starts, so the id is known even if it is killed.
            err.print(f"flowdag: run id {args.run_id}", soft_wrap=True)
        with RunProgress(err, dag.maps) as progress:
            result = flowdag.run(
                dag,
                run_id=args.run_id,
                store=store,
                max_workers=args.workers,
                executor=executor,
                allow_changes=args.allow_changes,
                on_code_change=args.on_code_change,
                rerun=args.rerun,
                rerun_from=args.rerun_from or (),
                pools=pools,
                on_event=progress.update,
                **lifetimes,
            )
        restored = sum(  # completed before this call: not started by it
            1
            for name, status in result.node_status.items()
            if status is NodeStatus.COMPLETED and name not in progress.ran
        )
        code = _report(result, args, restored=restored, verbose=args.verbose)
        # Before the store closes: a sealed run's nodes, never read here, are not read then.
        del result
    return code


def _lifetimes(args: argparse.Namespace) -> dict[str, Any]:
    """``--inline-limit`` and ``--ttl`` for `flowdag.run`, checked before the file runs."""
    options: dict[str, Any] = {}
    if args.inline_limit is not None:
        text = args.inline_limit
        options["inline_limit"] = None if text.lower() == "none" else text
        if options["inline_limit"] is not None:
            parse_size(text, "--inline-limit")
    if args.ttl is not None:
        if parse_duration(args.ttl, "--ttl") <= 0:
            raise CLIError(f"--ttl must be above 0, not {args.ttl!r}; e.g. --ttl 30d")
        options["ttl"] = args.ttl
    return options


def _ran_at_import(args: argparse.Namespace, results: list[RunResult], err: Console) -> int:
    """The file ran its workflow itself when imported: report that run, never run it again."""
    err.print(
        f"flowdag: warning: importing {escape(args.target)} ran the workflow itself "
        f"(flowdag.run at module level), so it is not run again; put that call under "
        f'`if __name__ == "__main__":` to let flowdag run choose the run id and store',
        soft_wrap=True,
    )
    return _report(results[-1], None, restored=0, verbose=args.verbose)


def _report(
    result: RunResult, args: argparse.Namespace | None, *, restored: int, verbose: bool
) -> int:
    """Print the summary table, failed nodes' tracebacks and the last line; the exit code."""
    out = output_console()
    hint = f"flowdag status {result.run_id} --all lists every node"
    sealed = type(result.nodes) is SealedNodes  # every node completed: none failed
    if sealed and len(result.nodes) > ROWS:  # and too many to list: nothing to read
        header, rows, left_out = node_rows({}, started=False)
        left_out = [f"{len(result.nodes)} completed nodes not shown", hint]
    else:
        header, rows, left_out = node_rows(
            result.nodes,
            items=not verbose,  # a map: one line, its items counted (-v lists them)
            started=False,
            hint=hint,
        )
    print_table(out, header, rows, right={2, 3}, status=1)
    for line in left_out:
        out.print(line, soft_wrap=True, highlight=False, markup=False)
    if not sealed and print_tracebacks(out, result.run_id, result.nodes, verbose=verbose):
        out.print()  # the verdict stands apart from the last traceback
    note = f"; {restored} of {len(result.nodes)} nodes were already completed" if restored else ""
    if result.ok:
        out.print(f"run {escape(result.run_id)} [green]completed[/]{note}", soft_wrap=True)
        return Exit.OK
    counts = count(result.nodes.values())
    command = None if args is None else resume_command(args)
    if result.status is RunStatus.SUSPENDED:
        # Keys go to stdout only, here, once: never to the log on stderr.
        print_waits(out, result.waits, None if args is None else args.store)
        hint = "" if command is None else f"; once given, continue with: {escape(command)}"
        out.print(
            f"run {escape(result.run_id)} {styled(result.status)} "
            f"({describe_counts(counts)}){hint}",
            soft_wrap=True,
        )
        return Exit.SUSPENDED
    hint = "" if command is None else f"; fix and resume with: {escape(command)}"
    out.print(
        f"run {escape(result.run_id)} {styled(result.status)} ({describe_counts(counts)}){hint}",
        soft_wrap=True,
    )
    return Exit.FAILED


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


def parse_pools(values: list[str]) -> dict[str, int]:
    """``--pool NAME=N`` options as ``run(pools=)`` takes them; the last of a name wins."""
    pools: dict[str, int] = {}
    for value in values:
        name, equals, cap = value.partition("=")
        name = name.strip()
        number = int(cap) if cap.strip().isdecimal() else 0
        if not equals or not name or number < 1:
            raise CLIError(
                f"--pool takes NAME=N with N a whole number >= 1, e.g. --pool api=2; got {value!r}"
            )
        pools[name] = number
    return pools


def resume_command(args: argparse.Namespace) -> str | None:
    """The ``flowdag run`` command line that resumes this run, with the options that
    shape how it runs; None for a ``memory://`` store, which keeps nothing to resume."""
    if parse_store_url(args.store)[0] == "memory":
        return None
    words = ["flowdag", "run", args.target, "--run-id", args.run_id]
    if args.store != DEFAULT_STORE:
        words += ["--store", args.store]
    if args.workers is not None:
        words += ["--workers", str(args.workers)]
    if args.dask_address is not None:
        words += ["--dask-address", args.dask_address]
    elif args.executor is not None:
        words += ["--executor", args.executor]
    for pool in args.pools or []:
        words += ["--pool", pool]
    return shlex.join(words)
