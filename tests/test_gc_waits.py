"""`flowdag.gc` and input waits, on every store kind (encrypted ones too).

A run whose wait is open and before its deadline, or answered, is kept
however old (``older_than``); a run's ttl still ends it. The waits of runs
that are gone (deleted, expired) are removed with their key entries, counted
in ``GCReport.waits``.
"""

from __future__ import annotations

import time
from dataclasses import replace
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest

import flowdag
from flowdag._wait_entries import TABLE, decode_entry, encode_entry, run_prefix
from flowdag.errors import InputNotFoundError
from flowdag.stores._tables import TableTxn
from flowdag.stores.base import Store
from tests import gc_stores
from tests.gc_stores import cli, options_of, url_of

kind, store = gc_stores.kind, gc_stores.store  # fixtures: every store kind

wf = flowdag.Workflow("gcwaits")


@wf.node
def start() -> int:
    return 1


wf.add_input("answer", schema={"type": "integer"}, deps=["start"], timeout="1h")


@wf.node(deps=["answer"])
def finish(answer: int) -> int:
    return answer + 1


plain = flowdag.Workflow("plain")


@plain.node
def only() -> int:
    return 1


def suspend(store: Store, run_id: str, **options: object) -> str:
    result = flowdag.run(wf, run_id=run_id, store=store, **options)  # type: ignore[arg-type]
    assert result.status is flowdag.RunStatus.SUSPENDED
    key = result.waits["answer"].key
    assert key is not None
    return key


def expire(store: Store, run_id: str) -> None:
    """Move the deadline of the run's waits into the past."""
    past = datetime.now(UTC) - timedelta(minutes=1)

    def move(txn: TableTxn) -> None:
        for key, raw in txn.scan(TABLE, run_prefix(run_id)):
            entry = decode_entry(raw, key)
            txn.put(TABLE, key, encode_entry(replace(entry, expires_at=past)))

    store.transact_tables(move)


def table_keys(store: Store) -> list[str]:
    return [key.split("\0")[0] for key, _ in store.table_scan(TABLE)]


def test_old_runs_with_live_waits_are_kept(store: Store) -> None:
    suspend(store, "open")
    answered = suspend(store, "answered")
    flowdag.provide_input(store, answered, 3)
    suspend(store, "expired")
    expire(store, "expired")
    flowdag.run(plain, run_id="done", store=store)
    report = flowdag.gc(store, older_than=0)
    assert report.runs == 2 and report.waits == 1
    assert sorted(store.list_runs()) == ["answered", "open"]
    assert {wait.run_id for wait in flowdag.list_waits(store)} == {"answered", "open"}
    assert sorted(table_keys(store)) == ["key", "wait", "wait"]  # the answered key is spent
    # Without older_than, age alone deletes nothing.
    suspend(store, "expired")
    expire(store, "expired")
    assert flowdag.gc(store).runs == 0
    result = flowdag.run(wf, run_id="answered", store=store)
    assert result.ok and result.outputs["finish"] == 4


def test_waits_of_gone_runs_are_removed(store: Store) -> None:
    key = suspend(store, "gone")
    suspend(store, "kept")
    # Store.delete ends a run's waits too; a crash between the two leaves them, as this does.
    with store.lock("gone"):
        assert store._delete("gone")
    assert len(flowdag.list_waits(store)) == 2
    dry = flowdag.gc(store, dry_run=True)
    assert (dry.waits, dry.runs) == (1, 0)
    assert len(flowdag.list_waits(store)) == 2  # a dry run deletes nothing
    report = flowdag.gc(store)
    assert report.waits == 1
    assert [wait.run_id for wait in flowdag.list_waits(store)] == ["kept"]
    assert sorted(table_keys(store)) == ["key", "wait"]
    with pytest.raises(InputNotFoundError):
        flowdag.provide_input(store, key, 1)
    assert flowdag.gc(store).waits == 0


def test_a_waiting_run_past_its_ttl_goes_with_its_waits(store: Store) -> None:
    suspend(store, "brief", ttl=0.001)
    time.sleep(0.01)  # past the ttl (a store may keep times to the microsecond)
    dry = flowdag.gc(store, dry_run=True)
    assert (dry.runs, dry.waits) == (1, 1)
    report = flowdag.gc(store)
    assert (report.runs, report.waits) == (1, 1)
    assert store.list_runs() == [] and store.table_scan(TABLE) == []


def test_gc_cli_counts_the_waits(kind: str, tmp_path: Path) -> None:
    if kind == "memory":
        pytest.skip("a memory store is gone when the command ends")
    with gc_stores.open_kind(kind, tmp_path) as store:
        suspend(store, "gone")
        with store.lock("gone"):  # the run goes, its wait stays: as a crash in between leaves it
            assert store._delete("gone")
    key = options_of(kind).get("key")
    env = {} if key is None else {"FLOWDAG_KEY": key}
    done = cli("gc", "--store", url_of(kind, tmp_path), **env)
    assert done.returncode == 0, done.stderr
    assert "1 wait of gone runs" in done.stdout
