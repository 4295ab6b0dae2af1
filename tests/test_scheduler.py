"""ReadySet: pure readiness bookkeeping, driven by hand as the runner drives it."""

from __future__ import annotations

from typing import Any

import pytest

from flowdag import DAG, Workflow
from flowdag.scheduler import ReadySet


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
