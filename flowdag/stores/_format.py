"""`RunFormat`: how a journaled store turns one run's snapshot and commits into bytes.

Formats (``json_format.py``, ``flatbuffers_format.py``) implement it; the
journal engine (``_journal.py``) frames, seals, syncs and replays what they
make, and never looks inside.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Protocol

from flowdag.stores.base import StoredNode, StoredRun

__all__ = ["Commit", "RunFormat"]

#: One commit as a format sees it: nodes to upsert, data keys to set (None deletes).
Commit = tuple[Mapping[str, StoredNode], Mapping[str, bytes | None]]


class RunFormat(Protocol):
    """How a journaled store lays out one run's snapshot and commits as bytes.

    Every ``load_*`` raises ``ValueError`` (or a subclass) on bytes it cannot
    parse; the journal engine turns that into `CorruptStateError` naming the
    run and the file. Journal records are framed and checksummed by the engine,
    so a commit payload only needs to parse. A snapshot is written exactly as
    the format dumps it (so that a JSON snapshot stays a plain JSON file): the
    format must put a checksum of its own in it, and `load_snapshot` and
    `load_snapshot_metas` must raise ``ValueError`` when it does not match.
    """

    #: File name suffix of snapshots, e.g. ``".json"``.
    suffix: str

    def dump_snapshot(self, run: StoredRun, generation: int) -> bytes:
        """The whole run as one file's content, recording ``generation``."""
        ...

    def load_snapshot(self, content: bytes) -> tuple[StoredRun, int]:
        """Parse a snapshot: the run and its generation."""
        ...

    def load_snapshot_metas(self, content: bytes) -> tuple[bytes, dict[str, bytes], int]:
        """Header, node -> meta blob, and generation, without touching outputs or data."""
        ...

    def dump_commit(
        self, nodes: Mapping[str, StoredNode], data: Mapping[str, bytes | None]
    ) -> bytes:
        """One commit as a journal record's payload."""
        ...

    def load_commit(self, payload: bytes) -> Commit:
        """Parse a journal record's payload."""
        ...
