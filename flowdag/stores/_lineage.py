"""Journal files and the snapshot they belong to: the rules, creating, checking, tidying.

A run's directory holds one snapshot and, normally, one journal: the *live*
one, of the snapshot's generation, whose header names the snapshot's id. Any
other journal file is one of:

- *folded*: the journal of the snapshot this one replaced (its id is the
  snapshot's ``parent``), left by a crash between writing a snapshot and
  removing the old journal. Every commit in it is in the snapshot: it is
  ignored, and a writer removes it.
- *foreign*: anything else. A journal newer than the snapshot (the snapshot
  was rolled back or restored alone), one of the same generation that extends
  another snapshot (the snapshot was lost and a new run of the same id
  started), or one whose header is damaged. Its commits are not in the
  snapshot and replaying it would mix two runs: a load refuses it
  (`CorruptStateError` naming both files), and a writer never deletes it (a
  save sets it aside, under a name no load reads).

Snapshots and journals of the previous release (format 1) have no ids: the
journal of the snapshot's generation is live, older ones are folded, as that
release treated them; the first snapshot this release writes over such a run
has no parent, and the format 1 journal of the generation before it is folded.
A zero-byte journal holds no commit: live at the snapshot's generation,
folded below it, foreign above it (it means a newer snapshot was there).

Write orders, each step durable before the next, so that a kill between any
two leaves files that load as before the write or as after it:

- a save: set aside the journals foreign to the snapshot being replaced
  (renamed ``set-aside-<8 hex>-journal-<n><suffix>.log``), write the new
  snapshot (temp file, fsync, rename, directory fsync), remove the replaced
  snapshot's journal (now folded), create the new journal whole;
- a compaction: write the new snapshot, tidy (the old journal is folded:
  removed; anything foreign set aside), create the new journal whole;
- the first commit to a format 1 run: a compaction, then the record.
"""

from __future__ import annotations

import contextlib
import logging
import os
import re
import uuid
from dataclasses import dataclass
from enum import StrEnum
from pathlib import Path

from flowdag.errors import CorruptStateError, RunNotFoundError
from flowdag.stores._files import (
    atomic_write,
    fsync_dir,
    list_names,
    open_file,
    open_private,
    remove_files,
    rename_in,
)
from flowdag.stores._format import ID_SIZE, Stamp
from flowdag.stores._framing import journal_header, read_header

__all__ = [
    "JournalFile",
    "Role",
    "journal_file",
    "journal_generation",
    "journal_names",
    "missing_snapshot",
    "next_stamp",
    "open_journal",
    "read_journals",
    "refuse_foreign",
    "role",
    "tidy",
    "why_foreign",
]

_logger = logging.getLogger("flowdag")

_NAME = re.compile(r"journal-(\d{1,19})(\..+)\.log")


class Role(StrEnum):
    """What a journal file is to a snapshot."""

    LIVE = "live"
    FOLDED = "folded"
    FOREIGN = "foreign"


@dataclass(frozen=True, slots=True)
class JournalFile:
    """One journal file as found: its name's generation and the snapshot id its header names.

    ``snapshot_id`` is b"" for a format 1 journal and None when the header is damaged.
    """

    name: str
    generation: int
    snapshot_id: bytes | None
    empty: bool = False


def journal_generation(name: str, suffix: str) -> int | None:
    """The generation in a journal's file name; None if not a journal of ``suffix``."""
    match = _NAME.fullmatch(name)
    if match is None or match[2] != suffix:
        return None
    return int(match[1])


def role(stamp: Stamp, journal: JournalFile) -> Role:
    """What ``journal`` is to the snapshot ``stamp`` (see the module docstring)."""
    mine, generation = journal.snapshot_id, journal.generation
    if journal.empty:
        if generation == stamp.generation:
            return Role.LIVE
        return Role.FOLDED if generation < stamp.generation else Role.FOREIGN
    if mine is None:
        return Role.FOREIGN
    if generation == stamp.generation and mine == stamp.id:
        return Role.LIVE
    if generation < stamp.generation:
        if not stamp.id and not mine:
            return Role.FOLDED  # format 1: older journals are stale
        if mine and mine == stamp.parent:
            return Role.FOLDED
        if not mine and not stamp.parent and generation == stamp.generation - 1:
            return Role.FOLDED  # the first snapshot written over a format 1 run
    return Role.FOREIGN


def why_foreign(stamp: Stamp, journal: JournalFile, snapshot: str, path: str) -> str:
    """Why the journal at ``path`` does not belong to the snapshot at ``snapshot``."""
    if journal.snapshot_id is None:
        return f"{path} has a damaged header: it cannot be tied to {snapshot}"
    if journal.generation > stamp.generation:
        return (
            f"{path} (generation {journal.generation}) is newer than {snapshot} "
            f"(generation {stamp.generation}): the snapshot was rolled back or restored "
            "without its journal, and the journal's commits are not in it"
        )
    return (
        f"{path} does not extend {snapshot} (it was written for another snapshot, "
        "e.g. of an earlier run of this id whose snapshot was lost)"
    )


# -- on the disk --------------------------------------------------------------------


