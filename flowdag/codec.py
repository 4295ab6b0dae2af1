"""Values <-> bytes for stores: msgpack with extension types, zstd above a threshold, a header.

Every node output, ``ctx.data`` value and piece of run metadata goes through one
`Codec`. ``encode`` runs once per node output, from worker threads, so the
common case (a small value of plain types) costs one call into a thread-local
msgpack ``Packer``, one CRC and one ``struct`` pack; zstd, limits and the
slower checks only start above the compression threshold. ``decode`` trusts
nothing: whatever the bytes, it returns the value that was encoded or raises
`CorruptStateError`, and it never unpickles unless the codec opted in.

Blob layout (integers little-endian)::

    offset  size  field
    0       1     format byte 0xF1: high nibble 0xF marks flowdag, low nibble the version (1)
    1       1     flags: 0 = the payload is msgpack, 1 = the payload is one zstd frame
    2       4     CRC32 (zlib.crc32) of the flags byte and of every byte from offset 6 on
    6       8     only when compressed: length of the msgpack once decompressed (u64)
    6 / 14  ...   payload: one msgpack object, or the zstd frame that holds it

The CRC covers the flags and the length too, so every damaged byte is caught
before anything is parsed. A payload is compressed only when it is longer than
``compress_threshold`` and zstd makes it smaller.

msgpack carries None, bool, int (64-bit), float, str, bytes, list and dict
(any keys) itself; ``strict_types=True`` sends everything else, subclasses
included, to extension types (``ext code: payload``)::

    1    int beyond 64 bits   big-endian two's complement
    2    tuple                msgpack array of the items (nested exts inside)
    3    set                  same
    4    frozenset            same
    5    datetime             msgpack [year, month, day, hour, minute, second, micros, fold, tz]
    6    date                 msgpack proleptic Gregorian ordinal
    7    time                 msgpack [hour, minute, second, micros, fold, tz]
    8    timedelta            msgpack [days, seconds, microseconds]
    9    Decimal              ASCII str(value): keeps NaN, sNaN, Infinity, -0, exponents
    10   UUID                 the 16 bytes
    11   numpy.ndarray        u32 n, n bytes of msgpack [dtype.str, shape, fortran], raw data
    12   numpy scalar         same as 11 with shape [] (np.int64(1) comes back as np.int64)
    13   PurePosixPath        UTF-8 str(path)
    14   PureWindowsPath      same
    15   PosixPath            same
    16   WindowsPath          same (decoded only where it can be created: Windows)
    17   Counter              msgpack map of the items (nested exts inside)
    18   OrderedDict          same, in order
    19   defaultdict          msgpack [factory name or nil, map]; factory: a builtin type
    20   deque                msgpack [maxlen or nil, array of the items]
    21   complex              two little-endian doubles: real, imaginary
    22   Fraction             msgpack [numerator, denominator], lowest terms
    23   IPv4/IPv6Address     ASCII str(value); the text tells v4 from v6
    24   IPv4/IPv6Network     same
    25   IPv4/IPv6Interface   same
    26   user type            msgpack ["module:qualname", data]: a dataclass's or attrs
                              class's {field: value}, a NamedTuple's array of items, an Enum
                              member's name, a pydantic model's fields (`flowdag._userkinds`);
                              only types allowed with flowdag.register_types (`flowdag._usertypes`)
    41   DataFrame / Table    8-byte header + Arrow IPC stream (see `flowdag._frames`)
    42   flowdag.Ref          msgpack map of the ref's fields (`flowdag.refs.fields_of`)
    127  pickle               pickle.dumps(value); written and read only with allow_pickle=True

``tz`` is nil, a `zoneinfo.ZoneInfo` key, or ``[offset in microseconds]`` (plus
the name, when it is not the default one) for a `datetime.timezone`.

The encoders and decoders are in `flowdag._msgpack_ext`.

Which values are stored, which are refused and how, the numpy rules and the
pickle policy are the value model's, shared with the JSON codec: see
`flowdag._values`. Besides ``bytearray`` and ``memoryview`` (stored as bytes),
msgpack packs ``msgpack.ExtType``/``Timestamp`` objects natively, before any
hook runs: they are written as they are.

Limits (constructor arguments, checked by both ``encode`` and ``decode``):

- ``max_blob_size`` (2 GiB): the largest blob accepted.
- ``max_decoded_size`` (2 GiB): the largest msgpack payload. A compressed blob
  whose stored length is larger is refused before zstd runs; the length must
  match the zstd frame's content size, and zstd is capped at it.
- ``max_items`` (2**31): the most items in one list, tuple, set, frozenset,
  deque or dict (Counter, OrderedDict and defaultdict too) (msgpack's
  ``max_array_len``/``max_map_len``; string, bytes and ext lengths are bounded
  by the payload they sit in).
- Tuples, sets, frozensets, deques, Counters, OrderedDicts, defaultdicts and
  Fractions (the exts that hold values) nest at most 32 deep: each level
  decodes through a nested msgpack call that uses about 40 KiB of C stack. Lists and dicts nest
  at most 1024 deep (msgpack's own limit, for packing and unpacking alike).
"""

