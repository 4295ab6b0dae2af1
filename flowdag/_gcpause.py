"""Pausing Python's cyclic garbage collector while bulk work builds many objects.

Loading and planning a large run allocate a few objects per node (states,
records, verdicts), none of them in a reference cycle. Each allocation past the
collector's threshold starts a collection that walks the young objects, and
the oldest generation is walked again and again as it grows: a quarter of the
load of a 100k-node run. Reference counting still frees everything dropped
meanwhile; only cycles wait for the collector, which runs again at the end.

Never pause around user code (node functions): it may build cycles for as long
as it runs.
"""

from __future__ import annotations

import gc
from collections.abc import Iterator
from contextlib import contextmanager

__all__ = ["cyclic_gc_paused"]


@contextmanager
def cyclic_gc_paused() -> Iterator[None]:
    """Disable the cyclic collector inside the block, if it was enabled.

    Nested or concurrent blocks are harmless: only the block that disabled the
    collector enables it again (which may shorten another thread's pause).
    """
    if not gc.isenabled():
        yield
        return
    gc.disable()
    try:
        yield
    finally:
        gc.enable()
