"""Shared rendering: statuses, counts, durations and tables (progress: ``progress.py``).

Everything here builds text or `rich` renderables; nothing draws.
"""

from __future__ import annotations

import reprlib
from collections.abc import Callable, Container, Iterable, Mapping, Sequence
from datetime import UTC, datetime
from typing import Any

from rich.cells import cell_len
from rich.console import Console
from rich.markup import escape
from rich.style import Style
from rich.table import Table
from rich.text import Text

from flowdag._maps import item_counts
from flowdag.cli.base import flatten
from flowdag.refs import Ref
from flowdag.state import ErrorInfo, NodeState, NodeStatus

__all__ = [
    "count",
    "describe_counts",
    "error_text",
    "local_time",
    "node_rows",
    "output_console",
    "plain_table",
    "plural",
    "print_table",
    "ref_text",
    "runs",
    "say_run",
    "seconds",
    "size_text",
    "styled",
    "text_table",
]

_STATUS_STYLE = {  # node and run statuses alike
    "completed": "green",
    "failed": "bold red",
    "skipped": "yellow",
    "suspended": "yellow",
    "waiting": "yellow",  # an input node waiting for a value (flowdag provide)
    "running": "cyan",
    "pending": "dim",
    "damaged": "bold red",  # a run that cannot be read (flowdag list)
    "interrupted": "magenta",  # a run (or node) whose process died before it finished
}
#: Every node status, in order: iterating an enum is slow, and list counts 10,000 runs.
_STATUSES = tuple(NodeStatus)
#: Control characters, shown escaped in text tables: a name never moves the cursor.
_CONTROL = {code: f"\\x{code:02x}" for code in [*range(0x20), *range(0x7F, 0xA0)]}


# -- text ------------------------------------------------------------------------------


def count(nodes: Iterable[NodeState]) -> dict[NodeStatus, int]:
    """How many nodes have each status."""
    counts = dict.fromkeys(_STATUSES, 0)
    for node in nodes:
        counts[node.status] += 1
    return counts


def describe_counts(counts: dict[NodeStatus, int], *, interrupted: bool = False) -> str:
    """``2/3 completed, 1 failed``; ``interrupted``: running nodes are called so."""
    total = sum(counts.values())
    parts = [f"{counts[NodeStatus.COMPLETED]}/{total} completed"]
    for status in _STATUSES:
        if status is not NodeStatus.COMPLETED and counts[status]:
            shown = "interrupted" if interrupted and status is NodeStatus.RUNNING else status
            parts.append(f"{counts[status]} {shown}")
    return ", ".join(parts)


def styled(status: str) -> str:
    """A node or run status as rich markup in its colour."""
    style = _STATUS_STYLE.get(str(status))
    return f"[{style}]{status}[/]" if style else escape(str(status))


def _status_style(cell: str) -> str | None:
    return _STATUS_STYLE.get(cell.partition(" ")[0])  # "running (pid 4121)" as "running"


def seconds(value: float | None) -> str:
    """A duration: ``1.25s``, ``3m05s``, or ``-`` when unknown."""
    if value is None:
        return "-"
    if value < 60:
        return f"{value:.2f}s"
    minutes, rest = divmod(int(value), 60)
    return f"{minutes}m{rest:02d}s"


def local_time(moment: datetime | None) -> str:
    """A moment in the local time zone, to the second, or ``-``."""
    return "-" if moment is None else moment.astimezone().strftime("%Y-%m-%d %H:%M:%S")


def error_text(error: ErrorInfo | None) -> str:
    """A node's error as one line: ``Type: message``."""
    return "" if error is None else flatten(f"{error.type}: {error.message}")


def size_text(size: int) -> str:
    """Bytes for people: ``512 B``, ``12.3 KiB``, ``12.3 MiB``, ``1.5 GiB`` (powers of 1024)."""
    if size < 1024:
        return f"{size} B"
    value = float(size)
    for unit in ("KiB", "MiB", "GiB", "TiB"):
        value /= 1024
        if value < 1024 or unit == "TiB":
            break
    return f"{value:.1f} {unit}"


