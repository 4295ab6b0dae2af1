"""Bounds-checked reads from one flatbuffer, without the FlatBuffers runtime.

Positions are absolute offsets into the buffer. The reader follows vtables as
any FlatBuffers reader does, so it does not depend on how the buffer was
built; every offset is checked against the buffer's bounds, and every failure
is a ``ValueError``. See `flowdag.stores.flatbuffers_format` for why it exists.
"""

from __future__ import annotations

import struct

__all__ = ["FlatBuffer"]

_U16 = struct.Struct("<H").unpack_from
_U32 = struct.Struct("<I").unpack_from
_I32 = struct.Struct("<i").unpack_from


class FlatBuffer:
    """Bounds-checked reads from one flatbuffer; positions are absolute offsets.

    `struct` reads go through a memoryview cut to the buffer, so they cannot
    stray into a trailer; blobs are sliced from the bytes object (one copy).
    Nothing is negative: uoffsets are unsigned, and vtable positions are checked.
    """

    __slots__ = ("content", "size", "view")

    def __init__(self, content: bytes, size: int, identifier: bytes) -> None:
        """Read the flatbuffer in ``content[:size]``; its file identifier must be ``identifier``."""
        # Blobs are sliced from bytes: slicing a memoryview would need a bytes() each.
        self.content = content if type(content) is bytes else bytes(content)
        self.view = memoryview(self.content)[:size]
        self.size = size
        if size < 8 or self.content[4:8] != identifier:
            raise ValueError("not a flowdag FlatBuffers buffer: wrong file identifier")

    def root_fields(self, count: int) -> tuple[int, ...]:
        root = _U32(self.view, 0)[0]
        slots = self.vtable(root - _I32(self.view, root)[0], count)
        return tuple(root + slot if slot else 0 for slot in slots)

    def vtable(self, at: int, count: int) -> tuple[int, ...]:
        """The first ``count`` field offsets of the vtable at ``at`` (0: absent)."""
        if at < 0 or at & 1:
            raise ValueError("damaged FlatBuffers buffer: bad vtable offset")
        length: int = _U16(self.view, at)[0]
        if length < 4 or length & 1 or at + length > self.size:
            raise ValueError("damaged FlatBuffers buffer: bad vtable size")
        fields = min(count, (length - 4) // 2)
        slots: tuple[int, ...] = struct.unpack_from(f"<{fields}H", self.view, at + 4)
        return slots + (0,) * (count - fields)

    def offsets(self, field: int) -> list[int]:
        """Positions of the tables or strings that the vector at ``field`` points to."""
        if not field:
            return []
        at = field + _U32(self.view, field)[0]
        count = _U32(self.view, at)[0]
        if count > (self.size - at - 4) // 4:
            raise ValueError("damaged FlatBuffers buffer: a vector overruns the buffer")
        first = at + 4
        relative = struct.unpack_from(f"<{count}I", self.view, first)
        return [first + 4 * i + offset for i, offset in enumerate(relative)]

    def count(self, field: int) -> int:
        """The length of the vector at ``field`` (0 if absent)."""
        return _U32(self.view, field + _U32(self.view, field)[0])[0] if field else 0

    def blob(self, field: int) -> bytes:
        """The [ubyte] vector whose uoffset is at ``field``."""
        return self.blob_at(field + _U32(self.view, field)[0])

    def blob_at(self, at: int) -> bytes:
        """The [ubyte] vector (or string, without its NUL) that starts at ``at``."""
        end = at + 4 + _U32(self.view, at)[0]
        if end > self.size:
            raise ValueError("damaged FlatBuffers buffer: a vector overruns the buffer")
        return self.content[at + 4 : end]

    def string(self, field: int) -> str:
        """The string whose uoffset is at ``field``."""
        return self.blob(field).decode()

    def u64(self, at: int) -> int:
        return int(struct.unpack_from("<Q", self.view, at)[0])
