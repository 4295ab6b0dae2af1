"""SIGKILL torture of kv updates: runs whose nodes update shared counters, killed at random.

One *kv torture run* is one seed on one store: a random DAG
(`harness.make_dag`) whose every node adds 1, through ``ctx.kv.update``, to
a seeded subset of `COUNTERS` (each counter has its own updaters), sets
``done:NODE``, and, for a few nodes, sets ``big:NODE`` to a value above the
inline limit (kept in a blob). It runs in a subprocess killed with SIGKILL at
random moments ``kills`` times, then runs to the end. After every kill, from
the store opened afresh:

- each counter equals the number of completed nodes that update it, and
  ``done:NODE`` is there exactly for the completed nodes: a node's kv writes
  are durable exactly when its completion is, never twice;
- each completed node's big value reads back through its blob.

At the end the run is completed and each counter is the number of its
updaters: one update per node, none lost or applied twice.

Run as a script it is the worker: ``kv_torture.py worker URL SEED LOG KEY``.
"""

from __future__ import annotations

import dataclasses
import logging
import os
import random
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

HERE = Path(__file__).resolve()
ROOT = HERE.parents[2]
if str(ROOT) not in sys.path:
    sys.path.insert(0, str(ROOT))

from tests.torture import harness  # noqa: E402

COUNTERS = ("c0", "c1", "c2", "c3", "c4")
BIG = "big value " * 30_000  # ~300 KB: above the inline limit


def plan_updates(seed: int, plans: list[harness.NodePlan]) -> dict[str, tuple[str, ...]]:
    """The counters each node updates (at least one), the same for the same seed."""
    rng = random.Random(seed ^ 0x4B56)
    return {
        plan.name: tuple(sorted(rng.sample(COUNTERS, rng.randint(1, len(COUNTERS)))))
        for plan in plans
    }


