"""SIGKILL while waiting and while providing: a value is recorded whole or not at all.

The workflow is ``a -> ask -> b``: ``ask`` is an input node, ``b`` doubles the
value given. A child process is killed at the N-th call of any step that
changes the disk (``write``, ``fsync``, ``rename``...), of the store's table
transaction (before it, and again after it returns) or, for LMDB (which writes
and syncs in C), of its record writer, commit writer and post-commit check,
for every N, in each of three phases (each from its own template store):

(a) ``start``: the first run, which records the wait (its table transaction)
    and suspends;
(b) ``provide``: `flowdag.provide_input` with the wait's key;
(c) ``resume``: the run that picks the value up (the node's commit carries the
    deletes of its wait) and completes.

The key a child makes is fixed (``new_key`` patched), so the test knows it
whatever the kill left. After each kill, from the store opened afresh here
(`observe`): the store loads; the wait entry and its key entry agree (an open
wait has its key entry, an answered one has none); ``ask`` is completed with
the given value and has no wait left, or is pending with its wait there
(after the wait was recorded: never both gone, never both present); a value is
recorded whole (the answered wait holds exactly it, and the key no longer
works) or not at all (the key still works and the value is given again). Then
the run is finished here and must output exactly that value, and the key, in
plain text, is in no file of the store.

More tests: providers racing in separate processes have exactly one
winner; a value given while another process holds the run lands once; a new
run of a deleted run's id drops the waits that run left (answered ones too)
before it is first saved, checked at every kill point of that first run.
"""

from __future__ import annotations

import os
import shutil
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest

import flowdag
from flowdag import NodeStatus, Workflow
from flowdag import waits as waits_module
from flowdag._fingerprint import Fingerprinter, node_fingerprints
from flowdag._wait_entries import OPEN, PROVIDED, TABLE, decode_entry, hash_key, index_key
from flowdag._wait_entries import wait_key as entry_key
from flowdag.errors import InputNotFoundError, RunNotFoundError
from flowdag.stores import lmdb_store, open_store
from flowdag.stores.base import Store
from tests.forkserver import ForkServer
from tests.gc_stores import open_kind, options_of, url_of
from tests.stores.kill_steps import KillAt

#: The disk store kinds, and one encrypted kind.
KINDS = ["lmdb", "json", "flatbuffers", "json-encrypted"]
#: The key every wait of these tests gets (``new_key`` patched): 32 characters, as a real one.
KEY = "fdw_" + "Kx9" * 9 + "Q"
VALUE = {"v": 21}
SCHEMA = {
    "type": "object",
    "properties": {"v": {"type": "integer"}},
    "required": ["v"],
}
CALLS = ("write", "pwrite", "fsync", "fdatasync", "ftruncate", "rename", "replace", "unlink")
#: The phases killed at every step, and the least kill points all of them make per store.
PHASES = ("start", "provide", "resume")
MIN_POINTS = 20


def first() -> int:
    return 20


def ask_prompt(a: int) -> dict[str, int]:
    return {"a": a}


def double(ask: dict[str, int]) -> int:
    return ask["v"] * 2


def hold() -> str:
    """Runs until the file named by ``HOLD_FILE`` appears: it keeps the run (and its lock)."""
    release = Path(os.environ["HOLD_FILE"])
    while not release.exists():
        time.sleep(0.002)
    return "held"


def workflow(holding: bool = False) -> Workflow:
    wf = Workflow("wait-kills")
    wf.add_node("a", first)
    wf.add_input("ask", deps=["a"], schema=SCHEMA, prompt=ask_prompt)
    wf.add_node("b", double, deps=["ask"])
    if holding:  # a sibling that does not depend on the wait: it keeps the run going
        wf.add_node("hold", hold)
    return wf


def warm_job() -> None:
    """In the fork server, once: what every run computes first (its nodes' fingerprints)."""
    for holding in (False, True):
        node_fingerprints(workflow(holding).build(), Fingerprinter())


