"""The store-wide tables of an `LMDBStore` (see ``_tables.py``): one sub-database.

Layout
------
Every entry of every table is in the ``tables`` sub-database::

    table 0x00 key                        -> msgpack [key, value, crc32]
    table 0x00 key[:400] blake2b16(key)   (a key longer than 400 bytes)

The key is kept whole in the value, so a long key (LMDB keys stop at 511
bytes) is cut and hashed in the LMDB key and still read back whole; a prefix
scan walks the LMDB keys that start with the table and the prefix's first 400
bytes and keeps the entries whose whole key starts with the prefix. On read
the LMDB key is made again from the key in the value, and the CRC32 (over
table, key and value) checked: a damaged entry raises `CorruptStateError`,
never a wrong value. With a key the value is sealed like every LMDB value,
bound to the sub-database and the LMDB key, so an entry cannot be moved to
another key or table.

A transaction is one LMDB write transaction (LMDB serializes them across
threads and processes): its reads read that transaction, its writes go into
it, and when it carries a run's commit the node records go into it too, so
both commit (and are fsynced) together or not at all.
"""

from __future__ import annotations

import hashlib
import zlib
from collections.abc import Callable, Iterator
from typing import TYPE_CHECKING

import msgpack

from flowdag.errors import CorruptStateError, InvalidArgumentError
from flowdag.stores._tables import check_table

if TYPE_CHECKING:
    import lmdb

    _Txn = lmdb.Transaction[bytes]

__all__ = ["LMDBTables", "delete_entry", "put_entry"]

#: Bytes of a key kept as they are in the LMDB key; longer keys are cut and hashed.
_KEPT = 400
_DIGEST_SIZE = 16

#: Seal a value for an LMDB key / open it (``where`` names it in errors).
Seal = Callable[[bytes, bytes], bytes]
Open = Callable[[bytes, bytes, str], bytes]


def _encode(key: str) -> bytes:
    try:
        return key.encode()
    except UnicodeEncodeError as exc:
        raise InvalidArgumentError(f"table key {key!r} is not valid text ({exc})") from None


def _lmdb_key(table: str, key: bytes) -> bytes:
    head = table.encode() + b"\0"
    if len(key) <= _KEPT:
        return head + key
    return head + key[:_KEPT] + hashlib.blake2b(key, digest_size=_DIGEST_SIZE).digest()


def _crc(table: str, key: str, value: bytes) -> int:
    return zlib.crc32(value, zlib.crc32(f"{table}\0{key}\0".encode(errors="surrogatepass")))


def put_entry(
    txn: _Txn, db: lmdb._Database, seal: Seal, table: str, key: str, value: bytes
) -> None:
    """Write ``value`` under ``key`` of ``table`` in ``txn``."""
    lmdb_key = _lmdb_key(table, _encode(key))
    packed: bytes = msgpack.packb([key, value, _crc(table, key, value)], use_bin_type=True)
    txn.put(lmdb_key, seal(packed, lmdb_key), db=db)


def delete_entry(txn: _Txn, db: lmdb._Database, table: str, key: str) -> None:
    """Remove ``key`` of ``table`` in ``txn`` (nothing if absent)."""
    txn.delete(_lmdb_key(table, _encode(key)), db=db)


class LMDBTables:
    """Reads of the tables in one LMDB transaction (a `TableReader`).

    Args:
        txn: the transaction to read (read only, or the write transaction).
        db: the ``tables`` sub-database.
        unseal: opens a sealed value for its LMDB key.
        where: the data file, for errors.
    """

    __slots__ = ("_db", "_txn", "_unseal", "_where")

    def __init__(self, txn: _Txn, db: lmdb._Database, unseal: Open, where: str) -> None:
        self._txn, self._db, self._unseal, self._where = txn, db, unseal, where

    def get(self, table: str, key: str) -> bytes | None:
        lmdb_key = _lmdb_key(check_table(table), _encode(key))
        value = self._txn.get(lmdb_key, db=self._db)
        if value is None:
            return None
        found, blob = self._entry(table, lmdb_key, value)
        if found != key:
            raise self._damaged(table, key, "its key does not match")
        return blob

    def scan(self, table: str, prefix: str = "") -> Iterator[tuple[str, bytes]]:
        start = _lmdb_key(check_table(table), _encode(prefix)[:_KEPT])
        cursor = self._txn.cursor(self._db)
        found: list[tuple[str, bytes]] = []
        if cursor.set_range(start):
            for lmdb_key, value in cursor.iternext():
                if not lmdb_key.startswith(start):
                    break
                key, blob = self._entry(table, lmdb_key, value)
                if key.startswith(prefix):
                    found.append((key, blob))
        found.sort()  # a cut key sorts by its hash in LMDB, by itself here
        return iter(found)

    def keys(self, table: str, prefix: str = "") -> list[str]:
        """The keys of ``table`` that start with ``prefix``, sorted, values unread
        (but a cut key's, which holds the whole key). Unchecked: `get` checks an entry."""
        head = _lmdb_key(check_table(table), b"")
        start = _lmdb_key(table, _encode(prefix)[:_KEPT])
        cursor = self._txn.cursor(self._db)
        found: list[str] = []
        if cursor.set_range(start):
            for lmdb_key in cursor.iternext(values=False):
                if not lmdb_key.startswith(start):
                    break
                stored = lmdb_key[len(head) :]
                if len(stored) > _KEPT:  # cut to fit LMDB: the whole key is in the value
                    key = self._entry(table, lmdb_key, cursor.value())[0]
                else:
                    key = stored.decode(errors="surrogateescape")
                if key.startswith(prefix):
                    found.append(key)
        found.sort()
        return found

    def _entry(self, table: str, lmdb_key: bytes, value: bytes) -> tuple[str, bytes]:
        """(key, value) of an entry, checked against its LMDB key and its checksum."""
        shown = lmdb_key[len(table) + 1 :].decode(errors="replace")
        where = f"table {table!r} entry {shown!r} in {self._where}"
        plain = self._unseal(value, lmdb_key, where)
        try:
            key, blob, crc = msgpack.unpackb(plain, raw=False, use_list=False)
            sound = (
                isinstance(key, str)
                and isinstance(blob, bytes)
                and _lmdb_key(table, key.encode(errors="surrogatepass")) == lmdb_key
                and _crc(table, key, blob) == crc
            )
        except (ValueError, TypeError, msgpack.UnpackException) as exc:
            raise self._damaged(table, shown, f"unreadable: {exc}") from exc
        if not sound:
            raise self._damaged(table, shown, "it fails its checksum or does not match its key")
        return key, blob

    def _damaged(self, table: str, key: str, why: str) -> CorruptStateError:
        return CorruptStateError(
            f"table {table!r} entry {key!r} in {self._where} is damaged ({why}); "
            "restore the store from a backup or delete the entry"
        )
