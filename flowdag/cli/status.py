"""``flowdag status``: one stored run as an operator reads it.

A run of ten nodes is shown whole: one line per node. A run of 10,000 nodes
shown whole is 10,000 lines nobody reads, and drawing them as a rich table
took seconds; what an operator wants of it is the counts (the first line), the
nodes that are not completed (failed first), and a map as one line with its
items counted by status. So above `ROWS` lines, ``status`` shows the nodes not
completed, failed first, at most `ROWS` of them, and says how many it left out;
``--all`` lists every node. A table of more than `RICH_ROWS` lines is written
as plain aligned lines (`flowdag.cli.render.node_rows`, `print_table`)
rather than through rich's layout, which costs about half a millisecond a row. ``--json`` is
always complete. ``list`` and the JSON shapes are in ``runs.py``.
"""

from __future__ import annotations

import argparse
import json

from rich.console import Console
from rich.markup import escape

from flowdag._usertypes import neutral_user_types
from flowdag.cli.base import CLIError, Commands, Exit, add_command, add_store_option, open_store
from flowdag.cli.render import (
    ROWS,
    count,
    describe_counts,
    error_text,
    local_time,
    node_rows,
    output_console,
    print_table,
    seconds,
    styled,
)
from flowdag.cli.runs import liveness, state_json
from flowdag.cli.tracebacks import add_verbose_option, print_tracebacks
from flowdag.cli.waits import wait_json, waiting_nodes, with_waiting
from flowdag.state import RunState
from flowdag.stores._refwalk import load_brief
from flowdag.stores.base import check_run_id
from flowdag.waits import list_waits

__all__ = ["add_parser", "cmd_status"]


def add_parser(commands: Commands) -> None:
    """Add ``flowdag status`` to ``commands``."""
    status = add_command(commands, "status", cmd_status)
    status.add_argument("run_id", metavar="RUN_ID")
    add_store_option(status)
    status.add_argument("--json", action="store_true", help="machine-readable output (complete)")
    status.add_argument(
        "--outputs",
        action="store_true",
        help="with --json: each node's output and the run's ctx.data too",
    )
    status.add_argument(
        "--all",
        action="store_true",
        help=f"one line for every node (default: above {ROWS} lines, the nodes not completed)",
    )
    add_verbose_option(status)


def cmd_status(args: argparse.Namespace, err: Console) -> int:
    """Show one run: its counts, its nodes, every failed attempt, failed nodes' last frames.

    One line per node: status, attempts, start, duration (of all its attempts)
    and error; a map node is one line with its items counted by status (-v
    lists the items too). A run of more than 50 lines shows only the nodes not
    completed, failed first, at most 50, and says how many it left out; --all
    lists every node. Then one line per failed attempt, retried or not,
    earlier calls of run included (at most 50 without --all). Then the last
    frames of a few failed nodes' tracebacks; -v shows every traceback in
    full. With --json, everything: every node and attempt, full tracebacks.
    """
    check_run_id(args.run_id)  # before the store: a bad id is the error, not a missing store
    if args.outputs and not args.json:
        raise CLIError(
            "--outputs goes with --json; to see one node's output: flowdag show RUN NODE"
        )
    with open_store(args.store, create=False) as store, neutral_user_types():
        # Outputs are read only when asked for: they may be large (refs are small
        # and always read, never their blobs); user types as UserValue, without
        # importing their modules.
        state = store.load(args.run_id) if args.outputs else load_brief(store, args.run_id)
        waits = list_waits(store, args.run_id)
        waiting = waiting_nodes(state, (wait.node for wait in waits))
        live = liveness(store, state, waiting)
    # A waiting node is stored as pending: the waits table says it waits.
    state = with_waiting(state, waiting)
    if args.json:
        document = state_json(state, live, values=args.outputs)
        document["waits"] = [wait_json(wait) for wait in waits if wait.node in waiting]
        print(json.dumps(document, indent=2))
        return Exit.OK
    out = output_console()
    counts = count(state.nodes.values())
    out.print(
        f"run {escape(state.run_id)}  workflow {escape(state.workflow)}  "
        f"{styled(live.status)}{escape(live.text()[len(live.status) :])}"
        f"  ({describe_counts(counts, interrupted=live.interrupted)})"
        + (f"  expires {local_time(state.expires_at)}" if state.expires_at else ""),
        soft_wrap=True,
    )
    header, rows, left_out = node_rows(
        state.nodes, live.node_status, items=not args.verbose, every=args.all
    )
    print_table(out, header, rows, right={2, 4}, status=1)
    for line in left_out:
        out.print(line, soft_wrap=True, highlight=False, markup=False)
    attempts = _failed_attempts(state)
    if attempts:
        out.print("failed attempts:")
        shown = attempts if args.all else attempts[:ROWS]
        columns = ("node", "attempt", "started", "duration", "error")
        print_table(out, columns, shown, right={1, 3}, status=None)
        if len(shown) < len(attempts):
            out.print(
                f"and {len(attempts) - len(shown)} more failed attempts: --all lists them all",
                markup=False,
            )
    print_tracebacks(out, state.run_id, state.nodes, verbose=args.verbose)
    return Exit.OK


def _failed_attempts(state: RunState) -> list[list[str]]:
    """One row per failed attempt of any node, retried or not: node, number, start,
    duration, error."""
    return [
        [
            name,
            str(attempt.number),
            local_time(attempt.started_at),
            seconds(attempt.duration),
            error_text(attempt.error),
        ]
        for name, node in state.nodes.items()
        for attempt in node.history
        if attempt.error is not None
    ]
