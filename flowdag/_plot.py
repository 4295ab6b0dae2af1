"""The optional matplotlib dependency (the ``plot`` extra), shared by charts and graph PNGs.

Figures are made with `matplotlib.figure.Figure` directly, never through
``pyplot``: no global state, no GUI backend chosen behind the caller's back, and
safe from threads. Saving a Figure renders with Agg.

`draw_boxes` draws a `flowdag._layout.Layout` (a graph PNG): boxes exactly at
the layout's sizes, measured from their labels with `label_size`, and each
arrow along the layout's path, so no arrow is hidden behind a box.
"""

from __future__ import annotations

import importlib
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any

from flowdag._layout import Layout
from flowdag.errors import OptionalDependencyError

__all__ = ["INSTALL_HINT", "Drawn", "draw_boxes", "label_size", "new_figure", "plot_available"]

INSTALL_HINT = "pip install 'flowdag[plot]'"


def plot_available() -> bool:
    """Whether matplotlib can be imported."""
    try:
        importlib.import_module("matplotlib.figure")
    except ImportError:
        return False
    return True


def new_figure(what: str, width: float, height: float, layout: str | None = "constrained") -> Any:
    """A new `matplotlib.figure.Figure` of ``width`` x ``height`` inches.

    ``layout`` is matplotlib's layout engine (None: the caller places the axes).

    Raises:
        OptionalDependencyError: matplotlib is missing; ``what`` names what needed it.
    """
    try:
        figure = importlib.import_module("matplotlib.figure")
    except ImportError as exc:
        raise OptionalDependencyError(
            f"{what} needs matplotlib, which is not installed: {INSTALL_HINT}"
        ) from exc
    return figure.Figure(figsize=(width, height), layout=layout)


# -- boxes and arrows (graph PNGs) ----------------------------------------------------

#: Figure size caps, in inches: a larger drawing is scaled down, fonts included.
MAX_WIDTH, MAX_HEIGHT = 60.0, 80.0
_LINE = 1.2  # line spacing, in font sizes (matplotlib's default)
_PAD = 0.35  # space around a label inside its box, in font sizes
_MARGIN = 0.3  # around the drawing, inches


@dataclass(frozen=True, slots=True)
class Drawn:
    """One box to draw: its label, fill and outline colours, and a dashed outline or not."""

    label: str
    fill: str
    stroke: str
    dashed: bool = False


def label_size(label: str, fontsize: float) -> tuple[float, float]:
    """The width and height, in inches, of a box around ``label`` at ``fontsize`` points."""
    from matplotlib.font_manager import FontProperties
    from matplotlib.textpath import TextToPath

    measure = TextToPath().get_text_width_height_descent
    font = FontProperties(size=fontsize)
    lines = label.split("\n")
    width = max(measure(line, font, ismath=False)[0] for line in lines)
    height = len(lines) * _LINE * fontsize
    return ((width + 2 * _PAD * fontsize) / 72, (height + 2 * _PAD * fontsize) / 72)


def draw_boxes(
    placed: Layout,
    boxes: Mapping[str, Drawn],
    fontsize: float,
    title: str,
    legend: Sequence[tuple[str, str, str, bool]] = (),
) -> Any:
    """A Figure of ``placed`` boxes and arrows (one inch per layout unit, or smaller).

    ``legend`` items are (label, fill, stroke, dashed). Box outlines are drawn
    exactly at the layout's sizes, so what the layout keeps apart stays apart.
    """
    xmin, xmax, ymin, ymax = placed.bounds
    title_height = (title.count("\n") + 1) * 0.25 + 0.2
    legend_height = 0.5 if legend else 0.0
    width = xmax - xmin + 2 * _MARGIN
    height = ymax - ymin + 2 * _MARGIN + title_height + legend_height
    scale = min(1.0, MAX_WIDTH / width, MAX_HEIGHT / height)
    fig_width, fig_height = max(4.0, width * scale), max(2.5, height * scale)
    figure = new_figure("a graph PNG", fig_width, fig_height, layout=None)
    from matplotlib.patches import FancyArrowPatch, FancyBboxPatch, Patch
    from matplotlib.path import Path

    # The axes span the drawing at ``scale`` inches per unit, centred across,
    # just below the title (a small drawing in a figure of the least size too).
    ax_width, ax_height = (xmax - xmin) * scale, (ymax - ymin) * scale
    left = (fig_width - ax_width) / 2
    bottom = fig_height - (title_height + _MARGIN) * scale - ax_height
    ax = figure.add_axes(
        (left / fig_width, bottom / fig_height, ax_width / fig_width, ax_height / fig_height)
    )
    ax.set_axis_off()
    ax.set_xlim(xmin, xmax if xmax > xmin else xmin + 1)
    ax.set_ylim(ymin, ymax if ymax > ymin else ymin + 1)
    font = fontsize * scale
    for _, _, points in placed.routes:
        arrow = FancyArrowPatch(
            path=Path(points),
            arrowstyle="-|>",
            mutation_scale=9 * scale,
            shrinkA=0,
            shrinkB=0,
            color="#777777",
            linewidth=0.8,
            zorder=1,
        )
        ax.add_patch(arrow)
    for box, drawn in boxes.items():
        (x, y), (w, h) = placed.centres[box], placed.sizes[box]
        ax.add_patch(
            FancyBboxPatch(
                (x - w / 2, y - h / 2),
                w,
                h,
                boxstyle=f"round,pad=0,rounding_size={min(w, h) * 0.2}",
                facecolor=drawn.fill,
                edgecolor=drawn.stroke,
                linestyle="--" if drawn.dashed else "-",
                linewidth=1.0,
                zorder=2,
            )
        )
        ax.text(x, y, drawn.label, ha="center", va="center", fontsize=font, zorder=3)
    figure.text(
        _MARGIN * scale / fig_width, 1 - 0.1 / fig_height, title, ha="left", va="top", fontsize=11
    )
    if legend:
        handles = [
            Patch(facecolor=fill, edgecolor=stroke, linestyle="--" if dashed else "-", label=label)
            for label, fill, stroke, dashed in legend
        ]
        figure.legend(handles=handles, loc="lower center", ncols=len(handles), fontsize=9)
    return figure
