"""SIGKILL torture of maps: runs with ``wf.map`` (cached maps, maps of maps), killed at random.

One *map torture run* is one seed on one store: a seeded plan (`make_plan`) of
a few source nodes, each returning a list (empty now and then) whose items
repeat, and a few maps over them (each source has one) or over earlier maps
(maps of maps), some with ``cache=True``, some with retries and a constant
dep; a few items fail on their first attempts (within their retries, or one
more: the map fails and a resume runs them again), and at least one such
retried item is in a cached map when the plan has one, the first of its value.
A final node gets every map's list. The run goes in a subprocess killed with
SIGKILL at random moments ``kills`` times, and is resumed until it completes.
Every item call is logged (an ``O_APPEND`` line when it is called, another
when it returns).

After every process, from the store opened afresh:

- the store opens and the run loads (or was never saved);
- if an item has a record, its map node has one holding the expansion: the
  digest of every item while it runs, the list of results once completed (or,
  failed, with a failed item); no item past the end of the list;
- every completed item's output is its function applied to its item, a
  completed map's list is the function applied to each item, in order;
- no item the store held as completed when the process started was called by it;
- for a cached map: its cache entries are exactly one per value of its completed
  items (an entry commits with its item's completion; equal items complete from
  it after), each holding that value's output; a value with an entry when the
  process started is not called by it; no value is computed twice in one process.

At the end the run is completed: each map's list is the function applied to
each item in order, the final node got them, a cached map has exactly one entry
per distinct item; the completed run re-run calls nothing, and a new run id
calls no item of a cached map (every item a hit) and adds no entry.

Run as a script it is the worker: ``map_torture.py worker URL SEED RUN_ID LOG KEY``.
"""

from __future__ import annotations

import dataclasses
import hashlib
import json
import logging
import os
import random
import subprocess
import sys
import time
from collections import Counter
from pathlib import Path
from typing import Any

HERE = Path(__file__).resolve()
ROOT = HERE.parents[2]
if str(ROOT) not in sys.path:
    sys.path.insert(0, str(ROOT))

from tests.torture import harness  # noqa: E402

#: The run id of the run made in a second run id at the end: every cached item a hit.
AGAIN = "torture-again"
CONST = 7  # the output of node "const", a dep of some maps


# -- the plan ---------------------------------------------------------------------


@dataclasses.dataclass(frozen=True)
class MapPlan:
    """One map of a plan: what it goes over and how its items behave."""

    name: str
    over: str  # a source node or an earlier map
    cached: bool
    retries: int
    salt: int
    const: bool  # takes node "const" as a dep
    sleep: float  # seconds each item takes
    fails: tuple[tuple[int, int], ...]  # (item index, how many first attempts fail)


@dataclasses.dataclass(frozen=True)
class Plan:
    """A map torture workflow: sources (name, items) and maps, in order."""

    sources: tuple[tuple[str, tuple[Any, ...]], ...]
    maps: tuple[MapPlan, ...]


def _pool(rng: random.Random, size: int) -> list[Any]:
    """``size`` distinct items of mixed types (ints, strings, small lists)."""
    return [(k, f"s{k}", [k, k % 3])[k % 3] for k in rng.sample(range(1000), size)]


