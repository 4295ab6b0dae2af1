"""Bytes an LMDB store writes per node: a fan-out run on a fresh store, in a subprocess.

Reproduce (issue 16, "compact per-run node numbering")::

    PYTHONPATH=$PWD python benchmarks/bench_lmdb_writes.py --sizes 1000,10000,100000

To compare two trees, run it with ``PYTHONPATH=<tree>`` (alternate them in one
sitting: the machine is shared). For each N, in a fresh subprocess: a
``source`` and N leaves ``leaf{i}`` that need it (``bench_scale.py``'s shape),
``flowdag.run`` on a fresh LMDB store with 4 workers, and around the run:

- ``wchar`` and ``write_bytes`` of ``/proc/self/io`` (bytes the process
  handed to ``write``/``pwrite``, and bytes that reached the block layer:
  0 on tmpfs), divided by N;
- the write transactions (LMDB's ``last_txnid``): how many group commits;
- the size of ``data.mdb`` and the pages of the ``nodes`` and ``outputs``
  sub-databases (``mdb_stat``'s figures, through py-lmdb) after the run;
- wall and CPU time of the run.

``--names hashed`` names the leaves by a hash of their number instead
(``leaf-3f2a...``): names whose order has nothing to do with the order the
nodes run in, as with random ids.
"""

from __future__ import annotations

import argparse
import hashlib
import json
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

HERE = Path(__file__).resolve().parent
WORKERS = 4


def _io() -> dict[str, int]:
    with open("/proc/self/io") as file:
        return {k: int(v) for k, v in (line.split(":") for line in file)}


def hashed_leaves(size: int) -> Any:
    """``bench_scale.leaves`` with each leaf named by a hash of its number."""
    from bench_scale import leaf

    from flowdag.workflow import Workflow

    wf = Workflow(f"hashed-{size}")
    wf.add_node("source", lambda: 1)
    for i in range(size):
        name = "leaf-" + hashlib.blake2b(b"%d" % i, digest_size=8).hexdigest()
        wf.add_node(name, lambda source, i=i: leaf(i, source), deps=["source"])
    return wf.build()


def part(size: int, where: str, names: str = "ordered") -> dict[str, Any]:
    sys.path.insert(0, str(HERE))
    from bench_scale import leaves

    import flowdag

    dag = leaves(size) if names == "ordered" else hashed_leaves(size)
    with flowdag.open_store(f"lmdb://{where}") as store:
        env = store._shared.env  # type: ignore[attr-defined]
        txn_before = env.info()["last_txnid"]
        before = _io()
        wall, cpu = time.perf_counter(), time.process_time()
        assert flowdag.run(dag, run_id="w", store=store, max_workers=WORKERS).ok
        wall, cpu = time.perf_counter() - wall, time.process_time() - cpu
        after = _io()
        txns = env.info()["last_txnid"] - txn_before
        pages = {}
        with env.begin() as txn:
            for name in (b"nodes", b"outputs"):
                stat = txn.stat(env.open_db(name, txn=txn, create=False))
                pages[name.decode()] = stat["leaf_pages"] + stat["branch_pages"]
    return {
        "nodes": size,
        "wchar": (after["wchar"] - before["wchar"]) / size,
        "write_bytes": (after["write_bytes"] - before["write_bytes"]) / size,
        "txns": txns,
        "file": os.path.getsize(Path(where) / "data.mdb"),
        "pages": pages,
        "wall": wall,
        "cpu": cpu,
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=(__doc__ or "").split("\n\n")[0])
    parser.add_argument("--sizes", default="1000,10000,100000")
    parser.add_argument("--dir", help="where the stores go (default: a temporary folder)")
    parser.add_argument("--names", choices=["ordered", "hashed"], default="ordered")
    args = parser.parse_args()
    with tempfile.TemporaryDirectory(dir=args.dir) as base:
        print(
            "| N | written per node (wchar) | to disk per node | commits | data.mdb "
            "| nodes+outputs pages | run wall | run CPU |"
        )
        print("|---|---|---|---|---|---|---|---|")
        for size in (int(s) for s in args.sizes.split(",")):
            code = (
                f"import json, sys; sys.path.insert(1, {str(HERE)!r}); "
                f"import bench_lmdb_writes as b; "
                f"print(json.dumps(b.part({size}, {base + f'/s{size}'!r}, {args.names!r})))"
            )
            done = subprocess.run(
                [sys.executable, "-c", code], capture_output=True, text=True, cwd=base
            )
            if done.returncode:
                sys.exit(done.stderr)
            row = json.loads(done.stdout.strip().splitlines()[-1])
            pages = row["pages"]["nodes"] + row["pages"]["outputs"]
            print(
                f"| {size:,} | {row['wchar'] / 1024:,.1f} KiB "
                f"| {row['write_bytes'] / 1024:,.1f} KiB "
                f"| {row['txns']:,} | {row['file'] / 2**20:,.1f} MiB | {pages:,} "
                f"| {row['wall']:.2f} s | {row['cpu']:.2f} s |",
                flush=True,
            )


if __name__ == "__main__":
    main()
