"""Draw a DAG as Mermaid or Graphviz DOT text, or as a PNG; optionally coloured by a run.

Design
------
Drawing has two steps. `graph_view` turns a `DAG` (and, optionally, the
`RunState` of one of its runs) into a `GraphView`: the boxes to draw, the
arrows between them, and each box's label and status. Every format then only
renders that view: `to_mermaid` and `to_dot` write text with no dependency,
`write_png` draws with matplotlib (the ``plot`` extra).

Boxes are placed in *layers*, the DAG's topological generations: a node sits
one layer below the deepest of its dependencies, so every arrow points down.

A DAG beyond ``max_nodes`` nodes is reduced once, in `graph_view`, the same
for every format, and the view says so in its ``note``:

- a layer wider than its share of the budget shows its most telling nodes
  (failed, running, then the rest in order) and one *group* box for the rest,
  labelled with how many nodes it holds and their statuses;
- when there are too many layers, the first and last ones stay, and so do the
  layers where the run stopped (failed or running nodes, or the first layer
  that is not all completed); each stretch of layers in between becomes one
  group box.

Arrows into or out of a group stand for the arrows of the nodes inside it.

Colours and status names are in `flowdag._palette`; a node stored as running in
a run no live process holds is drawn *interrupted*.
"""

from __future__ import annotations

import math
import os
import textwrap
from collections import Counter
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path

import networkx as nx

from flowdag._layout import Layout, layout
from flowdag._maps import item_counts
from flowdag._palette import (
    INTERRUPTED,
    ORDER,
    PRIORITY,
    STATUS_COLORS,
    STROKES,
    by_status,
    drawn,
)
from flowdag._plot import Drawn, draw_boxes, label_size, new_figure, plot_available
from flowdag.dag import DAG
from flowdag.state import NodeState, NodeStatus, RunState

__all__ = [
    "FORMATS",
    "INTERRUPTED",
    "MAX_NODES",
    "STATUS_COLORS",
    "Box",
    "GraphView",
    "graph_view",
    "to_dot",
    "to_mermaid",
    "write_png",
]

#: Output formats `flowdag graph` knows.
FORMATS = ("mermaid", "dot", "png")
#: Above this many nodes a DAG is grouped (see the module docstring).
MAX_NODES = 200
#: A grouped DAG shows at most this many boxes side by side in one layer.
MAX_PER_LAYER = 16

_MIN_PER_LAYER = 3


@dataclass(slots=True)
class Box:
    """One box of a drawing: a node, or a group of nodes."""

    id: str  # n0, n1, ...: safe as an identifier in every format
    lines: list[str]  # label text, one item per line, unescaped
    status: str | None  # a NodeStatus value; a group's most common; None without a run
    layer: int
    nodes: list[str]  # the DAG nodes it stands for
    group: bool = False


@dataclass(slots=True)
class GraphView:
    """What to draw: boxes by layer, arrows between box ids, a title and a note."""

    title: str
    boxes: list[Box]
    edges: list[tuple[str, str]]
    total: int  # nodes in the DAG
    note: str = ""  # set when the DAG was reduced
    with_status: bool = False
    counts: dict[str, int] = field(default_factory=dict)  # status -> nodes, with a run

    @property
    def reduced(self) -> bool:
        """Whether some nodes are drawn inside groups."""
        return any(box.group for box in self.boxes)


