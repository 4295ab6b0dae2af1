"""What the kv tests share: every store kind, skipped where the store keeps no tables yet."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest

from flowdag._kv_entries import has_tables
from flowdag.stores import open_store
from flowdag.stores.base import Store

KINDS = ["memory", "lmdb", "json", "flatbuffers"]
DISK_KINDS = KINDS[1:]


def url_of(kind: str, root: Path) -> str:
    return "memory://" if kind == "memory" else f"{kind}://{root / kind}"


def open_kind(kind: str, root: Path) -> Store:
    """The store of ``kind`` under ``root``; the test is skipped while that kind keeps no tables."""
    store = open_store(url_of(kind, root))
    if not has_tables(store):
        store.close()
        pytest.skip(f"waiting on the storage layer: {kind} stores keep no tables yet")
    return store


@pytest.fixture(params=KINDS)
def store(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[Store]:
    with open_kind(request.param, tmp_path) as opened:
        yield opened


@pytest.fixture(params=DISK_KINDS)
def disk_store(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[Store]:
    with open_kind(request.param, tmp_path) as opened:
        yield opened
