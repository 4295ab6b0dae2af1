"""Shared pieces of the benchmark suites: DAG shapes, the bare baseline, stores, Dask graphs.

Not a benchmark itself; the ``bench_*.py`` files import it (pytest puts this
folder on ``sys.path``).
"""

from __future__ import annotations

import importlib
import os
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

import pytest

import flowdag
from flowdag.codec import ValueCodec
from flowdag.stores import Store, open_store

WORKERS = 4

#: Every store, and the disk stores among them.
STORES = ["memory", "lmdb", "json", "flatbuffers"]
DISK_STORES = ["lmdb", "json", "flatbuffers"]

_MODULES = {
    "memory": "flowdag.stores.memory",
    "lmdb": "flowdag.stores.lmdb_store",
    "json": "flowdag.stores.json_store",
    "flatbuffers": "flowdag.stores.flatbuffers_store",
}


def label(n: int) -> str:
    """1000 -> '1k', 100000 -> '100k'."""
    return f"{n // 1000}k" if n >= 1000 and n % 1000 == 0 else str(n)


# -- shapes ---------------------------------------------------------------------


def fanout(width: int) -> flowdag.DAG:
    """1 -> width -> 1: a root, ``width`` independent nodes, a sink."""
    wf = flowdag.Workflow(f"fanout-{width}")
    wf.add_node("root", lambda: 1)
    for i in range(width):
        wf.add_node(f"n{i}", lambda root: root + 1, deps=["root"])
    wf.add_node("sink", lambda **kw: len(kw), deps=[f"n{i}" for i in range(width)])
    return wf.build()


def chain(length: int) -> flowdag.DAG:
    """``length`` nodes in a line: each waits for the previous one's checkpoint."""
    wf = flowdag.Workflow(f"chain-{length}")
    wf.add_node("n0", lambda: 0)
    for i in range(1, length):
        wf.add_node(f"n{i}", lambda **kw: next(iter(kw.values())) + 1, deps=[f"n{i - 1}"])
    return wf.build()


GRID_DEPTH = 10


def grid(nodes: int, depth: int = GRID_DEPTH) -> flowdag.DAG:
    """A wide diamond grid: ``depth`` layers of ``nodes // depth``; each node needs two above.

    Node ``g{l}_{i}`` depends on ``g{l-1}_{i}`` and ``g{l-1}_{i+1}`` (wrapping), so
    every layer fans in and out at once: diamonds side by side, layer after layer.
    """
    width = nodes // depth
    wf = flowdag.Workflow(f"grid-{nodes}")
    for i in range(width):
        wf.add_node(f"g0_{i}", lambda: 1)
    for layer in range(1, depth):
        for i in range(width):
            deps = [f"g{layer - 1}_{i}", f"g{layer - 1}_{(i + 1) % width}"]
            wf.add_node(f"g{layer}_{i}", lambda **kw: max(kw.values()) + 1, deps=deps)
    return wf.build()


SHAPES: dict[str, Callable[[int], flowdag.DAG]] = {"fanout": fanout, "chain": chain, "grid": grid}


def run_bare(dag: flowdag.DAG) -> dict[str, Any]:
    """The baseline: submit each node in topological order once its deps are done."""
    futures: dict[str, Any] = {}
    with ThreadPoolExecutor(WORKERS) as pool:
        for name in dag.nodes:
            spec = dag.specs[name]
            inputs = {dep: futures[dep].result() for dep in spec.deps}
            futures[name] = pool.submit(spec.fn, **inputs)
        return {name: future.result() for name, future in futures.items()}


# -- Dask's threaded scheduler on the same shapes ----------------------------------


def _zero() -> int:
    return 0


def _one() -> int:
    return 1


def _inc(x: int) -> int:
    return x + 1


def _count(xs: list[Any]) -> int:
    return len(xs)


def dask_fanout(width: int) -> tuple[dict[str, Any], str]:
    """The fan-out as a Dask graph dict, and its output key."""
    dsk: dict[str, Any] = {"root": (_one,)}
    for i in range(width):
        dsk[f"n{i}"] = (_inc, "root")
    dsk["sink"] = (_count, [f"n{i}" for i in range(width)])
    return dsk, "sink"


def dask_chain(length: int) -> tuple[dict[str, Any], str]:
    """The chain as a Dask graph dict, and its output key."""
    dsk: dict[str, Any] = {"n0": (_zero,)}
    for i in range(1, length):
        dsk[f"n{i}"] = (_inc, f"n{i - 1}")
    return dsk, f"n{length - 1}"


# -- stores ------------------------------------------------------------------------


def require_store(kind: str) -> None:
    """Skip the test when a store backend cannot be imported (yet)."""
    try:
        importlib.import_module(_MODULES[kind])
    except ImportError as exc:
        pytest.skip(f"{kind} store not importable: {exc}")


def make_store(kind: str, where: Path, codec: ValueCodec | None = None) -> Store:
    """Open a store of ``kind`` in the fresh directory ``where``."""
    require_store(kind)
    kwargs = {} if codec is None else {"codec": codec}
    if kind == "memory":
        return open_store("memory://", **kwargs)
    return open_store(f"{kind}://{where}", **kwargs)


def disk_usage(path: Path) -> tuple[int, int]:
    """(bytes allocated on disk, apparent bytes) of every file under ``path``."""
    allocated = apparent = 0
    for root, _, files in os.walk(path):
        for name in files:
            st = os.lstat(os.path.join(root, name))
            allocated += st.st_blocks * 512
            apparent += st.st_size
    return allocated, apparent


class DirMaker:
    """Fresh, distinct directories under one temporary folder."""

    def __init__(self, base: Path) -> None:
        self._base = base
        self._count = 0

    def __call__(self) -> Path:
        self._count += 1
        return self._base / f"s{self._count}"