def journal_names(directory: Path, suffix: str, root: Path) -> dict[str, int]:
    """The journal files of format ``suffix`` in a run's directory: name -> generation."""
    names = {name: journal_generation(name, suffix) for name in list_names(directory, root=root)}
    return {name: generation for name, generation in names.items() if generation is not None}


def read_journals(
    directory: Path, suffix: str, root: Path, skip: int | None = None
) -> list[JournalFile]:
    """The journal files in ``directory`` (but the one of generation ``skip``), headers read."""
    found = []
    for name, generation in journal_names(directory, suffix, root).items():
        if generation == skip:
            continue
        try:
            fd = open_file(directory / name, root=root)
        except FileNotFoundError:
            continue  # removed meanwhile: a writer tidied it
        try:
            head = os.pread(fd, 64, 0)
        finally:
            os.close(fd)
        found.append(journal_file(name, generation, head))
    return found


def journal_file(name: str, generation: int, head: bytes) -> JournalFile:
    """A journal file as its first bytes (at least its header's worth, or all) show it."""
    try:
        snapshot_id: bytes | None = read_header(head)[0]
    except ValueError:
        snapshot_id = None
    return JournalFile(name, generation, snapshot_id, empty=not head)


def refuse_foreign(run_id: str, stamp: Stamp, journals: list[JournalFile], snapshot: Path) -> None:
    """Raise `CorruptStateError` naming both files if a journal does not belong to ``snapshot``."""
    for journal in journals:
        if role(stamp, journal) is Role.FOREIGN:
            why = why_foreign(stamp, journal, str(snapshot), str(snapshot.parent / journal.name))
            raise CorruptStateError(
                f"run '{run_id}' is damaged: {why}; restore the snapshot and its journal "
                "from one backup, or move the journal away, or delete the run"
            )


def missing_snapshot(
    run_id: str, store: Path, snapshot: Path, suffix: str
) -> CorruptStateError | RunNotFoundError:
    """The error for a run without ``snapshot``: absent, or damaged if a journal remains."""
    journals = sorted(journal_names(snapshot.parent, suffix, store))
    if not journals:
        return RunNotFoundError(f"no run '{run_id}' in {store}")
    return CorruptStateError(
        f"run '{run_id}' is damaged: its snapshot {snapshot} is missing but "
        f"{snapshot.parent / journals[-1]} remains; restore the snapshot from a backup, "
        "or delete the run and run it again"
    )


def tidy(directory: Path, suffix: str, stamp: Stamp | None, root: Path) -> None:
    """Remove the journals folded into the snapshot ``stamp``; set aside the foreign ones.

    ``stamp`` None (no snapshot, or an unreadable one): every journal is set
    aside. A journal is only deleted when each of its commits is in the snapshot.
    """
    for journal in read_journals(directory, suffix, root):
        found = Role.FOREIGN if stamp is None else role(stamp, journal)
        if found is Role.LIVE:
            continue
        if found is Role.FOLDED:
            remove_files(directory, journal.name.__eq__, root=root)
            continue
        # Under a name no load reads, for a person to look at: never deleted.
        aside = f"set-aside-{uuid.uuid4().hex[:8]}-{journal.name}"
        rename_in(directory, journal.name, aside, root=root)
        _logger.warning(
            "%s does not belong to the snapshot being written; kept as %s",
            directory / journal.name,
            aside,
        )


def next_stamp(current: Stamp | None) -> Stamp:
    """The stamp of a snapshot written over ``current`` (None: over nothing)."""
    if current is None:
        return Stamp(1, os.urandom(ID_SIZE))
    return Stamp(current.generation + 1, os.urandom(ID_SIZE), current.id)


def open_journal(run_id: str, path: Path, stamp: Stamp, snapshot: Path, root: Path) -> int:
    """The journal at ``path`` of ``snapshot`` (``stamp``), opened for appending; made if missing.

    Raises:
        CorruptStateError: a journal of another snapshot is there.
    """
    if not stamp.id:  # format 1: no header; the name is durable before any record
        fd = open_private(path, os.O_RDWR | os.O_APPEND, root=root)
        try:
            fsync_dir(path.parent, root=root)
        except BaseException:
            os.close(fd)
            raise
        return fd
    with contextlib.suppress(FileNotFoundError):
        fd = open_file(path, root=root)
        try:
            empty = os.fstat(fd).st_size == 0
        finally:
            os.close(fd)
        if empty:  # no header, so no record: made anew
            remove_files(path.parent, path.name.__eq__, root=root)
    # Created whole (the header written aside, linked into place, the directory
    # synced): a journal is never seen without the id of the snapshot it extends.
    header = journal_header(stamp.id)
    atomic_write(path, header, replace=False, root=root)
    fd = open_private(path, os.O_RDWR | os.O_APPEND, root=root)
    head = os.pread(fd, len(header), 0)
    if head != header:  # one that was there already, of another snapshot
        os.close(fd)
        refuse_foreign(run_id, stamp, [journal_file(path.name, stamp.generation, head)], snapshot)
        raise CorruptStateError(f"run '{run_id}': {path} does not extend its snapshot")
    return fd
