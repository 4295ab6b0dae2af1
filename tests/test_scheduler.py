"""The pure scheduling parts (ReadySet, PoolGate, TimerHeap, Schedule), driven by hand."""

from __future__ import annotations

from typing import Any

import pytest

from flowdag import DAG, Workflow
from flowdag.scheduler import PoolGate, ReadySet, Schedule, TimerHeap


def _any(**kwargs: Any) -> int:
    return 1


def _dag(deps: dict[str, list[str]]) -> DAG:
    wf = Workflow("w")
    for name, node_deps in deps.items():
        wf.add_node(name, _any, deps=node_deps)
    return wf.build()


DIAMOND = {"a": [], "b": ["a"], "c": ["a"], "d": ["b", "c"]}
# Two diamonds sharing a bottom node, plus an independent node.
DOUBLE_DIAMOND = {
    "a": [],
    "b": ["a"],
    "c": ["a"],
    "d": ["b", "c"],
    "e": ["d"],
    "f": ["d"],
    "g": ["e", "f"],
    "solo": [],
}
# A slow chain next to a fast one: c needs only a, d needs only b.
TWO_CHAINS = {"a": [], "b": [], "c": ["a"], "d": ["b"], "e": ["c", "d"]}


def _drain(ready: ReadySet, fail: set[str] = frozenset()) -> tuple[list[list[str]], list[str]]:
    """Drive to the end: each step takes all ready nodes. Returns (steps, skipped)."""
    steps, skipped = [], []
    while ready.has_ready():
        step = ready.take()
        steps.append(step)
        for name in step:
            if name in fail:
                skipped.extend(ready.fail(name))
            else:
                ready.done(name)
    return steps, skipped


# -- table: which nodes run and which are skipped ------------------------------------

CASES: list[tuple[str, dict[str, list[str]], set[str], set[str], list[list[str]], set[str]]] = [
    # (id, deps, completed at start, failing, steps, skipped)
    ("diamond", DIAMOND, set(), set(), [["a"], ["b", "c"], ["d"]], set()),
    ("diamond-root-fails", DIAMOND, set(), {"a"}, [["a"]], {"b", "c", "d"}),
    ("diamond-one-side-fails", DIAMOND, set(), {"b"}, [["a"], ["b", "c"]], {"d"}),
    ("diamond-both-sides-fail", DIAMOND, set(), {"b", "c"}, [["a"], ["b", "c"]], {"d"}),
    ("diamond-resumed", DIAMOND, {"a", "b"}, set(), [["c"], ["d"]], set()),
    ("diamond-all-done", DIAMOND, {"a", "b", "c", "d"}, set(), [], set()),
    (
        "double-diamond-fail-top",
        DOUBLE_DIAMOND,
        set(),
        {"b"},
        [["a", "solo"], ["b", "c"]],
        {"d", "e", "f", "g"},
    ),
    (
        "double-diamond-fail-middle",
        DOUBLE_DIAMOND,
        set(),
        {"e"},
        [["a", "solo"], ["b", "c"], ["d"], ["e", "f"]],
        {"g"},
    ),
    (
        # b completed before this call; a runs again and fails: the skip walk
        # stops at b (c, ready from the start, runs), and takes d through a.
        "reused-node-below-a-failure",
        {"a": [], "b": ["a"], "c": ["b"], "d": ["a", "c"]},
        {"b"},
        {"a"},
        [["a", "c"]],
        {"d"},
    ),
    (
        "double-diamond-resumed-from-d",
        DOUBLE_DIAMOND,
        {"a", "b", "c", "d", "solo"},
        set(),
        [["e", "f"], ["g"]],
        set(),
    ),
]


@pytest.mark.parametrize(
    ("deps", "completed", "failing", "steps", "skipped"),
    [case[1:] for case in CASES],
    ids=[case[0] for case in CASES],
)
def test_ready_set(
    deps: dict[str, list[str]],
    completed: set[str],
    failing: set[str],
    steps: list[list[str]],
    skipped: set[str],
) -> None:
    ready = ReadySet(_dag(deps), completed=completed)
    got_steps, got_skipped = _drain(ready, failing)
    assert got_steps == steps
    # Each skipped node is reported once, by the first failure that reaches it.
    assert sorted(got_skipped) == sorted(skipped)
    assert ready.blocked == 0
    ran = {name for step in got_steps for name in step}
    assert ran.isdisjoint(completed)
    assert ran | completed | skipped == set(deps)


