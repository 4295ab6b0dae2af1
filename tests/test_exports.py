"""The public names: `flowdag.__all__` is pinned, and every name in it is importable."""

from __future__ import annotations

import importlib
import subprocess
import sys
import types

import pytest

import flowdag

EXPORTED = [
    "DAG",
    "AttemptInfo",
    "BlobMissingError",
    "Context",
    "CodecMismatchError",
    "CorruptStateError",
    "CycleError",
    "DAGError",
    "DecryptionError",
    "DuplicateNodeError",
    "ErrorInfo",
    "EventKind",
    "FlatBuffersStore",
    "FlowdagError",
    "InputNotFoundError",
    "InputTimeoutError",
    "InputValidationError",
    "GCReport",
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
    "RunChangedError",
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
    "NO_DEFAULT",
    "list_waits",
    "provide_input",
    "reissue_key",
    "gc",
    "invalidate",
    "mark_done",
    "open_store",
    "register_types",
    "run",
]


def test_all_is_pinned() -> None:
    # Compared sorted: the order of __all__ is cosmetic, its contents are the API.
    assert len(flowdag.__all__) == len(set(flowdag.__all__))
    assert sorted(flowdag.__all__) == sorted(EXPORTED)


def test_every_public_member_is_exported() -> None:
    # As httpx's test_exported_members: nothing public is left out of __all__.
    # dir(), not vars(): the store classes of optional formats load on first use.
    public = {
        name
        for name in dir(flowdag)
        if not name.startswith("_")
        and not isinstance(getattr(flowdag, name), types.ModuleType)
        and name != "annotations"  # from __future__ import annotations
    }
    assert public == set(flowdag.__all__)


def test_store_formats_load_on_first_use() -> None:
    # Importing flowdag must not pay for the FlatBuffers runtime (it imports numpy).
    script = (
        "import sys, flowdag\n"
        "modules = ['flowdag.stores.json_store', 'flowdag.stores.flatbuffers_store',"
        " 'flatbuffers', 'numpy']\n"
        "print(sorted(m for m in modules if m in sys.modules))\n"
        "assert flowdag.FlatBuffersStore.__name__ == 'FlatBuffersStore'\n"
        "assert 'FlatBuffersStore' in vars(flowdag)\n"
    )
    done = subprocess.run(
        [sys.executable, "-c", script], capture_output=True, text=True, timeout=60
    )
    assert done.returncode == 0, done.stderr
    assert done.stdout.strip() == "[]"


def test_unknown_attribute() -> None:
    with pytest.raises(AttributeError, match="NoSuchStore"):
        flowdag.NoSuchStore  # noqa: B018


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


def test_names_and_submodules_load_on_first_use() -> None:
    # `import flowdag` pays for the errors and the store layer, not the runner
    # (asyncio, the pools) nor the builder; a public name or submodule loads when touched.
    script = (
        "import sys, flowdag\n"
        "heavy = ['asyncio', 'multiprocessing.connection', 'flowdag.runner', 'flowdag.workflow']\n"
        "print(sorted(m for m in heavy if m in sys.modules))\n"
        "assert flowdag.executors.ProcessExecutor.__name__ == 'ProcessExecutor'\n"
        "assert flowdag.run.__module__ == 'flowdag.runner' and 'run' in vars(flowdag)\n"
        "assert callable(flowdag.gc)  # the function, not the submodule flowdag.gc\n"
        "import flowdag.gc\n"
        "assert callable(flowdag.gc)\n"
    )
    done = subprocess.run(
        [sys.executable, "-c", script], capture_output=True, text=True, timeout=60
    )
    assert done.returncode == 0, done.stderr
    assert done.stdout.strip() == "[]"