def killing_after(kill: KillAt, real: Callable[..., Any]) -> Callable[..., Any]:
    """``real`` wrapped so that ``kill`` counts a step before the call and again after it."""
    before, after = kill.wrap(real), kill.wrap(lambda result: result)

    def wrapped(*args: Any, **kwargs: Any) -> Any:
        return after(before(*args, **kwargs))

    return wrapped


def killing_store(url: str, options: dict[str, Any], kill_at: int) -> tuple[Store, KillAt]:
    """The store at ``url``, its class and ``os`` patched to SIGKILL at the ``kill_at``-th step."""
    kill = KillAt(kill_at)
    store = open_store(url, create=False, **options)
    cls = type(store)
    cls._transact_tables = killing_after(kill, cls._transact_tables)  # type: ignore[method-assign]
    if url.startswith("lmdb"):  # LMDB writes and syncs in C: kill around it
        kill.patch(lmdb_store, "put_entry")
        kill.patch(cls, "_header", "_put_commit", "_check_same_file")
    # A SIGKILL loses nothing the kernel has: the syncs are kill points, but are not made.
    os.fsync = os.fdatasync = lambda fd: None
    kill.patch(os, *CALLS)
    setattr(waits_module, "new_key", lambda: KEY)  # noqa: B010  # the test knows it
    return store, kill


def waiting_store(fork_server: ForkServer, kind: str, root: Path) -> str:
    """A store at ``root`` whose run ``r`` waits at ``ask`` for `KEY`; its URL."""
    with open_kind(kind, root):
        pass
    done = fork_server.run(run_job, url_of(kind, root), options_of(kind), 0)
    assert done.returncode == 0 and done.stdout.startswith("suspended"), done.stderr
    return url_of(kind, root)


def run_job(url: str, options: dict[str, Any], kill_at: int) -> None:
    """In a forked child: run `workflow` (killed at the ``kill_at``-th step; 0: never)."""
    store, kill = killing_store(url, options, kill_at)
    result = flowdag.run(workflow(), run_id="r", store=store, max_workers=1)
    print(result.status, "steps", kill.calls)


def provide_job(url: str, options: dict[str, Any], kill_at: int) -> None:
    """In a forked child: give `VALUE` with `KEY` (killed at the ``kill_at``-th step; 0: never)."""
    store, kill = killing_store(url, options, kill_at)
    flowdag.provide_input(store, KEY, VALUE)
    print("provided", "steps", kill.calls)


@dataclass(frozen=True, slots=True)
class Seen:
    """What a store holds of the wait after a kill."""

    ask: NodeStatus | None  # None: the run was never saved
    wait: str | None  # the wait's state, None: no wait
    output: Any = None


def observe(store: Store, *, started: bool) -> Seen:
    """Check the invariants of the run and its wait (see the module docstring)."""
    try:
        nodes = store.load("r").nodes
    except RunNotFoundError:
        nodes = {}
    ask = nodes["ask"].status if "ask" in nodes else None
    raw = store.table_get(TABLE, entry_key("r", "ask"))
    index = store.table_get(TABLE, index_key(hash_key(KEY)))
    assert store.table_keys(TABLE) == sorted(
        [entry_key("r", "ask")] * (raw is not None)
        + [index_key(hash_key(KEY))] * (index is not None)
    ), "the waits table holds something else"
    if ask is NodeStatus.COMPLETED:
        assert raw is None and index is None, "a completed input node kept its wait"
        output = nodes["ask"].output
        assert output == VALUE, f"the node completed with {output!r}"
        return Seen(ask, None, output)
    assert ask in (None, NodeStatus.PENDING), f"ask is {ask}"
    if raw is None:
        assert index is None, "a key entry without its wait"
        assert not started, "the wait is gone, the node not done"
        return Seen(ask, None)
    entry = decode_entry(raw, "wait")
    assert entry.key_hash == hash_key(KEY)
    if entry.state == OPEN:
        assert index is not None, "an open wait without its key entry"
        assert entry.value is None and entry.provided_at is None
    else:
        assert entry.state == PROVIDED
        assert index is None, "an answered wait whose key still works"
        assert entry.value == VALUE and entry.provided_at is not None, "half a value"
    return Seen(ask, entry.state)


