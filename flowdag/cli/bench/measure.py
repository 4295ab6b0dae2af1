"""Measure the stores on this machine for ``flowdag bench``: `run_bench` and its results.

Design
------
For each store and each (nodes, payload) case, one *repetition* opens a fresh
store in a temporary directory and measures, in this order:

1. ``commit``: a durable fan-out run (root -> nodes-2 -> sink, each node
   returning ``payload`` bytes) through `flowdag.run` with 4 workers, divided by
   the node count: what checkpointing costs per node, executor included.
   Outputs above ``inline_limit`` are kept by reference (a blob each, then a
   small record): those are distinct, so each node writes its own blob;
2. ``resume``: `flowdag.run` again on the completed run: load and plan, and no
   node called (checked: no node's attempt count grew);
3. the bytes the store holds on disk (allocated blocks, as ``du`` counts;
   blobs included);
4. ``load``: `Store.load` of the run;
5. ``save``: `Store.save` of that state under another run id.

The first repetition of every case is a warm-up and is not counted (the first
touch of fresh memory and disk pages is several times slower than the rest);
each figure is the best (the least) of the counted ones, because on a shared
machine other work only ever adds time. The in-memory store is always
measured, because every commit figure is also given as a ratio to it. This
module never prints: the caller gets `BenchProgress` callbacks and a
`BenchResults`, and decides what to show (`flowdag.cli.bench.chart` draws them).
"""

from __future__ import annotations

import contextlib
import dataclasses
import json
import os
import platform
import random
import shutil
import tempfile
import time
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass, field
from datetime import datetime
from pathlib import Path
from typing import Any

import flowdag
from flowdag.cli.bench.shapes import fanout
from flowdag.dag import DAG
from flowdag.errors import FlowdagError
from flowdag.stores import Store, open_store

__all__ = [
    "DEFAULT_INLINE_LIMIT",
    "DEFAULT_NODES",
    "DEFAULT_PAYLOADS",
    "QUICK_NODES",
    "QUICK_PAYLOADS",
    "STORES",
    "WORKERS",
    "BenchProgress",
    "BenchResults",
    "BenchRow",
    "machine_info",
    "run_bench",
]

#: Store kinds in the order they are shown.
STORES = ("json", "flatbuffers", "lmdb", "memory")
DEFAULT_NODES = (1_000, 10_000)
DEFAULT_PAYLOADS = (100, 10_240)
QUICK_NODES = (1_000,)
QUICK_PAYLOADS = (100,)
WORKERS = 4
#: ``flowdag.run``'s own default: outputs encoded above it are kept by reference.
DEFAULT_INLINE_LIMIT = 256 * 1024
_RUN_ID = "bench-run"
_SAVE_ID = "bench-save"
_MB = 1_000_000


@dataclass(frozen=True, slots=True)
class BenchProgress:
    """One step of `run_bench` is about to start: ``done`` of ``total`` steps are done."""

    done: int
    total: int
    what: str


@dataclass(slots=True)
class BenchRow:
    """The figures of one store for one case (best of the counted repetitions)."""

    store: str
    nodes: int
    payload: int  # bytes returned by each node
    commit_us_per_node: float  # durable fan-out run time / nodes
    save_ms: float
    load_ms: float
    resume_ms: float
    disk_mb: float | None  # None for the in-memory store
    ratio_to_memory: float  # commit_us_per_node / the in-memory store's
    repeats: int
    refs: int = 0  # outputs of the run kept by reference (above the inline limit)


@dataclass(slots=True)
class BenchResults:
    """What `run_bench` measured, with where and how."""

    rows: list[BenchRow]
    machine: dict[str, Any]
    started_at: datetime
    seconds: float
    settings: dict[str, Any] = field(default_factory=dict)

    def to_json(self) -> dict[str, Any]:
        """Plain data for ``json.dump``."""
        return {
            "flowdag": flowdag.__version__,
            "started_at": self.started_at.isoformat(timespec="seconds"),
            "seconds": round(self.seconds, 3),
            "machine": self.machine,
            "settings": self.settings,
            "units": {
                "payload": "bytes per node output",
                "commit_us_per_node": "microseconds per node, durable fan-out run",
                "save_ms": "milliseconds",
                "load_ms": "milliseconds",
                "resume_ms": "milliseconds, run again on a completed run",
                "disk_mb": "megabytes (10^6 bytes) allocated on disk",
                "ratio_to_memory": "commit_us_per_node / the in-memory store's",
                "refs": "outputs of the run kept by reference (above inline_limit)",
            },
            "results": [dataclasses.asdict(row) for row in self.rows],
        }

    def write_json(self, path: str | os.PathLike[str]) -> Path:
        """Write `to_json` to ``path``; return the path."""
        target = Path(path)
        target.write_text(json.dumps(self.to_json(), indent=2) + "\n")
        return target


