"""Where a layered drawing puts its boxes, and the path of each arrow (pure geometry).

`flowdag.graph` orders each layer's boxes; this module turns that order into
coordinates and routes the arrows so that **no arrow passes through a box it
does not connect**. Two rules give that:

- *Bands and channels.* Every box of a layer is centred on the layer's line,
  and no box is taller than the layer's band; between two bands is an empty
  channel. An arrow leaves its source straight down to below the band, crosses
  the channel (the only place it runs slanted, and no box is there), and enters
  the next band straight down.
- *Waypoints.* An arrow that spans several layers passes each layer in between
  through a slot of its own (a "dummy" node, as in Sugiyama's method): a
  narrow gap beside the boxes, kept apart from them like any box. It crosses
  that band vertically, inside its slot.

Within a band, a vertical line at a box's (or a slot's) centre meets no other
box, since the boxes of a layer are laid side by side with a gap between them.
Coordinates are in the caller's unit (inches for a PNG); y grows upwards and
layer 0 is at the top.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from itertools import pairwise

__all__ = ["Layout", "Point", "layout"]

Point = tuple[float, float]
_SWEEPS = 4  # down-and-up passes that straighten the arrows


@dataclass(frozen=True, slots=True)
class Layout:
    """Box centres and sizes, and one path per arrow (source box to target box)."""

    centres: dict[str, Point]
    sizes: dict[str, tuple[float, float]]  # width, height
    routes: list[tuple[str, str, list[Point]]]  # (source, target, points from source to target)
    bounds: tuple[float, float, float, float]  # xmin, xmax, ymin, ymax of boxes and paths


def layout(
    layers: Sequence[Sequence[str]],
    edges: Sequence[tuple[str, str]],
    sizes: Mapping[str, tuple[float, float]],
    *,
    gap: float = 0.3,
    channel: float = 0.55,
    lead: float = 0.1,
    slot: float = 0.12,
) -> Layout:
    """Lay out ``layers`` (box ids, each layer in drawing order, left to right).

    Args:
        layers: the boxes of each layer, top layer first.
        edges: arrows (source, target); the target's layer is below the source's.
        sizes: each box's width and height.
        gap: the least horizontal space between two boxes (or slots) of a layer.
        channel: the height of the empty space between two layers' bands.
        lead: how far an arrow runs straight down into and out of a channel.
        slot: the width of the slot an arrow takes in a layer it passes.
    """
    depth = {box: d for d, layer in enumerate(layers) for box in layer}
    rows: list[list[str]] = [list(layer) for layer in layers]
    # Provisional x (one unit per box) decides where a passing arrow's slot goes.
    guess = {box: i - (len(row) - 1) / 2 for row in rows for i, box in enumerate(row)}
    passes: list[list[str]] = []  # per edge, the slot ids it goes through
    widths = {box: sizes[box][0] for box in depth}
    for n, (source, target) in enumerate(edges):
        top, bottom = depth[source], depth[target]
        if bottom <= top:
            raise ValueError(f"edge {source} -> {target} does not point down")
        ids = []
        for d in range(top + 1, bottom):
            slot_id = f"\0{n}:{d}"
            x = guess[source] + (guess[target] - guess[source]) * (d - top) / (bottom - top)
            row = rows[d]
            at = next((i for i, box in enumerate(row) if guess[box] > x), len(row))
            row.insert(at, slot_id)
            guess[slot_id] = x
            widths[slot_id] = slot
            ids.append(slot_id)
        passes.append(ids)
    # x: side by side with ``gap`` between, each layer centred on 0; then a few
    # sweeps pull each box towards its neighbours in the layer above (below),
    # never closer than ``gap`` to the next box, so arrows run as straight as they can.
    ups: dict[str, list[str]] = {}
    downs: dict[str, list[str]] = {}
    for (source, target), ids in zip(edges, passes, strict=True):
        chain = [source, *ids, target]
        for upper, lower in pairwise(chain):
            ups.setdefault(lower, []).append(upper)
            downs.setdefault(upper, []).append(lower)
    xs: dict[str, float] = {}
    for row in rows:
        xs.update(_placed(row, widths, gap, [0.0] * len(row)))
        middle = (xs[row[0]] + xs[row[-1]]) / 2 if row else 0.0
        for box in row:
            xs[box] -= middle
    for _ in range(_SWEEPS):
        for links, order in ((ups, rows[1:]), (downs, rows[-2::-1])):
            for row in order:
                wanted = [
                    sum(xs[n] for n in links[box]) / len(links[box]) if box in links else xs[box]
                    for box in row
                ]
                xs.update(_placed(row, widths, gap, wanted))
    # y: each layer's band is as tall as its tallest box; channels between bands.
    half = [max((sizes[box][1] / 2 for box in layer), default=0.0) for layer in layers]
    ys: list[float] = []
    y = 0.0
    for d, h in enumerate(half):
        y -= h if d == 0 else half[d - 1] + channel + h
        ys.append(y)
    routes = []
    for (source, target), ids in zip(edges, passes, strict=True):
        top, bottom = depth[source], depth[target]
        points: list[Point] = [(xs[source], ys[top] - sizes[source][1] / 2)]
        points.append((xs[source], ys[top] - half[top] - lead))
        for d, slot_id in zip(range(top + 1, bottom), ids, strict=True):
            points.append((xs[slot_id], ys[d] + half[d] + lead))
            points.append((xs[slot_id], ys[d] - half[d] - lead))
        points.append((xs[target], ys[bottom] + half[bottom] + lead))
        points.append((xs[target], ys[bottom] + sizes[target][1] / 2))
        routes.append((source, target, _without_repeats(points)))
    centres = {box: (xs[box], ys[depth[box]]) for box in depth}
    box_sizes = {box: sizes[box] for box in depth}
    return Layout(centres, box_sizes, routes, _bounds(centres, box_sizes, routes))


def _placed(
    row: Sequence[str], widths: Mapping[str, float], gap: float, wanted: Sequence[float]
) -> dict[str, float]:
    """x of each box of ``row``, in order, ``gap`` apart, as near to ``wanted`` as can be.

    Least squares under the spacing constraints: with each box's x less the
    least room the boxes before it need, the constraints say "not decreasing",
    which pool-adjacent-violators solves exactly.
    """
    room = [0.0]
    for left, right in pairwise(row):
        room.append(room[-1] + widths[left] / 2 + gap + widths[right] / 2)
    blocks: list[list[float]] = []  # [mean, count] of pooled targets
    for target, offset in zip(wanted, room, strict=True):
        blocks.append([target - offset, 1.0])
        while len(blocks) > 1 and blocks[-2][0] > blocks[-1][0]:
            mean, count = blocks.pop()
            blocks[-1][0] = (blocks[-1][0] * blocks[-1][1] + mean * count) / (blocks[-1][1] + count)
            blocks[-1][1] += count
    values = [mean for mean, count in blocks for _ in range(int(count))]
    return {box: value + offset for box, value, offset in zip(row, values, room, strict=True)}


def _without_repeats(points: list[Point]) -> list[Point]:
    kept = [points[0]]
    for point in points[1:]:
        if point != kept[-1]:
            kept.append(point)
    return kept


def _bounds(
    centres: Mapping[str, Point],
    sizes: Mapping[str, tuple[float, float]],
    routes: Sequence[tuple[str, str, list[Point]]],
) -> tuple[float, float, float, float]:
    xs = [x for _, _, points in routes for x, _ in points]
    ys = [y for _, _, points in routes for _, y in points]
    for box, (x, y) in centres.items():
        w, h = sizes[box]
        xs += [x - w / 2, x + w / 2]
        ys += [y - h / 2, y + h / 2]
    if not xs:
        return (0.0, 0.0, 0.0, 0.0)
    return (min(xs), max(xs), min(ys), max(ys))
