"""``flowdag status``: one stored run as an operator reads it.

A run of ten nodes is shown whole: one line per node. A run of 10,000 nodes
shown whole is 10,000 lines nobody reads, and drawing them as a rich table
took seconds; what an operator wants of it is the counts (the first line), the
nodes that are not completed (failed first), and a map as one line with its
items counted by status. So above `ROWS` lines, ``status`` shows the nodes not
completed, failed first, at most `ROWS` of them, and says how many it left out;
``--all`` lists every node. A table of more than `RICH_ROWS` lines is written
as plain aligned lines (`flowdag.cli.render.text_table`) rather than through
rich's layout, which costs about half a millisecond a row. ``--json`` is
always complete. ``list`` and the JSON shapes are in ``runs.py``.
"""

from __future__ import annotations

import argparse
import json
from collections.abc import Callable, Sequence

from rich.console import Console
from rich.markup import escape

from flowdag._maps import item_counts
from flowdag._usertypes import neutral_user_types
from flowdag.cli.base import CLIError, Commands, Exit, add_command, add_store_option, open_store
from flowdag.cli.render import (
    count,
    describe_counts,
    error_text,
    local_time,
    output_console,
    plain_table,
    ref_text,
    seconds,
    styled,
    text_table,
)
from flowdag.cli.runs import liveness, state_json
from flowdag.cli.tracebacks import add_verbose_option, print_tracebacks
from flowdag.cli.waits import wait_json, waiting_nodes, with_waiting
from flowdag.refs import Ref
from flowdag.state import NodeState, RunState
from flowdag.stores._refwalk import load_brief
from flowdag.stores.base import check_run_id
from flowdag.waits import list_waits

__all__ = ["RICH_ROWS", "ROWS", "add_parser", "cmd_status", "node_rows"]

#: Lines of a table shown without ``--all``; a run with more shows the nodes not completed.
ROWS = 50
#: A table of more lines is written as plain lines, not laid out by rich.
RICH_ROWS = 200

#: The order the nodes not completed are listed in when they are too many: what
#: needs a look first. Statuses as shown (``interrupted`` included).
_URGENCY = {"failed": 0, "interrupted": 1, "running": 2, "waiting": 3, "skipped": 4, "pending": 5}


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
        state, live.node_status, items=not args.verbose, every=args.all
    )
    _print_table(out, header, rows, right={2, 4}, status=1)
    for line in left_out:
        out.print(line, soft_wrap=True, highlight=False, markup=False)
    attempts = _failed_attempts(state)
    if attempts:
        out.print("failed attempts:")
        shown = attempts if args.all else attempts[:ROWS]
        columns = ("node", "attempt", "started", "duration", "error")
        _print_table(out, columns, shown, right={1, 3}, status=None)
        if len(shown) < len(attempts):
            out.print(
                f"and {len(attempts) - len(shown)} more failed attempts: --all lists them all",
                markup=False,
            )
    print_tracebacks(out, state.run_id, state.nodes, verbose=args.verbose)
    return Exit.OK


def node_rows(
    state: RunState,
    shown: Callable[[NodeState], str],
    *,
    items: bool = True,
    every: bool = False,
    limit: int = ROWS,
) -> tuple[tuple[str, ...], list[list[str]], list[str]]:
    """The node table of ``status``: its header, its rows (plain text) and the lines
    saying what was left out.

    ``shown``: a node's status as shown (`Liveness.node_status`). ``items``: a
    map's items are counted on its line rather than listed. ``every``: every
    node; otherwise, above ``limit`` lines, the nodes not completed, those that
    need a look first, at most ``limit``.
    """
    grouped = item_counts(state.nodes) if items else None
    names = [
        name for name in state.nodes if grouped is None or name not in grouped.item_of
    ]  # a map's items: one line for them all
    statuses = {name: shown(state.nodes[name]) for name in names}
    left_out: list[str] = []
    if not every and len(names) > limit:
        completed = sum(1 for name in names if statuses[name] == "completed")
        open_ = [name for name in names if statuses[name] != "completed"]
        open_.sort(key=lambda name: _URGENCY.get(statuses[name], len(_URGENCY)))  # stable
        names = open_[:limit]
        rest = open_[limit:]
        if rest:
            by_status: dict[str, int] = {}
            for name in rest:
                by_status[statuses[name]] = by_status.get(statuses[name], 0) + 1
            what = ", ".join(f"{number} {status}" for status, number in by_status.items())
            left_out.append(f"and {len(rest)} more nodes not completed ({what})")
        if completed:
            left_out.append(f"{completed} completed nodes not shown")
        left_out.append("--all lists every node; --json gives everything")
    nodes = [(name, state.nodes[name]) for name in names]
    # A column for outputs kept by reference, when there are some: size and extracted fields.
    by_ref = any(type(node.output) is Ref for _, node in nodes)
    header = ("node", "status", "attempts", "started", "duration", "error")
    rows = []
    for name, node in nodes:
        counted = grouped.counts.get(name) if grouped else None
        row = [
            name,
            statuses[name] + ("" if counted is None else f"  {counted}"),
            str(node.attempts),
            local_time(node.started_at),
            seconds(node.duration),
            error_text(node.error),
        ]
        if by_ref:
            ref = node.output
            row.append(ref_text(ref, label=False) if type(ref) is Ref else "")
        rows.append(row)
    return (*header, "ref") if by_ref else header, rows, left_out


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


def _print_table(
    out: Console,
    header: Sequence[str],
    rows: Sequence[Sequence[str]],
    *,
    right: set[int],
    status: int | None,
) -> None:
    """Rows of plain text as a table, column ``status`` in its colour: through rich
    when they are few, as plain lines when they are many."""
    if len(rows) > RICH_ROWS:
        out.file.write(text_table(out, header, rows, status=status, right=right))
        out.file.flush()
        return
    table = plain_table()
    for column, name in enumerate(header):
        table.add_column(name, justify="right" if column in right else "left")
    for row in rows:
        table.add_row(*(_cell(cell, column == status) for column, cell in enumerate(row)))
    out.print(table)


def _cell(cell: str, status: bool) -> str:
    if not status:
        return escape(cell)
    shown, space, rest = cell.partition(" ")  # "failed  9/10 items completed, 1 failed"
    return styled(shown) + escape(space + rest)
