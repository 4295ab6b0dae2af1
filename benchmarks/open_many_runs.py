"""Opening a store that holds many runs, then reading the statuses of one of them.

What ``flowdag status RUN`` costs in store work on a JSON or FlatBuffers store of
10,000 runs: `open_store` + `Store.load_statuses` of one run + `close`. Opening
must not touch every run (it used to lock each run and rewrite its lock file).

Reproduce (before/after: point PYTHONPATH at each tree, same store, same sitting):

    python benchmarks/open_many_runs.py build /tmp/many --runs 10000
    PYTHONPATH=<tree> python benchmarks/open_many_runs.py time /tmp/many --repeat 7

``build`` writes one real run per store kind and copies its directory (without
syncing: only the layout matters here) until the store holds ``--runs`` runs.
``time`` prints the best and the median of ``--repeat`` opens, per kind, opened
read-only (``create=False``, as ``flowdag status`` does) and writable (as
``flowdag run`` does, which also lists ``runs/`` once for half-deleted runs).
"""

from __future__ import annotations

import argparse
import shutil
import statistics
import sys
import time
from pathlib import Path

KINDS = ("json", "flatbuffers")


def build(where: Path, runs: int) -> None:
    from flowdag.state import NodeRecord, NodeState, NodeStatus, RunState
    from flowdag.stores import open_store

    for kind in KINDS:
        root = where / kind
        with open_store(f"{kind}://{root}") as store:
            state = RunState("r00000", "wf", nodes={f"n{i}": NodeState() for i in range(20)})
            store.save(state)
            with store.lock("r00000"):
                for i in range(10):
                    output = store.codec.encode({"i": i})
                    store.commit(
                        "r00000", [NodeRecord(f"n{i}", NodeStatus.COMPLETED, 1, output=output)]
                    )
        first = root / "runs" / "r00000"
        for n in range(1, runs):
            shutil.copytree(first, root / "runs" / f"r{n:05d}")


def measure(where: Path, repeat: int) -> None:
    from flowdag.stores import open_store

    for kind in KINDS:
        url = f"{kind}://{where / kind}"
        runs = len(list((where / kind / "runs").iterdir()))
        for create in (False, True):  # as `flowdag status` opens it, as `flowdag run` does
            seconds = []
            for _ in range(repeat):
                start = time.perf_counter()
                with open_store(url, create=create) as store:
                    store.load_statuses("r00000")
                seconds.append(time.perf_counter() - start)
            print(
                f"{kind:12} {runs} runs, create={create!s:5}: open + load_statuses(1 run) + "
                f"close: best {min(seconds) * 1e3:.1f} ms, "
                f"median {statistics.median(seconds) * 1e3:.1f} ms"
            )


def main(argv: list[str]) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("action", choices=("build", "time"))
    parser.add_argument("where", type=Path)
    parser.add_argument("--runs", type=int, default=10_000)
    parser.add_argument("--repeat", type=int, default=7)
    args = parser.parse_args(argv)
    if args.action == "build":
        build(args.where, args.runs)
    else:
        measure(args.where, args.repeat)


if __name__ == "__main__":
    main(sys.argv[1:])
