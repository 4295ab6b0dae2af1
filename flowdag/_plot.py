"""The optional matplotlib dependency (the ``plot`` extra), shared by charts and graph PNGs.

Figures are made with `matplotlib.figure.Figure` directly, never through
``pyplot``: no global state, no GUI backend chosen behind the caller's back, and
safe from threads. Saving a Figure renders with Agg.
"""

from __future__ import annotations

import importlib
from typing import Any

from flowdag.errors import OptionalDependencyError

__all__ = ["INSTALL_HINT", "new_figure", "plot_available"]

INSTALL_HINT = "pip install 'flowdag[plot]'"


def plot_available() -> bool:
    """Whether matplotlib can be imported."""
    try:
        importlib.import_module("matplotlib.figure")
    except ImportError:
        return False
    return True


def new_figure(what: str, width: float, height: float) -> Any:
    """A new `matplotlib.figure.Figure` of ``width`` x ``height`` inches.

    Raises:
        OptionalDependencyError: matplotlib is missing; ``what`` names what needed it.
    """
    try:
        figure = importlib.import_module("matplotlib.figure")
    except ImportError as exc:
        raise OptionalDependencyError(
            f"{what} needs matplotlib, which is not installed: {INSTALL_HINT}"
        ) from exc
    return figure.Figure(figsize=(width, height), layout="constrained")
