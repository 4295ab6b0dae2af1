"""SIGKILL torture: random DAGs run in real subprocesses, killed at random moments, resumed.

One *torture run* is one seed on one store:

1. A seeded generator makes a DAG of 20-300 nodes (`make_dag`): random fan-in,
   a few hub nodes with a wide fan-out, outputs of mixed types and sizes (some
   kilobytes, so journals compact often; a few of `BIG` bytes, above the
   default inline limit, so they are kept by reference in the store's blob
   area), ``ctx.data`` keys set and deleted.
2. The same workflow runs in a subprocess (this file run as a script) on a
   disk store; the journaled stores get a tiny ``compact_min_bytes`` so that
   compactions happen every few commits. Every node call is logged to an
   ``O_APPEND`` file before the node does anything else.
3. The parent kills the process with SIGKILL at a random moment: after a
   random delay from the start (startup, planning, the first save), or a few
   node calls further plus a random few milliseconds (amid commits and
   compactions). Then it checks the store (`check_after_kill`) and starts the
   process again, several times, and finally lets it finish.

After every kill: the store opens and the run loads (or was never saved);
no node that the store held as completed before the process started was called
by it; every completed node is still completed and its output is the expected
one (an output kept by reference is read through its `Ref`, the blob checked
against its hash: its blob was durable before its record). After the final
resume: every output and ``ctx.data`` equal those of an uninterrupted run
computed directly (`expected`), and a re-run calls nothing.

With ``lose_snapshot`` (journaled stores), the snapshot of the run is deleted
once, after a kill that left completed nodes, as a lost or half-restored file
would be: the run must then be listed and refused (`CorruptStateError`), and a
resume must fail without calling any node (never adopting the journal left
behind); the run is then deleted and started afresh, and checked as above.
On LMDB, the same flag rewrites the run once, after such a kill, in the
layout of the release before (LMDB layout 1, keys hashed from the names):
the next resume moves it to layout 2 in its first commit, under kills, and is
checked as above.

Evidence of where kills landed is counted from the files a kill leaves: a
journal with a torn tail (killed mid-commit) and a leftover snapshot temp file
(killed mid-compaction).

Run as a script it is the worker: ``harness.py worker URL SEED LOG [KEY]``.
``scripts/torture.py`` drives long runs; ``test_torture.py`` the short ones.
"""

from __future__ import annotations

import dataclasses
import logging
import os
import random
import signal
import subprocess
import sys
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any, NamedTuple, Self

HERE = Path(__file__).resolve()
ROOT = HERE.parents[2]
STORES = ("lmdb", "json", "flatbuffers")
RUN_ID = "torture"
TEST_KEY = "8f" * 32  # a fixed 256-bit key for the encrypted torture runs
BIG = 300 * 1024  # payload bytes of the nodes whose outputs are kept by reference


# -- the random DAG -------------------------------------------------------------------


@dataclasses.dataclass(frozen=True)
class NodePlan:
    """One node of a generated DAG: its deps and what its output looks like."""

    name: str
    deps: tuple[str, ...]
    kind: int  # which shape of output (see compute); 6: above the inline limit
    size: int  # payload bytes for the byte-heavy kinds
    sleep: float  # seconds the node takes
    deletes: tuple[str, ...]  # ctx.data keys of upstream nodes it deletes


