"""Shared pieces of the benchmark suites: DAG shapes, the bare baseline, stores, Dask graphs.

Not a benchmark itself; the ``bench_*.py`` files import it (pytest puts this
folder on ``sys.path``). The DAG shapes (``fanout``, ``chain``, ``grid``) are
defined once, in `flowdag.cli.bench.shapes`, which ``flowdag bench`` uses too.
"""

from __future__ import annotations

import importlib
import os
import random
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

import pytest

import flowdag
from flowdag.cli.bench.shapes import SHAPES as SHAPES  # re-exported: one definition
from flowdag.cli.bench.shapes import chain as chain
from flowdag.cli.bench.shapes import fanout as fanout
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


# -- the bare baseline ----------------------------------------------------------------


def run_bare(dag: flowdag.DAG) -> dict[str, Any]:
    """The baseline: submit each node in topological order once its deps are done."""
    futures: dict[str, Any] = {}
    with ThreadPoolExecutor(WORKERS) as pool:
        for name in dag.nodes:
            spec = dag.specs[name]
            inputs = {dep: futures[dep].result() for dep in spec.deps}
            binding = spec.binding
            if binding is None:
                futures[name] = pool.submit(spec.fn, **inputs)
            else:  # constant arguments (``args=``), passed as a hand-written call passes them
                futures[name] = pool.submit(spec.fn, *binding.args, **binding.kwargs, **inputs)
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


# -- output payloads -----------------------------------------------------------------

POOL = 16 << 20


def payload_pool(data: str) -> bytes:
    """16 MiB to cut outputs from: ``random`` (incompressible) or ``text``.

    ``text`` is CSV-like lines that zstd shrinks about 4.4x. ``random`` stays
    incompressible when cycled through: zstd's window at the blob area's level
    (2 MiB) is far shorter than the pool.
    """
    if data == "random":
        return os.urandom(POOL)
    words = [b"alpha", b"beta", b"gamma", b"delta", b"42", b"2026-11-30", b"ok", b"error"]
    rng = random.Random(7)
    lines, size = [], 0
    while size < POOL:
        line = b",".join(rng.choice(words) for _ in range(8)) + b",%d\n" % rng.randrange(10**6)
        lines.append(line)
        size += len(line)
    return b"".join(lines)[:POOL]
