"""SIGKILL torture of a change-aware resume on every disk store (see edit_torture.py).

CI runs one short run per store; ``python scripts/torture.py --edit-runs N`` the long ones.
"""

from __future__ import annotations

from pathlib import Path

import pytest

from tests.torture import harness
from tests.torture.conftest import DEFAULT_RUNS
from tests.torture.edit_torture import EditStats, edit_torture


@pytest.mark.parametrize("scheme", harness.STORES)
def test_edit_sigkill_torture(tmp_path: Path, scheme: str, torture_runs: int) -> None:
    short = torture_runs <= DEFAULT_RUNS
    total = EditStats()
    for n in range(torture_runs):
        seed = 2000 + 3 * n + harness.STORES.index(scheme)  # odd seeds run encrypted
        total.add(
            edit_torture(
                scheme,
                seed,
                tmp_path / f"run-{seed}",
                kills=2 if short else 4,
                encrypt=seed % 2 == 1,
                max_nodes=60 if short else 300,
            )
        )
    print(f"\n{scheme}: {total}")
    assert total.edited >= torture_runs
    assert total.violations == []
