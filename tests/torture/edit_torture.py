"""SIGKILL torture of a change-aware resume: a completed run, its code edited, resumed under kills.

One *edit torture run* is one seed on one store:

1. A random DAG (`harness.make_dag`) runs to the end in a subprocess, unkilled.
2. A seeded tenth of its nodes is edited (their ``version=`` is bumped); half
   of those also compute another output, the other half the same one.
3. The edited workflow resumes in a subprocess killed with SIGKILL at random
   moments ``kills`` times, then runs to the end.

The nodes that must run are known in advance: the edited ones, and those with
a dep whose output changed (an edited node keeping its output cuts off its
downstream: early cutoff). After every kill: the store loads; each completed
node holds its old or its new output, and a node outside the set holds its
old record untouched; no node outside the set was called. At the end: every
output is the new one, every node of the set was called and no other, and
each record says why: ``code_changed`` for edited nodes and ``input_changed``
below them (``interrupted`` for a node a kill caught in flight), the first
run's reason for the rest.

Run as a script it is the worker: ``edit_torture.py worker URL SEED LOG KEY EDITED``
(EDITED: 0 for the first run, 1 for the edited code).
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


def edits(seed: int, plans: list[harness.NodePlan]) -> tuple[set[str], dict[str, int]]:
    """The edited nodes of a seed, and the salts of those whose output changes."""
    rng = random.Random(seed ^ 0xED17)
    edited = set(rng.sample([plan.name for plan in plans], max(1, len(plans) // 10)))
    salts = {name: 1 for name in sorted(edited) if rng.random() < 0.5}
    return edited, salts


def must_run(
    plans: list[harness.NodePlan], edited: set[str], old: dict[str, Any], new: dict[str, Any]
) -> set[str]:
    """Edited nodes, and those with a dep whose output changed."""
    from flowdag.stores.transfer import same_value

    changed = {name for name in old if not same_value(old[name], new[name])}
    return edited | {plan.name for plan in plans if changed.intersection(plan.deps)}


# -- the worker ---------------------------------------------------------------------


def _worker(url: str, seed: int, log: str, key: str | None, edited_code: bool) -> int:
    import flowdag

    plans = harness.make_dag(seed, max_nodes=int(os.environ["TORTURE_MAX_NODES"]))
    # Out of the closures, as in harness: a descriptor number is no code.
    harness.LOG["fd"] = os.open(log, os.O_WRONLY | os.O_APPEND | os.O_CREAT, 0o600)
    logging.getLogger("flowdag").setLevel(logging.ERROR)  # plan counts by type: said once
    edited, salts = edits(seed, plans) if edited_code else (set(), {})

    def make(plan: harness.NodePlan, salt: int) -> Any:
        def node(ctx: Any) -> Any:
            os.write(harness.LOG["fd"], f"{plan.name}\n".encode())
            if plan.sleep:
                time.sleep(plan.sleep)
            output, sets = harness.compute(plan, dict(ctx.inputs), salt)
            ctx.data.update(sets)
            return output

        return node

    wf = flowdag.Workflow(f"edit-torture-{seed}")
    for plan in plans:
        version = 2 if plan.name in edited else None
        wf.add_node(
            plan.name, make(plan, salts.get(plan.name, 0)), deps=list(plan.deps), version=version
        )
    scheme = url.partition("://")[0]
    workers = random.Random(seed * 31 + 7).choice((1, 2, 4, 8))
    with flowdag.open_store(url, **harness.store_options(scheme, seed, key)) as store:
        result = flowdag.run(wf, run_id=harness.RUN_ID, store=store, max_workers=workers)
    return 0 if result.ok else 1


# -- the parent ---------------------------------------------------------------------


@dataclasses.dataclass
class EditStats(harness.Summed):
    """What edit torture runs did and found."""

    runs: int = 0
    nodes: int = 0
    edited: int = 0  # nodes whose code was edited
    must_run: int = 0  # nodes that had to run again: edited, or an input changed
    cut_off: int = 0  # nodes below an edited node that were kept: early cutoff
    kills: int = 0
    violations: list[str] = dataclasses.field(default_factory=list)


def edit_torture(
    scheme: str,
    seed: int,
    workdir: Path,
    *,
    kills: int,
    encrypt: bool = False,
    max_nodes: int = 300,
    timeout: float = 120.0,
) -> EditStats:
    """One edit torture run (see the module docstring); violations are collected."""
    import networkx as nx

    from flowdag.stores.transfer import same_value

    plans = harness.make_dag(seed, max_nodes=max_nodes)
    edited, salts = edits(seed, plans)
    old, _ = harness.expected(plans)
    new, _ = harness.expected(plans, salts)
    needed = must_run(plans, edited, old, new)
    graph = nx.DiGraph([(dep, plan.name) for plan in plans for dep in plan.deps])
    below = set().union(*(nx.descendants(graph, n) for n in edited if n in graph))
    stats = EditStats(1, len(plans), len(edited), len(needed), len(below - needed))
    _, log, url, key, options, env = harness.place(
        scheme, seed, workdir, encrypt=encrypt, max_nodes=max_nodes
    )
    rng = random.Random(seed ^ 0xC0DE)

    def violation(text: str) -> None:
        stats.violations.append(f"edit {scheme} seed {seed}: {text}")

    def command(edited_code: bool) -> list[str]:
        flag = "1" if edited_code else "0"
        return [sys.executable, str(HERE), "worker", url, str(seed), str(log), key or "", flag]

    first = subprocess.run(command(False), env=env, cwd=ROOT, timeout=timeout)
    if first.returncode != 0:
        violation(f"the first run exited with {first.returncode}")
        return stats
    before, _ = harness._load(url, options)
    mark = len(harness._calls(log))
    planned = kills
    while True:
        proc = subprocess.Popen(command(True), env=env, cwd=ROOT)
        killed = bool(planned) and harness.kill_after_some(
            proc, rng, lambda: len(harness._calls(log)), len(harness._calls(log)), len(needed) // 2
        )
        if killed:
            planned -= 1
            stats.kills += 1
        try:
            proc.wait(timeout=timeout)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()
            violation("the resume made no progress before the timeout")
            return stats
        stray = sorted(set(harness._calls(log)[mark:]) - needed)
        if stray:
            violation(f"nodes that had no reason to run were called: {stray[:10]}")
        try:
            state, values = harness._load(url, options)
        except Exception as exc:
            violation(f"the store did not load after a kill: {type(exc).__name__}: {exc}")
            return stats
        for name, node in state.nodes.items():
            if node.status != "completed":
                if name not in needed:
                    violation(f"node {name}, kept by the edit, is {node.status}")
                continue
            if not (same_value(values[name], new[name]) or same_value(values[name], old[name])):
                violation(f"node {name} holds neither its old nor its new output")
            if name not in needed and node != before.nodes[name]:
                violation(f"node {name}, kept by the edit, has a rewritten record")
        if not killed:
            if proc.returncode != 0:
                violation(f"the final resume exited with {proc.returncode}")
            break
    state, values = harness._load(url, options)
    if not same_value(values, new):
        violation("the final outputs differ from those of the edited code")
    called = set(harness._calls(log)[mark:])
    if called != needed:
        violation(f"nodes that had to run were not called: {sorted(needed - called)[:10]}")
    for name, node in state.nodes.items():
        code = node.provenance.reason.code if node.provenance and node.provenance.reason else None
        allowed = (
            {"code_changed", "interrupted"}
            if name in edited
            else {"input_changed", "interrupted"}
            if name in needed
            else {"new"}
        )
        if code not in allowed:
            violation(f"node {name} says {code}, not one of {sorted(allowed)}")
    return stats


if __name__ == "__main__":
    if len(sys.argv) == 7 and sys.argv[1] == "worker":
        _url, _seed, _log, _key, _edited = sys.argv[2:]
        os.environ.setdefault("TORTURE_MAX_NODES", "300")
        sys.exit(_worker(_url, int(_seed), _log, _key or None, _edited == "1"))
    sys.exit("usage: edit_torture.py worker URL SEED LOG KEY EDITED")
