"""`JSONStore`: runs as plain JSON files a person can read, on the crash-safe journal."""

from __future__ import annotations

import os

from flowdag.json_codec import JSONCodec
from flowdag.stores._crypto import Cipher
from flowdag.stores._journal import COMPACT_MIN_BYTES, JournaledStore
from flowdag.stores.json_format import JSONFormat

__all__ = ["JSONStore"]


class JSONStore(JournaledStore):
    """One directory per run: ``snapshot.json`` plus a journal of commits.

    Values are written as plain JSON where JSON can hold them, and as small
    tagged objects otherwise (tuples, sets, bytes, datetimes, NaN, ...), so
    every value comes back exactly. Open ``runs/<run_id>/snapshot.json`` to read
    a run; its first line holds a checksum, so edit it only through flowdag.
    With ``key=`` (see `JournaledStore`) the files are encrypted and no longer readable JSON.
    """

    scheme = "json"
    kind = "JSON"
    format = JSONFormat()

    def __init__(
        self,
        path: str | os.PathLike[str],
        *,
        codec: JSONCodec | None = None,
        compact_min_bytes: int = COMPACT_MIN_BYTES,
        key: bytes | str | Cipher | None = None,
        create: bool = True,
    ) -> None:
        super().__init__(
            path,
            codec=codec if codec is not None else JSONCodec(),
            compact_min_bytes=compact_min_bytes,
            key=key,
            create=create,
        )
