"""The ``flowdag bench`` chart: grouped bars per store for each measure, as a PNG."""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any

from flowdag._plot import new_figure
from flowdag.cli.bench.measure import WORKERS, BenchResults

__all__ = ["write_chart"]

_COLORS = {"json": "#e69f00", "flatbuffers": "#56b4e9", "lmdb": "#009e73", "memory": "#999999"}
_PANELS = (
    ("commit_us_per_node", "commit: durable fan-out run", "µs per node"),
    ("save_ms", "save a whole run", "ms"),
    ("load_ms", "load a whole run", "ms"),
    ("resume_ms", "resume a completed run (load + plan)", "ms"),
    ("disk_mb", "size on disk", "MB"),
    ("ratio_to_memory", "commit cost / in-memory store's", "ratio (1 = memory)"),
)
_LOG_SPREAD = 20  # a panel whose values span more than this factor gets a log scale


def write_chart(results: BenchResults, path: str | os.PathLike[str]) -> Path:
    """Draw grouped bars per store for each measure, and save them as a PNG.

    Raises:
        OptionalDependencyError: matplotlib is not installed (the ``plot`` extra).
    """
    figure = new_figure("the bench chart", 15, 8.5)
    from matplotlib.ticker import FuncFormatter, NullFormatter  # present: new_figure checked

    axes = figure.subplots(2, 3)
    cases = list(dict.fromkeys((row.nodes, row.payload) for row in results.rows))
    logs = []
    for ax, (attr, title, unit) in zip(axes.flat, _PANELS, strict=True):
        values = {
            (row.store, row.nodes, row.payload): getattr(row, attr)
            for row in results.rows
            if getattr(row, attr) is not None and getattr(row, attr) > 0
        }
        # Only stores with a figure here get a slot (memory has nothing on disk).
        stores = list(dict.fromkeys(key[0] for key in values))
        width = 0.8 / max(1, len(stores))
        for i, kind in enumerate(stores):
            xs, heights = [], []
            for c, (n, payload) in enumerate(cases):
                if (kind, n, payload) in values:
                    xs.append(c + (i - (len(stores) - 1) / 2) * width)
                    heights.append(values[kind, n, payload])
            bars = ax.bar(xs, heights, width, label=kind, color=_COLORS.get(kind))
            if len(cases) * len(stores) <= 16:
                ax.bar_label(bars, labels=[_short(h) for h in heights], fontsize=7, padding=1)
        if attr == "ratio_to_memory":
            ax.axhline(1.0, color="#444444", linewidth=0.8, linestyle="--")
        ax.set_title(title, fontsize=11)
        ax.set_ylabel(unit)
        if values and max(values.values()) > _LOG_SPREAD * min(values.values()):
            ax.set_yscale("log")
            ax.yaxis.set_minor_formatter(NullFormatter())
            logs.append(title)
        ax.yaxis.set_major_formatter(FuncFormatter(lambda v, _: f"{v:,g}"))
        ax.margins(y=0.12)
        ax.set_xticks(range(len(cases)))
        ax.set_xticklabels([f"{n:,} nodes\n{_bytes(p)}/node" for n, p in cases], fontsize=8)
        ax.grid(axis="y", which="major", alpha=0.3)
    handles: dict[str, Any] = {}
    for ax in axes.flat:
        for handle, label in zip(*ax.get_legend_handles_labels(), strict=True):
            handles.setdefault(label, handle)
    figure.legend(
        list(handles.values()), list(handles), loc="outside upper right", ncols=len(handles)
    )
    m = results.machine
    scale = "log scale where values span orders of magnitude; " if logs else ""
    figure.suptitle(
        f"flowdag bench on {m['cpu']} ({m['cpus']} CPUs), Python {m['python']}, "
        f"{results.started_at:%Y-%m-%d %H:%M}\n"
        f"fan-out runs, {WORKERS} workers; best of the repetitions after a warm-up; "
        f"{scale}lower is better",
        fontsize=11,
        x=0.01,
        ha="left",
    )
    target = Path(path)
    figure.savefig(target, dpi=110)
    return target


def _short(value: float) -> str:
    if value >= 10_000:
        return f"{value / 1000:.0f}k"
    if value >= 1000:
        return f"{value / 1000:.1f}k"
    if value >= 100:
        return f"{value:,.0f}"
    if value >= 10:
        return f"{value:.1f}"
    return f"{value:.2g}"


def _bytes(size: int) -> str:
    for unit, scale in (("MiB", 1 << 20), ("KiB", 1 << 10)):
        if size >= scale and size % scale == 0:
            return f"{size // scale} {unit}"
    return f"{size:,} B"
