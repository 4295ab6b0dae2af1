"""Failed nodes' tracebacks as ``flowdag run`` and ``status`` print them.

A stored traceback (`ErrorInfo.traceback`) is the text `traceback.format_exception`
wrote in the process that ran the attempt. By default a command prints its
*last frames*: those of the last exception of a chain, without flowdag's own
frames (the attempt machinery that called the node function), at most
`LAST_FRAMES` of them, then the exception line; a note says what was left out.
``-v`` prints every traceback in full, as ``flowdag show RUN_ID NODE`` and
``status --json`` do. Without ``-v``, only the first `MAX_NODES` failed nodes get
a traceback.
"""

from __future__ import annotations

import argparse
import re
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path

from rich.console import Console
from rich.markup import escape

import flowdag
from flowdag.state import NodeState, NodeStatus

__all__ = [
    "LAST_FRAMES",
    "MAX_NODES",
    "Brief",
    "add_verbose_option",
    "brief",
    "print_tracebacks",
]

#: Frames shown of a failed node's traceback without ``-v``.
LAST_FRAMES = 5
#: Failed nodes whose traceback is shown without ``-v``.
MAX_NODES = 3

_HEADER = "Traceback (most recent call last):"
_FRAME = re.compile(r'  File "(?P<path>.*)", line \d+')
_PACKAGE = Path(flowdag.__file__).resolve().parent
# flowdag installed elsewhere, e.g. on a Dask worker: its frames are flowdag's too.
_INSTALLED = re.compile(r"[/\\](?:site|dist)-packages[/\\]flowdag[/\\]")


def add_verbose_option(
    parser: argparse.ArgumentParser,
    help: str = "full tracebacks of failed nodes, and progress details",
) -> None:
    """``-v``/``--verbose`` after the command too (``flowdag run FILE -v``), as before it."""
    parser.add_argument(
        "-v",
        "--verbose",
        action="store_true",
        # Not set unless given: ``flowdag -v run FILE`` keeps the value set before the command.
        default=argparse.SUPPRESS,
        help=help,
    )


@dataclass(frozen=True, slots=True)
class Brief:
    """The lines of a traceback worth showing first, and what was left out."""

    lines: list[str]
    hidden_frames: int  # frames not shown: flowdag's, earlier ones, those of earlier exceptions
    chained: bool  # earlier exceptions of a chain ("The above exception was...") left out


def brief(text: str, frames: int = LAST_FRAMES) -> Brief:
    """The last ``frames`` frames of user code of the last exception in ``text``."""
    lines = text.rstrip().splitlines()
    starts = [i for i, line in enumerate(lines) if line == _HEADER]
    if not starts:  # an error raised without a traceback: only its own line(s)
        return Brief(lines, 0, False)
    start = starts[-1]
    total = sum(1 for line in lines if _FRAME.match(line))
    kept: list[list[str]] = []  # frames of the last exception, each its lines
    end = start + 1
    while end < len(lines) and lines[end].startswith("  "):
        if _FRAME.match(lines[end]) or not kept:
            kept.append([])
        kept[-1].append(lines[end])
        end += 1
    user = [frame for frame in kept if not _is_flowdag(frame[0])][-frames:]
    shown = [_HEADER, *(line for frame in user for line in frame), *lines[end:]]
    return Brief(shown, total - len(user), start > 0)


def _is_flowdag(line: str) -> bool:
    match = _FRAME.match(line)
    if match is None:
        return False
    path = match["path"]
    return Path(path).is_relative_to(_PACKAGE) or _INSTALLED.search(path) is not None


def print_tracebacks(
    out: Console, run_id: str, nodes: Mapping[str, NodeState], *, verbose: bool
) -> bool:
    """Print the traceback of each failed node: its last frames, or all with ``verbose``.

    Each comes after a blank line. Returns whether anything was printed.
    """
    failed = [
        (name, node.error)
        for name, node in nodes.items()
        if node.status is NodeStatus.FAILED and node.error is not None and node.error.traceback
    ]
    shown = failed if verbose else failed[:MAX_NODES]
    for name, error in shown:
        out.print()
        if verbose:
            out.print(f"[bold]node {escape(name)} failed:[/]", soft_wrap=True)
            out.print(escape(error.traceback.rstrip()), soft_wrap=True, highlight=False)
            continue
        cut = brief(error.traceback)
        out.print(f"[bold]node {escape(name)} failed:[/]", soft_wrap=True)
        out.print(escape("\n".join(cut.lines)), soft_wrap=True, highlight=False)
        frames = "frame" if cut.hidden_frames == 1 else "frames"
        left_out = [f"{cut.hidden_frames} more {frames}"] if cut.hidden_frames else []
        if cut.chained:
            left_out.append("the exceptions that led to this one")
        if left_out:
            out.print(
                f"({' and '.join(left_out)} hidden; -v shows the full traceback)", soft_wrap=True
            )
    if len(failed) > len(shown):
        more = len(failed) - len(shown)
        out.print(
            f"\n{more} more failed node{'s' if more > 1 else ''}: -v shows every traceback, "
            f"flowdag show {escape(run_id)} NODE one node's",
            soft_wrap=True,
        )
    return bool(failed)
