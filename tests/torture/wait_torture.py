"""SIGKILL torture of durable waits: runs with input nodes and their providers, killed at random.

One *wait torture run* is one seed on one store: a random DAG
(`harness.make_dag`) in which a few seeded nodes are input nodes
(`INPUTS` at most; the value each takes, `given`, is fixed by its name) and
every other node outputs a number made of its deps' outputs (`expected`). Then
rounds, until the run completes: a worker process runs the workflow (it
suspends when only waits are left), killed with SIGKILL at a random moment
while ``kills`` remain; then, for each open wait, a provider process gets a
fresh key (`flowdag.reissue_key`: a killed run's key is lost), prints it and
gives the value with it, then checks that the key works no more; while
``kills`` remain it SIGKILLs itself at a random step that changes the disk
(``write``, ``rename``..., or a table transaction, before or after it). Some
providers run while the worker holds the run.

After every round, from the store opened afresh:

- the store opens and the run loads (or was never saved);
- a completed input node has no wait left and its output is its `given`
  value; a wait is open with its key entry, or answered with exactly its
  `given` value and no key entry: a value is recorded whole or not at all;
- an input node once seen waiting is waiting or completed, never both gone;
  once seen answered, it stays answered until it completes (no value lost);
- every key entry points at the open wait whose key it is (none left over);
- every completed node's output is its expected one;
- no key a process was shown is in any file of the store (only hashes are).

At the end the run is completed with every expected output and no wait left.

Run as a script it is the worker, ``wait_torture.py worker URL SEED LOG KEY``,
or a provider, ``wait_torture.py provide URL NODE VALUE KILL_AT KEY``.
"""

from __future__ import annotations

import dataclasses
import json
import logging
import os
import random
import signal
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

#: The most input nodes in one DAG.
INPUTS = 4
SCHEMA = {"type": "object", "properties": {"v": {"type": "integer"}}, "required": ["v"]}
#: What a provider may be killed at (as in the kill tests): every call that changes the disk.
CALLS = ("write", "pwrite", "fsync", "fdatasync", "ftruncate", "rename", "replace", "unlink")
#: A provider's kill point is drawn from 1 to this: it makes 5 or 6 steps (its reissue and its
#: provide transactions), so most draws kill it, a few let it finish.
PROVIDER_STEPS = 8