def finish(store: Store, seen: Seen) -> None:
    """Give the value if it is not recorded, run to the end: ``b`` is made of exactly it."""
    if seen.ask is not NodeStatus.COMPLETED and seen.wait is None:
        # The first run was killed before its wait was recorded: this run records it.
        result = flowdag.run(workflow(), run_id="r", store=store, max_workers=1)
        assert result.status == "suspended", result.status
        assert result.waits["ask"].key == KEY
    if seen.wait == PROVIDED:
        with pytest.raises(InputNotFoundError):  # recorded: its key was used
            flowdag.provide_input(store, KEY, {"v": 99})
    elif seen.ask is not NodeStatus.COMPLETED:
        flowdag.provide_input(store, KEY, VALUE)  # not recorded: the key still works
    result = flowdag.run(workflow(), run_id="r", store=store, max_workers=1)
    assert result.status == "completed", result.status
    assert result.outputs["ask"] == VALUE and result.outputs["b"] == 2 * VALUE["v"]
    assert store.table_keys(TABLE) == [], "the wait outlived its node"


def key_in_files(root: Path) -> list[Path]:
    """The files under ``root`` that hold `KEY` in plain text."""
    needle = KEY.encode()
    return [path for path in root.rglob("*") if path.is_file() and needle in path.read_bytes()]


def make_templates(fork_server: ForkServer, kind: str, base: Path) -> dict[str, Path]:
    """A store per phase, as that phase finds it: new, waiting, answered."""
    options = options_of(kind)
    with open_kind(kind, base / "start"):
        pass
    shutil.copytree(base / "start", base / "provide")
    done = fork_server.run(run_job, url_of(kind, base / "provide"), options, 0)
    assert done.returncode == 0 and done.stdout.startswith("suspended"), done.stderr
    shutil.copytree(base / "provide", base / "resume")
    done = fork_server.run(provide_job, url_of(kind, base / "resume"), options, 0)
    assert done.returncode == 0, done.stderr
    return {phase: base / phase for phase in PHASES}


@pytest.mark.parametrize("kind", KINDS)
def test_a_wait_and_its_value_survive_every_kill(
    fork_server: ForkServer, tmp_path: Path, monkeypatch: pytest.MonkeyPatch, kind: str
) -> None:
    monkeypatch.setattr(waits_module, "new_key", lambda: KEY)  # this process's runs too
    # Here too, the syncs only cost time: nothing here is killed, the kernel keeps it all.
    for sync in ("fsync", "fdatasync"):
        monkeypatch.setattr(os, sync, lambda fd: None)
    fork_server.warm(warm_job)
    options = options_of(kind)
    templates = make_templates(fork_server, kind, tmp_path / "templates")
    points: dict[str, int] = {}
    for phase, job in zip(PHASES, (run_job, provide_job, run_job), strict=True):
        kill_at = 0
        while True:
            kill_at += 1
            root = tmp_path / f"{phase}-{kill_at}"
            shutil.copytree(templates[phase], root)
            done = fork_server.run(job, url_of(kind, root), options, kill_at)
            assert done.returncode in (0, -9), done.stderr
            with open_kind(kind, root, create=False) as store:
                seen = observe(store, started=phase != "start")
                if done.returncode == 0:  # every step passed: the phase ran whole
                    assert (seen.ask, seen.wait) == {
                        "start": (NodeStatus.PENDING, OPEN),
                        "provide": (NodeStatus.PENDING, PROVIDED),
                        "resume": (NodeStatus.COMPLETED, None),
                    }[phase]
                finish(store, seen)
            assert key_in_files(root) == [], f"{phase}: the key is stored in plain text"
            shutil.rmtree(root)
            if done.returncode == 0:
                break
            points[phase] = kill_at
    assert sum(points.values()) >= MIN_POINTS, f"only {points} kill points"
    assert all(points.get(phase, 0) >= 1 for phase in PHASES), points
    print(kind, points)