from __future__ import annotations

import struct
import sys
import threading
import zlib
from collections.abc import Callable
from typing import Any, ClassVar

import msgpack
import zstandard
from msgpack import ExtType

from flowdag._msgpack_ext import (
    DECODERS,
    ENCODERS,
    EXT_PICKLE,
    encode_frame_ext,
    encode_numpy,
    encode_user,
)
from flowdag._values import (
    DEFAULT_MAX_BLOB_SIZE,
    DEFAULT_MAX_ITEMS,
    CodecBase,
    TooDeep,
    Unsupported,
    ValueCodec,
    check_int,
    pickle_value,
    size_of,
    type_name,
    unsupported_error,
)
from flowdag.errors import CorruptStateError, OptionalDependencyError, SerializationError

__all__ = ["Codec", "ValueCodec"]

_FORMAT = 0xF1  # 0xF0 marks a flowdag blob; the low nibble is the format version
_RAW = 0
_ZSTD = 1
_HEAD = struct.Struct("<BBI")  # format byte, flags, CRC32
_LENGTH = struct.Struct("<Q")  # uncompressed payload length, compressed blobs only
# The CRC starts with the flags byte; these seeds save a concatenation per blob.
_CRC_RAW = zlib.crc32(bytes([_RAW]))
_CRC_ZSTD = zlib.crc32(bytes([_ZSTD]))

DEFAULT_MAX_DECODED_SIZE = 1 << 31
_MAX_DEPTH = 32  # tuple/set/frozenset nesting; see the module docstring
_KEEP_PACKER = 1 << 20  # a Packer keeps its largest buffer: replace it after bigger values


class _Local(threading.local):
    """Per-thread msgpack and zstd state: none of these objects is thread-safe."""

    def __init__(self, new_packer: Callable[[], Any], level: int) -> None:
        # packers[d] packs the items of a tuple or set d levels deep; 0 is the whole value.
        self.packers: list[Any] = [new_packer()]
        self.depth = 0
        self.unpack_depth = 0
        self.cctx = zstandard.ZstdCompressor(level=level)
        self.dctx = zstandard.ZstdDecompressor()


