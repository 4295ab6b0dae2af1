"""What each part of flowdag's per-node work costs a 10k fan-out, against a bare thread pool.

Issue 16 asks a prebuilt 10k fan-out to run within 1.5x of a bare
``ThreadPoolExecutor`` on the memory store and 2x on LMDB. This script shows
where the rest goes: in one process, rounds alternated, each part timed after
a ``gc.collect()``, it runs the bare pool (`_shapes.run_bare`), then
``flowdag.run`` as it is, then with one part of its per-node work made
constant, then with all of them constant:

- ``meta``: the store's encoding of each node's record (`encode_meta`);
- ``seal``: sealing the completed run (`runner._seal`);
- ``fp``: the code fingerprints (`node_fingerprints`, reused from the first call);
- ``all``: those and each node's provenance (`Ledger.provenance`: code and
  input digests), but on LMDB the seal: there an unsealed run costs more, not
  less (a ledger on a disk store lets go of the states of nodes nothing reads
  and, with no seal, reads them back when the run ends: `flowdag._seal`). A
  constant provenance alone is not measured: the seal's check then finds
  every node changed and works out why, which costs more than it saves.

The parts made constant write wrong records into a throwaway store: this is a
measurement, never a way to run. Reproduce::

    PYTHONPATH=$PWD python benchmarks/per_node_parts.py memory 10000 13
    PYTHONPATH=$PWD python benchmarks/per_node_parts.py lmdb 10000 13
"""

from __future__ import annotations

import gc
import statistics
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parent))

from _shapes import run_bare
from bench_scale import leaves

import flowdag
import flowdag._ledger as ledger_module
import flowdag.runner as runner_module
import flowdag.stores.base as store_module
from flowdag._fingerprint import node_fingerprints

PARTS = ("none", "meta", "seal", "fp", "all")
_REAL = {
    "meta": store_module.encode_meta,
    "prov": ledger_module.Ledger.provenance,
    "seal": runner_module._seal,
    "fp": runner_module.node_fingerprints,
}


def _first(real: Any) -> Any:
    """``real``, answering every call with what its first call returned."""
    made: list[Any] = []

    def first(*args: Any, **kwargs: Any) -> Any:
        if not made:
            made.append(real(*args, **kwargs))
        return made[0]

    return first


def _constant(parts: str) -> None:
    """Make the parts named in ``parts`` constant, and the others real again."""
    store_module.encode_meta = _first(_REAL["meta"]) if "meta" in parts else _REAL["meta"]
    prov = _first(_REAL["prov"]) if "prov" in parts else _REAL["prov"]
    ledger_module.Ledger.provenance = prov  # type: ignore[method-assign]
    runner_module._seal = (lambda *args: None) if "seal" in parts else _REAL["seal"]
    runner_module.node_fingerprints = _first(node_fingerprints) if "fp" in parts else _REAL["fp"]


def main(kind: str, size: int, rounds: int) -> None:
    dag = leaves(size)
    every = "meta+prov+seal+fp" if kind == "memory" else "meta+prov+fp"
    times: dict[str, list[float]] = {name: [] for name in ("bare", *PARTS)}
    for _ in range(rounds):
        for name in times:
            gc.collect()
            if name == "bare":
                start = time.perf_counter()
                run_bare(dag)
                times[name].append(time.perf_counter() - start)
                continue
            _constant(every if name == "all" else name)
            with tempfile.TemporaryDirectory() as where:
                url = "memory://" if kind == "memory" else f"lmdb://{where}"
                with flowdag.open_store(url) as store:
                    start = time.perf_counter()
                    flowdag.run(dag, run_id="r", store=store, max_workers=4)
                    times[name].append(time.perf_counter() - start)
    _constant("none")
    bare = statistics.median(times["bare"][1:])  # the first round warms up
    print(f"{kind}, {size:,} leaves, medians of {rounds - 1} rounds:")
    for name, taken in times.items():
        median = statistics.median(taken[1:])
        label = {"none": "flowdag", "bare": "bare", "all": f"{every} constant"}.get(
            name, f"{name} constant"
        )
        print(f"  {label:28s} {median / size * 1e6:5.1f} us/node  {median / bare:.2f}x bare")


if __name__ == "__main__":
    main(sys.argv[1], int(sys.argv[2]), int(sys.argv[3]))
