"""Plain data at the centre: statuses, the state of a run, and one commit record.

`RunState` is what a store saves and loads; `NodeRecord` is what the runner
commits when a node finishes. Both are plain dataclasses so that a state moved
between any two stores compares equal.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from datetime import datetime
from enum import StrEnum
from typing import Any

__all__ = ["ErrorInfo", "NodeRecord", "NodeState", "NodeStatus", "RunState", "RunStatus"]


class NodeStatus(StrEnum):
    """Where one node stands in a run."""

    PENDING = "pending"
    RUNNING = "running"
    COMPLETED = "completed"
    FAILED = "failed"
    SKIPPED = "skipped"  # not run because an upstream node failed


class RunStatus(StrEnum):
    """Where a whole run stands."""

    PENDING = "pending"  # nothing has finished yet
    RUNNING = "running"  # some nodes finished, others have not (or a crash stopped it)
    COMPLETED = "completed"
    FAILED = "failed"
    SUSPENDED = "suspended"


@dataclass(frozen=True, slots=True)
class ErrorInfo:
    """Why a node failed: the exception's type name, message and traceback text."""

    type: str
    message: str
    traceback: str = ""

    def __str__(self) -> str:
        return f"{self.type}: {self.message}"


@dataclass(slots=True)
class NodeState:
    """One node of a run as stored: status, attempts, times, output or error."""

    status: NodeStatus = NodeStatus.PENDING
    attempts: int = 0
    started_at: datetime | None = None
    finished_at: datetime | None = None
    output: Any = None
    error: ErrorInfo | None = None
    deps: tuple[str, ...] = ()

    @property
    def duration(self) -> float | None:
        """Seconds from start to finish of the last attempt, when both are known."""
        if self.started_at is None or self.finished_at is None:
            return None
        return (self.finished_at - self.started_at).total_seconds()


@dataclass(slots=True)
class RunState:
    """Everything a store keeps about one run."""

    run_id: str
    workflow: str
    nodes: dict[str, NodeState] = field(default_factory=dict)
    data: dict[str, Any] = field(default_factory=dict)
    metadata: dict[str, Any] = field(default_factory=dict)

    @property
    def status(self) -> RunStatus:
        """The run's status, derived from its nodes' statuses."""
        statuses = {node.status for node in self.nodes.values()}
        if statuses <= {NodeStatus.COMPLETED}:
            return RunStatus.COMPLETED
        if statuses <= {NodeStatus.PENDING}:
            return RunStatus.PENDING
        if NodeStatus.PENDING in statuses or NodeStatus.RUNNING in statuses:
            return RunStatus.RUNNING
        return RunStatus.FAILED


@dataclass(frozen=True, slots=True)
class NodeRecord:
    """One finished node as the runner commits it: durable all together or not at all.

    ``output`` and the values in ``data`` are already encoded by the store's codec
    (encoding happens once, off the driver thread); ``output`` is None when the node
    has none (failed or skipped). ``data`` holds the node's changes to ``ctx.data``:
    key -> encoded value, or None where the node deleted the key.
    """

    node: str
    status: NodeStatus
    attempts: int = 0
    started_at: datetime | None = None
    finished_at: datetime | None = None
    error: ErrorInfo | None = None
    output: bytes | None = None
    data: Mapping[str, bytes | None] = field(default_factory=dict)
