"""``flowdag show``: what a run's nodes returned, why they failed, and its ``ctx.data``.

``status`` answers "where does the run stand"; ``show`` answers "what came out":
a node's output (pretty, cut to a screenful with a note; ``--json`` gives all of
it, exactly), its error with the full traceback, its attempts and the run's
``ctx.data``. Like ``status``, it only reads and never creates a store.
"""

from __future__ import annotations

import argparse
import json
import reprlib
from datetime import UTC, datetime
from typing import Any

from rich.console import Console
from rich.markup import escape

from flowdag._usertypes import neutral_user_types
from flowdag.cli.base import CLIError, Commands, Exit, add_command, add_store_option, open_store
from flowdag.cli.pretty import pformat
from flowdag.cli.render import (
    VALUE_WIDTH,
    error_text,
    local_time,
    output_console,
    plain_table,
    ref_text,
    seconds,
    size_text,
    styled,
)
from flowdag.cli.runs import (
    Liveness,
    attempts_table,
    json_value,
    node_json,
    shown_state,
    state_json,
)
from flowdag.refs import Ref
from flowdag.state import NodeState, NodeStatus, RunState
from flowdag.stores.base import check_run_id

__all__ = ["add_parser", "cmd_show"]

#: A value shown on screen is cut after this many lines (``--json`` shows all of it).
MAX_LINES = 40
#: A value in the one-line-per-node listing is cut after this many characters.
MAX_BRIEF = 60


def add_parser(commands: Commands) -> None:
    """Add ``flowdag show`` to ``commands``."""
    show = add_command(commands, "show", cmd_show)
    show.add_argument("run_id", metavar="RUN_ID")
    show.add_argument("node", metavar="NODE", nargs="?", help="the node to show in full")
    add_store_option(show)
    show.add_argument("--json", action="store_true", help="machine-readable output, values in full")
    show.add_argument(
        "--value",
        action="store_true",
        help="with NODE: load an output kept by reference from its blob (checked) and show it",
    )


def cmd_show(args: argparse.Namespace, err: Console) -> int:
    """Show a run's outputs, errors and ctx.data; with NODE, that node in full.

    Without NODE: one line per node (status, attempts, duration, the start of
    its output or its error) and the run's ctx.data. With NODE: its output
    (long values are cut, with a note), its error with the full traceback, and
    every attempt (number, start, duration, error). --json prints every value
    and every attempt's traceback in full, exactly.

    An output kept by reference is shown by its ref: size, stored size,
    expiry, extracted fields and preview; its blob is not read unless --value
    asks for the value (read whole and checked against its hash).
    """
    check_run_id(args.run_id)
    if args.value and args.node is None:
        raise CLIError("--value goes with NODE: flowdag show RUN NODE --value")
    # User types come back as UserValue (name and fields): their modules are never imported.
    with open_store(args.store, create=False) as store, neutral_user_types():
        state, live = shown_state(store, store.load(args.run_id))
        if args.node is not None and args.node not in state.nodes:
            names = ", ".join(state.nodes) or "none"
            raise CLIError(f"run {args.run_id!r} has no node {args.node!r}; its nodes: {names}")
        value = _value(state.nodes[args.node]) if args.value else _UNREAD
    if args.json:
        if args.node is None:
            document = state_json(state, live, values=True)
        else:
            document = {"run_id": state.run_id, "node": args.node}
            document |= node_json(state.nodes[args.node], live, values=True)
            if args.value:
                document["output"] = json_value(value)
            document["data"] = {key: json_value(value) for key, value in state.data.items()}
        print(json.dumps(document, indent=2))
        return Exit.OK
    out = output_console()
    if args.node is None:
        _show_run(out, state, live)
    else:
        _show_node(out, state, args.node, live, value)
    return Exit.OK


def _value(node: NodeState) -> Any:
    """The node's output, loaded from its blob when it is kept by reference (in the store)."""
    return node.output.load() if type(node.output) is Ref else node.output


def _show_run(out: Console, state: RunState, live: Liveness) -> None:
    out.print(
        f"run {escape(state.run_id)}  workflow {escape(state.workflow)}  "
        f"{styled(live.status)}{escape(live.text()[len(live.status) :])}",
        soft_wrap=True,
    )
    table = plain_table()
    for column in ("node", "status", "attempts", "duration", "output or error"):
        right = column in {"attempts", "duration"}
        table.add_column(column, justify="right" if right else "left", no_wrap=True)
    for name, node in state.nodes.items():
        if node.error is not None:
            brief = error_text(node.error)
        elif node.status is NodeStatus.RUNNING:  # in flight, or interrupted: no output yet
            brief = f"started {local_time(node.started_at)}"
        else:
            brief = "" if node.output is None and not node.attempts else _brief(node.output)
        table.add_row(
            escape(name),
            styled(live.node_status(node)),
            str(node.attempts),
            seconds(node.duration),
            escape(brief),
        )
    out.print(table)
    _show_data(out, state)
    out.print(f"one node in full: flowdag show {escape(state.run_id)} NODE", soft_wrap=True)


