"""The values the blob kill tests write: light to import, for their writer subprocess."""

from __future__ import annotations

import random

VALUES = 23  # distinct values; the writer cycles through them, so later writes dedup


def value(k: int) -> bytes:
    """The k-th value: incompressible (writes take time), 0 to 3 MiB, the same every run."""
    size = (0, 100, 70_000, 300_000, 3_100_000)[k % 5]
    return random.Random(k).randbytes(size)