def make_dag(seed: int, min_nodes: int = 20, max_nodes: int = 300) -> list[NodePlan]:
    """A random DAG in topological order, the same for the same seed."""
    rng = random.Random(seed)
    count = rng.randint(min_nodes, max_nodes)
    hubs: list[int] = []
    plans: list[NodePlan] = []
    for i in range(count):
        deps: set[int] = set()
        if i:
            fan_in = rng.choice((0, 1, 1, 2, 2, 3, 4, 6))
            deps.update(rng.randrange(i) for _ in range(fan_in))
            if hubs and rng.random() < 0.4:  # hubs give a wide fan-out
                deps.add(rng.choice(hubs))
        if rng.random() < 0.08:
            hubs.append(i)
        kind = rng.randrange(6)
        size = rng.choice((0, 16, 200, 1500, 6000)) if kind in (3, 4) else 0
        deletes = tuple(f"tmp-{plans[d].name}" for d in sorted(deps) if rng.random() < 0.3)
        plans.append(
            NodePlan(
                f"n{i}",
                tuple(f"n{d}" for d in sorted(deps)),
                kind,
                size,
                rng.choice((0.0, 0.0, 0.001, 0.003, 0.008)),
                deletes,
            )
        )
    # A few slow nodes, long enough for a start record, so kills find attempts in
    # flight (shown interrupted), and a few big outputs (the middle node's always),
    # kept by reference. Drawn apart: the DAG of a seed stays the same.
    slow, big = random.Random(seed * 7 + 3), random.Random(seed * 11 + 5)
    plans = [
        dataclasses.replace(plan, sleep=0.08) if slow.random() < 0.03 else plan for plan in plans
    ]
    return [
        dataclasses.replace(plan, kind=6, size=BIG)
        if big.random() < 0.02 or i == len(plans) // 2
        else plan
        for i, plan in enumerate(plans)
    ]


