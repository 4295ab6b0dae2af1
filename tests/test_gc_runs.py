"""`flowdag.gc` with real runs on every store kind: expired runs go, live refs stay.

Runs are stored whole with outputs (and a ``ctx.data`` value) that are refs
to blobs; an expired run finished three hours ago with a ttl of one hour.
Blobs are made old by moving their mtime back (`age_all`), so the default
grace of one hour lets them go.
"""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

import flowdag
from flowdag.errors import BlobMissingError, RunNotFoundError
from flowdag.state import AttemptInfo, NodeState, NodeStatus, RunState
from flowdag.stores.base import Store
from tests import gc_stores
from tests.gc_stores import HOUR, age, age_all, cli, held_elsewhere, open_kind, url_of

kind, store = gc_stores.kind, gc_stores.store  # fixtures: every store kind

NOW = datetime.now(UTC)
LONG_AGO = NOW - timedelta(hours=3)  # a run that finished then with a ttl of 1h has expired
TTL = timedelta(hours=1)


def stored_ref(store: Store, value: object, **more: Any) -> flowdag.Ref:
    """A Ref to ``value`` encoded with the store's codec, put in its blob area."""
    data = store.codec.encode(value)
    return store.blobs.put(data).ref(encoding=getattr(store.codec, "name", ""), **more)


def completed(output: object, finished: datetime) -> NodeState:
    started = finished - timedelta(seconds=1)
    history = (AttemptInfo(1, started, finished),)
    return NodeState(NodeStatus.COMPLETED, 1, started, finished, output, history=history)


def expected(tag: str) -> dict[str, Any]:
    """The outputs of run ``tag`` (see `start`), as values."""
    return {
        "shared": b"shared " * 200,
        "own": f"own {tag} ".encode() * 200,
        "small": 1000 + len(tag),
        "brief": [f"brief {tag}"] * 100,
        "pending": None,
    }


def start(
    store: Store, run_id: str, *, expired: bool = False, brief_expired: bool = False
) -> set[str]:
    """Store a finished run whose outputs are refs (and one in ``ctx.data``); its blobs.

    ``shared`` is the same blob in every run, ``own`` and ``brief`` are the run's
    own, ``small`` is inline. ``expired``: finished 3 hours ago with a ttl of one
    hour. ``brief_expired``: the ref of ``brief`` expired an hour ago.
    """
    values = expected(run_id)
    finished = LONG_AGO if expired else NOW - timedelta(minutes=5)
    brief_expiry = NOW - timedelta(hours=1) if brief_expired else None
    nodes = {
        "shared": completed(stored_ref(store, values["shared"]), finished),
        "own": completed(stored_ref(store, values["own"]), finished),
        "small": completed(values["small"], finished),
        "brief": completed(stored_ref(store, values["brief"], expires_at=brief_expiry), finished),
        "pending": NodeState(deps=("own",)),
    }
    cursor = stored_ref(store, {"cursor": run_id})
    state = RunState(run_id, "gc", nodes, data={"cursor": cursor}, ttl=TTL if expired else None)
    store.save(state)
    return set(store.life(run_id).blobs)


def outputs(store: Store, run_id: str, skip: str = "") -> dict[str, Any]:
    """The run's outputs as values (each ref loaded and checked); its data ref loads too."""
    state = store.load(run_id)
    if "cursor" in state.data:
        assert state.data["cursor"].load() == {"cursor": run_id}
    return {
        name: node.output.load() if isinstance(node.output, flowdag.Ref) else node.output
        for name, node in state.nodes.items()
        if name != skip
    }


def present(store: Store, sha256s: set[str]) -> set[str]:
    area = store.blobs
    return {sha256 for sha256 in sha256s if area.exists(sha256)}


def test_expired_runs_go_and_live_blobs_stay(store: Store) -> None:
    live = start(store, "live")
    gone = start(store, "gone", expired=True)
    assert len(live) == len(gone) == 4 and len(live & gone) == 1  # "shared" is one blob
    with pytest.raises(RunNotFoundError, match="expired"):
        store.load("gone")
    age_all(store)
    dry = flowdag.gc(store, dry_run=True)
    assert (dry.runs, dry.blobs) == (1, 3)
    assert "gone" in store.list_runs() and present(store, gone) == gone  # nothing deleted
    report = flowdag.gc(store)
    assert (report.runs, report.blobs, report.bytes_freed) == (dry.runs, dry.blobs, dry.bytes_freed)
    assert report.skipped == 0 and report.swept
    assert store.list_runs() == ["live"]
    assert present(store, live | gone) == live  # the shared blob stays: "live" holds it
    assert outputs(store, "live") == expected("live")
    again = flowdag.gc(store)
    assert (again.runs, again.blobs, again.bytes_freed) == (0, 0, 0)


