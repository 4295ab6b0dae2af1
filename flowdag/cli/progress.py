"""Live progress: a bar on a terminal (stderr), one line per event elsewhere.

Results on stdout stay plain: only these draw, and only when stderr is a
terminal. A map's items (``transform[3]``) count in the bar like any node;
outside a terminal they are not said one by one (a map of 10,000 items would
be 20,000 lines): a line when a map's first item starts, a line per failed
item, and a line when the map finishes, with its items counted by status.
"""

from __future__ import annotations

import time
from collections import Counter
from collections.abc import Collection
from typing import TYPE_CHECKING, Any, Self

from rich.cells import cell_len
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
from rich.table import Column
from rich.text import Text

from flowdag._maps import map_of
from flowdag.cli.render import error_text, plural, seconds
from flowdag.state import NodeStatus

if TYPE_CHECKING:
    from flowdag.runner import RunEvent

__all__ = ["BenchBar", "LiveBar", "RunProgress"]


class LiveBar:
    """A transient rich progress bar on stderr, drawn only when it is a terminal.

    The bar is green; `fail` turns it red. The description is cut to the room
    the terminal leaves, so the counts and the elapsed time always show whole.
    """

    _BAR_WIDTH = 40

    def __init__(self, err: Console) -> None:
        self._bar: Progress | None = None
        self._task: TaskID | None = None
        if err.is_terminal:
            # rich's default "complete" colour is a pinkish red: green until something fails.
            self._bar_width = max(10, min(self._BAR_WIDTH, err.width - 40))
            self._bar_column = BarColumn(
                bar_width=self._bar_width,
                complete_style="green",
                finished_style="green",
                table_column=Column(no_wrap=True),
            )
            fixed = Column(no_wrap=True)
            self._bar = Progress(
                SpinnerColumn(table_column=fixed),
                self._bar_column,
                MofNCompleteColumn(table_column=fixed),
                TimeElapsedColumn(table_column=fixed),
                TextColumn("{task.description}", table_column=Column(no_wrap=True)),
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

    def fail(self) -> None:
        """Paint the bar red: something failed."""
        if self._bar is not None:
            self._bar_column.complete_style = self._bar_column.finished_style = "red"

    def _draw(self, done: int, total: int, description: str) -> None:
        if self._bar is None:
            return
        if self._task is None:
            self._task = self._bar.add_task("", total=total)
        # Spinner, bar, "done/total" and "H:MM:SS" (8 cells from 10 hours), one space apart:
        # rich would otherwise shrink every column, the elapsed time included, to fit.
        used = 1 + self._bar_width + 2 * len(str(total)) + 1 + 8 + 4 + 1
        room = max(0, self._bar.console.width - used)
        if cell_len(description) > room:
            text = Text(description)
            text.truncate(room, overflow="ellipsis")
            description = text.plain
        self._bar.update(self._task, completed=done, total=total, description=escape(description))


class RunProgress(LiveBar):
    """Turns `flowdag.RunEvent`s into live progress (terminal) or one line per event.

    Outside a terminal (CI, pipes) every start, retry and finish is one line on
    stderr, never wrapped, so a log shows what ran, what was retried and why,
    and how long each node took. The items of a map node (``maps``) are the
    exception: a line when the first one starts, a line per failed item, and
    the map's own line at the end counts them by status.
    """

    def __init__(self, err: Console, maps: Collection[str] = ()) -> None:
        super().__init__(err)
        self._err = err
        self._maps = maps
        self.ran: set[str] = set()  # nodes this process started (the rest were restored)
        self._running: dict[str, None] = {}  # insertion-ordered set
        self._started: dict[str, float] = {}  # node -> monotonic time of its first start here
        self._waiting: set[str] = set()  # input nodes said to wait
        self._items: dict[str, Counter[str]] = {}  # map -> its items finished here, by status

    def update(self, event: RunEvent) -> None:
        """Handle one `flowdag.RunEvent`; called on the runner's driver thread."""
        item_of = self._map_of(event.node)
        if event.kind == "node_started":
            self.ran.add(event.node)
            self._running[event.node] = None
            self._started.setdefault(event.node, time.monotonic())
            if item_of is not None:
                if item_of not in self._started:  # its first item: the map starts now
                    self._started[item_of] = time.monotonic()
                    self._items.setdefault(item_of, Counter())
                    self._say("", f"map {item_of} started its items")
            elif self._bar is None:
                self._say("", f"node {event.node} started (attempt {event.attempt})")
        elif event.kind == "node_finished":
            self._running.pop(event.node, None)
            if item_of is None:
                self._finished(event)
            else:
                self._items.setdefault(item_of, Counter())[str(event.status)] += 1
                if event.status == NodeStatus.FAILED:
                    self.fail()
                    why = error_text(event.error)
                    self._say("[bold red]✗[/]", f"node {event.node} failed: {why}")
        elif event.kind == "node_waiting":
            if event.node not in self._waiting:  # told again when the run looks once more
                self._waiting.add(event.node)
                self._say("", f"node {event.node} waits for input")  # its key: stdout, at the end
        elif event.kind == "node_retrying":
            why = error_text(event.error)
            text = f"node {event.node} attempt {event.attempt} failed: {why}"
            self._say("[yellow]↻[/]", text + ("" if self._bar is not None else "; retrying"))
        if self._bar is not None:
            self._draw(event.done, event.total, f"running: {self._running_text()}")

    def _map_of(self, name: str) -> str | None:
        if not self._maps or not name.endswith("]"):
            return None
        found = map_of(name, self._maps)
        return None if found is None else found[0]

    def _running_text(self) -> str:
        """The nodes running, a map's items as one: ``extract, transform (12 items)``."""
        shown: dict[str, int] = {}  # node, or map -> its items running
        for name in self._running:
            item_of = self._map_of(name)
            if item_of is None:
                shown[name] = 0
            else:
                shown[item_of] = shown.get(item_of, 0) + 1
        names = [
            name if not items else f"{name} ({plural(items, 'item')})"
            for name, items in shown.items()
        ]
        return ", ".join(names[:4]) + (f" +{len(names) - 4}" if len(names) > 4 else "")

    def _finished(self, event: RunEvent) -> None:
        items = self._items.pop(event.node, None)
        counted = "" if not items else f" ({_items_text(items)})"
        if event.status == NodeStatus.FAILED:
            self.fail()
            why = error_text(event.error)
            self._say("[bold red]✗[/]", f"node {event.node} failed: {why}{counted}")
        elif self._bar is not None:
            return  # the bar shows completions; only failures are printed above it
        elif event.status == NodeStatus.COMPLETED:
            # Measured here, from the first start this process saw: retries and
            # their waits count, as in the summary table's duration.
            started = self._started.get(event.node)
            took = "" if started is None else f" in {seconds(time.monotonic() - started)}"
            self._say("", f"node {event.node} completed{took}{counted}")
        else:
            self._say("", f"node {event.node} {event.status}{counted}")

    def _say(self, mark: str, text: str) -> None:
        if self._bar is not None:
            self._bar.console.print(f"{mark} {escape(text)}", soft_wrap=True)  # above the bar
        else:
            self._err.print(f"flowdag: {escape(text)}", soft_wrap=True)


def _items_text(items: Counter[str]) -> str:
    """``items run here: 9 completed, 1 failed``."""
    parts = ", ".join(f"{number} {status}" for status, number in sorted(items.items()))
    return f"items run here: {parts}"


class BenchBar(LiveBar):
    """A transient progress bar for `flowdag.cli.bench.run_bench` (terminal only)."""

    def update(self, step: Any) -> None:
        """Show one `flowdag.cli.bench.BenchProgress`."""
        self._draw(step.done, step.total, step.what)