RACERS = 4


def race_job(url: str, options: dict[str, Any], go: str, value: int) -> None:
    """In a forked child: once ``go`` exists, give ``{"v": value}`` with `KEY`; say who won."""
    with open_store(url, create=False, **options) as store:
        while not os.path.exists(go):  # all start together: the file is their barrier
            time.sleep(0.0005)
        try:
            flowdag.provide_input(store, KEY, {"v": value})
        except InputNotFoundError:
            print("lost")
        else:
            print("won")


@pytest.mark.parametrize("kind", KINDS)
def test_concurrent_providers_in_processes_have_one_winner(
    fork_server: ForkServer, tmp_path: Path, monkeypatch: pytest.MonkeyPatch, kind: str
) -> None:
    fork_server.warm(warm_job)
    url, go = waiting_store(fork_server, kind, tmp_path / "store"), tmp_path / "go"
    racers = [
        fork_server.start(race_job, url, options_of(kind), str(go), value)
        for value in range(RACERS)
    ]
    go.touch()
    said = [racer.wait() for racer in racers]
    assert all(done.returncode == 0 for done in said), [done.stderr for done in said]
    outcomes = [done.stdout.strip() for done in said]
    assert sorted(outcomes) == ["lost"] * (RACERS - 1) + ["won"], outcomes
    winner = outcomes.index("won")
    with open_kind(kind, tmp_path / "store", create=False) as store:
        result = flowdag.run(workflow(), run_id="r", store=store, max_workers=1)
        assert result.status == "completed"
        assert result.outputs["ask"] == {"v": winner} and result.outputs["b"] == 2 * winner
        assert store.table_keys(TABLE) == []


def held_run_job(url: str, options: dict[str, Any], release: str) -> None:
    """In a forked child: run the workflow with `hold`, which keeps it until ``release`` exists."""
    os.environ["HOLD_FILE"] = release
    setattr(waits_module, "new_key", lambda: KEY)  # noqa: B010  # the test knows it
    with open_store(url, create=False, **options) as store:
        result = flowdag.run(workflow(holding=True), run_id="r", store=store, max_workers=2)
    print(result.status)


@pytest.mark.parametrize("kind", KINDS)
def test_a_value_given_while_another_process_holds_the_run_lands_once(
    fork_server: ForkServer, tmp_path: Path, monkeypatch: pytest.MonkeyPatch, kind: str
) -> None:
    fork_server.warm(warm_job)
    with open_kind(kind, tmp_path):
        pass
    release = tmp_path / "release"
    child = fork_server.start(held_run_job, url_of(kind, tmp_path), options_of(kind), str(release))
    try:
        with open_kind(kind, tmp_path, create=False) as store:
            deadline = time.monotonic() + 60
            while not flowdag.list_waits(store, "r"):  # the child recorded the wait
                assert child.poll() is None and time.monotonic() < deadline, "no wait recorded"
                time.sleep(0.002)
            assert store.lock_holder("r") == child.pid  # the run is held while we provide
            flowdag.provide_input(store, KEY, VALUE)
            with pytest.raises(InputNotFoundError):
                flowdag.provide_input(store, KEY, {"v": 99})
    finally:
        release.touch()
    done = child.wait()
    assert done.returncode == 0, done.stderr
    # The child's end-of-drive recheck takes the value, or else the next run does.
    assert done.stdout.strip() in ("completed", "suspended"), done.stdout
    with open_kind(kind, tmp_path, create=False) as store:
        if done.stdout.strip() == "suspended":
            monkeypatch.setenv("HOLD_FILE", str(release))
            again = flowdag.run(workflow(holding=True), run_id="r", store=store, max_workers=2)
            assert again.status == "completed"
        state = store.load("r")
        assert state.nodes["ask"].status is NodeStatus.COMPLETED
        assert state.nodes["ask"].output == VALUE and state.nodes["b"].output == 2 * VALUE["v"]
        assert state.nodes["ask"].attempts == 1  # given once, taken once
        assert store.table_keys(TABLE) == []
        result = flowdag.run(workflow(holding=True), run_id="r", store=store, max_workers=2)
        assert result.outputs["ask"] == VALUE and result.status == "completed"


