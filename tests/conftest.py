"""Fixtures shared across the test files."""

from __future__ import annotations

from collections.abc import Iterator

import pytest

from tests.forkserver import ForkServer, close_shared, shared


@pytest.fixture(scope="session")
def fork_server() -> Iterator[ForkServer]:
    """One fork server per test process (per xdist worker): kill tests fork their jobs from it."""
    yield shared()
    close_shared()


def pytest_sessionfinish() -> None:
    """Close the fork server a helper started without the fixture (`tests.forkserver.shared`)."""
    close_shared()
