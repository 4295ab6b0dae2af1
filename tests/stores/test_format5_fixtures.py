"""Stores of the release with store-wide tables (key-value state, cache) load and resume.

``fixtures/legacy6`` was written by the release that added the ``kv`` and
``cache`` tables (see ``fixtures/legacy6.py``), on every kind, plain and
encrypted. Whatever a later release changes, they must load, resume without
calling a node, serve their key-value entries (one kept in the blob area), and
give a cache hit from the entry as that release keyed it (the bare digest; this
release keys entries under workflow and node). gc must keep what they hold.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest

import flowdag
from flowdag.stores import open_store
from flowdag.stores.transfer import check_tables
from tests.stores.fixtures import legacy6
from tests.stores.test_history_fixtures import copy_fixture

ENCRYPTED = pytest.mark.parametrize("encrypted", [False, True], ids=["plain", "encrypted"])
SCHEMES = pytest.mark.parametrize("scheme", legacy6.SCHEMES)


def _options(encrypted: bool) -> dict[str, Any]:
    return {"key": legacy6.KEY} if encrypted else {}


@SCHEMES
@ENCRYPTED
def test_the_run_loads_and_resumes_without_calling_a_node(
    scheme: str, encrypted: bool, tmp_path: Path
) -> None:
    url = copy_fixture(tmp_path, "legacy6", scheme, encrypted)
    with open_store(url, create=False, **_options(encrypted)) as store:
        state = store.load(legacy6.RUN_ID)
        assert {n: s.status for n, s in state.nodes.items()} == dict.fromkeys(
            ["source", "cached", "count"], flowdag.NodeStatus.COMPLETED
        )
        calls: list[str] = []
        result = flowdag.run(legacy6.build(calls), run_id=legacy6.RUN_ID, store=store)
        assert result.ok and calls == []
        assert result.outputs["count"] == 61


@SCHEMES
@ENCRYPTED
def test_kv_entries_read_back_and_take_updates(
    scheme: str, encrypted: bool, tmp_path: Path
) -> None:
    url = copy_fixture(tmp_path, "legacy6", scheme, encrypted)
    with open_store(url, create=False, **_options(encrypted)) as store:
        kv = store.kv()
        assert kv.get("cursor") == legacy6.CURSOR
        assert kv.get("count") == 1
        assert kv.get("big") == legacy6.big_text()  # its value in the blob area
        entry = kv.entry("count")
        assert (entry.run_id, entry.node) == (legacy6.RUN_ID, "count")
        assert kv.update("count", lambda old: old + 1) == 2
        assert check_tables(store) is None
        flowdag.gc(store)  # keeps the blob a live entry holds
        assert kv.get("big") == legacy6.big_text()


@SCHEMES
@ENCRYPTED
def test_a_new_run_hits_the_cache_entry_as_that_release_keyed_it(
    scheme: str, encrypted: bool, tmp_path: Path
) -> None:
    url = copy_fixture(tmp_path, "legacy6", scheme, encrypted)
    with open_store(url, create=False, **_options(encrypted)) as store:
        calls: list[str] = []
        result = flowdag.run(legacy6.build(calls), run_id="fresh", store=store)
        assert result.ok and "cached" not in calls, calls
        reason = result.explain()["cached"]
        assert reason.code == "cached" and legacy6.RUN_ID in reason.detail
        assert result.outputs["cached"] == 60
        assert store.kv().get("count") == 2  # count ran again, in the new run
