"""A property of the cross-run cache over random sequences of runs: a model says which
runs call the cached node, and whose output every hit completes from."""

from __future__ import annotations

import os
from dataclasses import dataclass

from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

import flowdag
from flowdag import NodeStatus, Workflow
from flowdag._cache_entries import TABLE, read_entry
from flowdag.stores import MemoryStore
from flowdag.stores.base import Store

EXAMPLES = int(os.environ.get("FLOWDAG_PROPERTY_EXAMPLES", "60"))
BIG = 300_000  # characters: kept by reference


@dataclass(frozen=True)
class Step:
    """One call of run(): which code, which input, what happens around it."""

    variant: int  # which body the cached node has (0 or 1): its fingerprint
    rows: int  # its input
    big: bool  # whether its output is kept by reference
    fails: bool
    refresh: bool
    lose_blobs: bool  # delete every blob before the run


steps = st.builds(
    Step,
    variant=st.integers(0, 1),
    rows=st.integers(1, 2),
    big=st.booleans(),
    fails=st.booleans(),
    refresh=st.booleans(),
    lose_blobs=st.booleans(),
)


def workflow(step: Step, calls: list[str], outage: dict[str, bool]) -> Workflow:
    wf = Workflow("prop")
    wf.add_node("src", lambda: (step.rows, step.big))
    if step.variant == 0:

        def work(src: tuple[int, bool]) -> object:
            calls.append("work")
            if outage["down"]:
                raise RuntimeError("down")
            rows, big = src
            return "a" * BIG if big else rows
    else:

        def work(src: tuple[int, bool]) -> object:
            calls.append("work")
            if outage["down"]:
                raise RuntimeError("down")
            rows, big = src
            return "b" * BIG if big else -rows

    wf.add_node("work", work, deps=["src"], cache=True)
    return wf


def check(store: Store, plan: list[Step]) -> None:
    # The model: (variant, rows, big) -> the run whose output the entry holds, and
    # the blobs present (a big output's content depends on its variant only).
    entries: dict[tuple[int, int, bool], str] = {}
    present: set[int] = set()
    outage = {"down": False}
    for number, step in enumerate(plan):
        run_id = f"r{number}"
        key = (step.variant, step.rows, step.big)
        if step.lose_blobs:
            for blob in list(store.blobs.entries()):
                store.blobs.delete(blob.name)
            present.clear()
        usable = key in entries and (not step.big or step.variant in present)
        hit = usable and not step.refresh
        calls: list[str] = []
        outage["down"] = step.fails
        result = flowdag.run(
            workflow(step, calls, outage), run_id=run_id, store=store, refresh=step.refresh
        )
        node = result.nodes["work"]
        if hit:
            assert calls == [] and node.status is NodeStatus.COMPLETED
            assert result.reasons["work"].code == "cached"
            assert f"run '{entries[key]}'" in result.reasons["work"].detail
        else:
            assert calls == ["work"]
            if step.fails:
                assert node.status is NodeStatus.FAILED
                if key in entries and not usable and not step.refresh:
                    del entries[key]  # an unusable entry it looked up goes with the failure
            else:
                entries[key] = run_id
                if step.big:
                    present.add(step.variant)
        if node.status is NodeStatus.COMPLETED:
            expected = (
                ("a" if step.variant == 0 else "b") * BIG
                if step.big
                else (step.rows if step.variant == 0 else -step.rows)
            )
            value = node.output.load() if isinstance(node.output, flowdag.Ref) else node.output
            assert value == expected
        stored = {
            key: read_entry(store.codec, key, raw).run_id for key, raw in store.table_scan(TABLE)
        }
        assert sorted(stored.values()) == sorted(entries.values())


@settings(
    max_examples=EXAMPLES,
    deadline=None,
    suppress_health_check=[HealthCheck.too_slow],
)
@given(st.lists(steps, min_size=1, max_size=6))
def test_cache_hits_and_misses_follow_the_model(plan: list[Step]) -> None:
    with MemoryStore() as store:
        check(store, plan)
