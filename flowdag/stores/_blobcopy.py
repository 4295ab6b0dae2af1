"""Copy the blobs a record refers to from one store to another, for `flowdag.stores.transfer`.

A record (a run, a kv entry, a cache entry) is written to the destination
only after the blobs it refers to: a crash in between leaves orphan blobs
(gc removes them), never a record whose blob is missing. A blob is copied
as it is, checked against its hash as it is read, unless it holds a value
the source's codec encoded and the destination reads with another (JSON <->
msgpack): then the value is read through the source, re-encoded with the
destination's codec into a new blob, and the record must hold the new ref
(`BlobCopier.refs` gives it). Every blob of one call is looked for in the
source before any is copied, so a missing one stops that record's copy with
nothing of it written. A blob copied once (or a ref re-encoded once) is not
copied again by the same copier.
"""

from __future__ import annotations

import hashlib
from dataclasses import dataclass, field
from datetime import UTC, datetime

from flowdag.errors import BlobMissingError, CorruptStateError, SerializationError, StoreError
from flowdag.refs import RAW, Ref
from flowdag.stores.base import Store

__all__ = ["BlobCopier", "Copied", "Subject"]


@dataclass(slots=True)
class Copied:
    """What `copy_run` (or `copy_tables`) did with the blobs of the refs it met."""

    blobs: int = 0  # live blobs the copy refers to, each counted once
    written: int = 0  # of them, copied (the others were there already)
    bytes_written: int = 0  # what the copied ones take in the destination
    recoded: int = 0  # refs whose value was re-encoded with the destination's codec
    expired: int = 0  # refs past their expires_at, whose blobs were not copied


@dataclass(frozen=True, slots=True)
class Subject:
    """The record whose blobs are copied, as messages name it."""

    name: str  # "run 'r'", "kv entry 'k'"
    run_id: str  # what describe() is given: the run's id, or ""
    dropped: str  # "the run was not copied"
    fix: str  # "run the node again"
    alone: bool = True  # no other record's blobs were copied before it in this copy


@dataclass(slots=True)
class BlobCopier:
    """Copies blobs from ``src`` to ``dst``, counting in ``done`` (see the module docstring)."""

    src: Store
    dst: Store
    done: Copied = field(default_factory=Copied)
    now: datetime = field(default_factory=lambda: datetime.now(UTC))
    _copied: set[str] = field(default_factory=set)  # blobs copied as they are
    _new: dict[Ref, Ref] = field(default_factory=dict)  # refs re-encoded, and their new ref

    @property
    def recoding(self) -> bool:
        """Whether the two stores encode values with different codecs."""
        return bool(self.src.codec.name != self.dst.codec.name)

    def refs(self, subject: Subject, where: list[tuple[str, Ref]]) -> dict[Ref, Ref]:
        """Copy the live blobs of the refs of ``where`` (place, ref); the refs re-encoded.

        Raises:
            BlobMissingError: a blob is missing from ``src`` (none was copied), or
                disappeared while it was copied.
            CorruptStateError: a blob does not match its hash.
            StoreError: a value cannot be stored with ``dst``'s codec.
        """
        live = [(place, ref) for place, ref in where if _live(ref.expires_at, self.now)]
        self.done.expired += len(where) - len(live)
        self._check(subject, [(place, ref.sha256, ref.uri) for place, ref in live])
        new: dict[Ref, Ref] = {}
        for place, ref in live:
            if not self._recoded(ref):
                self._copy(subject, place, ref.sha256, ref.size)
                continue
            if ref not in self._new:  # the same value held twice is re-encoded once
                self._new[ref] = self._recode(subject, place, ref)
            new[ref] = self._new[ref]
        return new

    def blobs(self, subject: Subject, where: list[tuple[str, str, datetime | None]]) -> None:
        """Copy the live blobs of ``where`` (place, sha256, expiry) as they are.

        Raises:
            BlobMissingError, CorruptStateError: as `refs` does.
        """
        live = [(place, sha) for place, sha, expires_at in where if _live(expires_at, self.now)]
        self._check(subject, [(place, sha, f"sha256:{sha}") for place, sha in live])
        for place, sha256 in live:
            self._copy(subject, place, sha256, None)

    def _recoded(self, ref: Ref) -> bool:
        """Whether ``ref`` holds a value ``src`` encoded and ``dst`` would decode otherwise."""
        return ref.encoding != RAW and ref.encoding == self.src.codec.name != self.dst.codec.name

    def _check(self, subject: Subject, where: list[tuple[str, str, str]]) -> None:
        src, dst, run_id = self.src, self.dst, subject.run_id
        for place, sha256, uri in where:  # a missing blob stops the copy before any is written
            if not src.blobs.exists(sha256):
                raise BlobMissingError(
                    f"{subject.name}, {place}: blob {uri} is missing from "
                    f"{src.describe(run_id)} ({src.blobs.locate(src.blobs.name_of(sha256))}); "
                    f"{subject.dropped}{_unchanged(subject, dst)}: restore the blob, "
                    f"or {subject.fix}"
                )

    def _copy(self, subject: Subject, place: str, sha256: str, size: int | None) -> None:
        if sha256 in self._copied:
            return
        dst = self.dst
        try:
            there = dst.blobs.exists(sha256)
            info = dst.blobs.copy_from(self.src.blobs, sha256, size=size)
        except (CorruptStateError, BlobMissingError) as exc:
            raise self._failed(subject, place, exc) from exc
        self._copied.add(sha256)
        self.done.blobs += 1
        self.done.written += not there
        self.done.bytes_written += 0 if there else info.stored_size

    def _recode(self, subject: Subject, place: str, ref: Ref) -> Ref:
        dst = self.dst
        try:
            data = dst.codec.encode(ref.load())  # read through the source, checked
        except (CorruptStateError, BlobMissingError) as exc:
            raise self._failed(subject, place, exc) from exc
        except SerializationError as exc:
            raise StoreError(
                f"{subject.name}, {place}: the value of ref {ref.uri} cannot be stored in "
                f"{dst.describe(subject.run_id)}: {exc}; {subject.dropped}"
            ) from exc
        there = dst.blobs.exists(hashlib.sha256(data).hexdigest())
        info = dst.blobs.put(data)
        self.done.recoded += 1
        self.done.blobs += 1
        self.done.written += not there
        self.done.bytes_written += 0 if there else info.stored_size
        return info.ref(
            expires_at=ref.expires_at,
            extracted=ref.extracted,
            preview=ref.preview,
            preview_truncated=ref.preview_truncated,
            encoding=dst.codec.name,
        )

    @staticmethod
    def _failed(subject: Subject, place: str, exc: Exception) -> Exception:
        return type(exc)(
            f"{subject.name}, {place}: {exc}; {subject.dropped} (blobs copied before this one "
            "stay unreferenced in the destination until gc)"
        )


def _unchanged(subject: Subject, dst: Store) -> str:
    if subject.alone:
        return f" and {dst.describe(subject.run_id)} was not changed"
    return " (blobs copied before this one stay unreferenced in the destination until gc)"


def _live(expires_at: datetime | None, now: datetime) -> bool:
    return expires_at is None or expires_at > now
