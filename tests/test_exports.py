"""The public names: `flowdag.__all__` is pinned, and every name in it is importable."""

from __future__ import annotations

import importlib
import types

import pytest

import flowdag

EXPORTED = [
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


def test_all_is_pinned() -> None:
    # Compared sorted: the order of __all__ is cosmetic, its contents are the API.
    assert len(flowdag.__all__) == len(set(flowdag.__all__))
    assert sorted(flowdag.__all__) == sorted(EXPORTED)


def test_every_public_member_is_exported() -> None:
    # As httpx's test_exported_members: nothing public is left out of __all__.
    public = {
        name
        for name, value in vars(flowdag).items()
        if not name.startswith("_")
        and not isinstance(value, types.ModuleType)
        and name != "annotations"  # from __future__ import annotations
    }
    assert public == set(flowdag.__all__)


@pytest.mark.parametrize("name", EXPORTED)
def test_exported_name_is_importable(name: str) -> None:
    namespace: dict[str, object] = {}
    exec(f"from flowdag import {name}", namespace)
    assert namespace[name] is getattr(flowdag, name)
    value = namespace[name]
    module = getattr(value, "__module__", "")
    assert module.startswith("flowdag")
    # The defining module exposes it under the same name.
    assert getattr(importlib.import_module(module), name) is value


def test_version() -> None:
    assert isinstance(flowdag.__version__, str)
    assert flowdag.__version__