def test_fail_returns_descendants_once() -> None:
    ready = ReadySet(_dag(DIAMOND))
    assert ready.take() == ["a"]
    ready.done("a")
    assert ready.take() == ["b", "c"]
    assert sorted(ready.fail("b")) == ["d"]
    assert ready.fail("c") == []  # d already skipped
    assert not ready.has_ready()
    assert ready.blocked == 0


def test_fail_skips_the_whole_subtree_but_not_siblings() -> None:
    ready = ReadySet(_dag(DOUBLE_DIAMOND))
    assert ready.take() == ["a", "solo"]
    assert sorted(ready.fail("a")) == ["b", "c", "d", "e", "f", "g"]
    ready.done("solo")
    assert ready.take() == []
    assert ready.blocked == 0


def test_done_after_a_dependent_was_skipped_does_not_revive_it() -> None:
    ready = ReadySet(_dag(TWO_CHAINS))
    assert ready.take() == ["a", "b"]
    assert sorted(ready.fail("a")) == ["c", "e"]
    ready.done("b")
    assert ready.take() == ["d"]
    ready.done("d")
    assert ready.take() == []  # e was skipped: d's completion must not make it ready


def test_node_becomes_ready_when_its_own_deps_are_done() -> None:
    # Not level by level: b finishing releases d while a (same level) still runs.
    ready = ReadySet(_dag(TWO_CHAINS))
    assert ready.take() == ["a", "b"]
    ready.done("b")
    assert ready.take() == ["d"]
    ready.done("d")
    assert ready.take() == []  # e still waits for c
    assert ready.blocked == 2  # c and e
    ready.done("a")
    assert ready.take() == ["c"]
    ready.done("c")
    assert ready.take() == ["e"]


def test_take_with_limit_hands_out_in_order() -> None:
    deps = {name: [] for name in ["d", "c", "b", "a"]}
    ready = ReadySet(_dag(deps))
    assert ready.take(0) == []
    assert ready.take(1) == ["a"]
    assert ready.take(2) == ["b", "c"]
    assert ready.has_ready()
    assert ready.take(10) == ["d"]
    assert not ready.has_ready()
    assert ready.take() == []


def test_completed_at_start() -> None:
    ready = ReadySet(_dag(TWO_CHAINS), completed=["a", "c"])
    assert ready.take() == ["b"]
    assert ready.blocked == 2  # d, e
    ready.done("b")
    assert ready.take() == ["d"]
    ready.done("d")
    assert ready.take() == ["e"]


def test_duplicate_dependency_is_released_by_one_done() -> None:
    wf = Workflow("w")
    wf.add_node("a", _any)
    wf.add_node("b", _any, deps=["a", "a"])
    ready = ReadySet(wf.build())
    assert ready.take() == ["a"]
    ready.done("a")
    assert ready.take() == ["b"]


def test_wide_fan_in() -> None:
    deps: dict[str, list[str]] = {f"n{i:02}": [] for i in range(20)}
    deps["sink"] = list(deps)
    ready = ReadySet(_dag(deps))
    roots = ready.take()
    assert len(roots) == 20
    for name in roots[:-1]:
        ready.done(name)
        assert not ready.has_ready()
    ready.done(roots[-1])
    assert ready.take() == ["sink"]


# -- PoolGate ---------------------------------------------------------------------------

# Nodes a1..a3 and r1 are in pool "db" (cap 1 or 2), b1 b2 in "api" (cap 1), x in
# no pool, u in a pool without a cap (never limited).
POOL_OF = {
    "a1": "db",
    "a2": "db",
    "a3": "db",
    "r1": "db",
    "b1": "api",
    "b2": "api",
    "x": None,
    "u": "gpu",
}

