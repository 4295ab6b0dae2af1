"""How `flowdag.graph` draws node statuses: their names, colours and order.

A drawing shows the status a node has in a run, with one addition: a node
stored as running in a run that no live process holds (the caller knows, as
``flowdag status`` does from the run's lock) is drawn as `INTERRUPTED`, since
an attempt of it was in flight when the process stopped, and a resume runs it
again.
"""

from __future__ import annotations

from flowdag.state import NodeState, NodeStatus

__all__ = ["INTERRUPTED", "ORDER", "PRIORITY", "STATUS_COLORS", "STROKES", "by_status", "drawn"]

#: Shown for a node stored as running when no live process holds its run.
INTERRUPTED = "interrupted"
#: Fill colour per node status; ``None`` is a DAG drawn without a run.
STATUS_COLORS: dict[str | None, str] = {
    NodeStatus.COMPLETED: "#b7e4c7",
    NodeStatus.FAILED: "#f4a6a6",
    NodeStatus.SKIPPED: "#ffe08a",
    NodeStatus.PENDING: "#f8f9fa",
    NodeStatus.RUNNING: "#a9c9f5",
    NodeStatus.WAITING: "#ffd6a5",
    INTERRUPTED: "#e2c6f5",
    None: "#e9edf2",
}
#: Outline colour per node status.
STROKES: dict[str | None, str] = {
    NodeStatus.COMPLETED: "#2d6a4f",
    NodeStatus.FAILED: "#b00020",
    NodeStatus.SKIPPED: "#9c7a00",
    NodeStatus.PENDING: "#6c757d",
    NodeStatus.RUNNING: "#1f5fbf",
    NodeStatus.WAITING: "#c05600",
    INTERRUPTED: "#7b2cbf",
    None: "#5c6b7a",
}
#: Statuses in the order counts are listed (titles, groups, the PNG legend).
ORDER = ("pending", "waiting", "running", INTERRUPTED, "completed", "failed", "skipped")
#: Which nodes of a crowded layer stay visible: the ones that explain the run first.
PRIORITY: dict[str | None, int] = {
    NodeStatus.FAILED: 0,
    NodeStatus.RUNNING: 1,
    NodeStatus.WAITING: 1,
    INTERRUPTED: 1,
    NodeStatus.SKIPPED: 2,
    NodeStatus.PENDING: 3,
    NodeStatus.COMPLETED: 4,
    None: 4,
}


def drawn(node: NodeState | None, interrupted: bool) -> str:
    """A node's status as drawn; a node the run lacks is pending."""
    if node is None:
        return NodeStatus.PENDING
    if interrupted and node.status is NodeStatus.RUNNING:
        return INTERRUPTED  # its attempt was in flight when the process stopped
    return node.status


def by_status(item: tuple[str | None, int]) -> int:
    """Sort key of a (status, count) pair: in `ORDER`."""
    return ORDER.index(item[0]) if item[0] is not None else 0
