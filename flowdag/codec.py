"""Values <-> bytes: msgpack with extension types, zstd above a threshold, a header.

(Minimal first version: being extended with extension types and limits.)
"""

from __future__ import annotations

import struct
import zlib
from typing import Any

import msgpack

from flowdag.errors import CorruptStateError, SerializationError

__all__ = ["Codec"]

_HEADER = struct.Struct("<BBI")  # format version, flags, crc32 of the payload
_VERSION = 1


class Codec:
    """Encodes values for stores."""

    def __init__(self, *, compress_threshold: int = 1024, allow_pickle: bool = False) -> None:
        self.compress_threshold = compress_threshold
        self.allow_pickle = allow_pickle

    def encode(self, value: Any) -> bytes:
        try:
            payload = msgpack.packb(value, use_bin_type=True, strict_types=False)
        except (TypeError, ValueError, OverflowError) as exc:
            raise SerializationError(f"cannot store a value of type {type(value).__name__}") from exc
        return _HEADER.pack(_VERSION, 0, zlib.crc32(payload)) + payload

    def decode(self, blob: bytes) -> Any:
        if len(blob) < _HEADER.size:
            raise CorruptStateError("blob too short")
        version, _flags, crc = _HEADER.unpack_from(blob)
        payload = blob[_HEADER.size :]
        if version != _VERSION or zlib.crc32(payload) != crc:
            raise CorruptStateError("checksum mismatch")
        return msgpack.unpackb(payload, raw=False, strict_map_key=False)