def compute(plan: NodePlan, inputs: dict[str, Any], salt: int = 0) -> tuple[Any, dict[str, Any]]:
    """A node's output and the ``ctx.data`` keys it sets, from its inputs (and ``salt``) only."""
    digest = sum(_weight(inputs[d]) for d in plan.deps) % (1 << 61)
    index = int(plan.name[1:])
    base = (index * 7919 + digest + salt) % (1 << 61)
    output: Any
    if plan.kind == 0:
        output = base
    elif plan.kind == 1:
        output = {"node": plan.name, "sum": base, "deps": list(plan.deps)}
    elif plan.kind == 2:
        output = (plan.name, base, -1.5, None, True)
    elif plan.kind == 3:  # compressible
        output = bytes([base % 251]) * plan.size
    elif plan.kind == 4:  # incompressible
        output = random.Random(base).randbytes(plan.size)
    elif plan.kind == 6:  # above the inline limit: a Ref in the store, half compressible
        output = {
            "node": plan.name,
            "sum": base,
            "rows": random.Random(base).randbytes(plan.size // 2).hex(),
        }
    else:
        output = [str(base), {"nested": (base % 97, frozenset({index}))}]
    data = {f"k-{plan.name}": base % 1000, f"tmp-{plan.name}": [index]}
    return output, data


def _weight(value: Any) -> int:
    if isinstance(value, int):
        return value
    if isinstance(value, bytes):
        return len(value) + (value[0] if value else 0)
    if isinstance(value, dict):
        return int(value["sum"])
    if isinstance(value, tuple):
        return int(value[1])
    return int(value[0])


def expected(
    plans: list[NodePlan], salts: dict[str, int] | None = None
) -> tuple[dict[str, Any], dict[str, Any]]:
    """Outputs and ``ctx.data`` of an uninterrupted run, computed directly."""
    outputs: dict[str, Any] = {}
    data: dict[str, Any] = {}
    salt = salts or {}
    for plan in plans:  # plans are in topological order
        output, sets = compute(plan, {d: outputs[d] for d in plan.deps}, salt.get(plan.name, 0))
        outputs[plan.name] = output
        # A node's changes land after its deps' (it starts after they commit).
        for key in plan.deletes:
            data.pop(key, None)
        data.update(sets)
    # Deletes by a node and sets by another unrelated node never touch one key:
    # a node deletes only tmp- keys of its own deps, which nothing else sets.
    for plan in plans:
        for key in plan.deletes:
            data.pop(key, None)
    return outputs, data


# -- the worker (this file as a script) -----------------------------------------------


def store_options(scheme: str, seed: int, key: str | None) -> dict[str, Any]:
    """Constructor options: tiny compaction floors make compactions frequent."""
    options: dict[str, Any] = {}
    if scheme in ("json", "flatbuffers"):
        options["compact_min_bytes"] = random.Random(seed).choice((256, 2048, 16384))
    if key:
        options["key"] = key
    return options


#: The worker's call log descriptor.
LOG: dict[str, int] = {}


def _worker(url: str, seed: int, log: str, key: str | None) -> int:
    import flowdag

    plans = make_dag(seed, max_nodes=int(os.environ["TORTURE_MAX_NODES"]))
    # Kept out of the nodes' closures: a closure value counts in the code
    # fingerprint, and a descriptor number is no code.
    LOG["fd"] = os.open(log, os.O_WRONLY | os.O_APPEND | os.O_CREAT, 0o600)
    logging.getLogger("flowdag").setLevel(logging.ERROR)  # plan counts by type: said once

    def make(plan: NodePlan) -> Callable[..., Any]:
        def node(ctx: Any) -> Any:
            os.write(LOG["fd"], f"{plan.name}\n".encode())  # one small O_APPEND write: atomic
            if plan.sleep:
                time.sleep(plan.sleep)
            output, sets = compute(plan, dict(ctx.inputs))
            for name in plan.deletes:
                ctx.data.pop(name, None)
            ctx.data.update(sets)
            return output

        return node

    wf = flowdag.Workflow(f"torture-{seed}")
    for plan in plans:
        wf.add_node(plan.name, make(plan), deps=list(plan.deps))
    scheme = url.partition("://")[0]
    workers = random.Random(seed * 31 + 7).choice((1, 2, 4, 8))
    with flowdag.open_store(url, **store_options(scheme, seed, key)) as store:
        result = flowdag.run(wf, run_id=RUN_ID, store=store, max_workers=workers)
    return 0 if result.ok else 1


# -- the parent ---------------------------------------------------------------------


class Summed:
    """Figures of torture runs (a dataclass of counts and ``violations``), added up."""

    violations: list[str]

    def add(self, other: Self) -> None:
        for field in dataclasses.fields(self):  # type: ignore[arg-type]  # a dataclass's
            if field.name == "violations":
                self.violations.extend(other.violations)
            else:
                setattr(self, field.name, getattr(self, field.name) + getattr(other, field.name))


class Place(NamedTuple):
    """Where one torture run keeps its store and call log, and how its processes open it."""

    store_dir: Path
    log: Path
    url: str
    key: str | None
    options: dict[str, Any]
    env: dict[str, str]


def place(scheme: str, seed: int, workdir: Path, *, encrypt: bool, max_nodes: int) -> Place:
    """The `Place` of a run in ``workdir`` (made here), its key if ``encrypt``."""
    workdir.mkdir(parents=True, exist_ok=True)
    store_dir = workdir / "store"
    key = TEST_KEY if encrypt else None
    return Place(
        store_dir,
        workdir / "calls.log",
        f"{scheme}://{store_dir}",
        key,
        store_options(scheme, seed, key),
        {**os.environ, "TORTURE_MAX_NODES": str(max_nodes)},
    )


def kill_after_some(
    proc: subprocess.Popen[Any], rng: random.Random, made: Callable[[], int], start: int, most: int
) -> bool:
    """SIGKILL ``proc`` once ``made()`` (calls so far) reaches ``start`` and 1 to ``most``
    more, or at a random moment of up to 1.5 s, a few milliseconds later; whether it
    was killed (it may have ended first)."""
    target = start + rng.randint(1, max(1, most))
    deadline = time.monotonic() + rng.uniform(0.05, 1.5)
    while proc.poll() is None and time.monotonic() < deadline:
        if made() >= target:
            break
        time.sleep(0.0005)
    time.sleep(rng.choice((0.0, 0.001, 0.005)))
    if proc.poll() is not None:
        return False
    proc.send_signal(signal.SIGKILL)
    return True


@dataclasses.dataclass
class Stats(Summed):
    """What torture runs did and found."""

    runs: int = 0
    kills: int = 0
    segments: int = 0  # processes started, killed or not
    nodes: int = 0  # nodes over all runs
    torn_tails: int = 0  # kills that left a torn journal record: mid-commit
    mid_compaction: int = 0  # kills that left a snapshot temp file or two journals
    not_saved_yet: int = 0  # kills before the run was first saved
    in_flight: int = 0  # nodes called but not completed when killed: run again (at-least-once)
    interrupted: int = 0  # of those, nodes whose start record was stored (shown interrupted)
    lost_snapshots: int = 0  # snapshots deleted after a kill, refused as they must be
    old_layouts: int = 0  # LMDB runs rewritten in the previous release's layout after a kill
    refs: int = 0  # completed outputs kept by reference, read through their Ref after kills
    sealed: int = 0  # kills after which the run was sealed (`flowdag._seal`): all completed
    violations: list[str] = dataclasses.field(default_factory=list)


def _calls(log: Path) -> list[str]:
    return log.read_text().split() if log.exists() else []


def _check_interrupted(
    state: Any, called: list[str], stats: Stats, violation: Callable[[str], None]
) -> None:
    """Nodes stored as running after a kill: attempts that were in flight, started, unfinished."""
    for name, node in state.nodes.items():
        if node.status != "running":
            continue
        stats.interrupted += 1
        if node.attempts < 1 or node.started_at is None or node.finished_at is not None:
            violation(f"node {name} is stored as running without a started attempt: {node}")
        if node.output is not None or node.error is not None:
            violation(f"node {name} is stored as running with an output or error")
        # Every attempt counted was launched, and the node's first act is to log its
        # call, 50 ms before its start record is written: only a thread starved that
        # long could leave the attempt in flight not logged yet, hence the one spare.
        if node.attempts > called.count(name) + 1:
            violation(f"node {name} is stored at attempt {node.attempts} but was called less")


def _leftovers(store_dir: Path) -> tuple[bool, bool]:
    """(torn journal tail, snapshot temp file or a stale journal) in the run's directory."""
    from flowdag.stores._framing import read_journal

    run_dir = store_dir / "runs" / RUN_ID
    torn = temp = False
    if run_dir.is_dir():
        journals = [e for e in run_dir.iterdir() if e.name.startswith("journal-")]
        temp = len(journals) > 1
        for entry in run_dir.iterdir():
            if entry.name.startswith(".") and entry.name.endswith(".tmp"):
                temp = True
            elif entry.name.startswith("journal-"):
                content = entry.read_bytes()
                try:
                    _, _, end = read_journal(content)
                except ValueError:
                    continue  # a damaged journal shows up as a failed load
                torn = torn or end != len(content)
    return torn, temp


def _snapshot_lost(
    url: str,
    options: dict[str, Any],
    store_dir: Path,
    command: list[str],
    env: dict[str, str],
    log: Path,
    timeout: float,
    violation: Callable[[str], None],
) -> bool:
    """Delete the run's snapshot: it must be listed, refused, not resumed; then delete the run."""
    import flowdag

    run_dir = store_dir / "runs" / RUN_ID
    for snapshot in run_dir.glob("snapshot.*"):
        snapshot.unlink()
    journals = list(run_dir.glob("journal-*"))
    with flowdag.open_store(url, **options) as store:
        if journals and RUN_ID not in store.list_runs():
            violation("a run whose snapshot was lost vanished from list_runs")
        try:
            store.load(RUN_ID)
        except flowdag.CorruptStateError:
            pass
        except flowdag.RunNotFoundError:
            if journals:
                violation("a run whose snapshot was lost but not its journal was not found")
        else:
            violation("a run whose snapshot was lost loaded")
            return False
    called = len(_calls(log))
    resumed = subprocess.run(command, env=env, cwd=ROOT, timeout=timeout, capture_output=True)
    if journals and (resumed.returncode == 0 or len(_calls(log)) != called):
        violation("a resume after a lost snapshot ran (it adopted the journal left behind)")
        return False
    with flowdag.open_store(url, **options) as store:
        store.delete(RUN_ID)
    return True


def _to_old_layout(url: str, options: dict[str, Any]) -> None:
    """Rewrite the LMDB run as the release of layout 1 left its runs (hashed keys)."""
    from flowdag.stores import open_store
    from tests.stores.lmdb_layout1 import to_layout1

    with open_store(url, create=False, **options) as store:
        to_layout1(store, RUN_ID)  # type: ignore[arg-type]


def _sealed(url: str, options: dict[str, Any]) -> bool:
    """Whether the store holds a seal of the run that is good (`flowdag._seal`)."""
    import flowdag

    with flowdag.open_store(url, **options) as store:
        try:
            return store._sealed(RUN_ID) is not None
        except flowdag.RunNotFoundError:
            return False


def _load(url: str, options: dict[str, Any]) -> tuple[Any, dict[str, Any]]:
    """The stored run (None if it was never saved) and its outputs, each read through
    its `Ref` when it is kept by reference. Any other error propagates."""
    import flowdag

    with flowdag.open_store(url, **options) as store:
        try:
            state = store.load(RUN_ID)
        except flowdag.RunNotFoundError:
            return None, {}
        values = {
            name: node.output.load() if type(node.output) is flowdag.Ref else node.output
            for name, node in state.nodes.items()
        }
        return state, values


def torture(
    scheme: str,
    seed: int,
    workdir: Path,
    *,
    kills: int,
    encrypt: bool = False,
    max_nodes: int = 300,
    timeout: float = 120.0,
    rerun: bool = True,
    lose_snapshot: bool = False,
) -> Stats:
    """One torture run (see the module docstring); violations are collected, not raised."""
    from flowdag.stores.transfer import same_value

    plans = make_dag(seed, max_nodes=max_nodes)
    plans_by_name = {plan.name: plan for plan in plans}
    outputs, data = expected(plans)
    stats = Stats(runs=1, nodes=len(plans))
    store_dir, log, url, key, options, env = place(
        scheme, seed, workdir, encrypt=encrypt, max_nodes=max_nodes
    )
    rng = random.Random(seed ^ 0x5EED)
    command = [sys.executable, str(HERE), "worker", url, str(seed), str(log), key or ""]
    violations = stats.violations

    def violation(text: str) -> None:
        violations.append(f"{scheme} seed {seed}: {text}")

    stored_done: set[str] = set()
    planned_kills = kills
    while True:
        mark = len(_calls(log))
        proc = subprocess.Popen(command, env=env, cwd=ROOT)
        stats.segments += 1
        deadline = time.monotonic() + timeout
        if planned_kills:
            remaining = max(1, len(plans) - len(stored_done))
            if rng.random() < 0.25:  # a random delay: startup, planning, the first save...
                delay = time.monotonic() + rng.uniform(0.0, 1.0)
                target = mark + max(1, remaining // 2)  # ...but never past mid-run
            else:  # some calls further in, then a few milliseconds more
                delay = 0.0
                target = mark + rng.randint(1, max(1, remaining // 3))
            while proc.poll() is None and time.monotonic() < deadline:
                if (delay and time.monotonic() >= delay) or len(_calls(log)) >= target:
                    break
                time.sleep(0.0005)
            if not delay:
                time.sleep(rng.choice((0.0, 0.0005, 0.002, 0.006, 0.015)))
        killed = False
        if planned_kills and proc.poll() is None:
            proc.send_signal(signal.SIGKILL)
            killed = True
            planned_kills -= 1
            stats.kills += 1
        try:
            proc.wait(timeout=max(1.0, deadline - time.monotonic()))
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()
            violation("the run made no progress before the timeout")
            return stats
        if killed and scheme != "lmdb":
            torn, temp = _leftovers(store_dir)
            stats.torn_tails += torn
            stats.mid_compaction += temp

        ran = _calls(log)[mark:]
        again = sorted(set(ran) & stored_done)
        if again:
            violation(f"completed nodes were called again: {again[:10]}")
        try:
            state, values = _load(url, options)
        except Exception as exc:  # the store must always load, every blob it points at too
            violation(f"the store did not load after a kill: {type(exc).__name__}: {exc}")
            return stats
        if state is None:
            stats.not_saved_yet += killed
            if stored_done:
                violation("the run disappeared from the store")
            done: set[str] = set()
        else:
            done = {n for n, s in state.nodes.items() if s.status == "completed"}
            if _sealed(url, options):  # a seal says a full plan would run nothing
                stats.sealed += 1
                if len(done) != len(plans):
                    violation("a seal on a run that is not completed")
            if killed:
                stats.in_flight += len(set(ran) - done)
                _check_interrupted(state, _calls(log), stats, violation)
            lost = sorted(stored_done - done)
            if lost:
                violation(f"completed nodes were lost: {lost[:10]}")
            for name in done:
                if not same_value(values[name], outputs[name]):
                    violation(f"node {name} has a wrong output")
                by_ref = type(state.nodes[name].output).__name__ == "Ref"
                stats.refs += by_ref
                if by_ref != (plans_by_name[name].kind == 6):
                    violation(f"node {name} is kept {'by reference' if by_ref else 'inline'}")
        stored_done = done
        if killed and lose_snapshot and done and scheme == "lmdb":
            lose_snapshot = False  # the next resume moves the run to layout 2, under kills
            stats.old_layouts += 1
            _to_old_layout(url, options)
        if killed and lose_snapshot and done and scheme != "lmdb":
            lose_snapshot = False
            stats.lost_snapshots += 1
            if not _snapshot_lost(url, options, store_dir, command, env, log, timeout, violation):
                return stats
            stored_done = set()  # the run was deleted: it starts afresh
            continue
        if not killed:
            if proc.returncode != 0:
                violation(f"the final resume exited with {proc.returncode}")
            break

    # The final state: everything completed, outputs and data as computed directly.
    state, values = _load(url, options)
    if state is None:
        violation("the finished run is not in the store")
        return stats
    if {n: s.status for n, s in state.nodes.items()} != {p.name: "completed" for p in plans}:
        violation("not every node completed")
    for name, node in state.nodes.items():
        # Kills lose attempts in flight (they have no end), never reorder or repeat one.
        numbers = [attempt.number for attempt in node.history]
        if not numbers or numbers != sorted(set(numbers)) or numbers[-1] != node.attempts:
            violation(f"node {name} has a broken history {numbers} (attempts {node.attempts})")
    if not same_value(values, outputs):
        violation("the final outputs differ from an uninterrupted run")
    if not same_value(state.data, data):
        violation("the final ctx.data differs from an uninterrupted run")
    if not _sealed(url, options):
        violation("the completed run is not sealed")
    if not rerun:
        return stats
    # A completed run re-run calls nothing.
    called = len(_calls(log))
    rerun = subprocess.run(command, env=env, cwd=ROOT, timeout=timeout)
    if rerun.returncode != 0 or len(_calls(log)) != called:
        violation("re-running the completed run called nodes or failed")
    return stats


if __name__ == "__main__":
    if len(sys.argv) == 6 and sys.argv[1] == "worker":
        _url, _seed, _log, _key = sys.argv[2:]
        os.environ.setdefault("TORTURE_MAX_NODES", "300")
        sys.exit(_worker(_url, int(_seed), _log, _key or None))
    sys.exit("usage: harness.py worker URL SEED LOG KEY")