class Codec(CodecBase):
    """Turns values into self-checking blobs for stores, and back.

    Args:
        compress_threshold: compress payloads longer than this many bytes with
            zstd; 0 or None never compresses.
        level: the zstd compression level, from -131072 to 22.
        allow_pickle: pickle values of unsupported types instead of refusing
            them, and unpickle them when decoding. Only for stores you trust:
            unpickling runs code.
        max_blob_size: the largest blob ``encode`` returns and ``decode`` accepts.
        max_decoded_size: the largest msgpack payload, before compression.
        max_items: the most items in one list, tuple, set, frozenset, deque or
            dict (or dict type).

    Raises:
        InvalidArgumentTypeError: a limit or the level that is not an int, or an
            ``allow_pickle`` that is not a bool.
        InvalidArgumentError: a limit or level out of range.
    """

    name: ClassVar[str] = "msgpack"  # recorded by stores: see ValueCodec
    _SETTINGS = (
        "compress_threshold",
        "level",
        "allow_pickle",
        "max_blob_size",
        "max_decoded_size",
        "max_items",
    )

    __slots__ = (
        "__weakref__",
        "_fast_decode_size",
        "_fast_size",
        "_level",
        "_local",
        "_max_decoded_size",
        "_threshold",
    )

    def __init__(
        self,
        *,
        compress_threshold: int | None = 1024,
        level: int = 3,
        allow_pickle: bool = False,
        max_blob_size: int = DEFAULT_MAX_BLOB_SIZE,
        max_decoded_size: int = DEFAULT_MAX_DECODED_SIZE,
        max_items: int = DEFAULT_MAX_ITEMS,
    ) -> None:
        threshold = check_int("compress_threshold", compress_threshold, 0, or_none=True)
        level = check_int("level", level, -(1 << 17), zstandard.MAX_COMPRESSION_LEVEL)
        self._set_limits(allow_pickle, max_blob_size, max_items)
        self._max_decoded_size = check_int("max_decoded_size", max_decoded_size, 1)
        self._threshold = threshold
        self._level = level
        # Payloads up to this size need no compression and no limit check.
        self._fast_size = min(
            threshold or sys.maxsize,
            max_decoded_size,
            max_items,
            max_blob_size - _HEAD.size,
            _KEEP_PACKER,
        )
        # Blobs up to this size may skip straight to msgpack (see decode).
        self._fast_decode_size = min(
            max_blob_size,
            _HEAD.size + min(max_decoded_size, max_items),
            1 << 16,  # slicing copies the payload: fine while it is small
        )
        self._local = _Local(self._new_packer, level)

    @property
    def compress_threshold(self) -> int | None:
        """Payloads longer than this are compressed; None when compression is off."""
        return self._threshold or None

    @property
    def level(self) -> int:
        """The zstd compression level."""
        return self._level

    @property
    def max_decoded_size(self) -> int:
        """The largest msgpack payload, in bytes, before compression."""
        return self._max_decoded_size

    # -- encode ---------------------------------------------------------------

    def encode(self, value: Any) -> bytes:
        """Return ``value`` as a blob that `decode` turns back into an equal value.

        Raises:
            SerializationError: the value holds a type the codec cannot store
                (and pickle is off or fails), or it is over the limits.
        """
        try:
            payload: bytes = self._local.packers[0].pack(value)
        except SerializationError:
            raise
        except Unsupported as exc:
            raise unsupported_error(value, exc) from exc.__cause__
        except TooDeep:
            raise SerializationError(
                f"cannot store a value of type {type_name(value)!r}: its tuples, sets and "
                f"other containers nest more than {_MAX_DEPTH} levels deep; flatten it"
            ) from None
        except UnicodeEncodeError as exc:  # before ValueError: its message would mislead
            raise SerializationError(
                f"cannot store a value of type {type_name(value)!r}: it holds a str with a "
                f"lone surrogate ({exc.object[exc.start]!r}), which UTF-8 cannot encode; "
                "store text UTF-8 can encode, or bytes"
            ) from None
        except (ValueError, TypeError, OverflowError, RecursionError, MemoryError) as exc:
            raise SerializationError(
                f"cannot store a value of type {type_name(value)!r} ({exc}); values must nest "
                "at most 1024 levels deep, hold no reference cycles and no str, bytes or "
                "container over 4 GiB"
            ) from exc
        # Fast path: most values are small; the crc seed stands in for the flags byte.
        if len(payload) <= self._fast_size:
            return _HEAD.pack(_FORMAT, _RAW, zlib.crc32(payload, _CRC_RAW)) + payload
        return self._encode_large(value, payload)

    def plain_size(self, blob: bytes) -> int:
        """The length of ``blob`` (as `encode` returned it) with its payload uncompressed.

        What an output's size is compared with (``inline_limit``): compression
        never decides where a value is kept.
        """
        if len(blob) >= _HEAD.size + _LENGTH.size and blob[1] == _ZSTD:
            return int(_HEAD.size + _LENGTH.unpack_from(blob, _HEAD.size)[0])
        return len(blob)

    def plain(self, blob: bytes) -> bytes:
        """``blob`` (as `encode` returned it) with its payload uncompressed, which `decode` reads.

        An output kept by reference is stored so: the blob area compresses it
        itself, and its address is the hash of these bytes, which no
        compression setting changes.

        Raises:
            CorruptStateError: ``blob`` is damaged.
        """
        if len(blob) < _HEAD.size + _LENGTH.size or blob[1] != _ZSTD:
            return blob
        payload = self._decompress(blob, _HEAD.unpack_from(blob)[2])
        return _HEAD.pack(_FORMAT, _RAW, zlib.crc32(payload, _CRC_RAW)) + payload

    def _encode_large(self, value: Any, payload: bytes) -> bytes:
        size = len(payload)
        if size > _KEEP_PACKER:
            self._local.packers[0] = self._new_packer()
        if size > self._max_decoded_size:
            self._too_large(value, size, "max_decoded_size")
        if size > self._max_items:
            # Each item takes at least one byte, so smaller payloads cannot break the limit.
            self._check_items(value)
        if self._threshold and size > self._threshold:
            frame: bytes = self._local.cctx.compress(payload)
            if len(frame) + _LENGTH.size < size:
                length = _LENGTH.pack(size)
                crc = zlib.crc32(frame, zlib.crc32(length, _CRC_ZSTD))
                blob = b"".join((_HEAD.pack(_FORMAT, _ZSTD, crc), length, frame))
                return self._check_blob(value, blob)
        blob = _HEAD.pack(_FORMAT, _RAW, zlib.crc32(payload, _CRC_RAW)) + payload
        return self._check_blob(value, blob)

    def _check_blob(self, value: Any, blob: bytes) -> bytes:
        if len(blob) > self._max_blob_size:
            self._too_large(value, len(blob), "max_blob_size")
        return blob

    def _new_packer(self) -> Any:
        return msgpack.Packer(default=self._default, use_bin_type=True, strict_types=True)

    def _default(self, obj: Any) -> Any:
        """msgpack's hook for every value it cannot pack itself."""
        return self._encode_other(obj, ENCODERS.get(type(obj)), encode_numpy, encode_user)

    def _frame(self, obj: Any) -> ExtType:
        return encode_frame_ext(obj)

    def _pickle(self, obj: Any) -> ExtType:
        local = self._local
        # pickle runs user code that may call encode again on this thread: give it
        # fresh packers, since ours are in the middle of a value.
        packers, depth = local.packers, local.depth
        local.packers, local.depth = [self._new_packer()], 0
        try:
            data = pickle_value(obj)
        finally:
            local.packers, local.depth = packers, depth
        return ExtType(EXT_PICKLE, data)

    def _pack_items(self, code: int, items: Any) -> ExtType:
        local = self._local
        depth = local.depth + 1
        if depth > _MAX_DEPTH:
            raise TooDeep
        packers = local.packers
        if depth == len(packers):
            packers.append(self._new_packer())
        packer = packers[depth]
        local.depth = depth
        try:
            data: bytes = packer.pack(items)
        finally:
            local.depth = depth - 1
        if len(data) > _KEEP_PACKER:
            packers[depth] = self._new_packer()
        return ExtType(code, data)

    # -- decode ---------------------------------------------------------------

    def decode(self, blob: bytes) -> Any:
        """Return the value that `encode` turned into ``blob``.

        Raises:
            CorruptStateError: the blob is damaged, truncated, not a flowdag
                blob, over the limits, or holds pickled data while pickle is off.
        """
        try:
            # Fast path: a small uncompressed blob, within every limit by its size.
            if _HEAD.size <= len(blob) <= self._fast_decode_size:
                fmt, flags, crc = _HEAD.unpack_from(blob)
                payload = blob[_HEAD.size :]
                if fmt == _FORMAT and flags == _RAW and zlib.crc32(payload, _CRC_RAW) == crc:
                    return msgpack.unpackb(payload, ext_hook=self._ext_hook, strict_map_key=False)
            return self._decode(blob)
        except (CorruptStateError, OptionalDependencyError):
            raise
        except Exception as exc:
            raise CorruptStateError(
                f"cannot decode a blob of {size_of(blob)} bytes ({type(exc).__name__}: {exc}); "
                "it is damaged or was written by an incompatible flowdag"
            ) from exc

    def _decode(self, blob: bytes) -> Any:
        size = len(blob)
        self._check_blob_size(size)
        if size < _HEAD.size:
            raise CorruptStateError(
                f"blob of {size} bytes is shorter than the {_HEAD.size}-byte header: "
                "truncated, or not a flowdag blob"
            )
        fmt, flags, crc = _HEAD.unpack_from(blob)
        if fmt != _FORMAT:
            raise CorruptStateError(
                f"blob starts with 0x{fmt:02x}, not the format byte 0x{_FORMAT:02x}: "
                "not a flowdag blob, or written by an incompatible flowdag"
            )
        if flags == _RAW:
            payload: bytes | memoryview = memoryview(blob)[_HEAD.size :]  # no copy
            if zlib.crc32(payload, _CRC_RAW) != crc:
                raise _crc_error()
            if len(payload) > self._max_decoded_size:
                raise _decoded_size_error(len(payload), self._max_decoded_size)
        elif flags == _ZSTD:
            payload = self._decompress(blob, crc)
        else:
            raise CorruptStateError(f"blob has unknown flags 0x{flags:02x}")
        return self._unpack(payload)

    def _decompress(self, blob: bytes, crc: int) -> bytes:
        start = _HEAD.size + _LENGTH.size
        if len(blob) <= start:
            raise CorruptStateError(f"compressed blob of {len(blob)} bytes is truncated")
        view = memoryview(blob)
        frame = view[start:]
        if zlib.crc32(frame, zlib.crc32(view[_HEAD.size : start], _CRC_ZSTD)) != crc:
            raise _crc_error()
        (length,) = _LENGTH.unpack_from(blob, _HEAD.size)
        # Refuse a zstd bomb before allocating anything: the stored length is capped,
        # the frame must agree with it, and zstd may write no more than that.
        if length > self._max_decoded_size:
            raise _decoded_size_error(length, self._max_decoded_size)
        if length == 0:
            raise CorruptStateError("compressed blob claims an empty payload")
        content_size = zstandard.frame_content_size(frame)
        if content_size not in (-1, length):
            raise CorruptStateError(
                f"compressed blob's zstd frame holds {content_size} bytes, "
                f"but its header says {length}"
            )
        payload: bytes = self._local.dctx.decompress(frame, max_output_size=length)
        if len(payload) != length:
            raise CorruptStateError(
                f"compressed blob decompressed to {len(payload)} bytes, "
                f"but its header says {length}"
            )
        return payload

    def _unpack(self, data: bytes | memoryview) -> Any:
        size = len(data)
        if size <= self._max_items:
            # msgpack caps every length at the input's size: within max_items.
            return msgpack.unpackb(data, ext_hook=self._ext_hook, strict_map_key=False)
        return msgpack.unpackb(
            data,
            ext_hook=self._ext_hook,
            strict_map_key=False,
            max_array_len=self._max_items,
            max_map_len=min(self._max_items, size // 2),
        )

    def _ext_hook(self, code: int, data: bytes) -> Any:
        decode = DECODERS.get(code)
        if decode is None:
            raise CorruptStateError(f"blob holds unknown extension type {code}")
        return decode(self, data)

    def _unpack_items(self, data: bytes) -> list[Any]:
        items = self._unpack_nested(data)
        if type(items) is not list:
            raise CorruptStateError("blob holds a tuple or set whose items are not an array")
        return items

    def _unpack_nested(self, data: bytes) -> Any:
        """The payload of an ext that holds values, within the nesting limit."""
        local = self._local
        depth = local.unpack_depth + 1
        if depth > _MAX_DEPTH:
            raise CorruptStateError(
                f"blob nests tuples, sets or other containers more than {_MAX_DEPTH} deep"
            )
        local.unpack_depth = depth
        try:
            return self._unpack(data)
        finally:
            local.unpack_depth = depth - 1


# -- errors --------------------------------------------------------------------


def _crc_error() -> CorruptStateError:
    return CorruptStateError("blob checksum (CRC32) does not match: the stored bytes are damaged")


def _decoded_size_error(size: int, limit: int) -> CorruptStateError:
    return CorruptStateError(
        f"blob holds a {size}-byte payload, over max_decoded_size={limit}; refused without "
        "decompressing it (pass a larger max_decoded_size to the Codec if it is expected)"
    )
