"""SIGKILL torture of gc on every disk store (see gc_torture.py); CI runs one short run per store.

Long runs: ``python scripts/torture.py --gc-runs 50``, or
``pytest tests/torture --torture-runs N``.
"""

from __future__ import annotations

from pathlib import Path

import pytest

from tests.torture import gc_torture
from tests.torture.conftest import DEFAULT_RUNS


@pytest.mark.parametrize("scheme", gc_torture.STORES)
def test_gc_sigkill_torture(tmp_path: Path, scheme: str, torture_runs: int) -> None:
    short = torture_runs <= DEFAULT_RUNS
    total = gc_torture.GCStats()
    for n in range(torture_runs):
        seed = 2000 + 3 * n + gc_torture.STORES.index(scheme)  # odd seeds run encrypted
        total.add(
            gc_torture.gc_torture(
                scheme,
                seed,
                tmp_path / f"gc-{seed}",
                kills=3 if short else 6,
                encrypt=seed % 2 == 1,
            )
        )
    print(f"\n{scheme}: {total}")
    assert total.rounds >= torture_runs * 3
    assert total.violations == []
