"""The keys and values of a run's entries in an `LMDBStore` (see ``lmdb_store.py``).

Layout 2 (this release)
-----------------------
Each node name and each ``ctx.data`` key of a run gets a number, the next one
free, the first time it is written (node names and data keys count apart,
from one counter). An entry of the ``nodes``, ``outputs`` and ``data``
sub-databases is keyed by that number, so the entries a group commit adds
are appended side by side at the end of the run's range, whatever the
names: one commit writes a few neighbouring B-tree pages, not one page per
node::

    run_id 0x00                  (nodes only) the run's marker: layout, next number, nonce,
                                 and the run's seal, if any (`flowdag._seal`)
    run_id 0x00 0x01 number      msgpack [name, blob, crc32(name)]; number: 4 bytes, big-endian;
                                 a node's entry also holds its output, 4th, when it
                                 is at most SMALL_OUTPUT bytes (then it has no
                                 ``outputs`` entry): one write per node of a fan-out

Run ids hold no NUL, so no run's prefix is another's; keys are short whatever
the name (LMDB's limit is 511 bytes), and a name is never part of a key or a
path, so names stay hidden under encryption. The value carries its name and a
CRC32 of it, checked on load: a damaged name raises `CorruptStateError`
instead of showing up as another node (with a key, the sealing checks it
too). The marker sorts first in the run's range; it is rewritten, with a
fresh random nonce, by every write to the run, so a writer that keeps a run's
numbers in memory knows them current while the stored marker is the one it
read or wrote (``_lmdb_runs.py``), and a seal in the marker (written by
`LMDBStore._put_seal`) goes with the run's entries as they were when it was
written: the next write drops it. A release of layout 1 reading a run of
layout 2 fails on the marker (its key is no hash) instead of seeing an empty
run.

Layout 1 (the releases before)
------------------------------
Keys were ``run_id 0x00 blake2b16(name)``, values ``msgpack [name, blob]``:
a reader hashed the name again and checked it against the key. The hashes
scattered a commit over the B-tree. Such runs are still read as they are;
the first write to one moves the whole run to layout 2 in the transaction of
that write (``_lmdb_runs.py``).
"""

from __future__ import annotations

import hashlib
import os
import zlib
from typing import TYPE_CHECKING

import msgpack

if TYPE_CHECKING:
    import lmdb

    _Txn = lmdb.Transaction[bytes]  # the stubs' generic; not subscriptable at runtime

__all__ = [
    "DIGEST_SIZE",
    "LAYOUT",
    "MAX_NUMBER",
    "SMALL_OUTPUT",
    "Marker",
    "delete_range",
    "entry_key",
    "entry_number",
    "name_digest",
    "pack_entry",
    "pack_marker",
    "pack_named",
    "run_prefix",
    "unpack_marker",
    "unpack_named",
]

#: The layout this release writes (the version in every run's marker).
LAYOUT = 2
#: Outputs of at most this many bytes go in their node's entry, not in ``outputs``:
#: one write per node, and a load of statuses copies at most this much more each.
SMALL_OUTPUT = 1024
#: Bytes of the blake2b hash of a name in a layout 1 key.
DIGEST_SIZE = 16
_TAG = b"\x01"  # before every number: no entry's key is the marker's
_NUMBER_SIZE = 4
#: Numbers a run can give out (names and data keys together).
MAX_NUMBER = 1 << (8 * _NUMBER_SIZE)
#: (layout, next free number, seal or None) of a run's marker.
Marker = tuple[int, int, bytes | None]


def run_prefix(run_id: str) -> bytes:
    """The prefix of every entry of run ``run_id`` (run ids hold no NUL)."""
    return run_id.encode() + b"\x00"


def entry_key(prefix: bytes, number: int) -> bytes:
    """The layout 2 key of the entry numbered ``number`` in the run of ``prefix``."""
    return prefix + _TAG + number.to_bytes(_NUMBER_SIZE, "big")


def entry_number(start: int, key: bytes) -> int | None:
    """The number in a layout 2 key whose run prefix is ``start`` bytes, or None if malformed."""
    if len(key) != start + 1 + _NUMBER_SIZE or key[start : start + 1] != _TAG:
        return None
    return int.from_bytes(key[start + 1 :], "big")


def pack_named(name: str, blob: bytes, output: bytes | None = None) -> bytes:
    """A layout 2 entry's value: its name (the key holds a number), blob, CRC32 of the
    name, and for a node entry its output when at most `SMALL_OUTPUT` bytes."""
    fields = [name, blob, zlib.crc32(name.encode())]
    if output is not None:
        fields.append(output)
    packed: bytes = msgpack.packb(fields, use_bin_type=True)
    return packed


def unpack_named(value: bytes) -> tuple[str, bytes, bytes | None]:
    """(name, blob, output in the entry or None) of a layout 2 entry's value.

    Raises:
        ValueError: the value is not one `pack_named` made, or its name fails its CRC32.
    """
    fields = msgpack.unpackb(value, raw=False, use_list=False)
    if len(fields) == 3:
        (name, blob, crc), output = fields, None
    else:
        name, blob, crc, output = fields
        if type(output) is not bytes:
            raise ValueError("its output is not bytes")
    if type(name) is not str or type(blob) is not bytes or zlib.crc32(name.encode()) != crc:
        raise ValueError("its name does not match its checksum")
    return name, blob, output


def pack_marker(next_number: int, seal: bytes | None = None) -> bytes:
    """A run's marker: this layout, the next free number, a fresh nonce, and ``seal``."""
    fields: dict[str, object] = {"layout": LAYOUT, "next": next_number, "nonce": os.urandom(8)}
    if seal is not None:
        fields["seal"] = seal
    packed: bytes = msgpack.packb(fields, use_bin_type=True)
    return packed


def unpack_marker(marker: bytes) -> Marker:
    """(layout, next free number, seal or None) of an (opened) marker.

    Raises:
        ValueError: the marker is not one a release wrote.
    """
    fields = msgpack.unpackb(marker, raw=False)
    layout = fields.get("layout") if isinstance(fields, dict) else None
    if type(layout) is not int or layout < 2:
        raise ValueError(f"bad layout marker {marker!r}")
    if layout > LAYOUT:
        return layout, 0, None  # a later release's: the caller refuses it
    next_number = fields.get("next")
    seal = fields.get("seal")
    if type(next_number) is not int or not 0 <= next_number <= MAX_NUMBER:
        raise ValueError(f"bad layout marker {marker!r}")
    if seal is not None and type(seal) is not bytes:
        raise ValueError(f"bad seal in layout marker {marker!r}")
    return layout, next_number, seal


def name_digest(name: str) -> bytes:
    """The hash of a node name or ``ctx.data`` key that ends its layout 1 key."""
    return hashlib.blake2b(name.encode(), digest_size=DIGEST_SIZE).digest()


def pack_entry(name: str, blob: bytes) -> bytes:
    """A layout 1 entry's value: its name (the key holds only a hash of it) and its blob."""
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