@pytest.mark.parametrize("kind", ["memory", "lmdb", "json", "flatbuffers"])
def test_a_deleted_runs_waits_do_not_reach_a_new_run_of_its_id(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, kind: str
) -> None:
    monkeypatch.setattr(waits_module, "new_key", lambda: KEY)
    with open_kind(kind, tmp_path) as store:
        assert flowdag.run(workflow(), run_id="r", store=store).status == "suspended"
        flowdag.provide_input(store, KEY, VALUE)  # answered, then the run is deleted
        _delete_leaving_waits(store, "r")
        again = flowdag.run(workflow(), run_id="r", store=store)
        assert again.status == "suspended"  # a new wait: not the old run's value
        assert again.waits["ask"].key == KEY and again.waits["ask"].provided_at is None
        assert [wait.state for wait in flowdag.list_waits(store)] == ["waiting"]
        flowdag.provide_input(store, KEY, {"v": 5})
        assert flowdag.run(workflow(), run_id="r", store=store).outputs["b"] == 10


OLD = {"v": 3}


def _delete_leaving_waits(store: Store, run_id: str) -> None:
    """Delete a run as a crash between its records and its waits would: the waits stay."""
    with store.lock(run_id):
        assert store._delete(run_id)


@pytest.mark.parametrize("kind", ["lmdb", "json"])
def test_a_new_run_drops_a_deleted_runs_waits_at_every_kill(
    fork_server: ForkServer, tmp_path: Path, monkeypatch: pytest.MonkeyPatch, kind: str
) -> None:
    """The first run of an id whose deleted run left an answered wait: never takes its value."""
    monkeypatch.setattr(waits_module, "new_key", lambda: KEY)
    for sync in ("fsync", "fdatasync"):
        monkeypatch.setattr(os, sync, lambda fd: None)
    fork_server.warm(warm_job)
    options = options_of(kind)
    template = tmp_path / "template"
    waiting_store(fork_server, kind, template)
    with open_kind(kind, template, create=False) as store:
        flowdag.provide_input(store, KEY, OLD)
        _delete_leaving_waits(store, "r")  # its answered wait stays, for the new run to drop
    kill_at = 0
    while True:
        kill_at += 1
        root = tmp_path / str(kill_at)
        shutil.copytree(template, root)
        done = fork_server.run(run_job, url_of(kind, root), options, kill_at)
        assert done.returncode in (0, -9), done.stderr
        with open_kind(kind, root, create=False) as store:
            saved = "r" in store.list_runs()
            waits = [(wait.state, wait.provided_at is None) for wait in flowdag.list_waits(store)]
            # The old answer goes before the new run is saved; a new wait is open.
            assert waits in ([], [("waiting", True)]) or (
                not saved and waits == [("provided", False)]
            ), (kill_at, saved, waits)
            result = flowdag.run(workflow(), run_id="r", store=store, max_workers=1)
            assert result.status == "suspended", f"kill at {kill_at}: {result.status}"
            flowdag.provide_input(store, KEY, VALUE)
            assert flowdag.run(workflow(), run_id="r", store=store).outputs["ask"] == VALUE
        shutil.rmtree(root)
        if done.returncode == 0:
            break
    assert kill_at > 10, f"only {kill_at - 1} kill points"
