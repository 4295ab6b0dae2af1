"""Graph PNG layout: no arrow passes through a box it does not connect, and boxes hold their
labels (`flowdag._layout`, `flowdag.graph.png_layout`, `flowdag._plot.draw_boxes`)."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from itertools import pairwise
from pathlib import Path

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

import flowdag
from flowdag._layout import Layout, Point, layout
from flowdag.cli.loader import load_dag
from flowdag.graph import _png_label, graph_view, png_layout, write_png
from flowdag.state import NodeState, NodeStatus, RunState

ROOT = Path(__file__).resolve().parents[1]
EPS = 1e-9


def crosses(a: Point, b: Point, box: tuple[float, float, float, float]) -> bool:
    """Whether segment ``a``-``b`` meets the inside of ``box`` (xmin, xmax, ymin, ymax).

    Liang-Barsky clipping against the box shrunk by EPS: touching an edge is not crossing.
    """
    xmin, xmax, ymin, ymax = box[0] + EPS, box[1] - EPS, box[2] + EPS, box[3] - EPS
    (x0, y0), (x1, y1) = a, b
    dx, dy = x1 - x0, y1 - y0
    low, high = 0.0, 1.0
    for p, q in ((-dx, x0 - xmin), (dx, xmax - x0), (-dy, y0 - ymin), (dy, ymax - y0)):
        if p == 0:
            if q < 0:
                return False
        else:
            t = q / p
            if p < 0:
                low = max(low, t)
            else:
                high = min(high, t)
            if low > high:
                return False
    return True


def rect(placed: Layout, box: str) -> tuple[float, float, float, float]:
    (x, y), (w, h) = placed.centres[box], placed.sizes[box]
    return (x - w / 2, x + w / 2, y - h / 2, y + h / 2)


def hidden_edges(placed: Layout) -> list[tuple[str, str, str]]:
    """(source, target, box) for every arrow segment that passes through another box."""
    found = []
    for source, target, points in placed.routes:
        for a, b in pairwise(points):
            for box in placed.centres:
                if box not in (source, target) and crosses(a, b, rect(placed, box)):
                    found.append((source, target, box))
    return found


def overlapping_boxes(placed: Layout) -> list[tuple[str, str]]:
    boxes = list(placed.centres)
    found = []
    for i, one in enumerate(boxes):
        a = rect(placed, one)
        for other in boxes[i + 1 :]:
            b = rect(placed, other)
            if a[0] < b[1] and b[0] < a[1] and a[2] < b[3] and b[2] < a[3]:
                found.append((one, other))
    return found


def check(placed: Layout, edges: list[tuple[str, str]]) -> None:
    assert hidden_edges(placed) == []
    assert overlapping_boxes(placed) == []
    # Each arrow starts on its source's box and ends on its target's.
    assert [(s, t) for s, t, _ in placed.routes] == list(edges)
    for source, target, points in placed.routes:
        (x, y), (_, h) = placed.centres[source], placed.sizes[source]
        assert points[0] == (x, y - h / 2)
        (x, y), (_, h) = placed.centres[target], placed.sizes[target]
        assert points[-1] == (x, y + h / 2)


def test_etl_example_has_no_arrow_behind_a_box() -> None:
    dag = load_dag(str(ROOT / "examples" / "etl_pipeline.py"))
    view = graph_view(dag)
    placed, _ = png_layout(view)
    check(placed, view.edges)
    ids = {box.nodes[0]: box.id for box in view.boxes}
    # The arrow that used to run straight down behind `load` goes around it, through
    # a slot beside it in load's layer.
    merge, load, report = ids["merge"], ids["load"], ids["report"]
    route = next(p for s, t, p in placed.routes if (s, t) == (merge, report))
    xmin, xmax, ymin, ymax = rect(placed, load)
    passing = [(a, b) for a, b in pairwise(route) if a[1] > ymax and b[1] < ymin]
    assert len(passing) == 1
    (xa, _), (xb, _) = passing[0]
    assert xa == xb and not xmin <= xa <= xmax


def test_the_crossing_check_sees_a_crossing() -> None:
    box = (0.0, 1.0, 0.0, 1.0)
    assert crosses((-1, 0.5), (2, 0.5), box)
    assert crosses((0.5, 2), (0.5, -1), box)
    assert not crosses((-1, 2), (2, 2), box)
    assert not crosses((1.0, -1), (1.0, 2), box)  # along an edge
    assert not crosses((-1, 0.5), (-0.1, 0.5), box)


@st.composite
def layered(
    draw: st.DrawFn,
) -> tuple[list[list[str]], list[tuple[str, str]], dict[str, tuple[float, float]]]:
    counts = draw(st.lists(st.integers(1, 6), min_size=1, max_size=6))
    layers = [[f"b{d}_{i}" for i in range(n)] for d, n in enumerate(counts)]
    sizes = {
        box: (draw(st.floats(0.2, 3.0)), draw(st.floats(0.1, 1.5)))
        for layer in layers
        for box in layer
    }
    edges = []
    for d, layer in enumerate(layers[1:], start=1):
        for box in layer:
            for upper in range(d):
                for source in layers[upper]:
                    if draw(st.booleans()) and draw(st.booleans()):
                        edges.append((source, box))
    return layers, edges, sizes


@settings(max_examples=150, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(layered())
def test_random_layouts_hide_no_arrow(case: tuple) -> None:  # type: ignore[type-arg]
    layers, edges, sizes = case
    check(layout(layers, edges, sizes), edges)


@st.composite
def dags(draw: st.DrawFn) -> tuple[flowdag.DAG, RunState | None]:
    n = draw(st.integers(1, 24))
    wf = flowdag.Workflow("random")
    names = [
        draw(st.text("abcdefghijklmnopqrstuvwxyz_", min_size=1, max_size=40)) + f"_{i}"
        for i in range(n)
    ]
    for i, name in enumerate(names):
        deps = [names[j] for j in range(i) if draw(st.integers(0, 3)) == 0]
        wf.add_node(name, lambda **kw: None, deps=deps)
    dag = wf.build()
    if not draw(st.booleans()):
        return dag, None
    t0 = datetime(2026, 1, 1, tzinfo=UTC)
    state = RunState("r", "random")
    for name in names:
        status = draw(st.sampled_from(list(NodeStatus)))
        state.nodes[name] = NodeState(
            status=status, attempts=1, started_at=t0, finished_at=t0 + timedelta(seconds=3)
        )
    return dag, state


@settings(max_examples=60, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(dags(), st.sampled_from([200, 10]), st.booleans())
def test_random_dags_hide_no_arrow(case: tuple, max_nodes: int, interrupted: bool) -> None:  # type: ignore[type-arg]
    dag, state = case
    # 10: grouped boxes too; interrupted: running nodes labelled so
    view = graph_view(dag, state, max_nodes=max_nodes, interrupted=interrupted)
    placed, _ = png_layout(view)
    check(placed, view.edges)


@pytest.mark.parametrize("with_run", [False, True])
def test_drawn_boxes_hold_their_labels(with_run: bool, tmp_path: Path) -> None:
    # What the layout keeps apart is what is drawn: each label inside its box.
    pytest.importorskip("matplotlib")
    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from matplotlib.patches import FancyBboxPatch

    from flowdag._plot import Drawn, draw_boxes

    dag = load_dag(str(ROOT / "examples" / "etl_pipeline.py"))
    state = None
    if with_run:
        t0 = datetime(2026, 1, 1, tzinfo=UTC)
        state = RunState("r", "etl")
        for i, name in enumerate(dag.nodes):
            state.nodes[name] = NodeState(
                status=list(NodeStatus)[i % len(NodeStatus)],
                attempts=1,
                started_at=t0,
                finished_at=t0 + timedelta(seconds=i * 7.25),
            )
    view = graph_view(dag, state)
    placed, font = png_layout(view)
    boxes = {box.id: Drawn(_png_label(box), "white", "black") for box in view.boxes}
    figure = draw_boxes(placed, boxes, font, view.title)
    canvas = FigureCanvasAgg(figure)
    canvas.draw()
    renderer = canvas.get_renderer()
    ax = figure.axes[0]
    patches = [p for p in ax.patches if isinstance(p, FancyBboxPatch)]
    assert len(patches) == len(ax.texts) == len(view.boxes)
    for patch, text in zip(patches, ax.texts, strict=True):
        outer = patch.get_window_extent(renderer)
        inner = text.get_window_extent(renderer)
        assert outer.x0 <= inner.x0 and inner.x1 <= outer.x1, text.get_text()
        assert outer.y0 <= inner.y0 and inner.y1 <= outer.y1, text.get_text()
    assert write_png(view, tmp_path / "w.png").read_bytes()[:4] == b"\x89PNG"