# Steps: ("admit", node, admitted?), ("release", node), ("next", node or None);
# after each step, the gate's parked nodes must be as listed.
GATE_CASES: dict[str, tuple[dict[str, int], list[tuple[Any, ...]]]] = {
    "nodes without a capped pool always pass": (
        {"db": 1},
        [("admit", "x", True), ("admit", "x", True), ("admit", "u", True), ("next", None)],
    ),
    "a full pool parks, oldest first": (
        {"db": 1},
        [
            ("admit", "a1", True),
            ("admit", "a2", False, ["a2"]),
            ("admit", "a3", False, ["a2", "a3"]),
            ("next", None, ["a2", "a3"]),
            ("release", "a1", ["a2", "a3"]),
            ("next", "a2", ["a3"]),
            ("next", None, ["a3"]),
            ("release", "a2", ["a3"]),
            ("next", "a3", []),
            ("next", None),
        ],
    ),
    # The stranded-node bug: a pool freed while the caller had no room stays open.
    "a freed pool stays open until its parked nodes are taken": (
        {"db": 1},
        [
            ("admit", "a1", True),
            ("admit", "a2", False, ["a2"]),
            ("release", "a1", ["a2"]),
            # the caller had no free slot in this wake-up: it asks nothing
            ("admit", "x", True, ["a2"]),
            ("next", "a2", []),
        ],
    ),
    "a node admitted directly may take the seat a parked node waits for": (
        {"db": 1},
        [
            ("admit", "a1", True),
            ("admit", "a2", False, ["a2"]),
            ("release", "a1", ["a2"]),
            ("admit", "r1", True, ["a2"]),  # a due retry goes first
            ("next", None, ["a2"]),  # the pool is full again: closed
            ("release", "r1", ["a2"]),
            ("next", "a2", []),
        ],
    ),
    "a cap of 2 seats two": (
        {"db": 2},
        [
            ("admit", "a1", True),
            ("admit", "a2", True),
            ("admit", "a3", False, ["a3"]),
            ("admit", "r1", False, ["a3", "r1"]),
            ("release", "a2", ["a3", "r1"]),
            ("next", "a3", ["r1"]),
            ("next", None, ["r1"]),
            ("release", "a1", ["r1"]),
            ("release", "a3", ["r1"]),
            ("next", "r1", []),
        ],
    ),
    "pools are independent, served in the order they opened": (
        {"db": 1, "api": 1},
        [
            ("admit", "a1", True),
            ("admit", "b1", True),
            ("admit", "a2", False, ["a2"]),
            ("admit", "b2", False, ["a2", "b2"]),
            ("release", "b1", ["a2", "b2"]),
            ("release", "a1", ["a2", "b2"]),
            ("next", "b2", ["a2"]),
            ("next", "a2", []),
            ("next", None),
        ],
    ),
}


@pytest.mark.parametrize(("caps", "steps"), list(GATE_CASES.values()), ids=list(GATE_CASES))
def test_pool_gate(caps: dict[str, int], steps: list[tuple[Any, ...]]) -> None:
    gate = PoolGate(caps, POOL_OF)
    for step in steps:
        action, name = step[0], step[1]
        if action == "admit":
            assert gate.admit(name) is step[2], step
            parked = step[3] if len(step) > 3 else None
        elif action == "release":
            gate.release(name)
            parked = step[2] if len(step) > 2 else None
        else:
            assert gate.next_admissible() == name, step
            parked = step[2] if len(step) > 2 else None
        if parked is not None:
            assert gate.parked == parked, step


# -- TimerHeap --------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("pushed", "now", "due", "left_at"),
    [
        ([], 5.0, [], None),
        ([(1.0, "a"), (3.0, "b"), (2.0, "c")], 0.5, [], 1.0),
        ([(1.0, "a"), (3.0, "b"), (2.0, "c")], 2.0, ["a", "c"], 3.0),
        ([(1.0, "a"), (3.0, "b"), (2.0, "c")], 9.0, ["a", "c", "b"], None),
        ([(1.0, "x"), (1.0, "y"), (1.0, "z")], 1.0, ["x", "y", "z"], None),  # ties: in order
    ],
)
def test_timer_heap(
    pushed: list[tuple[float, str]], now: float, due: list[str], left_at: float | None
) -> None:
    timers: TimerHeap[str] = TimerHeap()
    for when, item in pushed:
        timers.push(when, item)
    assert len(timers) == len(pushed)
    assert timers.pop_due(now) == due
    assert timers.next_at() == left_at
    assert len(timers) == len(pushed) - len(due)


def test_timer_heap_first_pop_clear() -> None:
    timers: TimerHeap[object] = TimerHeap()
    a, b = object(), object()  # items need not be comparable
    timers.push(2.0, a)
    timers.push(2.0, b)
    assert timers.first() is a
    assert timers.pop() is a
    assert timers.first() is b
    timers.clear()
    assert not timers and timers.next_at() is None


# -- Schedule ---------------------------------------------------------------------------

# Independent nodes a1 a2 (pool db, cap 1), b, c, in that order; d needs b.
SCHEDULE_DEPS = {"a1": [], "a2": [], "b": [], "c": [], "d": ["b"]}
SCHEDULE_POOLS = {"a1": "db", "a2": "db"}

