"""`RunFormat`: how a journaled store turns one run's snapshot and commits into bytes.

Formats (``json_format.py``, ``flatbuffers_format.py``) implement it; the
journal engine (``_journal.py``) frames, seals, syncs and replays what they
make, and never looks inside.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from typing import Protocol

from flowdag.stores.base import StoredNode, StoredRun

__all__ = ["ID_SIZE", "Commit", "RunFormat", "Stamp"]

#: One commit as a format sees it: nodes to upsert, data keys to set (None deletes).
Commit = tuple[Mapping[str, StoredNode], Mapping[str, bytes | None]]

#: Bytes of a snapshot id.
ID_SIZE = 16


@dataclass(frozen=True, slots=True)
class Stamp:
    """Which snapshot a snapshot file is: what binds a journal to it.

    ``id`` is random, drawn anew for every snapshot written, and every journal
    record is bound to it; ``parent`` is the id of the snapshot this one
    replaced, so that the replaced snapshot's journal is known to be folded in.
    A snapshot written by a release before ids (format 1) has ``id`` and
    ``parent`` empty; so has ``parent`` when nothing (or such a snapshot) was replaced.
    """

    generation: int
    id: bytes = b""
    parent: bytes = b""

    def __post_init__(self) -> None:
        if type(self.generation) is not int or not 0 <= self.generation < 2**64:
            raise ValueError(f"generation must be an int in [0, 2**64), not {self.generation!r}")
        for field, value in (("id", self.id), ("parent", self.parent)):
            if len(value) not in (0, ID_SIZE):
                raise ValueError(f"a snapshot {field} is {ID_SIZE} bytes or none, not {value!r}")


class RunFormat(Protocol):
    """How a journaled store lays out one run's snapshot and commits as bytes.

    Every ``load_*`` raises ``ValueError`` (or a subclass) on bytes it cannot
    parse; the journal engine turns that into `CorruptStateError` naming the
    run and the file. Journal records are framed and checksummed by the engine,
    so a commit payload only needs to parse. A snapshot is written exactly as
    the format dumps it (so that a JSON snapshot stays a plain JSON file): the
    format must put a checksum of its own in it, and `load_snapshot` and
    `load_snapshot_metas` must raise ``ValueError`` when it does not match.
    The snapshot's `Stamp` (generation, id, parent) must be covered by that
    checksum, and a format keeps reading the snapshots of its previous version.
    """

    #: File name suffix of snapshots, e.g. ``".json"``.
    suffix: str

    def dump_snapshot(self, run: StoredRun, stamp: Stamp) -> bytes:
        """The whole run as one file's content, recording ``stamp`` (its id is set)."""
        ...

    def load_snapshot(self, content: bytes) -> tuple[StoredRun, Stamp]:
        """Parse a snapshot: the run and its stamp (no id if the previous format)."""
        ...

    def load_snapshot_metas(self, content: bytes) -> tuple[bytes, dict[str, bytes], Stamp]:
        """Header, node -> meta blob, and stamp, without touching outputs or data."""
        ...

    def dump_commit(
        self, nodes: Mapping[str, StoredNode], data: Mapping[str, bytes | None]
    ) -> bytes:
        """One commit as a journal record's payload."""
        ...

    def load_commit(self, payload: bytes) -> Commit:
        """Parse a journal record's payload."""
        ...