def _show_node(out: Console, state: RunState, name: str, live: Liveness, value: Any) -> None:
    """One node in full; ``value``: its output read from its blob, or `_UNREAD`."""
    node = state.nodes[name]
    out.print(
        f"node {escape(name)}  run {escape(state.run_id)}  {styled(live.node_status(node))}  "
        f"attempts {node.attempts}",
        soft_wrap=True,
    )
    out.print(f"deps: {escape(', '.join(node.deps)) or '-'}", soft_wrap=True)
    out.print(
        f"started {local_time(node.started_at)}  finished {local_time(node.finished_at)}  "
        f"duration {seconds(node.duration)}",
        soft_wrap=True,
    )
    attempts = attempts_table(state, node=name)
    if attempts is not None:
        out.print("attempts:")
        out.print(attempts)
    if type(node.output) is Ref:
        _show_ref(out, node.output, state.run_id, name, value)
    else:
        _show_value(out, "output", node)
    if node.error is not None:
        out.print(f"error: {escape(error_text(node.error))}", soft_wrap=True)
        if node.error.traceback:
            out.print(escape(node.error.traceback.rstrip()), soft_wrap=True)
    _show_data(out, state)


def _show_value(out: Console, label: str, node: NodeState) -> None:
    if node.output is None and (node.error is not None or node.status is NodeStatus.RUNNING):
        return  # a failed node has no output (its error says why), a running one none yet
    lines = pformat(node.output, width=max(min(out.width, VALUE_WIDTH) - 2, 40))
    _print_cut(out, f"{label}:", lines.splitlines())


def _show_ref(out: Console, ref: Ref, run_id: str, name: str, value: Any) -> None:
    out.print("output: kept by reference", soft_wrap=True)
    compression = ref.compression or "not compressed"
    expiry = "never" if ref.expires_at is None else local_time(ref.expires_at)
    if ref.expires_at is not None and ref.expires_at <= datetime.now(UTC):
        expiry += " (expired: the blob is no longer readable)"
    for line in (
        f"uri {ref.uri}",
        f"size {size_text(ref.size)} ({ref.size:,} bytes), stored {size_text(ref.stored_size)} "
        f"({compression}), encoding {ref.encoding}",
        f"expires {expiry}",
    ):
        out.print(f"  {escape(line)}", soft_wrap=True)
    width = max(min(out.width, VALUE_WIDTH) - 2, 40)
    _print_cut(out, "  extracted:", pformat(ref.extracted, width=width).splitlines(), "    ")
    cut = " (truncated when stored)" if ref.preview_truncated else ""
    _print_cut(out, f"  preview{cut}:", pformat(ref.preview, width=width).splitlines(), "    ")
    if value is _UNREAD:
        hint = f"flowdag show {run_id} {name} --value"
        out.print(f"the value: {escape(hint)} (reads the blob)", soft_wrap=True)
        return
    lines = pformat(value, width=width).splitlines()
    _print_cut(out, "value (read from the blob, checked):", lines)


def _show_data(out: Console, state: RunState) -> None:
    if not state.data:
        out.print("ctx.data: empty")
        return
    # A ref in ctx.data is shown by its size and fields (its blob is not read).
    data = {k: _Shown(ref_text(v)) if type(v) is Ref else v for k, v in state.data.items()}
    text = pformat(data, width=max(min(out.width, VALUE_WIDTH) - 2, 40))
    _print_cut(out, "ctx.data:", text.splitlines())


def _print_cut(out: Console, title: str, lines: list[str], indent: str = "  ") -> None:
    out.print(title)
    for line in lines[:MAX_LINES]:
        out.print(f"{indent}{escape(line)}", soft_wrap=True)
    if len(lines) > MAX_LINES:
        out.print(
            f"{indent}... cut: {len(lines) - MAX_LINES} more of {len(lines)} lines; "
            "--json shows all",
            soft_wrap=True,
        )


class _Shown:
    """Shown as its text, without quotes, in a pretty-printed value."""

    def __init__(self, text: str) -> None:
        self.text = text

    def __repr__(self) -> str:
        return self.text


#: What `_show_node` is given when the value of an output kept by reference was not read.
_UNREAD: Any = object()


_REPR = reprlib.Repr()
_REPR.maxstring = _REPR.maxother = MAX_BRIEF  # attributes: keywords need Python 3.12


def _brief(value: Any) -> str:
    if type(value) is Ref:
        return ref_text(value)  # never the blob
    text = _REPR.repr(value)  # reprlib: a huge value is never turned into text in full
    return text if len(text) <= MAX_BRIEF else text[: MAX_BRIEF - 3] + "..."
