"""What a backend keeps, as bytes: `StoredRun` and `StoredNode`; run ids; run locks.

The plain data under `flowdag.stores.base.Store`: a backend stores and loads
these, never Python values. `RunLife` is what gc reads of a run.
"""

from __future__ import annotations

import re
from collections.abc import Mapping
from dataclasses import dataclass, field
from datetime import datetime
from typing import Protocol

from flowdag.errors import InvalidRunIdError

__all__ = ["RunLife", "RunLock", "StoredNode", "StoredRun", "check_run_id"]


_RUN_ID = re.compile(r"[A-Za-z0-9_.:-]{1,200}")


def check_run_id(run_id: object) -> str:
    """Return ``run_id`` if it is a valid run id, else raise `InvalidRunIdError`.

    Valid ids match ``[A-Za-z0-9_.:-]{1,200}`` and do not start with ``.``, so an
    id can never name a path outside the store (no ``/``, no ``..``, no NUL).
    """
    if not isinstance(run_id, str):
        raise InvalidRunIdError(f"run id must be a string, not {type(run_id).__name__}")
    if not _RUN_ID.fullmatch(run_id) or run_id.startswith("."):
        raise InvalidRunIdError(
            f"invalid run id {run_id!r}: use 1-200 characters from A-Z a-z 0-9 _ . : - "
            "and do not start with '.'"
        )
    return run_id


@dataclass(slots=True)
class StoredNode:
    """One node as a backend keeps it: meta blob and, apart from it, output blob."""

    meta: bytes
    output: bytes | None = None


@dataclass(slots=True)
class StoredRun:
    """One run as a backend keeps it: bytes only."""

    header: bytes
    nodes: dict[str, StoredNode] = field(default_factory=dict)
    data: dict[str, bytes] = field(default_factory=dict)

    def apply(self, nodes: Mapping[str, StoredNode], data: Mapping[str, bytes | None]) -> None:
        """Apply one commit: upsert ``nodes``, set ``data`` keys (None deletes)."""
        self.nodes.update(nodes)
        for key, value in data.items():
            if value is None:
                self.data.pop(key, None)
            else:
                self.data[key] = value

    def copy(self) -> StoredRun:
        """A copy that shares only the (immutable) blobs."""
        return StoredRun(
            self.header,
            {name: StoredNode(node.meta, node.output) for name, node in self.nodes.items()},
            dict(self.data),
        )


@dataclass(frozen=True, slots=True)
class RunLife:
    """What gc needs to know of a run, read without decoding an output (`Store.life`).

    ``expires_at`` is when the run expires (None: never); ``blobs`` the blobs its
    records refer to, sha256 -> when that ref expires (None: never).
    """

    expires_at: datetime | None
    blobs: dict[str, datetime | None]


class RunLock(Protocol):
    """A held per-run lock; the OS releases it if the process dies."""

    def release(self) -> None: ...
