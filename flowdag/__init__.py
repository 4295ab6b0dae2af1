"""flowdag: DAG workflows that survive crashes.

Build a workflow of plain functions, run it concurrently, checkpoint every
finished node durably, and resume a crashed run where it stopped.
"""

from __future__ import annotations

from flowdag.context import Context
from flowdag.dag import DAG
from flowdag.errors import (
    CorruptStateError,
    CycleError,
    DAGError,
    DuplicateNodeError,
    FlowdagError,
    InvalidRunIdError,
    MissingDependencyError,
    NodeError,
    NodeTimeoutError,
    RunFailedError,
    RunLockedError,
    RunNotFoundError,
    SerializationError,
    SignatureError,
    StoreError,
    WorkflowChangedError,
)
from flowdag.runner import RunEvent, RunResult, run
from flowdag.state import ErrorInfo, NodeRecord, NodeState, NodeStatus, RunState, RunStatus
from flowdag.stores import LMDBStore, MemoryStore, Store, open_store
from flowdag.workflow import Workflow

__version__ = "0.1.0"

__all__ = [
    "DAG",
    "Context",
    "CorruptStateError",
    "CycleError",
    "DAGError",
    "DuplicateNodeError",
    "ErrorInfo",
    "FlowdagError",
    "InvalidRunIdError",
    "LMDBStore",
    "MemoryStore",
    "MissingDependencyError",
    "NodeError",
    "NodeRecord",
    "NodeState",
    "NodeStatus",
    "NodeTimeoutError",
    "RunEvent",
    "RunFailedError",
    "RunLockedError",
    "RunNotFoundError",
    "RunResult",
    "RunState",
    "RunStatus",
    "SerializationError",
    "SignatureError",
    "Store",
    "StoreError",
    "Workflow",
    "WorkflowChangedError",
    "open_store",
    "run",
]
