"""Fixtures shared across the test files."""

from __future__ import annotations

from collections.abc import Iterator

import pytest

from tests.forkserver import ForkServer


@pytest.fixture(scope="session")
def fork_server() -> Iterator[ForkServer]:
    """One fork server per test process (per xdist worker): kill tests fork their jobs from it."""
    server = ForkServer()
    yield server
    server.close()
