"""SIGKILL of real processes writing and deleting blobs: what is left is whole or temp.

A child process (forked from `tests.forkserver`) writes deterministic values
into a blob area (by ``put`` and by a streaming writer, with repeats, so dedup
is in the mix) and prints each blob's hash once its write returned; it is
killed with SIGKILL either after a random delay (many kills on one area, so
leftovers pile up) or at the N-th system call of the write order (``write``,
``fsync``, ``rename``, ``link``, ``unlink``, ``utime``), for every N until the
work finishes. Afterwards:

- every blob under a final name is one of the values and reads back verified;
- every blob whose write returned is there (its rename was durable first);
- the rest is temp leftovers, which the collector's temp sweep removes (or, for
  a blob a killed ``delete`` had moved aside, puts back).
"""

from __future__ import annotations

import hashlib
import os
import random
import signal
import time
from pathlib import Path

import pytest

from flowdag.stores._blobdir import DirectoryBlobs
from flowdag.stores._crypto import Cipher, generate_key
from tests.forkserver import ForkServer
from tests.stores.blob_values import VALUES, value
from tests.stores.kill_steps import KillAt

KEY = generate_key()
#: Random-moment kills of the plain area (half as many encrypted); more: FLOWDAG_BLOB_KILLS=50.
KILLS = int(os.environ.get("FLOWDAG_BLOB_KILLS", "12"))


def writer_job(root: str, key: str, kill_at: int, actions: str, count: int) -> None:
    """In a forked child: ``count`` writes (with ``actions`` "delete", every other one deleted).

    ``key`` is "-" for none; ``kill_at`` 0 for never, else the child SIGKILLs itself at the
    ``kill_at``-th watched call (write, fsync, rename, link, unlink, utime), before making it.
    Prints "ready", then each blob's hash once its write returned.
    """
    area = DirectoryBlobs(root, cipher=None if key == "-" else Cipher(key))
    kill = KillAt(kill_at)
    if kill_at:
        kill.patch(os, "write", "fsync", "rename", "link", "unlink", "utime")
    print("ready", flush=True)
    for i in range(count):
        data = value(i % VALUES)
        if actions == "delete" and i % 2:
            area.delete(area.name_of(area.put(data).sha256))
            print("deleted", flush=True)
        elif i % 3 == 1:
            with area.writer() as writer:
                for start in range(0, len(data), 65536):
                    writer.write(data[start : start + 65536])
            assert writer.info is not None
            print("ok", writer.info.sha256, flush=True)
        else:
            print("ok", area.put(data).sha256, flush=True)
    print("done", kill.calls, flush=True)


def area_of(root: Path, key: str) -> DirectoryBlobs:
    return DirectoryBlobs(root, cipher=None if key == "-" else Cipher(key))


def check_area(area: DirectoryBlobs, returned: set[str]) -> None:
    """Final names are whole values; what a write returned is there."""
    known = {}
    for k in range(VALUES):
        data = value(k)
        digest = hashlib.sha256(data).hexdigest()
        known[area.name_of(digest)] = (digest, data)
    names = {entry.name for entry in area.entries()}
    assert names <= set(known), names - set(known)
    for name in names:
        digest, data = known[name]
        assert area.read(digest, size=len(data)) == data
    for digest in returned:
        assert area.exists(digest), f"blob {digest} was returned, then lost"


def sweep_temp(area: DirectoryBlobs) -> None:
    for entry in area.temp_entries():
        area.remove_temp(entry.name)
    assert area.temp_entries() == []


@pytest.fixture(params=[False, True], ids=["plain", "encrypted"])
def key(request: pytest.FixtureRequest) -> str:
    return KEY if request.param else "-"


@pytest.mark.slow
def test_kill_at_random_moments_of_writes(
    tmp_path: Path, fork_server: ForkServer, key: str
) -> None:
    kills = KILLS if key == "-" else max(1, KILLS // 2)
    rng = random.Random(1234)
    area = area_of(tmp_path, key)
    returned: set[str] = set()
    for kill in range(kills):
        child = fork_server.start(writer_job, str(tmp_path), key, 0, "write", 10_000, stream=True)
        assert child.stdout is not None
        assert child.stdout.readline() == "ready\n"
        # One write returned first, however loaded the machine: the kill then
        # lands anywhere in the writes after it.
        first = child.stdout.readline()
        assert first.startswith("ok "), first
        time.sleep(rng.uniform(0, 0.35))
        child.kill()
        proc = child.wait(timeout=60)
        assert proc.returncode == -signal.SIGKILL, proc.stderr
        lines = [first, *proc.stdout.splitlines()]
        returned |= {line.split()[1] for line in lines if line.startswith("ok ")}
        check_area(area, returned)
        # One writer at a time: at most one leftover per kill.
        assert len(area.temp_entries()) <= kill + 1
    assert len(returned) > 5  # the kills left the writer time to work
    sweep_temp(area)
    check_area(area, returned)


@pytest.mark.slow
@pytest.mark.parametrize(
    ("encrypted", "actions"),
    # A delete moves, checks and unlinks the same way with or without a key.
    [(False, "write"), (False, "delete"), (True, "write")],
    ids=["plain-write", "plain-delete", "encrypted-write"],
)
def test_kill_at_every_step_of_the_write_order(
    tmp_path: Path, fork_server: ForkServer, encrypted: bool, actions: str
) -> None:
    key = KEY if encrypted else "-"
    # Four values: a put, a streamed write, a put again (dedup: a refresh, no write)...;
    # with "delete", every other value is put and then deleted (moved aside, removed).
    count = 4
    steps = 0
    for kill_at in range(1, 400):
        root = tmp_path / f"k{kill_at}"
        root.mkdir()
        area = area_of(root, key)
        area.put(value(0))  # already there: the third write dedups against it
        proc = fork_server.run(writer_job, str(root), key, kill_at, actions, count)
        finished = proc.returncode == 0
        assert finished or proc.returncode == -signal.SIGKILL, proc.stderr
        returned = {line.split()[1] for line in proc.stdout.splitlines() if line.startswith("ok ")}
        check_area(area, returned | {hashlib.sha256(value(0)).hexdigest()})
        assert len(area.temp_entries()) <= 1
        sweep_temp(area)
        check_area(area, returned | {hashlib.sha256(value(0)).hexdigest()})
        steps += 1
        if finished:
            break
    else:
        pytest.fail("the writes never finished")
    assert steps > 10