def test_a_node_ttl_lets_its_blob_go_before_its_run(store: Store) -> None:
    blobs = start(store, "r", brief_expired=True)
    brief = store.load("r").nodes["brief"].output
    assert isinstance(brief, flowdag.Ref)
    with pytest.raises(BlobMissingError, match="expired"):
        brief.load()
    age_all(store)
    report = flowdag.gc(store)
    assert (report.runs, report.blobs) == (0, 1)
    assert present(store, blobs) == blobs - {brief.sha256}
    values = outputs(store, "r", skip="brief")
    assert values == {k: v for k, v in expected("r").items() if k != "brief"}


def test_young_blobs_stay_for_the_grace_period(store: Store) -> None:
    gone = start(store, "gone", expired=True)
    report = flowdag.gc(store)  # the run goes at once; its blobs are younger than an hour
    assert (report.runs, report.blobs) == (1, 0)
    assert present(store, gone) == gone
    age_all(store)
    assert flowdag.gc(store).blobs == 4
    assert present(store, gone) == set()


def test_a_running_run_is_never_deleted(tmp_path: Path, kind: str) -> None:
    if kind == "memory":
        pytest.skip("another process cannot hold a memory store")
    with open_kind(kind, tmp_path) as store:
        gone = start(store, "gone", expired=True)
        age_all(store)
        with held_elsewhere(kind, tmp_path, "gone") as pid:
            dry = flowdag.gc(store, dry_run=True)
            report = flowdag.gc(store)
        for done in (dry, report):
            assert (done.runs, done.blobs, done.skipped) == (0, 0, 1)
            assert list(done.skipped_runs) == ["gone"] and f"pid {pid}" in done.skipped_runs["gone"]
        assert "gone" in store.list_runs() and present(store, gone) == gone
        report = flowdag.gc(store)  # its holder is gone
        assert (report.runs, report.blobs, report.skipped) == (1, 4, 0)


def test_a_run_locked_in_this_process_is_skipped(store: Store) -> None:
    start(store, "gone", expired=True)
    with store.lock("gone"):
        report = flowdag.gc(store)
    assert (report.runs, report.skipped) == (0, 1)
    assert flowdag.gc(store).runs == 1


def test_older_than(store: Store) -> None:
    blobs = start(store, "old")
    age_all(store)
    kept = flowdag.gc(store, older_than="1d")
    assert (kept.runs, kept.blobs) == (0, 0)
    assert outputs(store, "old") == expected("old")
    report = flowdag.gc(store, older_than=0)  # every run not running, however young
    assert (report.runs, report.blobs) == (1, 4)
    assert store.list_runs() == [] and present(store, blobs) == set()


def test_orphans_and_runs_together_converge(store: Store) -> None:
    live = start(store, "live")
    start(store, "gone", expired=True)
    area = store.blobs
    orphans = {area.put(f"orphan {i}".encode() * 100).sha256 for i in range(4)}
    age_all(store)
    report = flowdag.gc(store)
    assert (report.runs, report.blobs) == (1, 3 + len(orphans))
    assert {entry.name for entry in area.entries()} == {area.name_of(s) for s in live}
    assert flowdag.gc(store).blobs == 0


@pytest.mark.parametrize("first", ["json", "flatbuffers"])
def test_json_and_flatbuffers_stores_share_one_blob_area(tmp_path: Path, first: str) -> None:
    other = "flatbuffers" if first == "json" else "json"
    where = tmp_path / "shared"
    with flowdag.open_store(f"{other}://{where}") as them:
        theirs = start(them, "theirs")
    with flowdag.open_store(f"{first}://{where}") as store:
        start(store, "gone", expired=True)
        age_all(store)
        report = flowdag.gc(store)
        assert report.runs == 1 and report.swept
        assert present(store, theirs) == theirs  # the other kind's live run holds them
    with flowdag.open_store(f"{other}://{where}") as them:
        assert outputs(them, "theirs") == expected("theirs")


def test_a_damaged_run_stops_the_sweep(tmp_path: Path) -> None:
    with open_kind("json", tmp_path) as store:
        start(store, "live")
        gone = start(store, "gone", expired=True)
        area = store.blobs
        orphan = area.put(b"orphan" * 100).sha256
        age_all(store)
        snapshot = store.path / "runs" / "live" / "snapshot.json"
        snapshot.write_bytes(snapshot.read_bytes()[:-20])  # cut short: damaged
        report = flowdag.gc(store)
        assert report.runs == 1 and "live" in report.unreadable and not report.swept
        assert report.blobs == 0 and area.exists(orphan) and present(store, gone) == gone
    done = cli("gc", "--store", url_of("json", tmp_path))
    assert done.returncode == 1
    assert "live: unreadable, no blob swept" in done.stdout and "blobs not swept" in done.stdout


# -- a property: gc against random live and expired runs and blobs ---------------------------

VALUES = [f"value {i} ".encode() * 40 for i in range(6)]


