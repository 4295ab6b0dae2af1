"""A node streaming 1 GiB through ``ctx.output_file()``: peak memory and write throughput.

Reproduce (all figures of one invocation are comparable; read the ratios):

    python benchmarks/stream_1gib.py --repeat 3

Each measurement runs in a fresh subprocess, because both figures are about
the whole process:

- ``store`` cases: one node writes ``--size`` bytes (default 1 GiB) to
  ``ctx.output_file()`` in ``--piece`` writes (default 1 MiB) and returns None;
  the run is on a fresh store in ``--dir``. Peak RSS is the process's high-water
  mark during ``flowdag.run`` (``VmHWM``, reset through ``/proc/self/clear_refs``
  just before it) minus its RSS just before (``VmRSS``: interpreter, flowdag, the
  opened store and the 16 MiB pool the data is cut from). Throughput is the size
  over the time ``flowdag.run`` takes, so it includes hashing, compression,
  encryption, the fsyncs and the commit of the node's record.
- ``dd``: this machine's sequential write bandwidth, measured the same way in
  the same directory: a plain file written in ``--piece`` writes from the same
  pool, then one fsync (as ``dd bs=1M conv=fsync``).

Data: ``random`` cycles through 16 MiB from ``os.urandom`` (incompressible:
zstd's window at the store's level is 2 MiB, far below the cycle); ``text``
cycles through 16 MiB of CSV-like lines that zstd shrinks about 4.4x.

Each case also reports the CPU time the process spent per GiB (all its
threads): on a machine whose cores are busy with other work, throughput
follows the CPU a process gets, and ``1 GiB / CPU time`` is what one free
core would give.

Cases are alternated within each repetition (``dd`` first), so a busy moment
of the shared machine hits one repetition of everything, not one case. The
summary prints medians, and each case's throughput as a ratio of the ``dd``
bandwidth measured in the same repetition (median of those ratios).
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

from _shapes import payload_pool  # this folder is sys.path[0] when run as a script

MiB = 1 << 20
GiB = 1 << 30
CASES = ["lmdb-random", "lmdb-text", "lmdb-encrypted-random", "lmdb-encrypted-text"]


def _status_kib(field: str) -> int:
    with open("/proc/self/status") as status:
        for line in status:
            if line.startswith(field + ":"):
                return int(line.split()[1])
    raise RuntimeError(f"no {field} in /proc/self/status")


def _reset_peak() -> None:
    with open("/proc/self/clear_refs", "w") as refs:
        refs.write("5")  # resets VmHWM to the current RSS (Linux >= 4.0)


def _pieces(pool: bytes, size: int, piece: int) -> Any:
    view = memoryview(pool)
    offset = 0
    for start in range(0, size, piece):
        n = min(piece, size - start)
        if offset + n > len(view):
            offset = 0
        yield view[offset : offset + n]
        offset += n


def _child_dd(where: Path, size: int, piece: int, data: str) -> dict[str, Any]:
    pool = payload_pool(data)
    path = where / "dd.out"
    cpu = time.process_time()
    start = time.perf_counter()
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    try:
        for chunk in _pieces(pool, size, piece):
            os.write(fd, chunk)
        os.fsync(fd)
    finally:
        os.close(fd)
    seconds = time.perf_counter() - start
    cpu = time.process_time() - cpu
    path.unlink()
    return {"seconds": seconds, "cpu": cpu}


def _child_store(case: str, where: Path, size: int, piece: int) -> dict[str, Any]:
    import flowdag
    from flowdag.stores import generate_key, open_store

    kind, *rest = case.split("-")
    data = rest[-1]
    options: dict[str, Any] = {"key": generate_key()} if "encrypted" in rest else {}
    pool = payload_pool(data)
    wf = flowdag.Workflow("stream")

    def dump(ctx: flowdag.Context) -> None:
        with ctx.output_file() as f:
            for chunk in _pieces(pool, size, piece):
                f.write(chunk)

    wf.add_node("dump", dump)
    with open_store(f"{kind}://{where / 'store'}", **options) as store:
        baseline = _status_kib("VmRSS")
        _reset_peak()
        cpu = time.process_time()
        start = time.perf_counter()
        result = flowdag.run(wf, run_id="stream", store=store)
        seconds = time.perf_counter() - start
        cpu = time.process_time() - cpu
        peak = _status_kib("VmHWM")
        if not result.ok:
            raise RuntimeError(f"the run failed: {result.errors}")
        ref = result.refs["dump"]
        assert ref.size == size, (ref.size, size)
        stored = ref.stored_size
    return {
        "seconds": seconds,
        "cpu": cpu,
        "baseline_kib": baseline,
        "peak_kib": peak,
        "stored": stored,
    }


def _measure(case: str, args: argparse.Namespace) -> dict[str, Any]:
    where = Path(tempfile.mkdtemp(prefix="stream-", dir=args.dir))
    try:
        out = subprocess.run(
            [
                sys.executable,
                __file__,
                "--child",
                case,
                "--dir",
                str(where),
                "--size",
                str(args.size),
                "--piece",
                str(args.piece),
            ],
            check=True,
            capture_output=True,
            text=True,
        )
    finally:
        shutil.rmtree(where, ignore_errors=True)
    return json.loads(out.stdout.strip().splitlines()[-1])  # type: ignore[no-any-return]


def _loadavg() -> str:
    return open("/proc/loadavg").read().split()[0]


def main(argv: list[str]) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--size", type=int, default=1024 * MiB, help="bytes the node writes")
    parser.add_argument("--piece", type=int, default=MiB, help="bytes per write")
    parser.add_argument("--repeat", type=int, default=3)
    parser.add_argument("--dir", default=None, help="where the stores go (default: $TMPDIR)")
    parser.add_argument("--cases", default=",".join(CASES), help="comma-separated")
    parser.add_argument("--child", help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    if args.child is not None:
        where = Path(args.dir)
        if args.child.startswith("dd-"):
            figures = _child_dd(where, args.size, args.piece, args.child[3:])
        else:
            figures = _child_store(args.child, where, args.size, args.piece)
        print(json.dumps(figures))
        return
    cases = args.cases.split(",")
    runs: dict[str, list[dict[str, Any]]] = {case: [] for case in ["dd", *cases]}
    ratios: dict[str, list[float]] = {case: [] for case in cases}
    size_mib = args.size / MiB
    print(f"{size_mib:,.0f} MiB per case, {args.piece} B per write, {args.repeat} repetitions")
    for rep in range(args.repeat):
        dd = _measure("dd-random", args)
        runs["dd"].append(dd)
        print(
            f"rep {rep + 1} (load {_loadavg()}): dd {size_mib / dd['seconds']:,.0f} MiB/s"
            f" (CPU {dd['cpu'] / args.size * GiB:.2f} s/GiB)"
        )
        for case in cases:
            fig = _measure(case, args)
            runs[case].append(fig)
            ratios[case].append(dd["seconds"] / fig["seconds"])
            print(
                f"  {case:24} {size_mib / fig['seconds']:8,.0f} MiB/s"
                f" ({ratios[case][-1]:.2f}x dd)  peak RSS +"
                f"{(fig['peak_kib'] - fig['baseline_kib']) / 1024:6.1f} MiB"
                f" (baseline {fig['baseline_kib'] / 1024:.1f} MiB)"
                f"  stored {fig['stored'] / MiB:,.0f} MiB"
                f"  CPU {fig['cpu'] / args.size * GiB:.2f} s/GiB"
            )
    print("medians")
    dd_median = statistics.median(size_mib / r["seconds"] for r in runs["dd"])
    print(f"  {'dd (write + fsync)':24} {dd_median:8,.0f} MiB/s")
    for case in cases:
        speed = statistics.median(size_mib / r["seconds"] for r in runs[case])
        above = statistics.median((r["peak_kib"] - r["baseline_kib"]) / 1024 for r in runs[case])
        worst = max((r["peak_kib"] - r["baseline_kib"]) / 1024 for r in runs[case])
        cpu = statistics.median(r["cpu"] / args.size * GiB for r in runs[case])
        print(
            f"  {case:24} {speed:8,.0f} MiB/s  {statistics.median(ratios[case]):.2f}x dd"
            f"  peak RSS above baseline {above:.1f} MiB (max {worst:.1f})"
            f"  CPU {cpu:.2f} s/GiB (one free core: {1024 / cpu:,.0f} MiB/s,"
            f" {1024 / cpu / dd_median:.2f}x dd)"
        )


if __name__ == "__main__":
    main(sys.argv[1:])
