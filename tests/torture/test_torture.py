"""SIGKILL torture on every disk store (see harness.py); CI runs one short run per store.

Long runs: ``pytest tests/torture --torture-runs 50`` or ``python scripts/torture.py``.
"""

from __future__ import annotations

from pathlib import Path

import pytest

from tests.torture import harness
from tests.torture.conftest import DEFAULT_RUNS


@pytest.mark.parametrize("scheme", harness.STORES)
def test_sigkill_torture(tmp_path: Path, scheme: str, torture_runs: int) -> None:
    short = torture_runs <= DEFAULT_RUNS
    total = harness.Stats()
    for n in range(torture_runs):
        seed = 1000 + 3 * n + harness.STORES.index(scheme)  # odd seeds run encrypted
        total.add(
            harness.torture(
                scheme,
                seed,
                tmp_path / f"run-{seed}",
                kills=3 if short else 4,
                encrypt=seed % 2 == 1,
                max_nodes=50 if short else 300,
                rerun=not short,  # tests/test_crash.py checks that in CI already
                lose_snapshot=n % 3 == 0,  # on the journaled stores
            )
        )
    print(f"\n{scheme}: {total}")
    assert total.kills >= torture_runs  # a run may finish before its last planned kill
    assert total.violations == []