def make_plan(seed: int, max_items: int = 300) -> Plan:
    """A random map workflow, the same for the same seed; at most about ``max_items`` items."""
    rng = random.Random(seed ^ 0x3A95)
    sources_count = rng.randint(1, 3)
    maps_count = rng.randint(max(2, sources_count), 6)
    per_list = max(1, min(60, max_items // maps_count))
    sources = []
    for s in range(sources_count):
        length = 0 if rng.random() < 0.12 else rng.randint(1, per_list)
        pool = _pool(rng, max(1, length // rng.choice((1, 2, 3, 5))))
        sources.append((f"src{s}", tuple(rng.choice(pool) for _ in range(length))))
    lengths = {name: len(items) for name, items in sources}
    depth = {name: 0 for name, _ in sources}
    root = {name: name for name, _ in sources}  # the source a map's items come from
    maps: list[MapPlan] = []
    for m in range(maps_count):
        deeper = [p.name for p in maps if depth[p.name] < 3]
        if m < sources_count:
            over = sources[m][0]  # each source has a map, an empty list's too
        elif deeper and rng.random() < 0.4:
            over = rng.choice(deeper)  # a map of a map
        else:
            over = rng.choice([name for name, _ in sources])
        name = f"m{m}"
        lengths[name], depth[name], root[name] = lengths[over], depth[over] + 1, root[over]
        retries = rng.choice((0, 1, 1, 2))
        fails = []
        for index in range(lengths[over]):
            if rng.random() < 0.1:
                # Within its retries mostly; one more now and then: its map fails, a resume
                # runs it again (attempts count on over the run's life).
                fails.append((index, rng.randint(1, retries) if retries else 1))
                if rng.random() < 0.2:
                    fails[-1] = (index, retries + 1)
        maps.append(
            MapPlan(
                name,
                over,
                rng.random() < 0.6,
                retries,
                rng.randrange(1 << 20),
                rng.random() < 0.3,
                rng.choice((0.0, 0.0, 0.001, 0.003)),
                tuple(fails),
            )
        )
    # A cached map whose item is retried within its retries, when there is one to make:
    # the first item of its value (equal items after it wait for it, never called).
    cached = [p for p in maps if p.cached and p.retries and lengths[p.over]]
    if cached:
        chosen = cached[random.Random(seed ^ 0x3E7).randrange(len(cached))]
        items = dict(sources)[root[chosen.over]]
        firsts = sorted({value_key(x): i for i, x in reversed(list(enumerate(items)))}.values())
        index = firsts[random.Random(seed ^ 0x3E8).randrange(len(firsts))]
        retried = (*(f for f in chosen.fails if f[0] != index), (index, 1))
        maps[maps.index(chosen)] = dataclasses.replace(chosen, fails=retried)
    return Plan(tuple(sources), tuple(maps))


def compute(plan: MapPlan, item: Any) -> dict[str, Any]:
    """Item ``item``'s output in map ``plan``: made of the item, so it gives it back."""
    return {"of": item, "by": plan.salt + (CONST if plan.const else 0)}


def value_key(item: Any) -> str:
    """A short name of an item's value: equal items, equal names."""
    return hashlib.sha256(json.dumps(item, sort_keys=True).encode()).hexdigest()[:12]


def expected_lists(plan: Plan) -> dict[str, list[Any]]:
    """Every source's and map's output in an uninterrupted run, computed directly."""
    lists: dict[str, list[Any]] = {name: list(items) for name, items in plan.sources}
    for mp in plan.maps:
        lists[mp.name] = [compute(mp, item) for item in lists[mp.over]]
    return lists


def final_output(plan: Plan, lists: dict[str, Any]) -> str:
    """What the final node returns: a digest of every map's list as it got them."""
    got = {mp.name: lists[mp.name] for mp in plan.maps}
    return hashlib.sha256(json.dumps(got, sort_keys=True).encode()).hexdigest()


# -- the worker ---------------------------------------------------------------------


def _worker(url: str, seed: int, run_id: str, log: str, key: str | None) -> int:
    import flowdag

    plan = make_plan(seed, max_items=int(os.environ["TORTURE_MAX_NODES"]))
    # Kept out of the items' closures (a closure value counts in the code fingerprint).
    harness.LOG["fd"] = os.open(log, os.O_WRONLY | os.O_APPEND | os.O_CREAT, 0o600)
    logging.getLogger("flowdag").setLevel(logging.CRITICAL)

    def make(mp: MapPlan) -> Any:
        fails, sleep = dict(mp.fails), mp.sleep

        def item_fn(item: Any, ctx: Any, const: int = 0) -> dict[str, Any]:
            index = int(ctx.node[len(mp.name) + 1 : -1])
            line = f"{mp.name} {index} {value_key(item)} {ctx.attempt}"
            os.write(harness.LOG["fd"], f"C {line}\n".encode())  # one O_APPEND write: atomic
            if sleep:
                time.sleep(sleep)
            if ctx.attempt <= fails.get(index, 0):
                raise RuntimeError(f"item {ctx.node} fails attempt {ctx.attempt}")
            os.write(harness.LOG["fd"], f"O {line}\n".encode())
            return compute(mp, item)

        return item_fn

    def source(items: tuple[Any, ...]) -> Any:
        return lambda: list(items)

    wf = flowdag.Workflow(f"map-torture-{seed}")
    for name, items in plan.sources:
        wf.add_node(name, source(items))
    wf.add_node("const", lambda: CONST)
    for mp in plan.maps:
        options: dict[str, Any] = {"retries": mp.retries, "retry_delay": 0.001}
        if mp.cached:
            options["cache"] = True
        deps = ["const"] if mp.const else []
        wf.map(mp.name, make(mp), over=mp.over, deps=deps, **options)

    def final(**lists: Any) -> str:
        return final_output(plan, lists)

    wf.add_node("final", final, deps=[mp.name for mp in plan.maps])
    scheme = url.partition("://")[0]
    workers = random.Random(seed * 31 + 7).choice((1, 2, 4, 8))
    with flowdag.open_store(url, **harness.store_options(scheme, seed, key)) as store:
        try:
            result = flowdag.run(wf, run_id=run_id, store=store, max_workers=workers)
        except Exception as exc:
            print(f"{type(exc).__name__}: {exc}", file=sys.stderr, flush=True)
            return 3
    return 0 if result.ok else 1


# -- the parent ---------------------------------------------------------------------


@dataclasses.dataclass
class MapStats(harness.Summed):
    """What map torture runs did and found."""

    runs: int = 0
    maps: int = 0
    items: int = 0
    cached: int = 0  # items of cached maps
    repeats: int = 0  # of those, items equal to an earlier item of their map
    empty: int = 0  # maps over an empty list
    kills: int = 0
    calls: int = 0  # item calls, failed attempts included
    computed: int = 0  # calls of cached maps' items that returned
    hits: int = 0  # cached maps' items completed without a call of their own
    failed_runs: int = 0  # processes that ended with a failed map (then resumed)
    checked: int = 0  # stores checked after a process ended
    violations: list[str] = dataclasses.field(default_factory=list)


@dataclasses.dataclass
class _Seen:
    """What the store held after a process: completed items, cached maps' entry values."""

    completed: set[str] = dataclasses.field(default_factory=set)
    entries: dict[str, set[str]] = dataclasses.field(default_factory=dict)  # map -> value keys
    run_saved: bool = False


def _log_lines(log: Path) -> list[list[str]]:
    return [line.split() for line in log.read_text().splitlines()] if log.exists() else []


def _check(
    url: str, options: dict[str, Any], plan: Plan, lists: dict[str, list[Any]], run_id: str
) -> tuple[_Seen, list[str]]:
    """What the store holds, and what is wrong with it (the invariants of the docstring)."""
    import flowdag
    from flowdag._cache_entries import cache_entries
    from flowdag._digests import output_digest
    from flowdag.stores.transfer import same_value

    problems: list[str] = []
    seen = _Seen()
    with flowdag.open_store(url, **options) as store:
        try:
            nodes = store.load(run_id).nodes
            seen.run_saved = True
        except flowdag.RunNotFoundError:
            nodes = {}
        codec = store.codec
        for mp in plan.maps:
            items, want = lists[mp.over], lists[mp.name]
            prefix = f"{mp.name}["
            records = {
                int(name[len(prefix) : -1]): state
                for name, state in nodes.items()
                if name.startswith(prefix) and name.endswith("]")
            }
            done_values: set[str] = set()
            for index, state in sorted(records.items()):
                if index >= len(items):
                    problems.append(f"item {mp.name}[{index}] past the end of {len(items)} items")
                    continue
                if state.status == "completed":
                    seen.completed.add(f"{mp.name}[{index}]")
                    done_values.add(value_key(items[index]))
                    if not same_value(compute(mp, items[index]), state.output):
                        problems.append(f"item {mp.name}[{index}] output {state.output!r}")
            node = nodes.get(mp.name)
            if records and node is None:
                problems.append(f"items of map {mp.name} stored without the map's record")
            elif records and node is not None:
                if node.status == "running":
                    digests = [output_digest(codec, codec.encode(x), x) for x in items]
                    if node.output != digests:
                        problems.append(f"map {mp.name} running without its expansion")
                elif node.status == "failed":
                    if not any(state.status == "failed" for state in records.values()):
                        problems.append(f"map {mp.name} failed with no failed item")
                elif node.status != "completed":
                    problems.append(f"map {mp.name} is {node.status} with items stored")
            if node is not None and node.status == "completed":
                if not same_value(want, node.output):
                    problems.append(f"map {mp.name} completed with a wrong list")
                done = [i for i, state in records.items() if state.status == "completed"]
                if len(done) != len(items):
                    problems.append(f"map {mp.name} completed without all its items completed")
            if not mp.cached:
                continue
            found: Counter[str] = Counter()
            for key, entry in cache_entries(store, mp.name):
                value = codec.decode(entry.output)
                of = value.get("of") if isinstance(value, dict) else None
                if of is None or not same_value(compute(mp, of), value):
                    problems.append(f"cache entry {key} of map {mp.name} holds {value!r}")
                    continue
                found[value_key(of)] += 1
            if twice := sorted(v for v, n in found.items() if n > 1):
                problems.append(f"map {mp.name}: values with two cache entries {twice[:4]}")
            if set(found) != done_values:
                problems.append(
                    f"map {mp.name}: cache entries for {len(set(found) - done_values)} values "
                    f"with no completed item, none for {len(done_values - set(found))} "
                    "completed values"
                )
            seen.entries[mp.name] = set(found)
        final = nodes.get("final")
        got = final_output(plan, lists)
        if final is not None and final.status == "completed" and final.output != got:
            problems.append("node final got wrong lists")
    return seen, problems


def _segment_calls(
    lines: list[list[str]], plan: Plan, before: _Seen, violation: Any
) -> tuple[int, int]:
    """Check one process's log lines against what the store held when it started:
    (calls, calls of cached maps' items that returned)."""
    cached = {mp.name for mp in plan.maps if mp.cached}
    calls = [line for line in lines if line[0] == "C"]
    again = sorted({f"{m}[{i}]" for _, m, i, _, _ in calls} & before.completed)
    if again:
        violation(f"completed items were called again: {again[:6]}")
    hits = sorted({f"{m}:{v}" for _, m, _, v, _ in calls if v in before.entries.get(m, ())})
    if hits:
        violation(f"values with a cache entry were called again: {hits[:6]}")
    returned = Counter((m, v) for kind, m, _, v, _ in lines if kind == "O" and m in cached)
    if twice := sorted(f"{m}:{v}" for (m, v), n in returned.items() if n > 1):
        violation(f"values computed twice in one run: {twice[:6]}")
    return len(calls), sum(returned.values())


def map_torture(
    scheme: str,
    seed: int,
    workdir: Path,
    *,
    kills: int,
    encrypt: bool = False,
    max_nodes: int = 300,
    timeout: float = 120.0,
    rerun: bool = True,
) -> MapStats:
    """One map torture run (see the module docstring); violations are collected."""
    plan = make_plan(seed, max_items=max_nodes)
    lists = expected_lists(plan)
    stats = MapStats(1, len(plan.maps), sum(len(lists[mp.name]) for mp in plan.maps))
    for mp in plan.maps:
        stats.empty += not lists[mp.over]
        if mp.cached:
            keys = [value_key(x) for x in lists[mp.over]]
            stats.cached += len(keys)
            stats.repeats += len(keys) - len(set(keys))
    _, log, url, key, options, env = harness.place(
        scheme, seed, workdir, encrypt=encrypt, max_nodes=max_nodes
    )
    rng = random.Random(seed ^ 0x3A9)

    def violation(text: str) -> None:
        stats.violations.append(f"maps {scheme} seed {seed}: {text}")

    def command(run_id: str) -> list[str]:
        return [sys.executable, str(HERE), "worker", url, str(seed), run_id, str(log), key or ""]

    may_fail = any(n > mp.retries for mp in plan.maps for _, n in mp.fails)
    before, planned, returned = _Seen(), kills, set[str]()
    for _ in range(kills + 2 * max(1, len(plan.maps)) + 4):
        mark = len(_log_lines(log))
        proc = subprocess.Popen(
            command(harness.RUN_ID), env=env, cwd=ROOT, stderr=subprocess.PIPE, text=True
        )
        killed = bool(planned) and harness.kill_after_some(
            proc, rng, lambda: len(_log_lines(log)), mark, stats.items // 3
        )
        if killed:
            planned -= 1
            stats.kills += 1
        try:
            _, err = proc.communicate(timeout=timeout)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.communicate()
            violation("the run made no progress before the timeout")
            return stats
        lines = _log_lines(log)[mark:]
        calls, computed = _segment_calls(lines, plan, before, violation)
        stats.calls += calls
        stats.computed += computed
        returned.update(f"{m}[{i}]" for kind, m, i, _, _ in lines if kind == "O")
        try:
            seen, problems = _check(url, options, plan, lists, harness.RUN_ID)
        except Exception as exc:
            violation(f"the store did not load after a process: {type(exc).__name__}: {exc}")
            return stats
        stats.checked += 1
        for problem in problems:
            violation(problem)
        if lost := sorted(before.completed - seen.completed):
            violation(f"completed items were lost: {lost[:6]}")
        if before.run_saved and not seen.run_saved:
            violation("the run disappeared from the store")
        before = seen
        if killed:
            continue
        if proc.returncode == 1:
            stats.failed_runs += 1  # a map failed (an item past its retries): resume it
            if not may_fail:
                violation("a map failed though every item fails within its retries")
            continue
        if proc.returncode != 0:
            last = (err or "").strip().splitlines()[-1:] or [""]
            violation(f"a run exited with {proc.returncode}: {last[0][:300]}")
            continue
        break
    else:
        violation("the run did not complete")
        return stats
    _final(plan, lists, url, options, returned, stats, violation)
    if rerun:
        _rerun(plan, lists, url, options, log, command, env, timeout, violation)
    return stats


def _final(
    plan: Plan,
    lists: dict[str, list[Any]],
    url: str,
    options: dict[str, Any],
    returned: set[str],
    stats: MapStats,
    violation: Any,
) -> None:
    """The end: everything completed, one entry per distinct value."""
    import flowdag
    from flowdag.stores.transfer import same_value

    with flowdag.open_store(url, **options) as store:
        nodes = store.load(harness.RUN_ID).nodes
    if any(state.status != "completed" for state in nodes.values()):
        violation("the final run left nodes not completed")
    for mp in plan.maps:
        node = nodes.get(mp.name)
        if node is None or not same_value(lists[mp.name], node.output):
            violation(f"map {mp.name}'s final list is not its function on each item")
    if nodes.get("final") is None or nodes["final"].output != final_output(plan, lists):
        violation("node final did not get every map's list")
    seen, _ = _check(url, options, plan, lists, harness.RUN_ID)
    for mp in plan.maps:
        if mp.cached:
            distinct = {value_key(x) for x in lists[mp.over]}
            if seen.entries.get(mp.name) != distinct:
                violation(f"map {mp.name} has not one cache entry per distinct item")
            names = {f"{mp.name}[{i}]" for i in range(len(lists[mp.over]))}
            stats.hits += len(names - returned)


def _rerun(
    plan: Plan,
    lists: dict[str, list[Any]],
    url: str,
    options: dict[str, Any],
    log: Path,
    command: Any,
    env: dict[str, str],
    timeout: float,
    violation: Any,
) -> None:
    """The completed run re-run calls nothing; a new run id calls no item of a cached
    map (each a hit) and leaves the cache entries as they were."""
    before, _ = _check(url, options, plan, lists, harness.RUN_ID)
    for run_id in (harness.RUN_ID, AGAIN):
        mark = len(_log_lines(log))
        done = subprocess.run(command(run_id), env=env, cwd=ROOT, timeout=timeout)
        lines = _log_lines(log)[mark:]
        if done.returncode not in (0, 1):
            violation(f"the run of run id {run_id!r} at the end exited with {done.returncode}")
        if run_id == harness.RUN_ID and (done.returncode != 0 or lines):
            violation("re-running the completed run called items or failed")
        cached = {mp.name for mp in plan.maps if mp.cached}
        if hit := sorted({f"{m}[{i}]" for _, m, i, _, _ in lines if m in cached}):
            violation(f"a new run id called items of cached maps: {hit[:6]}")
    after, problems = _check(url, options, plan, lists, AGAIN)
    for problem in problems:
        violation(f"run id {AGAIN!r}: {problem}")
    if after.entries != before.entries:
        violation("a new run id changed the cache entries")


if __name__ == "__main__":
    if len(sys.argv) == 7 and sys.argv[1] == "worker":
        _url, _seed, _run_id, _log, _key = sys.argv[2:]
        os.environ.setdefault("TORTURE_MAX_NODES", "300")
        sys.exit(_worker(_url, int(_seed), _run_id, _log, _key or None))
    sys.exit("usage: map_torture.py worker URL SEED RUN_ID LOG KEY")