def ref_text(ref: Ref, *, label: bool = True, width: int = 60) -> str:
    """An output kept by reference, in one line: ``ref 12.3 MiB  rows=1000 cols=3``.

    Only the ref's own fields: its blob is never read. An expired ref says so.
    ``label``: starts with ``ref``.
    """
    parts = [f"ref {size_text(ref.size)}" if label else size_text(ref.size)]
    if ref.expires_at is not None and ref.expires_at <= datetime.now(UTC):
        parts.append("expired")
    fields = " ".join(f"{key}={_BRIEF.repr(value)}" for key, value in ref.extracted.items())
    if fields:
        parts.append(fields if len(fields) <= width else fields[: width - 3] + "...")
    return "  ".join(parts)


_BRIEF = reprlib.Repr()
_BRIEF.maxstring = _BRIEF.maxother = 30  # attributes: keywords need Python 3.12


def runs(number: int) -> str:
    """``1 run``, ``2 runs``."""
    return plural(number, "run")


def plural(number: int, noun: str) -> str:
    """``1 blob``, ``2 blobs``: nouns whose plural takes an s."""
    return f"{number} {noun}" if number == 1 else f"{number} {noun}s"


def say_run(out: Console, run_id: str, verdict: str, why: object = None) -> None:
    """One line per run: ``RUN_ID: verdict[: why]`` (``verdict`` is markup)."""
    reason = "" if why is None else f": {escape(flatten(str(why)))}"
    out.print(f"{escape(run_id)}: {verdict}{reason}", soft_wrap=True)


# -- tables ----------------------------------------------------------------------------


#: The width of output written to a pipe or a file: wide enough that no table wraps.
PIPE_WIDTH = 10_000
#: The width values are laid out for, at most (pretty-printed outputs, ``ctx.data``).
VALUE_WIDTH = 120


def output_console() -> Console:
    """The console a command prints its results on (stdout).

    On a terminal, the terminal's width. Elsewhere (a pipe, a file, CI logs) no
    table is wrapped at 80 columns: each row stays one line, for ``grep`` and
    ``cut`` as much as for people.
    """
    out = Console(highlight=False)
    if not out.is_terminal:
        out.width = PIPE_WIDTH
    return out


def plain_table(**options: Any) -> Table:
    """A table without borders, bold headers flush left: the look of every CLI table."""
    return Table(box=None, header_style="bold", pad_edge=False, **options)


def text_table(
    out: Console,
    header: Sequence[str],
    rows: Iterable[Sequence[str]],
    *,
    status: int | None,
    right: Container[int] = (),
) -> str:
    """Rows as aligned text lines, for tables of thousands of rows.

    The look of `plain_table` (two spaces between columns, header first) built
    without rich's layout, which costs about half a millisecond a row. Cells
    are plain text; control characters are shown escaped. On a terminal the
    header is bold and column ``status`` coloured by status; elsewhere (pipes,
    files) the lines are plain. No line is wrapped or cut. Columns ``right``
    are flush right, header included.
    """
    table = [[_printable(cell) for cell in row] for row in (header, *rows)]
    widths = [0] * len(header)
    for row in table:
        for column, cell in enumerate(row):
            widths[column] = max(widths[column], _width(cell))
    last = len(header) - 1
    colour = out.is_terminal and out.color_system is not None
    paint: dict[tuple[str, str], str] = {}  # made once per distinct status, not per row

    def painted(text: str, style: str | None) -> str:
        if not colour or not style:
            return text
        rendered = paint.get((text, style))
        if rendered is None:
            with out.capture() as captured:
                out.print(Text(text, style=Style.parse(style)), end="")
            rendered = paint[text, style] = captured.get()
        return rendered

    lines = []
    for index, row in enumerate(table):
        cells = []
        for column, cell in enumerate(row):
            style = "bold" if index == 0 else _status_style(cell) if column == status else None
            pad = " " * (widths[column] - _width(cell))
            if column in right:
                cells.append(pad + painted(cell, style))
            else:
                cells.append(painted(cell, style) + ("" if column == last else pad))
        lines.append("  ".join(cells).rstrip())
    return "\n".join(lines) + "\n"


