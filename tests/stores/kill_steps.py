"""Killing a child process at the N-th step: shared by the store's kill tests.

`KillAt` is for jobs forked by `tests.forkserver`: ``KillAt(n).patch(os,
"fsync", "rename")`` wraps those functions so that the process SIGKILLs itself
at the ``n``-th call of any function it wrapped (counted together in
``calls``), before making that call.

`KILLING` is the same as source, for child scripts run with ``python -c``: it
defines ``killing(real)``; the script sets ``kill_at`` and ``calls = 0`` first.
"""

from __future__ import annotations

import os
import signal
from collections.abc import Callable
from typing import Any


class KillAt:
    """Counts the calls of every function it wrapped; SIGKILLs its process at the ``kill_at``-th."""

    def __init__(self, kill_at: int) -> None:
        self.kill_at = kill_at
        self.calls = 0

    def wrap(self, real: Callable[..., Any]) -> Callable[..., Any]:
        def step(*args: Any, **kwargs: Any) -> Any:
            self.calls += 1
            if self.calls == self.kill_at:
                os.kill(os.getpid(), signal.SIGKILL)
            return real(*args, **kwargs)

        return step

    def patch(self, owner: Any, *names: str) -> None:
        """Replace each attribute ``names`` of ``owner`` (a module or class) by its wrapper."""
        for name in names:
            setattr(owner, name, self.wrap(getattr(owner, name)))


KILLING = """
def killing(real):
    def step(*args, **kwargs):
        global calls
        calls += 1
        if calls == kill_at:
            os.kill(os.getpid(), signal.SIGKILL)
        return real(*args, **kwargs)
    return step
"""