def machine_info() -> dict[str, Any]:
    """CPU model, CPU count, OS and Python: what a figure was measured on."""
    return {
        "cpu": _cpu_model(),
        "cpus": os.cpu_count() or 1,
        "system": platform.platform(terse=True),
        "python": platform.python_version(),
    }


def _cpu_model() -> str:
    try:
        with open("/proc/cpuinfo", encoding="utf-8", errors="replace") as info:
            for line in info:
                if line.startswith("model name"):
                    return line.partition(":")[2].strip()
    except OSError:
        pass
    return platform.processor() or platform.machine() or "unknown CPU"


def run_bench(
    stores: Sequence[str] = STORES,
    nodes: Sequence[int] | None = None,
    payloads: Sequence[int] | None = None,
    *,
    quick: bool = False,
    repeats: int | None = None,
    progress: Callable[[BenchProgress], None] | None = None,
    inline_limit: int | None = DEFAULT_INLINE_LIMIT,
) -> BenchResults:
    """Measure each store on each (nodes, payload) case; see the module docstring.

    Args:
        stores: store kinds among `STORES`.
        nodes: run sizes in nodes (default `DEFAULT_NODES`, or `QUICK_NODES`).
        payloads: bytes each node returns (default `DEFAULT_PAYLOADS`, or
            `QUICK_PAYLOADS`).
        quick: small defaults and one counted repetition: seconds, not a minute.
        repeats: counted repetitions per case, after one warm-up (default: 3 up
            to 2,000 nodes, 2 above, 1 when the outputs pass 50 MB or with ``quick``).
        progress: called before each step, for a progress display.
        inline_limit: outputs encoded above it are kept by reference (bytes;
            None: never), as ``flowdag.run(inline_limit=...)``.

    Raises:
        FlowdagError: an unknown store, or a size out of range.
    """
    chosen = _check_stores(stores)
    sizes = _check_sizes("nodes", nodes or (QUICK_NODES if quick else DEFAULT_NODES), 3)
    sizes_b = _check_sizes(
        "payload", payloads or (QUICK_PAYLOADS if quick else DEFAULT_PAYLOADS), 0
    )
    if inline_limit is not None:
        inline_limit = _check_sizes("inline_limit", [inline_limit], 0)[0]
    measured = [*chosen, "memory"] if "memory" not in chosen else list(chosen)
    cases = [(n, p) for n in sizes for p in sizes_b]
    plan = [(case, kind, _repeats(case, quick, repeats)) for case in cases for kind in measured]
    total = sum(1 + count for _, _, count in plan)
    started_at = datetime.now().astimezone()
    clock = time.perf_counter()
    step = 0
    best: dict[tuple[str, int, int], dict[str, Any]] = {}
    with tempfile.TemporaryDirectory(prefix="flowdag-bench-") as tmp:
        for (n, payload), kind, count in plan:
            dag = _fanout(n, payload, inline_limit)
            samples: list[dict[str, Any]] = []
            for rep in range(1 + count):  # repetition 0 is the warm-up
                if progress is not None:
                    what = "warm-up" if rep == 0 else f"{rep}/{count}"
                    progress(
                        BenchProgress(step, total, f"{kind} {n:,} nodes x {payload:,} B {what}")
                    )
                where = Path(tmp) / f"{kind}-{n}-{payload}-{rep}"
                sample = _measure(kind, dag, where, inline_limit)
                if rep > 0:
                    samples.append(sample)
                step += 1
            best[kind, n, payload] = _best(samples)
        if progress is not None:
            progress(BenchProgress(step, total, "done"))
    rows = []
    for n, payload in cases:
        baseline = best["memory", n, payload]["commit_us_per_node"]
        for kind in chosen:
            m = best[kind, n, payload]
            rows.append(
                BenchRow(
                    kind,
                    n,
                    payload,
                    m["commit_us_per_node"],
                    m["save_ms"],
                    m["load_ms"],
                    m["resume_ms"],
                    None if kind == "memory" else m["disk_mb"],
                    m["commit_us_per_node"] / baseline if baseline > 0 else float("nan"),
                    m["repeats"],
                    m["refs"],
                )
            )
    settings = {
        "stores": list(chosen),
        "nodes": list(sizes),
        "payloads": list(sizes_b),
        "quick": quick,
        "workers": WORKERS,
        "warmup_repeats": 1,
        "statistic": "best (min) of the counted repetitions",
        "shape": "fan-out: root -> nodes-2 -> sink",
        "inline_limit": inline_limit,
        "outputs": "distinct per node when above inline_limit, else one value for all",
    }
    return BenchResults(rows, machine_info(), started_at, time.perf_counter() - clock, settings)