def _printable(text: str) -> str:
    return text if text.isprintable() else text.translate(_CONTROL)


def _width(text: str) -> int:
    # Terminal cells: ASCII (run ids, statuses, counts) is one cell per character.
    return len(text) if text.isascii() else cell_len(text)


#: Lines of a node table shown by default; a run with more shows the nodes not completed.
ROWS = 50
#: A table of more lines is written as plain lines (`text_table`), not laid out by rich.
RICH_ROWS = 200

#: The order the nodes not completed are listed in when they are too many: what
#: needs a look first. Statuses as shown (``interrupted`` included).
_URGENCY = {"failed": 0, "interrupted": 1, "running": 2, "waiting": 3, "skipped": 4, "pending": 5}


def _stored_status(node: NodeState) -> str:
    return str(node.status)


def node_rows(
    nodes: Mapping[str, NodeState],
    shown: Callable[[NodeState], str] = _stored_status,
    *,
    items: bool = True,
    every: bool = False,
    limit: int = ROWS,
    started: bool = True,
    hint: str = "--all lists every node; --json gives everything",
) -> tuple[tuple[str, ...], list[list[str]], list[str]]:
    """The node table of ``status`` and ``run``: its header, its rows (plain text)
    and the lines saying what was left out (the last one: ``hint``).

    ``shown``: a node's status as shown (`flowdag.cli.runs.Liveness.node_status`).
    ``items``: a map's items are counted on its line rather than listed.
    ``every``: every node; otherwise, above ``limit`` lines, the nodes not
    completed, those that need a look first, at most ``limit``. ``started``: a
    column for when each node started. Columns with nothing in them (errors,
    refs) are left out.
    """
    grouped = item_counts(nodes) if items else None
    names = [
        name for name in nodes if grouped is None or name not in grouped.item_of
    ]  # a map's items: one line for them all
    statuses = {name: shown(nodes[name]) for name in names}
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
        left_out.append(hint)
    chosen = [(name, nodes[name]) for name in names]
    # A column for outputs kept by reference, when there are some: size and extracted fields.
    by_ref = any(type(node.output) is Ref for _, node in chosen)
    errors = started or any(node.error is not None for _, node in chosen)
    header = ["node", "status", "attempts"]
    header += ["started", "duration"] if started else ["duration"]
    header += ["error"] if errors else []
    rows = []
    for name, node in chosen:
        counted = grouped.counts.get(name) if grouped else None
        row = [
            name,
            statuses[name] + ("" if counted is None else f"  {counted}"),
            str(node.attempts),
        ]
        if started:
            row.append(local_time(node.started_at))
        row.append(seconds(node.duration))
        if errors:
            row.append(error_text(node.error))
        if by_ref:
            ref = node.output
            row.append(ref_text(ref, label=False) if type(ref) is Ref else "")
        rows.append(row)
    return (*header, "ref") if by_ref else tuple(header), rows, left_out


def print_table(
    out: Console,
    header: Sequence[str],
    rows: Sequence[Sequence[str]],
    *,
    right: set[int],
    status: int | None,
) -> None:
    """Rows of plain text as a table, column ``status`` in its colour: through rich
    on a terminal when they are few (rich wraps a long error to the terminal's
    width), as plain lines when they are many or go to a pipe or a file, where
    rich would not wrap them either (`output_console`) and the lines are the same."""
    if len(rows) > RICH_ROWS or not out.is_terminal:
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
