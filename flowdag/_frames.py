"""DataFrames and Arrow tables as values: pandas, polars and pyarrow, as Arrow IPC.

A ``pyarrow.Table``, a ``pandas.DataFrame`` or a ``polars.DataFrame`` is stored
as one *frame blob*: an 8-byte header, then an Arrow IPC stream whose buffers
are compressed with zstd (lz4 when zstd is not built in)::

    offset  size  field
    0       4     magic b"FDAF" (flowdag Arrow frame)
    4       1     version (1)
    5       1     kind: 0 pyarrow.Table, 1 pandas.DataFrame, 2 polars.DataFrame
    6       2     zero
    8       ...   Arrow IPC stream (schema, record batches, end-of-stream marker)

The msgpack codec writes the frame blob as ext 41; the JSON codec as
``{"$arrow": base64}``. pandas goes through pyarrow's pandas metadata (kept in
the schema), which restores the index, column names, categoricals and time
zones; polars through ``to_arrow``/``from_arrow``.

By reference (the next issue's large outputs): the frame blob is self-contained
and its IPC stream starts 8 bytes in, so a store can write the ext payload as a
file of its own and read it back with ``pyarrow.memory_map`` + `decode_frame`:
the 8-byte header keeps Arrow's 8-byte buffer alignment, and the IPC reader
slices the mapped file instead of copying it (only compressed buffers are
decompressed into fresh memory).

Nothing here imports pyarrow, pandas or polars until such a value is met: a
value is recognised by its type's module and name (the library is then
imported already). Decoding trusts nothing: before pyarrow decompresses a
record batch, the sizes the stream declares are summed from its metadata and
held to the codec's ``max_decoded_size``; the table read is then validated in
full, and any failure is `CorruptStateError`.
"""

from __future__ import annotations

import struct
import sys
from typing import Any

from flowdag.errors import CorruptStateError, OptionalDependencyError, SerializationError

__all__ = ["decode_frame", "encode_frame", "is_frame"]

_MAGIC = b"FDAF"
_VERSION = 1
_HEAD = struct.Struct("<4sBBH")  # 8 bytes: keeps the IPC stream 8-byte aligned
_ARROW, _PANDAS, _POLARS = 0, 1, 2
# (library, type name) of each frame type -> its kind; by name, so nothing is imported.
_TYPES = {
    ("pyarrow", "Table"): _ARROW,
    ("pandas", "DataFrame"): _PANDAS,
    ("polars", "DataFrame"): _POLARS,
}
_LIBRARIES = {_ARROW: "pyarrow", _PANDAS: "pandas", _POLARS: "polars"}
_INSTALL = "pip install 'flowdag[frames]'"

_I32 = struct.Struct("<i")
_U32 = struct.Struct("<I")
_U16 = struct.Struct("<H")
_I64 = struct.Struct("<q")
_BUFFER = struct.Struct("<qq")  # Arrow IPC Buffer: offset, length
_RECORD_BATCH, _DICTIONARY_BATCH = 3, 4  # Arrow IPC MessageHeader union tags


def is_frame(value: Any) -> bool:
    """Whether ``value`` is a frame (exactly one of the three types, no subclass)."""
    return _kind(type(value)) is not None


def _kind(cls: type) -> int | None:
    library = cls.__module__.partition(".")[0]
    kind = _TYPES.get((library, cls.__qualname__))
    # The library's own public class, imported already since a value of it exists.
    if kind is None or getattr(sys.modules.get(library), cls.__qualname__, None) is not cls:
        return None
    return kind


def _pyarrow(action: str, error: type[Exception]) -> Any:
    try:
        import pyarrow
        import pyarrow.ipc
    except ImportError as exc:
        raise error(
            f"cannot {action} a DataFrame or Arrow table: pyarrow is not installed; {_INSTALL}"
        ) from exc
    return pyarrow


def _codec(pa: Any) -> str:
    return "zstd" if pa.Codec.is_available("zstd") else "lz4"


def encode_frame(value: Any) -> bytes:
    """The frame blob of a frame value (see the module docstring).

    Raises:
        SerializationError: pyarrow is missing, or Arrow cannot hold the frame
            (e.g. a pandas column of mixed Python objects).
    """
    kind = _kind(type(value))
    assert kind is not None  # the codec calls this only for is_frame values
    pa = _pyarrow("store", SerializationError)
    try:
        if kind == _PANDAS:
            # preserve_index=None: a RangeIndex is kept as metadata, any other index as columns.
            table = pa.Table.from_pandas(value, preserve_index=None)
        elif kind == _POLARS:
            table = value.to_arrow()
        else:
            table = value
        sink = pa.BufferOutputStream()
        options = pa.ipc.IpcWriteOptions(compression=_codec(pa))
        with pa.ipc.new_stream(sink, table.schema, options=options) as writer:
            writer.write_table(table)
        stream = sink.getvalue()
    except (pa.ArrowException, ValueError, TypeError) as exc:
        raise SerializationError(
            f"cannot store a {_LIBRARIES[kind]} frame as Arrow ({type(exc).__name__}: {exc}); "
            "give its columns types Arrow can hold (e.g. no mixed Python objects)"
        ) from exc
    blob: bytes = _HEAD.pack(_MAGIC, _VERSION, kind, 0) + stream.to_pybytes()
    return blob


