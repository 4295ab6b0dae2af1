"""Overrides, then a change-aware resume: what the next `flowdag.run` runs, and why.

On every disk store: a node marked done is pinned (its code changes, it is not
run; explain says ``manual`` with the reason), and the nodes below a completed
node marked done with another output run again (``input_changed``); an
invalidated node runs (``forced``) and the nodes below it keep their outputs
when its new output equals the old one (early cutoff), else run again.
"""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest

import flowdag
from flowdag import Workflow
from flowdag.stores.base import Store
from tests.gc_stores import DISK_KINDS, open_kind


def chain(calls: list[str], salt: int = 0, offsets: dict[str, int] | None = None) -> Workflow:
    """a -> b -> c -> d, each 1 + its input (a: 1); ``salt`` changes every node's code (a
    closure constant), ``offsets`` (mutable: not part of the code) adds to a node's output."""
    added = offsets if offsets is not None else {}
    wf = Workflow("chain")
    previous: str | None = None
    for name in "abcd":

        def fn(_name: str = name, **inputs: int) -> int:
            calls.append(_name)
            return 1 + sum(inputs.values()) + added.get(_name, 0) + salt * 0

        wf.add_node(name, fn, deps=() if previous is None else (previous,))
        previous = name
    return wf


@pytest.fixture(params=DISK_KINDS)
def store(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[Store]:
    with open_kind(request.param, tmp_path) as opened:
        yield opened


def test_a_node_marked_done_is_pinned_through_code_changes(store: Store) -> None:
    assert flowdag.run(chain([]), run_id="r", store=store).ok
    flowdag.mark_done(store, "r", "b", output=2, reason="checked by hand")  # its output as before
    calls: list[str] = []
    result = flowdag.run(chain(calls, salt=1), run_id="r", store=store)  # every node's code changed
    # b is done, so a and c are both ready at the start: either may run first.
    assert result.ok and sorted(calls) == ["a", "c", "d"] and calls[-1] == "d"
    reasons = result.explain()
    assert reasons["b"].code == "manual" and "checked by hand" in reasons["b"].detail
    assert reasons["a"].code == "code_changed"


def test_nodes_below_a_node_marked_done_with_another_output_run_again(store: Store) -> None:
    assert flowdag.run(chain([]), run_id="r", store=store).ok
    flowdag.mark_done(store, "r", "b", output=10)
    calls: list[str] = []
    result = flowdag.run(chain(calls), run_id="r", store=store)
    assert result.ok and calls == ["c", "d"] and result.outputs["d"] == 12
    reasons = result.explain()
    assert reasons["c"].code == "input_changed" and "'b'" in reasons["c"].detail
    assert reasons["a"].code == "reused"


def test_invalidated_without_downstream_early_cutoff_or_not(store: Store) -> None:
    offsets: dict[str, int] = {}
    assert flowdag.run(chain([], offsets=offsets), run_id="r", store=store).ok
    flowdag.invalidate(store, "r", "b", downstream=False, reason="suspect")
    calls: list[str] = []
    result = flowdag.run(chain(calls, offsets=offsets), run_id="r", store=store)
    assert result.ok and calls == ["b"]  # the same output: c and d keep theirs
    reasons = result.explain()
    assert reasons["b"].code == "forced" and "suspect" in reasons["b"].detail
    assert reasons["c"].code == "reused"

    flowdag.invalidate(store, "r", "b", downstream=False)
    offsets["b"] = 100  # b's next output differs
    calls.clear()
    result = flowdag.run(chain(calls, offsets=offsets), run_id="r", store=store)
    assert result.ok and calls == ["b", "c", "d"] and result.outputs["d"] == 104
    assert result.explain()["c"].code == "input_changed"


def test_invalidated_with_downstream_all_run_again(store: Store) -> None:
    assert flowdag.run(chain([]), run_id="r", store=store).ok
    flowdag.invalidate(store, "r", ["b"])
    calls: list[str] = []
    result = flowdag.run(chain(calls), run_id="r", store=store)
    assert result.ok and calls == ["b", "c", "d"]
    reasons = result.explain()
    assert {reasons[n].code for n in "bcd"} == {"forced"}