def _check_stores(stores: Iterable[str]) -> list[str]:
    chosen: list[str] = []
    for kind in stores:
        if kind not in STORES:
            raise FlowdagError(f"unknown store {kind!r} for bench: choose from {', '.join(STORES)}")
        if kind not in chosen:
            chosen.append(kind)
    if not chosen:
        raise FlowdagError(f"no store to measure: choose from {', '.join(STORES)}")
    return chosen


def _check_sizes(what: str, values: Iterable[int], least: int) -> list[int]:
    checked = []
    for value in values:
        if isinstance(value, bool) or not isinstance(value, int) or value < least:
            raise FlowdagError(f"bench {what} must be whole numbers >= {least}, not {value!r}")
        if value not in checked:
            checked.append(value)
    return checked


def _repeats(case: tuple[int, int], quick: bool, repeats: int | None) -> int:
    if repeats is not None:
        return max(1, repeats)
    if quick:
        return 1
    n, payload = case
    if n * payload > 50 * _MB:
        return 1  # seconds per repetition: the warm-up already took the first touch
    return 3 if n <= 2_000 else 2


def _fanout(n: int, payload: int, inline_limit: int | None) -> DAG:
    """root -> n-2 nodes each returning ``payload`` bytes -> sink."""
    # Hex text: about 2x compressible, like the logs and JSON that outputs often are.
    value = random.Random(payload).randbytes((payload + 1) // 2).hex()[:payload].encode()
    # Above the limit, identical outputs would be one blob written once: each its own.
    by_reference = inline_limit is not None and payload > inline_limit
    return fanout(n - 2, value, distinct=by_reference)


def _open(kind: str, where: Path) -> Store:
    try:
        return open_store("memory://" if kind == "memory" else f"{kind}://{where}")
    except ImportError as exc:
        raise FlowdagError(f"the {kind} store is not available here: {exc}") from exc


def _measure(kind: str, dag: DAG, where: Path, inline_limit: int | None) -> dict[str, float]:
    store = _open(kind, where)
    options: dict[str, Any] = {"max_workers": WORKERS, "inline_limit": inline_limit}
    try:
        clock = time.perf_counter()
        result = flowdag.run(dag, run_id=_RUN_ID, store=store, **options)
        commit = time.perf_counter() - clock
        if not result.ok:
            raise FlowdagError(f"bench run on {kind} failed: {next(iter(result.errors.values()))}")
        clock = time.perf_counter()
        again = flowdag.run(dag, run_id=_RUN_ID, store=store, **options)
        resume = time.perf_counter() - clock
        called = _attempts(again) - _attempts(result)  # attempts are lifetime counts
        if not again.ok or called:
            raise FlowdagError(f"resuming a completed run on {kind} called {called} nodes")
        disk = _disk_bytes(where) if kind != "memory" else 0
        clock = time.perf_counter()
        state = store.load(_RUN_ID)
        load = time.perf_counter() - clock
        state.run_id = _SAVE_ID
        clock = time.perf_counter()
        store.save(state)
        save = time.perf_counter() - clock
    finally:
        store.close()
        shutil.rmtree(where, ignore_errors=True)
    return {
        "commit_us_per_node": commit / len(dag) * 1e6,
        "resume_ms": resume * 1e3,
        "load_ms": load * 1e3,
        "save_ms": save * 1e3,
        "disk_mb": disk / _MB,
        "refs": len(result.refs),
    }


def _attempts(result: flowdag.RunResult) -> int:
    return sum(node.attempts for node in result.nodes.values())


def _best(samples: list[dict[str, float]]) -> dict[str, Any]:
    merged: dict[str, Any] = {key: min(s[key] for s in samples) for key in samples[0]}
    merged["repeats"] = len(samples)
    return merged


def _disk_bytes(path: Path) -> int:
    total = 0
    for root, _, files in os.walk(path):
        for name in files:
            with contextlib.suppress(OSError):  # removed meanwhile (a compacted journal)
                total += os.lstat(os.path.join(root, name)).st_blocks * 512
    return total
