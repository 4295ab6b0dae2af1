"""The keys and values of a run's entries in an `LMDBStore` (see ``lmdb_store.py``).

An entry of the ``nodes``, ``outputs`` and ``data`` sub-databases is keyed
``run_id 0x00 blake2b16(name)``: hashing the node name (or ``ctx.data`` key)
keeps LMDB's 511-byte key limit from biting, and the run's prefix keeps its
entries together for a prefix scan. The value is ``msgpack [name, blob]``, so
a reader hashes the name again and checks it against the key.
"""

from __future__ import annotations

import hashlib
from typing import TYPE_CHECKING

import msgpack

if TYPE_CHECKING:
    import lmdb

    _Txn = lmdb.Transaction[bytes]  # the stubs' generic; not subscriptable at runtime

__all__ = ["DIGEST_SIZE", "delete_range", "name_digest", "pack_entry", "run_prefix"]

#: Bytes of the blake2b hash of a name in an entry's key.
DIGEST_SIZE = 16


def run_prefix(run_id: str) -> bytes:
    """The prefix of every entry of run ``run_id`` (run ids hold no NUL)."""
    return run_id.encode() + b"\x00"


def name_digest(name: str) -> bytes:
    """The hash of a node name or ``ctx.data`` key that ends its entry's key."""
    return hashlib.blake2b(name.encode(), digest_size=DIGEST_SIZE).digest()


def pack_entry(name: str, blob: bytes) -> bytes:
    """An entry's value: its name (the key holds only a hash of it) and its blob."""
    packed: bytes = msgpack.packb([name, blob], use_bin_type=True)
    return packed


def delete_range(txn: _Txn, db: lmdb._Database, prefix: bytes) -> None:
    """Delete every entry of ``db`` whose key starts with ``prefix``."""
    cursor = txn.cursor(db)
    if not cursor.set_range(prefix):
        return
    # delete() moves the cursor to the next entry (key() is b"" past the end).
    while cursor.key().startswith(prefix):
        if not cursor.delete():
            break
