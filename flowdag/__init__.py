"""flowdag: DAG workflows that survive crashes.

Build a workflow of plain functions, run it concurrently, checkpoint every
finished node durably, and resume a crashed run where it stopped.
"""

from __future__ import annotations

import typing

from flowdag._usertypes import register_types
from flowdag.context import Context
from flowdag.dag import DAG
from flowdag.errors import (
    BlobMissingError,
    CodecMismatchError,
    CorruptStateError,
    CycleError,
    DAGError,
    DecryptionError,
    DuplicateNodeError,
    FlowdagError,
    InputNotFoundError,
    InputTimeoutError,
    InputValidationError,
    InvalidArgumentError,
    InvalidArgumentTypeError,
    InvalidKeyError,
    InvalidRunIdError,
    MainGuardError,
    MissingDependencyError,
    NodeError,
    NodeTimeoutError,
    OptionalDependencyError,
    RunFailedError,
    RunLockedError,
    RunNotFoundError,
    SerializationError,
    SignatureError,
    StoreError,
    WorkflowChangedError,
)
from flowdag.gc import GCReport, gc
from flowdag.overrides import invalidate, mark_done
from flowdag.refs import Ref
from flowdag.runner import EventKind, RunEvent, RunResult, run
from flowdag.state import (
    AttemptInfo,
    ErrorInfo,
    NodeState,
    NodeStatus,
    Reason,
    RunState,
    RunStatus,
)
from flowdag.stores import LMDBStore, MemoryStore, Store, open_store
from flowdag.waits import Wait, list_waits, provide_input, reissue_key
from flowdag.workflow import NO_DEFAULT, Workflow

if typing.TYPE_CHECKING:
    from flowdag.stores import FlatBuffersStore, JSONStore

__version__ = "0.1.0"

__all__ = [
    "DAG",
    "NO_DEFAULT",
    "AttemptInfo",
    "BlobMissingError",
    "CodecMismatchError",
    "Context",
    "CorruptStateError",
    "CycleError",
    "DAGError",
    "DecryptionError",
    "DuplicateNodeError",
    "ErrorInfo",
    "EventKind",
    "FlatBuffersStore",
    "FlowdagError",
    "GCReport",
    "InputNotFoundError",
    "InputTimeoutError",
    "InputValidationError",
    "InvalidArgumentError",
    "InvalidArgumentTypeError",
    "InvalidKeyError",
    "InvalidRunIdError",
    "JSONStore",
    "LMDBStore",
    "MainGuardError",
    "MemoryStore",
    "MissingDependencyError",
    "NodeError",
    "NodeState",
    "NodeStatus",
    "NodeTimeoutError",
    "OptionalDependencyError",
    "Reason",
    "Ref",
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
    "Wait",
    "Workflow",
    "WorkflowChangedError",
    "gc",
    "invalidate",
    "list_waits",
    "mark_done",
    "open_store",
    "provide_input",
    "register_types",
    "reissue_key",
    "run",
]

# Loaded on first use, as in flowdag.stores: a program that never opens a JSON or
# FlatBuffers store does not import their formats (the JSON codec alone is ~10 ms).
_LAZY = {"FlatBuffersStore", "JSONStore"}


def __getattr__(name: str) -> typing.Any:
    if name not in _LAZY:
        raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
    from flowdag import stores

    value = getattr(stores, name)
    globals()[name] = value  # later lookups skip this function
    return value


def __dir__() -> list[str]:
    return sorted(set(globals()) | set(__all__))