def big_nodes(seed: int, plans: list[harness.NodePlan]) -> set[str]:
    """The nodes that set a big value: about one in fifteen, at least one."""
    rng = random.Random(seed ^ 0xB16)
    return set(rng.sample([plan.name for plan in plans], max(1, len(plans) // 15)))


def expected(updates: dict[str, tuple[str, ...]], completed: set[str]) -> dict[str, int]:
    """What each counter must hold once the nodes of ``completed`` have completed."""
    return {counter: sum(counter in updates[name] for name in completed) for counter in COUNTERS}


# -- the worker ---------------------------------------------------------------------


def _worker(url: str, seed: int, log: str, key: str | None) -> int:
    import flowdag

    plans = harness.make_dag(seed, max_nodes=int(os.environ["TORTURE_MAX_NODES"]))
    updates, big = plan_updates(seed, plans), big_nodes(seed, plans)
    harness.LOG["fd"] = os.open(log, os.O_WRONLY | os.O_APPEND | os.O_CREAT, 0o600)
    logging.getLogger("flowdag").setLevel(logging.ERROR)

    def make(plan: harness.NodePlan) -> Any:
        counters, sets_big = updates[plan.name], plan.name in big

        def node(ctx: Any) -> None:
            os.write(harness.LOG["fd"], f"{plan.name}\n".encode())
            if plan.sleep:
                time.sleep(plan.sleep)
            for counter in counters:
                ctx.kv.update(counter, lambda old: (old or 0) + 1)
            ctx.kv.set(f"done:{ctx.node}", True)
            if sets_big:
                ctx.kv.set(f"big:{ctx.node}", BIG)

        return node

    wf = flowdag.Workflow(f"kv-torture-{seed}")
    for plan in plans:
        wf.add_node(plan.name, make(plan), deps=list(plan.deps))
    scheme = url.partition("://")[0]
    workers = random.Random(seed * 31 + 7).choice((1, 2, 4, 8))
    with flowdag.open_store(url, **harness.store_options(scheme, seed, key)) as store:
        result = flowdag.run(wf, run_id=harness.RUN_ID, store=store, max_workers=workers)
    return 0 if result.ok else 1


# -- the parent ---------------------------------------------------------------------


@dataclasses.dataclass
class KVStats(harness.Summed):
    """What kv torture runs did and found."""

    runs: int = 0
    nodes: int = 0
    updates: int = 0  # counter updates a run makes: one per node and counter it updates
    kills: int = 0
    checked: int = 0  # counters checked after kills
    big: int = 0  # big values read back through their blobs after kills
    violations: list[str] = dataclasses.field(default_factory=list)


def _check(
    url: str, options: dict[str, Any], updates: dict[str, tuple[str, ...]], big: set[str]
) -> tuple[set[str], dict[str, int], list[str], int]:
    """The completed nodes, the counters, what is wrong with the done marks and big values,
    and how many big values read back."""
    import flowdag

    with flowdag.open_store(url, **options) as store:
        try:
            nodes = store.load(harness.RUN_ID).nodes
        except flowdag.RunNotFoundError:
            nodes = {}
        completed = {name for name, node in nodes.items() if node.status == "completed"}
        kv = store.kv()
        counters = {counter: kv.get(counter, default=0) for counter in COUNTERS}
        problems = []
        marked = {key.removeprefix("done:") for key, _ in kv.items("done:")}
        if marked != completed:
            problems.append(f"done marks {sorted(marked ^ completed)[:5]} disagree with the run")
        read = 0
        for name in sorted(big & completed):
            if kv.get(f"big:{name}") != BIG:
                problems.append(f"big value of node {name} does not read back")
            read += 1
        return completed, counters, problems, read


def kv_torture(
    scheme: str,
    seed: int,
    workdir: Path,
    *,
    kills: int,
    encrypt: bool = False,
    max_nodes: int = 300,
    timeout: float = 120.0,
) -> KVStats:
    """One kv torture run (see the module docstring); violations are collected."""
    plans = harness.make_dag(seed, max_nodes=max_nodes)
    updates, big = plan_updates(seed, plans), big_nodes(seed, plans)
    stats = KVStats(1, len(plans), sum(map(len, updates.values())))
    _, log, url, key, options, env = harness.place(
        scheme, seed, workdir, encrypt=encrypt, max_nodes=max_nodes
    )
    command = [sys.executable, str(HERE), "worker", url, str(seed), str(log), key or ""]
    rng = random.Random(seed ^ 0x7E57)

    def violation(text: str) -> None:
        stats.violations.append(f"kv {scheme} seed {seed}: {text}")

    planned = kills
    while True:
        proc = subprocess.Popen(command, env=env, cwd=ROOT)
        killed = bool(planned) and harness.kill_after_some(
            proc, rng, lambda: len(harness._calls(log)), len(harness._calls(log)), len(plans) // 3
        )
        if killed:
            planned -= 1
            stats.kills += 1
        try:
            proc.wait(timeout=timeout)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()
            violation("the run made no progress before the timeout")
            return stats
        try:
            completed, counters, problems, read = _check(url, options, updates, big)
        except Exception as exc:
            violation(f"the store did not load after a kill: {type(exc).__name__}: {exc}")
            return stats
        stats.checked += len(COUNTERS)
        stats.big += read
        for problem in problems:
            violation(problem)
        want = expected(updates, completed)
        if counters != want:
            where = "at the end" if not killed else f"after kill {stats.kills}"
            violation(f"counters {counters} {where}, not {want} ({len(completed)} completed)")
        if not killed:
            if proc.returncode != 0:
                violation(f"the final run exited with {proc.returncode}")
            elif completed != {plan.name for plan in plans}:
                violation(f"the final run left {len(plans) - len(completed)} nodes undone")
            break
    return stats


if __name__ == "__main__":
    if len(sys.argv) == 6 and sys.argv[1] == "worker":
        _url, _seed, _log, _key = sys.argv[2:]
        os.environ.setdefault("TORTURE_MAX_NODES", "300")
        sys.exit(_worker(_url, int(_seed), _log, _key or None))
    sys.exit("usage: kv_torture.py worker URL SEED LOG KEY")