def input_nodes(seed: int, plans: list[harness.NodePlan]) -> set[str]:
    """The nodes that are input nodes: about one in eight, at least one, at most `INPUTS`."""
    rng = random.Random(seed ^ 0x1A9)
    count = min(INPUTS, max(1, len(plans) // 8))
    return set(rng.sample([plan.name for plan in plans], count))


def given(name: str) -> dict[str, int]:
    """The value input node ``name`` is given."""
    return {"v": 1000 + int(name[1:])}


def _weight(value: Any) -> int:
    return int(value["v"]) if isinstance(value, dict) else int(value)


def compute(name: str, inputs: dict[str, Any]) -> int:
    """A (non-input) node's output, from its inputs only."""
    return (int(name[1:]) * 7919 + sum(_weight(v) for v in inputs.values())) % (1 << 61)


def expected(plans: list[harness.NodePlan], inputs: set[str]) -> dict[str, Any]:
    """Every node's output once the run is completed, computed directly."""
    outputs: dict[str, Any] = {}
    for plan in plans:  # in topological order
        if plan.name in inputs:
            outputs[plan.name] = given(plan.name)
        else:
            outputs[plan.name] = compute(plan.name, {d: outputs[d] for d in plan.deps})
    return outputs


# -- the processes --------------------------------------------------------------------


def _prompt(**deps: Any) -> dict[str, Any]:
    return {"deps": sorted(deps), "sum": sum(_weight(v) for v in deps.values())}


def _worker(url: str, seed: int, log: str, key: str | None) -> int:
    import flowdag

    plans = harness.make_dag(seed, max_nodes=int(os.environ["TORTURE_MAX_NODES"]))
    inputs = input_nodes(seed, plans)
    harness.LOG["fd"] = os.open(log, os.O_WRONLY | os.O_APPEND | os.O_CREAT, 0o600)
    logging.getLogger("flowdag").setLevel(logging.ERROR)

    def make(plan: harness.NodePlan) -> Any:
        def node(ctx: Any) -> int:
            os.write(harness.LOG["fd"], f"{plan.name}\n".encode())
            if plan.sleep:
                time.sleep(plan.sleep)
            return compute(plan.name, dict(ctx.inputs))

        return node

    wf = flowdag.Workflow(f"wait-torture-{seed}")
    for plan in plans:
        if plan.name in inputs:
            wf.add_input(plan.name, deps=list(plan.deps), schema=SCHEMA, prompt=_prompt)
        else:
            wf.add_node(plan.name, make(plan), deps=list(plan.deps))
    scheme = url.partition("://")[0]
    workers = random.Random(seed * 31 + 7).choice((1, 2, 4, 8))
    with flowdag.open_store(url, **harness.store_options(scheme, seed, key)) as store:
        result = flowdag.run(wf, run_id=harness.RUN_ID, store=store, max_workers=workers)
    print(json.dumps([wait.key for wait in result.waits.values() if wait.key]), flush=True)
    return 0 if result.ok or result.status == "suspended" else 1


def _provider(url: str, node: str, value: str, kill_at: int, key: str | None) -> int:
    """Reissue the key of ``node``'s wait, print it, give ``value``; 3 if the key works twice."""
    import flowdag
    from flowdag.stores import lmdb_store
    from tests.stores.kill_steps import KillAt

    scheme = url.partition("://")[0]
    store = flowdag.open_store(url, create=False, **({"key": key} if key else {}))
    kill = KillAt(kill_at)
    cls = type(store)
    kill.patch(cls, "_transact_tables")
    if scheme == "lmdb":  # LMDB writes and syncs in C: kill around it
        kill.patch(lmdb_store, "put_entry")
    kill.patch(os, *CALLS)
    try:
        wait = flowdag.reissue_key(store, harness.RUN_ID, node)
    except flowdag.InputNotFoundError:
        return 0  # answered, or settled by a run, meanwhile
    assert wait.key is not None  # a reissued key is shown
    print(wait.key, flush=True)
    flowdag.provide_input(store, wait.key, json.loads(value))
    try:
        flowdag.provide_input(store, wait.key, json.loads(value))
    except flowdag.InputNotFoundError:
        return 0
    return 3


# -- the parent ---------------------------------------------------------------------


@dataclasses.dataclass
class WaitStats(harness.Summed):
    """What wait torture runs did and found."""

    runs: int = 0
    nodes: int = 0
    inputs: int = 0  # input nodes
    kills: int = 0  # worker runs killed
    provides: int = 0  # providers started
    provider_kills: int = 0  # providers that killed themselves mid-way
    checked: int = 0  # waits checked after a round
    violations: list[str] = dataclasses.field(default_factory=list)


@dataclasses.dataclass
class _Seen:
    """What the parent has seen of the waits so far, across rounds."""

    waiting: set[str] = dataclasses.field(default_factory=set)
    answered: set[str] = dataclasses.field(default_factory=set)


def _check(
    url: str,
    options: dict[str, Any],
    plans: list[harness.NodePlan],
    inputs: set[str],
    seen: _Seen,
) -> tuple[set[str], list[str], list[str]]:
    """(completed nodes, open waits, problems), checking the invariants of the docstring."""
    import flowdag
    from flowdag._wait_entries import OPEN, TABLE, decode_entry, decode_index, index_key, wait_key

    want = expected(plans, inputs)
    problems: list[str] = []
    with flowdag.open_store(url, **options) as store:
        try:
            nodes = store.load(harness.RUN_ID).nodes
        except flowdag.RunNotFoundError:
            nodes = {}
        completed = {name for name, node in nodes.items() if node.status == "completed"}
        for name in sorted(completed):
            if nodes[name].output != want[name]:
                problems.append(f"node {name} output {nodes[name].output!r}, not {want[name]!r}")
        entries = dict(store.table_scan(TABLE))
        open_waits = []
        for name in sorted(inputs):
            raw = entries.pop(wait_key(harness.RUN_ID, name), None)
            if name in completed:
                if raw is not None:
                    problems.append(f"input node {name} completed, its wait still there")
                continue
            if raw is None:
                if name in seen.waiting:
                    problems.append(f"input node {name}: its wait is gone, the node not done")
                continue
            entry = decode_entry(raw, name)
            seen.waiting.add(name)
            index = entries.pop(index_key(entry.key_hash), None)
            if entry.state == OPEN:
                open_waits.append(name)
                if name in seen.answered:
                    problems.append(f"input node {name}: its recorded value was lost")
                if index is None or decode_index(index, name) != (harness.RUN_ID, name):
                    problems.append(f"input node {name}: an open wait without its key entry")
            else:
                seen.answered.add(name)
                if index is not None:
                    problems.append(f"input node {name}: answered, its key still works")
                if entry.value != given(name) or entry.provided_at is None:
                    problems.append(f"input node {name}: half a value {entry.value!r}")
        if entries:
            problems.append(f"waits table entries left over: {sorted(entries)[:4]}")
    return completed, open_waits, problems


def _keys_in_files(root: Path, keys: set[str]) -> list[str]:
    """The keys of ``keys`` that some file under ``root`` holds in plain text."""
    if not keys:
        return []
    found: set[str] = set()
    for path in root.rglob("*"):
        if path.is_file():
            content = path.read_bytes()
            found.update(key for key in keys if key.encode() in content)
    return sorted(found)


def wait_torture(
    scheme: str,
    seed: int,
    workdir: Path,
    *,
    kills: int,
    encrypt: bool = False,
    max_nodes: int = 300,
    timeout: float = 120.0,
) -> WaitStats:
    """One wait torture run (see the module docstring); violations are collected."""
    plans = harness.make_dag(seed, max_nodes=max_nodes)
    inputs = input_nodes(seed, plans)
    stats = WaitStats(1, len(plans), len(inputs))
    store_dir, log, url, key, options, env = harness.place(
        scheme, seed, workdir, encrypt=encrypt, max_nodes=max_nodes
    )
    env["PYTHONPATH"] = str(ROOT)
    worker = [sys.executable, str(HERE), "worker", url, str(seed), str(log), key or ""]
    rng = random.Random(seed ^ 0x3A17)
    seen, shown = _Seen(), set[str]()
    open_waits: list[str] = []

    def violation(text: str) -> None:
        stats.violations.append(f"waits {scheme} seed {seed}: {text}")

    def providers() -> list[subprocess.Popen[str]]:
        started = []
        for name in open_waits:
            kill_at = rng.randint(1, PROVIDER_STEPS) if stats.provider_kills < kills else 0
            value = json.dumps(given(name))
            command = [sys.executable, str(HERE), "provide", url, name, value, str(kill_at)]
            started.append(
                subprocess.Popen(
                    [*command, key or ""], env=env, cwd=ROOT, stdout=subprocess.PIPE, text=True
                )
            )
            stats.provides += 1
        return started

    def ended(proc: subprocess.Popen[str], what: str) -> int | None:
        try:
            out, _ = proc.communicate(timeout=timeout)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.communicate()
            violation(f"the {what} made no progress before the timeout")
            return None
        if what == "worker" and proc.returncode == 0:
            shown.update(json.loads(out or "[]"))
        else:
            shown.update(out.split())
        return proc.returncode

    planned = kills
    for _ in range(4 * (kills + len(inputs)) + 10):
        proc = subprocess.Popen(worker, env=env, cwd=ROOT, stdout=subprocess.PIPE, text=True)
        along = providers() if open_waits and rng.random() < 0.5 else []  # while it holds the run
        killed = bool(planned) and harness.kill_after_some(
            proc, rng, lambda: len(harness._calls(log)), len(harness._calls(log)), len(plans) // 3
        )
        if killed:
            planned -= 1
            stats.kills += 1
        code = ended(proc, "worker")
        if code is None:
            return stats
        if not killed and code != 0:
            violation(f"a worker exited with {code}")
        for provider in along:
            stats.provider_kills += ended(provider, "provider") == -signal.SIGKILL
        try:
            completed, open_waits, problems = _check(url, options, plans, inputs, seen)
        except Exception as exc:
            violation(f"the store did not load after a round: {type(exc).__name__}: {exc}")
            return stats
        stats.checked += len(inputs)
        for problem in problems:
            violation(problem)
        if not killed and len(completed) == len(plans):
            break
        for provider in providers():
            code = ended(provider, "provider")
            stats.provider_kills += code == -signal.SIGKILL
            if code not in (0, -signal.SIGKILL, None):
                violation(f"a provider exited with {code} (3: its key worked twice)")
        try:
            completed, open_waits, problems = _check(url, options, plans, inputs, seen)
        except Exception as exc:
            violation(f"the store did not load after providing: {type(exc).__name__}: {exc}")
            return stats
        for problem in problems:
            violation(problem)
    else:
        violation(f"the run did not complete ({len(completed)} of {len(plans)} nodes)")
    if leaked := _keys_in_files(store_dir, shown):
        violation(f"{len(leaked)} keys of {len(shown)} stored in plain text")
    return stats


if __name__ == "__main__":
    if len(sys.argv) == 6 and sys.argv[1] == "worker":
        _url, _seed, _log, _key = sys.argv[2:]
        os.environ.setdefault("TORTURE_MAX_NODES", "300")
        sys.exit(_worker(_url, int(_seed), _log, _key or None))
    if len(sys.argv) == 7 and sys.argv[1] == "provide":
        _url, _node, _value, _kill_at, _key = sys.argv[2:]
        sys.exit(_provider(_url, _node, _value, int(_kill_at), _key or None))
    sys.exit("usage: wait_torture.py worker URL SEED LOG KEY | provide URL NODE VALUE KILL_AT KEY")
