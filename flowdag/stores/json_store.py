"""`JSONStore`: runs as plain JSON files a person can read, on the crash-safe journal."""

from __future__ import annotations

from flowdag.codec import ValueCodec
from flowdag.json_codec import JSONCodec
from flowdag.stores._journal import JournaledStore
from flowdag.stores.json_format import JSONFormat

__all__ = ["JSONStore"]


class JSONStore(JournaledStore):
    """One directory per run: ``snapshot.json`` plus a journal of commits.

    Values are written as plain JSON where JSON can hold them, and as small
    tagged objects otherwise (tuples, sets, bytes, datetimes, NaN, ...), so
    every value comes back exactly. Open ``runs/<run_id>/snapshot.json`` to read
    a run; its first line holds a checksum, so edit it only through flowdag.
    With ``key=`` (see `JournaledStore`) the files are encrypted and no longer readable JSON.
    The codec must be a `JSONCodec` (the default): the files splice its JSON.
    """

    scheme = "json"
    kind = "JSON"
    codec_kind = "json"
    format = JSONFormat()

    def _default_codec(self) -> ValueCodec:
        return JSONCodec()