@st.composite
def layouts(draw: st.DrawFn) -> tuple[list[tuple[bool, list[int]]], list[int], list[bool]]:
    """Runs (expired?, which values they output), orphan values, and which blobs are old."""
    runs = draw(
        st.lists(
            st.tuples(st.booleans(), st.lists(st.integers(0, len(VALUES) - 1), max_size=3)),
            max_size=4,
        )
    )
    orphans = draw(st.lists(st.integers(0, len(VALUES) - 1), max_size=3))
    old = draw(st.lists(st.booleans(), min_size=len(VALUES), max_size=len(VALUES)))
    return runs, orphans, old


def make_runs(store: Store, runs: list[tuple[bool, list[int]]]) -> dict[str, bool]:
    """Store the runs of a layout (each output a ref to a pooled value); run id -> expired."""
    expired = {}
    for i, (gone, picks) in enumerate(runs):
        finished = LONG_AGO if gone else NOW
        nodes = {
            f"n{n}": completed(stored_ref(store, VALUES[pick]), finished)
            for n, pick in enumerate(picks)
        }
        store.save(RunState(f"r{i}", "prop", nodes, ttl=TTL if gone else None))
        expired[f"r{i}"] = gone and bool(picks)  # a run with no finished node never expires
    return expired


@pytest.mark.parametrize("kind", ["memory", "lmdb", "json-encrypted"])
@settings(
    max_examples=25, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture]
)
@given(layout=layouts())
def test_gc_property(tmp_path_factory: pytest.TempPathFactory, kind: str, layout: Any) -> None:
    runs, orphans, old = layout
    root = tmp_path_factory.mktemp("prop")
    with open_kind(kind, root) as store:
        area = store.blobs
        expired = make_runs(store, runs)
        for pick in orphans:
            area.put(store.codec.encode(VALUES[pick]))
        sha = {i: hashlib_of(store.codec.encode(value)) for i, value in enumerate(VALUES)}
        for i, is_old in enumerate(old):
            if is_old and area.exists(sha[i]):
                age(area, sha[i], 2 * HOUR)
        live_refs = {
            s for run_id, gone in expired.items() if not gone for s in store.life(run_id).blobs
        }
        before = {i for i in sha if area.exists(sha[i])}
        expected_runs = sum(expired.values())
        report = flowdag.gc(store)
        assert report.runs == expected_runs
        assert sorted(store.list_runs()) == sorted(r for r, gone in expired.items() if not gone)
        for i in before:
            if sha[i] in live_refs:
                assert area.exists(sha[i]), "a live blob was deleted"
            elif old[i]:
                assert not area.exists(sha[i]), "an unreferenced old blob was kept"
            else:
                assert area.exists(sha[i]), "a blob younger than grace was deleted"
        for run_id, gone in expired.items():
            if not gone:
                outputs(store, run_id)  # every ref of a live run loads, checked
        again = flowdag.gc(store)
        assert (again.runs, again.blobs) == (0, 0)


def hashlib_of(value: bytes) -> str:
    import hashlib

    return hashlib.sha256(value).hexdigest()


# -- end to end: runs of flowdag.run --------------------------------------------------------


def test_runs_of_flowdag_run(store: Store) -> None:
    """run(ttl=...) and @wf.node(ttl=...), kept by reference above inline_limit, then gc."""
    import time

    def workflow(tag: str) -> flowdag.Workflow:
        wf = flowdag.Workflow("e2e")
        wf.add_node("shared", lambda: b"same in every run " * 100)
        wf.add_node("own", lambda: f"{tag} ".encode() * 500)
        wf.add_node("brief", lambda: [tag] * 300, ttl="1ms")  # its blob expires first
        wf.add_node("total", lambda own: len(own), deps=["own"])
        return wf

    kept = flowdag.run(workflow("kept"), run_id="kept", store=store, inline_limit=64)
    dropped = flowdag.run(
        workflow("dropped"), run_id="dropped", store=store, inline_limit=64, ttl="1ms"
    )
    assert kept.ok and dropped.ok
    held = {run_id: set(store.life(run_id).blobs) for run_id in ("kept", "dropped")}
    assert len(held["kept"]) == 3 and len(held["kept"] & held["dropped"]) == 1
    time.sleep(0.01)  # past both lifetimes of 1 ms
    age_all(store)
    report = flowdag.gc(store)
    assert (report.runs, report.blobs) == (1, 3)  # dropped's own and brief; kept's brief
    assert store.list_runs() == ["kept"]
    brief = store.load("kept").nodes["brief"].output
    assert present(store, held["kept"] | held["dropped"]) == held["kept"] - {brief.sha256}
    again = flowdag.run(workflow("kept"), run_id="kept", store=store, inline_limit=64)
    assert again.outputs["shared"] == b"same in every run " * 100
    assert again.outputs["own"] == b"kept " * 500 and again.outputs["total"] == 2500
    assert (flowdag.gc(store).runs, flowdag.gc(store).blobs) == (0, 0)
