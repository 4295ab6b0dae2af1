"""``flowdag graph``: draw a workflow's DAG as Mermaid, DOT or PNG (see `flowdag.graph`)."""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

from rich.console import Console
from rich.markup import escape

from flowdag.cli.base import (
    DEFAULT_STORE,
    CLIError,
    Commands,
    Exit,
    add_command,
    log,
    open_store,
    positive_int,
)
from flowdag.cli.loader import load_dag
from flowdag.cli.runs import shown_state
from flowdag.stores.base import check_run_id

__all__ = ["add_parser", "cmd_graph"]

_SUFFIXES = {".png": "png", ".dot": "dot", ".gv": "dot", ".mmd": "mermaid"}


def add_parser(commands: Commands) -> None:
    """Add ``flowdag graph`` to ``commands``."""
    graph = add_command(commands, "graph", cmd_graph)
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
        type=positive_int,
        default=200,
        metavar="N",
        help="group the DAG when it has more than N nodes (default: %(default)s)",
    )


def cmd_graph(args: argparse.Namespace, err: Console) -> int:
    """Draw a workflow's DAG as Mermaid, DOT or PNG.

    Print a workflow's DAG as Mermaid (default) or Graphviz DOT text, or draw it
    as a PNG (needs matplotlib: pip install 'flowdag[plot]'). With --run-id, nodes
    are coloured by their status in that run and labelled with durations; a node
    that was running when its process died is shown as interrupted. Large
    DAGs are grouped, and the output says so.
    """
    from flowdag.graph import graph_view, to_dot, to_mermaid, write_png

    if args.run_id is not None:
        check_run_id(args.run_id)  # before importing the file: bad input fails fast
    elif args.store is not None:
        raise CLIError("--store names where a run is; add --run-id ID to colour by that run")
    suffix = Path(args.out).suffix.lower() if args.out else ""
    form = args.format or _SUFFIXES.get(suffix, "mermaid")
    if form == "png" and not args.out:
        raise CLIError("--format png writes a file: add --out FILE.png")
    dag = load_dag(args.target)
    state = None
    interrupted = False
    if args.run_id is not None:
        with open_store(args.store or DEFAULT_STORE, create=False) as store:
            # Waiting nodes are stored pending: the waits table says they wait.
            state, live = shown_state(store, store.load_statuses(args.run_id))
            # Running nodes of a run no live process holds were in flight at a crash.
            interrupted = live.interrupted
        if state.workflow != dag.name:
            log.warning(
                "run %s belongs to workflow %r, not %r; statuses are shown where node names match",
                args.run_id,
                state.workflow,
                dag.name,
            )
    view = graph_view(dag, state, max_nodes=args.max_nodes, interrupted=interrupted)
    if view.note:
        err.print(f"flowdag: {escape(view.note)}; --max-nodes N shows more", soft_wrap=True)
    if form == "png":
        written = write_png(view, args.out)
    else:
        text = to_mermaid(view) if form == "mermaid" else to_dot(view)
        if not args.out:
            sys.stdout.write(text)
            return Exit.OK
        written = Path(args.out)
        written.write_text(text, encoding="utf-8")
    err.print(f"flowdag: wrote {escape(str(written))}", soft_wrap=True)
    return Exit.OK
