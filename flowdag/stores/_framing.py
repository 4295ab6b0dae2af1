"""Journal records: framing one payload, and replaying a journal's whole records.

A journal (format 2) opens with a header naming the snapshot it extends::

    b"FDJ2" snapshot_id(16) crc32(previous 20 bytes)(u32)

and is created whole with it (written aside, linked into place), so a journal
never lacks its header. A journal written by the previous release (format 1)
has no header: its first record starts at byte 0.

A record is framed as::

    magic(2) length(u32) crc32(payload)(u32) crc32(previous 10 bytes)(u32)
    payload(length)
    length(u32) crc32(payload)(u32)            # trailer: the record is whole

In a format 2 journal, ``crc32(payload)`` is the CRC32 of the snapshot id
followed by the payload (``seed`` below): a record is bound to its journal's
snapshot, so one copied into a journal of another snapshot fails its checksum.

`replay` tells a *torn* tail (the process died mid-append: the record was never
acknowledged, so it is ignored and cut off before the next append) from
*damage* (raised as ``ValueError``): a tail shorter than its header says, or
zero-filled, or whose payload fails its checksum while the trailer is missing,
is torn; a bad header with data after it, or a bad payload behind an intact
trailer, is damage.
"""

from __future__ import annotations

import struct
import zlib

__all__ = [
    "HEADER_SIZE",
    "OVERHEAD",
    "frame",
    "journal",
    "journal_header",
    "read_header",
    "read_journal",
    "replay",
    "seed",
]

_JOURNAL_MAGIC = b"FDJ2"
_JOURNAL_HEADER = struct.Struct("<4s16sI")
#: Bytes of a format 2 journal's header.
HEADER_SIZE = _JOURNAL_HEADER.size
_MAGIC = b"\xf1\x4a"
_HEADER = struct.Struct("<2sIII")
_TRAILER = struct.Struct("<II")
#: Bytes a record adds around its payload.
OVERHEAD = _HEADER.size + _TRAILER.size


def journal_header(snapshot_id: bytes) -> bytes:
    """The header of a journal extending the snapshot ``snapshot_id`` (16 bytes)."""
    head = _JOURNAL_MAGIC + snapshot_id
    return _JOURNAL_HEADER.pack(_JOURNAL_MAGIC, snapshot_id, zlib.crc32(head))


def read_header(content: bytes) -> tuple[bytes, int]:
    """The snapshot id a journal names (b"" for format 1) and where its records start.

    Raises:
        ValueError: the journal's header is damaged.
    """
    if content[:1] != _JOURNAL_MAGIC[:1]:
        return b"", 0  # format 1: records from byte 0 (or empty)
    if len(content) < HEADER_SIZE:
        raise ValueError(f"journal header cut short ({len(content)} bytes)")
    magic, snapshot_id, crc = _JOURNAL_HEADER.unpack_from(content)
    if magic != _JOURNAL_MAGIC or zlib.crc32(content[: HEADER_SIZE - 4]) != crc:
        raise ValueError("damaged journal header")
    return snapshot_id, HEADER_SIZE


def seed(snapshot_id: bytes) -> int:
    """What a record's checksum starts from in a journal of ``snapshot_id`` (0: format 1)."""
    return zlib.crc32(snapshot_id) if snapshot_id else 0


def frame(payload: bytes, start: int = 0) -> bytes:
    """One journal record around ``payload``, its checksum started from ``start``."""
    crc = zlib.crc32(payload, start)
    head = _MAGIC + struct.pack("<II", len(payload), crc)
    return head + struct.pack("<I", zlib.crc32(head)) + payload + _TRAILER.pack(len(payload), crc)


def replay(content: bytes, pos: int = 0, start: int = 0) -> tuple[list[bytes], int]:
    """The payloads of the whole records in ``content`` from ``pos``, and where they end.

    ``start`` is what checksums start from (`seed`).

    Bytes past the returned offset are a torn tail (never acknowledged).

    Raises:
        ValueError: the journal is damaged (not merely torn at its end).
    """
    payloads: list[bytes] = []
    view = memoryview(content)
    size = len(content)
    while pos < size:
        if size - pos < _HEADER.size:
            break  # a header cut short: torn
        magic, length, crc, head_crc = _HEADER.unpack_from(content, pos)
        if magic != _MAGIC or zlib.crc32(view[pos : pos + 10]) != head_crc:
            if not any(view[pos:]):
                break  # zero-filled tail: the file grew, the data never landed
            raise ValueError(f"damaged record header at byte {pos}")
        body = pos + _HEADER.size
        end = body + length + _TRAILER.size
        if end > size:
            break  # the header is sound, so the record was cut short: torn
        payload = view[body : body + length]
        if zlib.crc32(payload, start) != crc:
            intact = content[end - _TRAILER.size : end] == _TRAILER.pack(length, crc)
            if intact or end != size:
                raise ValueError(f"damaged record at byte {pos}")
            break  # the last record's payload never fully landed: torn
        payloads.append(bytes(payload))
        pos = end
    return payloads, pos


def journal(snapshot_id: bytes, payloads: list[bytes]) -> bytes:
    """A whole journal of ``snapshot_id`` (b"": format 1) holding ``payloads``."""
    head = journal_header(snapshot_id) if snapshot_id else b""
    start = seed(snapshot_id)
    return head + b"".join(frame(payload, start) for payload in payloads)


def read_journal(content: bytes) -> tuple[bytes, list[bytes], int]:
    """A journal's snapshot id (b"": format 1), its whole records' payloads, and their end.

    Raises:
        ValueError: the journal is damaged (not merely torn at its end).
    """
    snapshot_id, pos = read_header(content)
    payloads, end = replay(content, pos, seed(snapshot_id))
    return snapshot_id, payloads, end
