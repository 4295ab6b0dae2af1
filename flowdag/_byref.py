"""Keeping a node's output by reference: the blob first, then the small `Ref` to it.

An attempt encodes its output once. When the encoded bytes are above the
node's inline limit, they go to the store's blob area (`BlobArea.put`: temp
file, fsync, rename, fsync of the directory; an existing blob is only
freshened) and the node's record holds the `Ref` instead. So the blob is
durable before the record that points at it can be committed, and a crash in
between leaves at most an orphan blob, which gc sweeps.

``extract`` and ``preview`` run here, after the node returned and before the
record exists: if either raises, or returns what the codec cannot store, the
node fails and no Ref is ever committed. A preview is cut to about
`PREVIEW_LIMIT` encoded bytes: a prefix of a str, bytes, list or tuple, the
first items of a dict, else the start of its repr; ``preview_truncated`` says so.
"""

from __future__ import annotations

from collections.abc import Callable, Sized
from datetime import UTC, datetime
from typing import Any

from flowdag.codec import ValueCodec
from flowdag.dag import NodeSpec
from flowdag.errors import InvalidArgumentTypeError
from flowdag.refs import RAW, Ref
from flowdag.stores._blobs import BlobInfo, RefSource

__all__ = ["PREVIEW_LIMIT", "by_reference", "streamed"]

#: Encoded bytes a preview may take inline.
PREVIEW_LIMIT = 2048


def by_reference(spec: NodeSpec, value: Any, encoded: bytes, source: RefSource, origin: str) -> Ref:
    """Put ``encoded`` (``value``, encoded by ``source.codec``) in the blob area; its Ref.

    The blob holds the encoding with its payload uncompressed (`Codec.plain`):
    the blob area compresses, and the address never depends on compression.

    Raises:
        whatever ``extract`` or ``preview`` raise; `InvalidArgumentTypeError` for an
        ``extract`` that returns no dict of str keys; `SerializationError` for
        fields the codec cannot store; `StoreError` when the blob cannot be written.
    """
    codec = source.codec
    extracted, preview, cut = _inline_fields(spec, value, codec)
    info = source.area.put(codec.plain(encoded))
    return _ref(spec, info, codec.name, extracted, preview, cut, source, origin)


def streamed(spec: NodeSpec, info: BlobInfo, source: RefSource, origin: str) -> Ref:
    """The Ref of bytes a node wrote through ``ctx.output_file()`` (already a blob).

    ``extract`` and ``preview`` get the bound Ref: the bytes were never in memory,
    and ``ref.open()`` reads as much of them as they need.
    """
    ref = _ref(spec, info, RAW, {}, None, False, source, origin)
    if spec.extract is None and spec.preview is None:
        return ref
    extracted, preview, cut = _inline_fields(spec, ref, source.codec)
    return _ref(spec, info, RAW, extracted, preview, cut, source, origin)


def _ref(
    spec: NodeSpec,
    info: BlobInfo,
    encoding: str,
    extracted: dict[str, Any],
    preview: Any,
    cut: bool,
    source: RefSource,
    origin: str,
) -> Ref:
    expires_at = None if spec.ttl is None else datetime.now(UTC) + spec.ttl
    ref = info.ref(
        expires_at=expires_at,
        extracted=extracted,
        preview=preview,
        preview_truncated=cut,
        encoding=encoding,
    )
    return ref.bind(source, origin)


def _inline_fields(
    spec: NodeSpec, value: Any, codec: ValueCodec
) -> tuple[dict[str, Any], Any, bool]:
    extracted: dict[str, Any] = {}
    if spec.extract is not None:
        extracted = spec.extract(value)
        if type(extracted) is not dict or not all(type(k) is str for k in extracted):
            raise InvalidArgumentTypeError(
                f"node '{spec.name}': extract must return a dict with str keys, not "
                f"{type(extracted).__name__}"
            )
        codec.encode(extracted)  # refused here, with its own message, if it cannot be stored
    if spec.preview is None:
        return extracted, None, False
    preview, cut = fit_preview(spec.preview(value), codec.encode)
    return extracted, preview, cut


def fit_preview(sample: Any, encode: Callable[[Any], bytes]) -> tuple[Any, bool]:
    """``sample``, or the longest prefix of it that encodes to `PREVIEW_LIMIT` bytes or less.

    Returns the preview and whether it was cut.
    """
    if len(encode(sample)) <= PREVIEW_LIMIT:
        return sample, False
    if isinstance(sample, str | bytes | list | tuple):
        return _longest_prefix(sample, lambda n: sample[:n], encode), True
    if isinstance(sample, dict):
        items = list(sample.items())
        return _longest_prefix(items, lambda n: dict(items[:n]), encode), True
    text = repr(sample)
    return _longest_prefix(text, lambda n: text[:n], encode), True


def _longest_prefix(
    whole: Sized, prefix: Callable[[int], Any], encode: Callable[[Any], bytes]
) -> Any:
    """The longest ``prefix(n)`` that encodes within the limit (binary search on n)."""
    low, high = 0, min(len(whole), PREVIEW_LIMIT)  # no item encodes to less than a byte
    while low < high:
        middle = (low + high + 1) // 2
        if len(encode(prefix(middle))) <= PREVIEW_LIMIT:
            low = middle
        else:
            high = middle - 1
    return prefix(low)
