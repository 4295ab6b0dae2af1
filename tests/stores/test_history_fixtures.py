"""Stores of earlier releases, which kept no attempt history, load and resume on every kind.

``fixtures/legacy2`` was written by the release just before histories (meta
records of 5 fields, run header format 1), ``fixtures/legacy`` by the one
before codec records. Both load with empty histories; a resume appends the
attempts it makes, numbered after the ones the store counted, and the run
then loads, verifies and converts with its history exact.
"""

from __future__ import annotations

import shutil
from pathlib import Path

import pytest

import flowdag
from flowdag.state import NodeStatus, RunState
from flowdag.stores import open_store
from flowdag.stores.transfer import copy_run, verify_run
from tests.stores.fixtures import legacy, legacy2

FIXTURES = Path(__file__).parent / "fixtures"
ENCRYPTED = pytest.mark.parametrize("encrypted", [False, True], ids=["plain", "encrypted"])
SCHEMES = pytest.mark.parametrize("scheme", legacy2.SCHEMES)


def copy_fixture(tmp_path: Path, name: str, scheme: str, encrypted: bool) -> str:
    where = tmp_path / "store"
    shutil.copytree(FIXTURES / name / (f"{scheme}-encrypted" if encrypted else scheme), where)
    return f"{scheme}://{where}"


def check_history(state: RunState) -> None:
    """Every node's history in order, without duplicates, ending with its last attempt."""
    for name, node in state.nodes.items():
        numbers = [attempt.number for attempt in node.history]
        assert numbers == sorted(set(numbers)), name
        if node.history:
            last = node.history[-1]
            assert last.number == node.attempts, name
            assert (last.started_at, last.finished_at) == (node.started_at, node.finished_at)


@ENCRYPTED
@SCHEMES
def test_the_release_before_histories_loads_and_resumes(
    tmp_path: Path, scheme: str, encrypted: bool
) -> None:
    url = copy_fixture(tmp_path, "legacy2", scheme, encrypted)
    key = {"key": legacy2.KEY} if encrypted else {}
    with open_store(url, create=False, **key) as store:
        before = store.load(legacy2.RUN_ID)
        statuses = store.load_statuses(legacy2.RUN_ID)
    nodes = before.nodes
    assert {name: (node.status, node.attempts) for name, node in nodes.items()} == {
        "extract": (NodeStatus.COMPLETED, 1),
        "wobbly": (NodeStatus.COMPLETED, 2),
        "flaky": (NodeStatus.FAILED, 2),
        "load": (NodeStatus.SKIPPED, 0),
    }
    assert nodes["flaky"].error is not None and nodes["flaky"].error.message == "planned failure 2"
    # That release kept no history: none is made up, and durations are the last attempt's.
    assert all(node.history == () for node in (*nodes.values(), *statuses.nodes.values()))
    wobbly = nodes["wobbly"]
    assert wobbly.finished_at and wobbly.started_at
    assert wobbly.duration == (wobbly.finished_at - wobbly.started_at).total_seconds()

    calls: list[str] = []
    with open_store(url, **key) as store:
        result = flowdag.run(legacy2.build(fail=False, calls=calls), run_id=legacy2.RUN_ID,
                             store=store)  # fmt: skip
        assert result.ok and calls == ["flaky", "load"]
        after = store.load(legacy2.RUN_ID)
        assert verify_run(store, legacy2.RUN_ID) is None
        # Converted to every other kind, the history comes along exactly.
        for other in legacy2.SCHEMES:
            with open_store(f"{other}://{tmp_path / ('copy-' + other)}") as dst:
                copy_run(store, dst, legacy2.RUN_ID)
                assert dst.load(legacy2.RUN_ID) == after
    flaky = after.nodes["flaky"]
    assert flaky.attempts == 3 and flaky.error is None
    assert [a.number for a in flaky.history] == [3]  # attempts 1 and 2 were never kept
    assert [a.number for a in after.nodes["load"].history] == [1]
    assert after.nodes["wobbly"] == wobbly and after.nodes["extract"] == nodes["extract"]
    check_history(after)


@ENCRYPTED
@SCHEMES
def test_the_release_before_codec_records_still_loads_and_resumes(
    tmp_path: Path, scheme: str, encrypted: bool
) -> None:
    url = copy_fixture(tmp_path, "legacy", scheme, encrypted)
    key = {"key": legacy.KEY} if encrypted else {}
    with open_store(url, create=False, **key) as store:
        before = store.load("legacy")
    assert all(node.history == () for node in before.nodes.values())
    with open_store(url, **key) as store:
        assert flowdag.run(legacy.build(fail=False), run_id="legacy", store=store).ok
        after = store.load("legacy")
        assert verify_run(store, "legacy") is None
    transform = after.nodes["transform"]
    assert transform.attempts == 2 and [a.number for a in transform.history] == [2]
    assert after.nodes["extract"].history == ()  # not run again
    check_history(after)
