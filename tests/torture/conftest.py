"""The ``--torture-runs N`` option: torture runs per disk store (default 1, for CI).

pytest reads this option only when ``tests/torture`` is on the command line
(``pytest tests/torture --torture-runs 50``); from the project root, set
``TORTURE_RUNS=50`` instead. ``scripts/torture.py`` runs the long version in
parallel and prints the figures.
"""

from __future__ import annotations

import os

import pytest

DEFAULT_RUNS = 1


def pytest_addoption(parser: pytest.Parser) -> None:
    group = parser.getgroup("torture", "SIGKILL torture (tests/torture)")
    group.addoption(
        "--torture-runs",
        type=int,
        default=None,
        metavar="N",
        help=f"torture runs per disk store, each killed several times (default {DEFAULT_RUNS})",
    )


@pytest.fixture(scope="session")
def torture_runs(request: pytest.FixtureRequest) -> int:
    """Torture runs per store: --torture-runs, else $TORTURE_RUNS, else the CI default."""
    runs = request.config.getoption("--torture-runs", default=None)
    if runs is None:
        runs = int(os.environ.get("TORTURE_RUNS", DEFAULT_RUNS))
    return int(runs)
