"""Concurrent providers of one key: exactly one wins, on every store kind (issue 15).

Threads of one process race on every kind; on disk stores, processes race
too: children forked from the shared fork server open the store, then block
on a FIFO until the test lets them all go at once, and each gives its own
value with the same key. Exactly one is told it won, the others get
`InputNotFoundError`, and the next run's output is the winner's value.
"""

from __future__ import annotations

import os
import threading
from pathlib import Path
from typing import Any

import pytest

import flowdag
from flowdag import InputNotFoundError
from flowdag.stores import open_store
from tests.forkserver import ForkServer
from tests.waits_workflows import DISK_KINDS, KINDS, Opened, opener, po_workflow

RUN = "po-race"
RACERS = 4


def race_by(name: str) -> dict[str, Any]:
    return {"approved": True, "by": name}


def provide_after_go(url: str, key_hex: str, fifo: str, wait_key: str, name: str) -> None:
    """In a forked child: open the store, wait for the go, give the value; print won or lost."""
    options = {"key": key_hex} if key_hex else {}
    with open_store(url, **options) as store:
        go = os.open(fifo, os.O_RDONLY)  # the test holds it open: this does not block
        print("ready", flush=True)
        assert os.read(go, 1) == b"g"  # one byte each: unbuffered
        os.close(go)
        try:
            flowdag.provide_input(store, wait_key, race_by(name))
        except InputNotFoundError:
            print("lost", flush=True)
        else:
            print("won", flush=True)


def suspended(kind: Opened) -> str:
    with kind.open() as store:
        result = flowdag.run(po_workflow(), run_id=RUN, store=store)
    key = result.waits["approval"].key
    assert key is not None
    return key


def winner_of(kind: Opened) -> str:
    with kind.open() as store:
        done = flowdag.run(po_workflow(), run_id=RUN, store=store)
        assert flowdag.list_waits(store) == []
    assert done.ok, done.errors
    by: str = done.outputs["approval"]["by"]
    return by


@pytest.mark.parametrize("kind_name", KINDS)
def test_threads_racing_on_one_key(kind_name: str, tmp_path: Path) -> None:
    kind = opener(kind_name, tmp_path)
    with kind.open() as store:
        result = flowdag.run(po_workflow(), run_id=RUN, store=store)
        key = result.waits["approval"].key
        assert key is not None
        go = threading.Barrier(RACERS)
        outcomes: dict[str, str] = {}

        def racer(name: str) -> None:
            go.wait()
            try:
                flowdag.provide_input(store, key, race_by(name))
                outcomes[name] = "won"
            except InputNotFoundError:
                outcomes[name] = "lost"

        threads = [threading.Thread(target=racer, args=(f"t{i}",)) for i in range(RACERS)]
        for thread in threads:
            thread.start()
        for thread in threads:
            thread.join()
        [winner] = [name for name, outcome in outcomes.items() if outcome == "won"]
        assert sorted(outcomes.values()) == ["lost"] * (RACERS - 1) + ["won"]
        done = flowdag.run(po_workflow(), run_id=RUN, store=store)
    assert done.outputs["approval"] == race_by(winner)


@pytest.mark.parametrize("kind_name", DISK_KINDS)
def test_processes_racing_on_one_key(
    kind_name: str, tmp_path: Path, fork_server: ForkServer
) -> None:
    kind = opener(kind_name, tmp_path)
    key = suspended(kind)
    fifo = tmp_path / "go"
    os.mkfifo(fifo)
    go = os.open(fifo, os.O_RDWR)  # read-write: opens at once, and keeps what is written
    key_hex = kind.options.get("key", "")  # the store's key, as hex digits
    try:
        children = [
            fork_server.start(
                provide_after_go, kind.url, key_hex, str(fifo), key, f"p{i}", stream=True
            )
            for i in range(RACERS)
        ]
        for child in children:  # every child has its store open: let them all go at once
            assert child.stdout is not None and child.stdout.readline() == "ready\n"
        os.write(go, b"g" * RACERS)
        outcomes = {}
        for i, child in enumerate(children):
            done = child.wait()
            assert done.returncode == 0, done.stderr
            outcomes[f"p{i}"] = done.stdout.strip()
    finally:
        os.close(go)
    assert sorted(outcomes.values()) == ["lost"] * (RACERS - 1) + ["won"], outcomes
    [winner] = [name for name, outcome in outcomes.items() if outcome == "won"]
    assert winner_of(kind) == winner