def decode_frame(data: Any, max_size: int) -> Any:
    """The frame a frame blob holds (bytes, a memoryview or a ``pyarrow.Buffer``).

    ``max_size`` bounds the bytes the IPC stream may decompress to.

    Raises:
        CorruptStateError: the blob is damaged, hostile or over ``max_size``.
        OptionalDependencyError: pyarrow, or the frame's library, is missing.
    """
    view = memoryview(data)
    if len(view) < _HEAD.size:
        raise CorruptStateError(f"blob holds a frame of {len(view)} bytes, shorter than its header")
    magic, version, kind, zero = _HEAD.unpack_from(view)
    if magic != _MAGIC or version != _VERSION or kind not in _LIBRARIES or zero:
        raise CorruptStateError("blob holds a frame with an invalid header")
    pa = _pyarrow("load", OptionalDependencyError)
    if kind != _ARROW and _LIBRARIES[kind] not in sys.modules:
        try:
            __import__(_LIBRARIES[kind])
        except ImportError as exc:
            raise OptionalDependencyError(
                f"cannot load a {_LIBRARIES[kind]} DataFrame: {_LIBRARIES[kind]} is not "
                f"installed; pip install {_LIBRARIES[kind]}"
            ) from exc
    try:
        buffer = pa.py_buffer(view[_HEAD.size :])  # no copy: the table slices these bytes
        _check_sizes(pa, buffer, max_size)
        table = pa.ipc.open_stream(buffer).read_all()
        table.validate(full=True)  # offsets and lengths in range before anyone reads them
        if kind == _PANDAS:
            return table.to_pandas()
        if kind == _POLARS:
            return sys.modules["polars"].from_arrow(table)
        return table
    except CorruptStateError:
        raise
    except BaseException as exc:
        # polars reports bad input as a Rust panic (pyo3's PanicException, a BaseException).
        if not isinstance(exc, Exception) and type(exc).__name__ != "PanicException":
            raise
        raise CorruptStateError(
            f"blob holds a damaged Arrow frame ({type(exc).__name__}: {exc})"
        ) from exc


def _check_sizes(pa: Any, buffer: Any, max_size: int) -> None:
    """Refuse a stream whose batches declare more than ``max_size`` bytes in all.

    Read from the messages' metadata (flatbuffers) before any body is
    decompressed: a compressed buffer starts with its decompressed length.
    """
    reader = pa.ipc.MessageReader.open_stream(buffer)
    total = 0
    for message in reader:
        meta = memoryview(message.metadata)
        header_type, header = _message_header(meta)
        if header_type == _DICTIONARY_BATCH:
            header = _field_table(meta, header, 1)
        elif header_type != _RECORD_BATCH:
            continue
        body = memoryview(message.body)
        compressed = _field(meta, header, 3) != 0
        for offset, length in _buffers(meta, header):
            if offset < 0 or length < 0 or offset + length > len(body):
                raise CorruptStateError("blob holds an Arrow buffer outside its message")
            if compressed and length:
                (size,) = _I64.unpack_from(body, offset)
                total += length - 8 if size == -1 else size
            else:
                total += length
            if total > max_size or total < 0:
                raise CorruptStateError(
                    f"blob holds an Arrow frame of more than max_decoded_size={max_size} "
                    "bytes once decompressed; refused (pass a larger max_decoded_size to "
                    "the codec if it is expected)"
                )


# -- a minimal flatbuffers reader, for Arrow's Message and RecordBatch tables ------


def _field(meta: memoryview, table: int, index: int) -> int:
    """Absolute position of field ``index`` of the table at ``table``; 0 if absent."""
    vtable = table - _I32.unpack_from(meta, table)[0]
    (vsize,) = _U16.unpack_from(meta, vtable)
    slot = 4 + 2 * index
    if slot + 2 > vsize:
        return 0
    (offset,) = _U16.unpack_from(meta, vtable + slot)
    return table + offset if offset else 0


def _field_table(meta: memoryview, table: int, index: int) -> int:
    at = _field(meta, table, index)
    if not at:
        raise CorruptStateError("blob holds an Arrow message without its header")
    (offset,) = _U32.unpack_from(meta, at)
    return at + int(offset)


def _message_header(meta: memoryview) -> tuple[int, int]:
    try:
        (root,) = _U32.unpack_from(meta, 0)
        kind_at = _field(meta, root, 1)
        header_type = meta[kind_at] if kind_at else 0
        if header_type not in (_RECORD_BATCH, _DICTIONARY_BATCH):
            return header_type, 0
        return header_type, _field_table(meta, root, 2)
    except (struct.error, IndexError) as exc:
        raise CorruptStateError(f"blob holds a damaged Arrow message ({exc})") from exc


def _buffers(meta: memoryview, batch: int) -> list[tuple[int, int]]:
    try:
        at = _field(meta, batch, 2)
        if not at:
            return []
        vector = at + _U32.unpack_from(meta, at)[0]
        (count,) = _U32.unpack_from(meta, vector)
        if vector + 4 + count * _BUFFER.size > len(meta):
            raise CorruptStateError("blob holds an Arrow buffer list past its message")
        return [_BUFFER.unpack_from(meta, vector + 4 + i * _BUFFER.size) for i in range(count)]
    except struct.error as exc:
        raise CorruptStateError(f"blob holds a damaged Arrow message ({exc})") from exc