def graph_view(
    dag: DAG,
    state: RunState | None = None,
    *,
    max_nodes: int = MAX_NODES,
    interrupted: bool = False,
) -> GraphView:
    """The boxes and arrows to draw for ``dag``, coloured by ``state`` if given.

    Args:
        dag: the DAG to draw.
        state: a run of it (`Store.load_statuses` is enough); nodes it lacks are pending.
        max_nodes: draw at most about this many boxes; larger DAGs are grouped.
        interrupted: no live process holds the run: its running nodes are
            drawn as `INTERRUPTED`.
    """
    max_nodes = max(max_nodes, 2 * _MIN_PER_LAYER + 4)
    nodes_state = state.nodes if state is not None else {}
    status = {
        name: drawn(nodes_state.get(name), interrupted) if state is not None else None
        for name in dag.nodes
    }
    order = {name: i for i, name in enumerate(dag.nodes)}
    layers = [
        sorted(layer, key=order.__getitem__) for layer in nx.topological_generations(dag.graph)
    ]
    boxes: list[Box] = []
    where: dict[str, str] = {}  # node -> id of the box that draws it
    shown: set[str] = set()  # nodes drawn in a box of their own

    def add(names: list[str], layer: int, lines: list[str], group: bool) -> None:
        box_id = f"n{len(boxes)}"
        counts = Counter(status[n] for n in names)
        colour = counts.most_common(1)[0][0] if group else status[names[0]]
        boxes.append(Box(box_id, lines, colour, layer, names, group))
        for name in names:
            where[name] = box_id
        if not group:
            shown.update(names)

    if len(dag) <= max_nodes:
        for depth, layer in enumerate(layers):
            for name in layer:
                add([name], depth, _node_lines(name, nodes_state, status), False)
    else:
        kept = _kept_layers(layers, status, max_nodes)
        stretches = len(_stretches(kept, len(layers)))
        share = (max_nodes - stretches) // max(1, len(kept)) - 1
        per_layer = min(MAX_PER_LAYER, max(_MIN_PER_LAYER, share))
        depth = 0
        i = 0
        while i < len(layers):
            if i in kept:
                layer = layers[i]
                # Failed and running nodes first, then those below a node already
                # shown, so the visible nodes of successive layers connect.
                ranked = sorted(
                    layer,
                    key=lambda n: (
                        min(PRIORITY[status[n]], 2),
                        not any(d in shown for d in dag.specs[n].deps),
                        PRIORITY[status[n]],
                        order[n],
                    ),
                )
                visible = set(ranked[:per_layer]) if len(layer) > per_layer else set(layer)
                for name in layer:
                    if name in visible:
                        add([name], depth, _node_lines(name, nodes_state, status), False)
                rest = [n for n in layer if n not in visible]
                if rest:
                    add(rest, depth, _group_lines(rest, status, f"+{len(rest):,} more nodes"), True)
                i += 1
            else:
                j = i
                while j < len(layers) and j not in kept:
                    j += 1
                names = [n for layer in layers[i:j] for n in layer]
                span = f"layers {i + 1}-{j}" if j - i > 1 else f"layer {i + 1}"
                add(
                    names, depth, _group_lines(names, status, f"{len(names):,} nodes, {span}"), True
                )
                i = j
            depth += 1
    edges = sorted(
        {(where[u], where[v]) for u, v in dag.graph.edges if where[u] != where[v]},
        key=lambda e: (int(e[0][1:]), int(e[1][1:])),
    )
    counts = {str(s): c for s, c in Counter(status.values()).items() if s is not None}
    view = GraphView(
        _title(dag, state, counts), boxes, edges, len(dag), "", state is not None, counts
    )
    if view.reduced:
        singles = sum(1 for box in boxes if not box.group)
        groups = len(boxes) - singles
        view.note = (
            f"{len(dag):,} nodes in {len(layers):,} layers: showing {singles:,} nodes and "
            f"{groups:,} group{'s' if groups > 1 else ''} of the rest (dashed; a DAG of more "
            f"than {max_nodes:,} nodes is grouped)"
        )
    return view