# Steps: ("take", free, nodes), ("retry", node, when), ("fire", now),
# ("end", node) (it stopped running: seat freed, and done), ("fail", node).
SCHEDULE_CASES: dict[str, list[tuple[Any, ...]]] = {
    "ready nodes in order, a full pool parks": [
        ("take", 2, ["a1", "b"]),  # a2 parked behind a1
        ("take", 0, []),
        ("end", "b"),
        ("take", 1, ["c"]),
        ("end", "a1"),
        ("take", 5, ["a2", "d"]),  # the parked node goes before newly ready ones
    ],
    # The reproduction, step by step: the retry of b takes the slot a1
    # frees; a2 must still start at the next free slot.
    "a due retry takes the slot, the parked node waits, not stranded": [
        ("take", 2, ["a1", "b"]),
        ("fail-attempt", "b"),
        ("retry", "b", 0.1),
        ("take", 1, ["c"]),
        ("fire", 0.1),
        ("end", "a1"),
        ("take", 1, ["b"]),  # due retries first
        ("end", "b"),
        ("take", 1, ["a2"]),  # before the fix: [] (a2 forgotten), then d
        ("take", 1, ["d"]),
    ],
    "a retry is not due before its time": [
        ("take", 1, ["a1"]),
        ("fail-attempt", "a1"),
        ("retry", "a1", 5.0),
        ("fire", 4.9),
        ("take", 1, ["a2"]),  # a1 released its seat while it waits
        ("fire", 5.0),
        ("take", 9, ["b", "c"]),  # a1 is due but parks behind a2
        ("end", "a2"),
        ("take", 9, ["a1"]),
    ],
    "cancelled retries never start": [
        ("take", 2, ["a1", "b"]),
        ("fail-attempt", "b"),
        ("retry", "b", 1.0),
        ("cancel",),
        ("fire", 2.0),
        ("take", 1, ["c"]),
    ],
    "a failure skips dependents": [
        ("take", 4, ["a1", "b", "c"]),
        ("fail", "b"),
        ("end", "a1"),
        ("take", 4, ["a2"]),
    ],
}


@pytest.mark.parametrize("steps", list(SCHEDULE_CASES.values()), ids=list(SCHEDULE_CASES))
def test_schedule(steps: list[tuple[Any, ...]]) -> None:
    dag = _dag(SCHEDULE_DEPS)
    schedule = Schedule(ReadySet(dag), PoolGate({"db": 1}, SCHEDULE_POOLS))
    for step in steps:
        action = step[0]
        if action == "take":
            assert schedule.take(step[1]) == step[2], step
            if len(step[2]) < step[1]:  # a short answer: nothing else could start
                assert not schedule.has_startable(), step
        elif action == "retry":
            schedule.retry(step[1], step[2])
        elif action == "fire":
            schedule.fire(step[1])
        elif action == "fail-attempt":
            schedule.gate.release(step[1])
        elif action == "end":
            schedule.gate.release(step[1])
            schedule.ready.done(step[1])
        elif action == "fail":
            schedule.gate.release(step[1])
            schedule.ready.fail(step[1])
        else:
            schedule.cancel_retries()
            assert not schedule.retries


def test_expand_runs_items_before_their_map_node_is_ready_again() -> None:
    ready = ReadySet(_dag({"src": [], "m": ["src"], "after": ["m"]}))
    assert ready.take() == ["src"]
    ready.done("src")
    assert ready.take() == ["m"]
    ready.expand("m", ["m[0]", "m[1]"])
    assert ready.take() == ["m[0]", "m[1]"]
    ready.done("m[1]")
    assert not ready.has_ready()
    ready.done("m[0]")  # a failed item is reported done: its map decides
    assert ready.take() == ["m"]
    assert ready.fail("m") == ["after"]


def test_expand_with_no_items_makes_the_map_node_ready_again() -> None:
    ready = ReadySet(_dag({"m": []}))
    assert ready.take() == ["m"]
    ready.expand("m", [])
    assert ready.take() == ["m"]


def test_pool_gate_seats_nodes_added_later() -> None:
    gate = PoolGate({"p": 1}, {})
    gate.add("m[0]", "p")
    gate.add("m[1]", "p")
    gate.add("free", None)
    gate.add("other", "uncapped")
    assert gate.admit("m[0]") and not gate.admit("m[1]")
    assert gate.admit("free") and gate.admit("other")
    gate.release("m[0]")
    assert gate.next_admissible() == "m[1]"
