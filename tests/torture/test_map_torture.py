"""SIGKILL torture of maps on every disk store (see map_torture.py); CI runs one short run each.

Long runs: ``python scripts/torture.py --maps N``, or ``pytest tests/torture --torture-runs N``.
"""

from __future__ import annotations

from pathlib import Path

import pytest

from tests.torture import harness
from tests.torture.conftest import DEFAULT_RUNS
from tests.torture.map_torture import MapStats, map_torture


@pytest.mark.parametrize("scheme", harness.STORES)
def test_map_sigkill_torture(tmp_path: Path, scheme: str, torture_runs: int) -> None:
    short = torture_runs <= DEFAULT_RUNS
    total = MapStats()
    for n in range(torture_runs):
        seed = 3000 + 3 * n + harness.STORES.index(scheme)  # odd seeds run encrypted
        total.add(
            map_torture(
                scheme,
                seed,
                tmp_path / f"run-{seed}",
                kills=2 if short else 4,
                encrypt=seed % 2 == 1,
                max_nodes=24 if short else 300,
                rerun=not short,
            )
        )
    print(f"\n{scheme}: {total}")
    assert total.maps >= 2 * torture_runs
    assert total.violations == []