def _kept_layers(
    layers: list[list[str]], status: Mapping[str, str | None], budget: int
) -> set[int]:
    """Which layers keep their own row: all of them, unless there are too many."""
    max_layers = max(4, budget // (_MIN_PER_LAYER + 1))
    if len(layers) <= max_layers:
        return set(range(len(layers)))
    wanted: list[int] = []  # most telling first
    frontier = None
    for i, layer in enumerate(layers):
        states = {status[n] for n in layer}
        if states & {NodeStatus.FAILED, NodeStatus.RUNNING, INTERRUPTED}:
            wanted.append(i)
        if frontier is None and None not in states and states != {NodeStatus.COMPLETED}:
            frontier = i
    if frontier is not None:
        wanted[:0] = [frontier - 1, frontier, frontier + 1]
    edge = 3
    ends = [*range(edge), *range(len(layers) - edge, len(layers))]
    kept: set[int] = set()
    for i in [*ends, *wanted]:
        if 0 <= i < len(layers) and len(kept) < max_layers - len(
            _stretches(kept | {i}, len(layers))
        ):
            kept.add(i)
    return kept


def _stretches(kept: set[int], count: int) -> list[tuple[int, int]]:
    """Maximal runs of layers not kept, as (first, end)."""
    runs = []
    i = 0
    while i < count:
        if i in kept:
            i += 1
            continue
        j = i
        while j < count and j not in kept:
            j += 1
        runs.append((i, j))
        i = j
    return runs


def _node_lines(
    name: str, nodes: Mapping[str, NodeState], status: Mapping[str, str | None]
) -> list[str]:
    current, node = status[name], nodes.get(name)
    if current is None:
        return [name]
    duration = node.duration if node is not None else None
    detail = [] if current == NodeStatus.COMPLETED else [str(current)]
    if duration is not None:
        detail.append(_seconds(duration))
    lines = [name, " ".join(detail)] if detail else [name]
    if f"{name}[0]" in nodes:  # a map node (`flowdag._maps`): its items, counted
        lines.append(
            item_counts({n: s for n, s in nodes.items() if n.startswith(name)}).counts[name]
        )
    return lines


def _group_lines(names: list[str], status: Mapping[str, str | None], head: str) -> list[str]:
    lines = [head]
    counts = Counter(status[n] for n in names)
    if None not in counts:
        lines.append(", ".join(f"{c:,} {s}" for s, c in sorted(counts.items(), key=by_status)))
    return lines


def _title(dag: DAG, state: RunState | None, counts: dict[str, int]) -> str:
    if state is None:
        return f"workflow {dag.name} ({len(dag):,} nodes)"
    summary = ", ".join(f"{c:,} {s}" for s, c in sorted(counts.items(), key=by_status))
    return f"workflow {dag.name}, run {state.run_id}: {summary}"


def _seconds(value: float) -> str:
    if value < 1:
        return f"{value * 1000:.0f}ms" if value >= 0.001 else f"{value * 1e6:.0f}µs"
    if value < 60:
        return f"{value:.2f}s"
    minutes, seconds = divmod(int(value), 60)
    return f"{minutes}m{seconds:02d}s"


# -- Mermaid ------------------------------------------------------------------------

_MERMAID_SAFE = frozenset(
    "abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ0123456789 _.,:+-()/"
)


def _mermaid_text(text: str) -> str:
    # Inside ["..."] Mermaid reads #NNN; as a character: anything that could end
    # the label or be read as markup ("[]{}<>|#&;`* and so on) is written that way.
    return "".join(c if c in _MERMAID_SAFE else f"#{ord(c)};" for c in text)


def to_mermaid(view: GraphView) -> str:
    """The view as a Mermaid flowchart (top to bottom), coloured by status."""
    title = view.title.replace("\n", " ").replace("'", "''")
    out = ["---", f"title: '{title}'", "---"]
    if view.note:
        out.append(f"%% flowdag: {view.note}")
    out.append("flowchart TD")
    for box in view.boxes:
        label = "<br/>".join(_mermaid_text(line) for line in box.lines)
        out.append(f'    {box.id}["{label}"]' if not box.group else f'    {box.id}[["{label}"]]')
    for source, target in view.edges:
        out.append(f"    {source} --> {target}")
    used: dict[str, list[str]] = {}
    for box in view.boxes:
        used.setdefault(_class(box), []).append(box.id)
    for name in used:
        status = None if name in {"node", "group"} else name.removeprefix("group_")
        dash = ",stroke-dasharray:4 3" if name.startswith("group") else ""
        out.append(
            f"    classDef {name} fill:{STATUS_COLORS[status]},"
            f"stroke:{STROKES[status]},color:#111111{dash}"
        )
    for name, ids in used.items():
        out.append(f"    class {','.join(ids)} {name}")
    return "\n".join(out) + "\n"


def _class(box: Box) -> str:
    if box.status is None:
        return "group" if box.group else "node"
    return f"group_{box.status}" if box.group else str(box.status)


# -- DOT ----------------------------------------------------------------------------


def _dot_text(text: str) -> str:
    # Inside "..." DOT only escapes the quote, but a backslash starts label escapes
    # (\n, \l, \N...), so it is doubled; real line breaks become \n.
    return text.replace("\\", "\\\\").replace('"', '\\"').replace("\r", "").replace("\n", "\\n")


def to_dot(view: GraphView) -> str:
    """The view as a Graphviz DOT digraph (top to bottom), coloured by status."""
    label = view.title + (f"\n{view.note}" if view.note else "")
    out = [
        "digraph flowdag {",
        f'    graph [rankdir=TB, labelloc=t, fontname="Helvetica", label="{_dot_text(label)}"];',
        '    node [shape=box, style="rounded,filled", fontname="Helvetica"];',
        '    edge [color="#555555"];',
    ]
    for box in view.boxes:
        style = ', style="rounded,filled,dashed"' if box.group else ""
        text = "\n".join(box.lines)
        out.append(
            f'    {box.id} [label="{_dot_text(text)}", fillcolor="{STATUS_COLORS[box.status]}", '
            f'color="{STROKES[box.status]}"{style}];'
        )
    for source, target in view.edges:
        out.append(f"    {source} -> {target};")
    out.append("}")
    return "\n".join(out) + "\n"


# -- PNG ----------------------------------------------------------------------------

_MAX_LABEL = 28


def write_png(view: GraphView, path: str | os.PathLike[str]) -> Path:
    """Draw the view with matplotlib, layer by layer, and save it as a PNG.

    No arrow passes behind a box it does not connect: see `flowdag._layout`.

    Raises:
        OptionalDependencyError: matplotlib is not installed (the ``plot`` extra).
    """
    if not plot_available():
        new_figure("a graph PNG", 1, 1)  # raises, saying what to install
    placed, font = png_layout(view)
    boxes = {
        box.id: Drawn(_png_label(box), STATUS_COLORS[box.status], STROKES[box.status], box.group)
        for box in view.boxes
    }
    legend: list[tuple[str, str, str, bool]] = []
    if view.with_status:
        present = [s for s in ORDER if view.counts.get(str(s))]
        legend = [(str(s), STATUS_COLORS[s], STROKES[s], False) for s in present]
        if view.reduced:
            legend.append(("group", "white", "#555555", True))
    xmin, xmax = placed.bounds[:2]
    chars = int(max(4.0, xmax - xmin) * 11)  # about what fits across at this font size
    title = "\n".join(textwrap.fill(part, chars) for part in (view.title, view.note) if part)
    figure = draw_boxes(placed, boxes, font, title, legend)
    written = Path(path)
    figure.savefig(written, dpi=100)
    return written


def png_layout(view: GraphView) -> tuple[Layout, int]:
    """Where `write_png` puts each box and arrow (in inches), and its font size."""
    layers = _ordered_layers(view)
    widest = max((len(layer) for layer in layers), default=1)
    font = 9 if widest <= 12 else 8 if widest <= 24 else 7
    sizes = {box.id: label_size(_png_label(box), font) for box in view.boxes}
    return layout([[box.id for box in layer] for layer in layers], view.edges, sizes), font


def _png_label(box: Box) -> str:
    if box.group:  # counts matter more than one line: wrap rather than clip
        lines = [part for line in box.lines for part in textwrap.wrap(line, _MAX_LABEL)]
    else:
        lines = [s if len(s) <= _MAX_LABEL else s[: _MAX_LABEL - 1] + "…" for s in box.lines]
    return "\n".join(lines).replace("$", r"\$")  # matplotlib reads $...$ as math


def _ordered_layers(view: GraphView) -> list[list[Box]]:
    """Boxes per layer, ordered to cross fewer arrows (two barycenter sweeps)."""
    depth = max((box.layer for box in view.boxes), default=-1) + 1
    layers: list[list[Box]] = [[] for _ in range(depth)]
    for box in view.boxes:
        layers[box.layer].append(box)
    ups: dict[str, list[str]] = {}
    downs: dict[str, list[str]] = {}
    for source, target in view.edges:
        ups.setdefault(target, []).append(source)
        downs.setdefault(source, []).append(target)
    for links, sweep in ((ups, range(1, depth)), (downs, range(depth - 2, -1, -1))):
        for d in sweep:
            near = d - 1 if links is ups else d + 1
            index = {box.id: i for i, box in enumerate(layers[near])}
            layers[d] = _by_barycenter(layers[d], links, index)
    return layers


def _by_barycenter(
    layer: list[Box], links: dict[str, list[str]], index: dict[str, int]
) -> list[Box]:
    def key(item: tuple[int, Box]) -> tuple[float, int]:
        i, box = item
        around = [index[b] for b in links.get(box.id, ()) if b in index]
        return (sum(around) / len(around) if around else math.inf, i)

    ranked = sorted(enumerate(layer), key=key)
    placed = [box for _, box in ranked]
    # Boxes without links stay where they were relative to the others.
    return placed if any(links.get(b.id) for b in layer) else layer
