"""Journal records: framing one payload, and replaying a journal's whole records.

A record is framed as::

    magic(2) length(u32) crc32(payload)(u32) crc32(previous 10 bytes)(u32)
    payload(length)
    length(u32) crc32(payload)(u32)            # trailer: the record is whole

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

__all__ = ["OVERHEAD", "frame", "replay"]

_MAGIC = b"\xf1\x4a"
_HEADER = struct.Struct("<2sIII")
_TRAILER = struct.Struct("<II")
#: Bytes a record adds around its payload.
OVERHEAD = _HEADER.size + _TRAILER.size


def frame(payload: bytes) -> bytes:
    """One journal record around ``payload`` (see the module docstring)."""
    crc = zlib.crc32(payload)
    head = _MAGIC + struct.pack("<II", len(payload), crc)
    return head + struct.pack("<I", zlib.crc32(head)) + payload + _TRAILER.pack(len(payload), crc)


def replay(content: bytes) -> tuple[list[bytes], int]:
    """The payloads of the whole records in ``content``, and where they end.

    Bytes past the returned offset are a torn tail (never acknowledged).

    Raises:
        ValueError: the journal is damaged (not merely torn at its end).
    """
    payloads: list[bytes] = []
    view = memoryview(content)
    size = len(content)
    pos = 0
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
        if zlib.crc32(payload) != crc:
            intact = content[end - _TRAILER.size : end] == _TRAILER.pack(length, crc)
            if intact or end != size:
                raise ValueError(f"damaged record at byte {pos}")
            break  # the last record's payload never fully landed: torn
        payloads.append(bytes(payload))
        pos = end
    return payloads, pos
