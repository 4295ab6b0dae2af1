"""What the gc and compaction tests share: every store kind, and processes holding a store."""

from __future__ import annotations

import os
import subprocess
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import pytest

from flowdag.stores import open_store
from flowdag.stores._blobmem import MemoryBlobs
from flowdag.stores._blobs import BlobArea
from flowdag.stores._crypto import generate_key
from flowdag.stores.base import Store
from tests.forkserver import python_m, shared
from tests.stores.conformance import ROOT, spawn

HOUR = 3600.0
KEY = generate_key()
#: Every store kind, and encrypted disk stores (blob names are keyed there).
KINDS = ["memory", "lmdb", "json", "flatbuffers", "lmdb-encrypted", "json-encrypted"]
DISK_KINDS = [kind for kind in KINDS if kind != "memory"]


def url_of(kind: str, root: Path) -> str:
    scheme = kind.split("-")[0]
    return "memory://" if scheme == "memory" else f"{scheme}://{root / kind}"


def options_of(kind: str) -> dict[str, Any]:
    return {"key": KEY} if kind.endswith("-encrypted") else {}


def open_kind(kind: str, root: Path, **options: Any) -> Store:
    return open_store(url_of(kind, root), **options_of(kind), **options)


# Opens a store in another process, optionally locks a run, and holds both until killed.
HOLD = """
import sys, time
from flowdag.stores import open_store
from flowdag.stores._blobmem import MemoryBlobs
from flowdag.stores._blobs import BlobArea
options = {} if sys.argv[2] == "-" else {"key": sys.argv[2]}
store = open_store(sys.argv[1], **options)
if sys.argv[3] != "-":
    held = store.lock(sys.argv[3])
    held.__enter__()  # keep a reference: a collected context manager releases
print("ready", flush=True)
time.sleep(120)
"""


@contextmanager
def held_elsewhere(kind: str, root: Path, run_id: str | None = None) -> Iterator[int]:
    """Another process has the store open (and ``run_id`` locked) inside the block: its pid."""
    key = options_of(kind).get("key", "-")
    proc = spawn(HOLD, url_of(kind, root), key, run_id or "-")
    try:
        assert proc.stdout is not None
        assert proc.stdout.readline() == "ready\n"
        yield proc.pid
    finally:
        proc.kill()
        proc.wait(timeout=60)


def cli(*args: str, **env: str) -> subprocess.CompletedProcess[str]:
    """``flowdag ARGS`` in a real process (this checkout), with ``env`` added.

    ``python -m flowdag``, forked from the fork server (which imported flowdag once).
    """
    environment = {**os.environ, "PYTHONPATH": str(ROOT), "COLUMNS": "200", **env}
    return shared().run(python_m, "flowdag", os.getcwd(), environment, *args, timeout=120)


# -- fixtures: import them into a test module to parametrise it over every kind ---------


@pytest.fixture(params=KINDS)
def kind(request: pytest.FixtureRequest) -> str:
    return str(request.param)


@pytest.fixture
def store(tmp_path: Path, kind: str) -> Iterator[Store]:
    with open_kind(kind, tmp_path) as store:
        yield store


# -- old blobs: their mtime moved back, never a sleep ----------------------------------------


def age_name(area: BlobArea, name: str, seconds: float) -> None:
    """Move blob ``name``'s mtime ``seconds`` into the past (as if written then)."""
    if isinstance(area, MemoryBlobs):
        with area._guard:
            data, mtime = area._blobs[name]
            area._blobs[name] = (data, mtime - seconds)
        return
    _move_back(Path(area.locate(name)), seconds)


def age(area: BlobArea, sha256: str, seconds: float) -> None:
    """Move the mtime of the blob of ``sha256`` ``seconds`` into the past."""
    age_name(area, area.name_of(sha256), seconds)


def age_all(store: Store, seconds: float = 2 * HOUR) -> None:
    """Make every blob of the store ``seconds`` older."""
    for entry in store.blobs.entries():
        age_name(store.blobs, entry.name, seconds)


def age_temp(area: BlobArea, seconds: float) -> None:
    """Make every temp file of the blob area ``seconds`` older."""
    temp = Path(area.locate("0" * 64)).parent.parent / "tmp"
    for entry in area.temp_entries():
        _move_back(temp / entry.name, seconds)


def _move_back(path: Path, seconds: float) -> None:
    mtime = os.stat(path).st_mtime - seconds
    os.utime(path, (mtime, mtime))
