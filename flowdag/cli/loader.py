"""The workflow-file loader: import ``FILE.py[:NAME]`` and find the workflow it names."""

from __future__ import annotations

import importlib.util
import secrets
import sys
from pathlib import Path
from types import ModuleType
from typing import TypeAlias

import flowdag
from flowdag.cli.base import CLIError, flatten
from flowdag.errors import MainGuardError
from flowdag.executors import _main_guard
from flowdag.runner import RunResult, runs_at_import

__all__ = ["Target", "load_dag", "load_workflow"]

Target: TypeAlias = flowdag.Workflow | flowdag.DAG  # what a workflow file can provide


def load_dag(target: str, runs: list[RunResult] | None = None) -> flowdag.DAG:
    """`load_workflow`, built: a workflow that is not a valid DAG raises `DAGError` now."""
    found = load_workflow(target, runs)
    return found.build() if isinstance(found, flowdag.Workflow) else found


def load_workflow(target: str, runs: list[RunResult] | None = None) -> Target:
    """Import ``FILE.py[:NAME]`` and return the `Workflow` or `DAG` it names.

    Without ``:NAME`` the file must hold exactly one workflow among its globals.
    ``NAME`` is a global variable name or a workflow's own name. The runs that
    importing the file started itself (``flowdag.run`` at module level) are added
    to ``runs`` when it is given.

    Raises:
        CLIError: the file is missing, fails to import, or has no (or several)
            matching workflows.
    """
    path, name = _split_target(target)
    watching = runs_at_import.set(runs)
    try:
        module = _import_file(path)
    finally:
        runs_at_import.reset(watching)
    found = _find_workflows(module)
    if name is not None:
        return _pick_named(found, name, path)
    distinct = _distinct(found)
    if len(distinct) == 1:
        return next(iter(distinct.values()))
    if not distinct:
        raise CLIError(f"no flowdag.Workflow found in {path}; define one, e.g. wf = Workflow(...)")
    listed = ", ".join(sorted(distinct))
    raise CLIError(f"several workflows in {path} ({listed}); choose one with {path}:NAME")


def _split_target(target: str) -> tuple[Path, str | None]:
    if Path(target).exists() or ":" not in target:
        return Path(target), None
    file, _, name = target.rpartition(":")
    if not name:
        raise CLIError(f"empty workflow name in {target!r}; use FILE.py:NAME")
    return Path(file), name


def _import_file(path: Path) -> ModuleType:
    if not path.is_file():
        raise CLIError(f"workflow file not found: {path}")
    module_name = f"_flowdag_workflow_{path.stem}_{secrets.token_hex(4)}"
    spec = importlib.util.spec_from_file_location(module_name, path)
    if spec is None or spec.loader is None:
        raise CLIError(f"cannot import {path}: not a Python file")
    module = importlib.util.module_from_spec(spec)
    folder = str(path.resolve().parent)
    if folder not in sys.path:
        sys.path.insert(0, folder)  # so the file can import its sibling modules
    # Registered in sys.modules, as pickling (by reference in this process, by
    # value for workers: see below) and dataclasses in the file expect.
    sys.modules[module_name] = module
    importing = _main_guard.importing.set(path)  # worker processes started now are refused
    try:
        spec.loader.exec_module(module)
    except MainGuardError:  # says what to do in the file: shown as it is
        del sys.modules[module_name]
        raise
    except (Exception, SystemExit) as exc:  # the file's own bug, not ours: no traceback
        del sys.modules[module_name]
        raise CLIError(f"cannot load {path}: {type(exc).__name__}: {flatten(str(exc))}") from exc
    finally:
        _main_guard.importing.reset(importing)
    # Worker processes (processes, Dask) cannot import the module by that unique
    # name, so its functions travel by value, code and all.
    import cloudpickle

    cloudpickle.register_pickle_by_value(module)
    return module


def _find_workflows(module: ModuleType) -> dict[str, Target]:
    kinds = (flowdag.Workflow, flowdag.DAG)
    return {
        attr: value
        for attr, value in vars(module).items()
        if isinstance(value, kinds) and not attr.startswith("__")
    }


def _distinct(found: dict[str, Target]) -> dict[str, Target]:
    """Label -> object, one entry per workflow name.

    ``wf = Workflow("etl"); dag = wf.build()`` is one workflow, not two: the built
    DAG wins because it is what the file chose to run.
    """
    by_name: dict[str, tuple[str, Target]] = {}
    for attr, value in found.items():
        key = value.name
        if key not in by_name or isinstance(value, flowdag.DAG):
            by_name[key] = (attr, value)
    return {f"{attr} ({key})" if attr != key else attr: v for key, (attr, v) in by_name.items()}


def _pick_named(found: dict[str, Target], name: str, path: Path) -> Target:
    if name in found:
        return found[name]
    same_name = _distinct({attr: v for attr, v in found.items() if v.name == name})
    if len(same_name) == 1:
        return next(iter(same_name.values()))
    have = ", ".join(sorted(_distinct(found))) or "none"
    raise CLIError(f"no workflow named {name!r} in {path} (found: {have})")
