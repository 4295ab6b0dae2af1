"""flowdag: DAG workflows that survive crashes.

Build a workflow of plain functions, run it concurrently, checkpoint every
finished node durably, and resume a crashed run where it stopped.
"""

from __future__ import annotations

import importlib
import typing

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
    RunChangedError,
    RunFailedError,
    RunLockedError,
    RunNotFoundError,
    SerializationError,
    SignatureError,
    StoreError,
    WorkflowChangedError,
)

# Imported here, not on first use: importing the submodule ``flowdag.gc`` would
# otherwise replace the function ``flowdag.gc`` with the module.
from flowdag.gc import GCReport, gc

if typing.TYPE_CHECKING:
    from flowdag._usertypes import register_types
    from flowdag.context import Context
    from flowdag.dag import DAG
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
    from flowdag.stores import (
        FlatBuffersStore,
        JSONStore,
        LMDBStore,
        MemoryStore,
        Store,
        open_store,
    )
    from flowdag.waits import Wait, list_waits, provide_input, reissue_key
    from flowdag.workflow import NO_DEFAULT, Workflow

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
    "RunChangedError",
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

# Loaded on first use (PEP 562): ``import flowdag`` costs the errors and the
# store layer, not the runner (asyncio, the pools), the builder or the formats
# of stores a program never opens. Every name is its defining module's object.
_LAZY = {
    "register_types": "flowdag._usertypes",
    "Context": "flowdag.context",
    "DAG": "flowdag.dag",
    "invalidate": "flowdag.overrides",
    "mark_done": "flowdag.overrides",
    "Ref": "flowdag.refs",
    "EventKind": "flowdag.runner",
    "RunEvent": "flowdag.runner",
    "RunResult": "flowdag.runner",
    "run": "flowdag.runner",
    "AttemptInfo": "flowdag.state",
    "ErrorInfo": "flowdag.state",
    "NodeState": "flowdag.state",
    "NodeStatus": "flowdag.state",
    "Reason": "flowdag.state",
    "RunState": "flowdag.state",
    "RunStatus": "flowdag.state",
    "FlatBuffersStore": "flowdag.stores",
    "JSONStore": "flowdag.stores",
    "LMDBStore": "flowdag.stores",
    "MemoryStore": "flowdag.stores",
    "Store": "flowdag.stores",
    "open_store": "flowdag.stores",
    "Wait": "flowdag.waits",
    "list_waits": "flowdag.waits",
    "provide_input": "flowdag.waits",
    "reissue_key": "flowdag.waits",
    "NO_DEFAULT": "flowdag.workflow",
    "Workflow": "flowdag.workflow",
}


def __getattr__(name: str) -> typing.Any:
    module = _LAZY.get(name)
    if module is None:
        if not name.startswith("_"):
            # A public submodule (``flowdag.executors.ProcessExecutor`` after
            # ``import flowdag``), as when this package imported them all.
            try:
                return importlib.import_module(f"{__name__}.{name}")
            except ModuleNotFoundError as exc:
                if exc.name != f"{__name__}.{name}":
                    raise
        raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
    value = getattr(importlib.import_module(module), name)
    globals()[name] = value  # later lookups skip this function
    return value


def __dir__() -> list[str]:
    return sorted(set(globals()) | set(__all__))
