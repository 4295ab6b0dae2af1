"""The keys and values of a run's entries in an `LMDBStore` (see ``lmdb_store.py``).

Layout 2 (this release)
-----------------------
An entry of the ``nodes``, ``outputs`` and ``data`` sub-databases is keyed by
the node name (or ``ctx.data`` key) itself, so keys sort in name order and one
group commit of nodes with neighbouring names (``leaf1000`` .. ``leaf1180``,
``transform[0]`` ..) writes a few neighbouring B-tree pages, not one page per
node::

    run_id 0x00                                  (nodes only) the run's layout marker
    run_id 0x00 0x01 name                        a name of at most KEPT bytes
    run_id 0x00 0x01 name[:KEPT] blake2b16(name) a longer name, cut and hashed

Run ids hold no NUL and at most 200 bytes, so no run's prefix is another's
and a key stays under LMDB's 511 bytes. A whole name's key is at most
``KEPT + 1`` bytes past the prefix and a cut one exactly ``KEPT + 17``, so a
name never reads as another's cut key. The name is only ever a key, never a
path. The marker sorts first in the run's range and holds ``{"layout": 2}``:
it tells a run of this layout from one of layout 1, and a release of layout
1 reading such a run fails on it (its key is no hash) instead of seeing an
empty run.

Layout 1 (the releases before)
------------------------------
Keys were ``run_id 0x00 blake2b16(name)``, scattering a commit over the
B-tree. Such runs are still read as they are; the first write to one moves
the whole run to layout 2 in the transaction of that write (``lmdb_store.py``).

In both, an entry's value is ``msgpack [name, blob]``: a reader makes the key
again from the name and checks it against the key, so a damaged name raises
`CorruptStateError` instead of showing up as another node.
"""

from __future__ import annotations

import hashlib
from typing import TYPE_CHECKING

import msgpack

if TYPE_CHECKING:
    import lmdb

    _Txn = lmdb.Transaction[bytes]  # the stubs' generic; not subscriptable at runtime

__all__ = [
    "DIGEST_SIZE",
    "KEPT",
    "LAYOUT",
    "LAYOUT_MARKER",
    "delete_range",
    "entry_key",
    "layout_of",
    "name_digest",
    "pack_entry",
    "run_prefix",
]

#: The layout this release writes (the version in every run's marker).
LAYOUT = 2
#: Bytes of a name kept whole in a layout 2 key; longer names are cut and hashed.
KEPT = 256
#: Bytes of the blake2b hash of a name: layout 1's keys, layout 2's cut keys.
DIGEST_SIZE = 16
#: The marker's value (before sealing): this release's layout.
LAYOUT_MARKER: bytes = msgpack.packb({"layout": LAYOUT})
_TAG = b"\x01"  # before every name in layout 2: no name's key is the marker's


def run_prefix(run_id: str) -> bytes:
    """The prefix of every entry of run ``run_id`` (run ids hold no NUL)."""
    return run_id.encode() + b"\x00"


def entry_key(prefix: bytes, name: str) -> bytes:
    """The layout 2 key of a node name or ``ctx.data`` key in the run of ``prefix``."""
    raw = name.encode()
    if len(raw) <= KEPT:
        return prefix + _TAG + raw
    return prefix + _TAG + raw[:KEPT] + hashlib.blake2b(raw, digest_size=DIGEST_SIZE).digest()


def name_digest(name: str) -> bytes:
    """The hash of a node name or ``ctx.data`` key that ends its layout 1 key."""
    return hashlib.blake2b(name.encode(), digest_size=DIGEST_SIZE).digest()


def pack_entry(name: str, blob: bytes) -> bytes:
    """An entry's value: its name (a key may hold only a hash of it) and its blob."""
    packed: bytes = msgpack.packb([name, blob], use_bin_type=True)
    return packed


def layout_of(marker: bytes | None) -> int:
    """The layout a run's (opened) marker names: 1 without a marker.

    Raises:
        ValueError: the marker is not one a release wrote, or names no layout.
    """
    if marker is None:
        return 1
    fields = msgpack.unpackb(marker, raw=False)
    layout = fields.get("layout") if isinstance(fields, dict) else None
    if type(layout) is not int or layout < 2:
        raise ValueError(f"bad layout marker {marker!r}")
    return layout


def delete_range(txn: _Txn, db: lmdb._Database, prefix: bytes) -> None:
    """Delete every entry of ``db`` whose key starts with ``prefix``."""
    cursor = txn.cursor(db)
    if not cursor.set_range(prefix):
        return
    # delete() moves the cursor to the next entry (key() is b"" past the end).
    while cursor.key().startswith(prefix):
        if not cursor.delete():
            break
