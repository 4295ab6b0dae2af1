"""`FlatBuffersStore`: runs as FlatBuffers files, on the crash-safe journal."""

from __future__ import annotations

from flowdag.stores._journal import JournaledStore
from flowdag.stores.flatbuffers_format import FlatBuffersFormat

__all__ = ["FlatBuffersStore"]


class FlatBuffersStore(JournaledStore):
    """One directory per run: ``snapshot.fb`` (schema ``schema/flowdag.fbs``) plus a journal.

    Values are the msgpack codec's blobs inside ``[ubyte]`` vectors. Reading
    statuses touches only names and meta vectors, never outputs: that is what
    makes `load_statuses` (``flowdag status``, resume planning) cheap here.
    Any codec but a `JSONCodec` (default: `flowdag.codec.Codec`).
    """

    scheme = "flatbuffers"
    kind = "FlatBuffers"
    codec_kind = "binary"
    format = FlatBuffersFormat()
