"""A run's entries in an LMDB transaction: the `LMDBStore` methods that read and write them.

`RunEntries` is mixed into `LMDBStore` (``lmdb_store.py``, which owns the
environment and its transactions): given a transaction, it reads a run's
header, layout marker and entries, checking each entry's name against its key
(see ``_lmdb_keys.py`` for both layouts), and writes a whole run, or one
commit's entries. A commit to a run of layout 1 (a previous release's) first
moves the whole run to layout 2, in the commit's transaction: the run is never
half in one layout, and a crash leaves it as it was.

With a key, every value is sealed (``_crypto.py``), its associated data naming
the sub-database and the key, which starts with the run id: a value cannot be
moved to another entry or run.
"""

from __future__ import annotations

from collections.abc import Iterator, Mapping
from pathlib import Path
from typing import TYPE_CHECKING

import msgpack

from flowdag.errors import CorruptStateError, RunNotFoundError
from flowdag.stores._lmdb_keys import (
    LAYOUT,
    LAYOUT_MARKER,
    delete_range,
    entry_key,
    layout_of,
    name_digest,
    pack_entry,
    run_prefix,
)
from flowdag.stores._stored import StoredNode, StoredRun

if TYPE_CHECKING:
    import lmdb

    from flowdag.stores._lmdb_env import Env

    _Txn = lmdb.Transaction[bytes]  # the stubs' generic; not subscriptable at runtime

__all__ = ["RunEntries"]


class RunEntries:
    """Reads and writes of one run's entries in a given transaction (mixed into `LMDBStore`)."""

    __slots__ = ()
    path: Path
    _data_path: Path
    if TYPE_CHECKING:  # provided by DirectoryStore

        def _seal(self, content: bytes | memoryview, aad: bytes) -> bytes: ...
        def _unseal(self, content: bytes, aad: bytes, where: str) -> bytes: ...

    def _read_run(self, txn: _Txn, env: Env, run_id: str) -> StoredRun:
        prefix = run_prefix(run_id)
        header = self._header(txn, env, run_id)
        layout = self._layout(txn, env, run_id, prefix)
        nodes = {
            name: StoredNode(meta)
            for name, meta in self._scan(txn, env.nodes, run_id, prefix, "node", layout)
        }
        for name, output in self._scan(txn, env.outputs, run_id, prefix, "output", layout):
            node = nodes.get(name)
            if node is None:
                raise self._damaged(run_id, f"output of node {name!r} has no node entry")
            node.output = output
        data = dict(self._scan(txn, env.data, run_id, prefix, "data", layout))
        return StoredRun(header, nodes, data)

    def _put_commit(
        self,
        txn: _Txn,
        env: Env,
        run_id: str,
        nodes: Mapping[str, StoredNode],
        data: Mapping[str, bytes | None],
    ) -> None:
        """Write a commit's entries: only these nodes' and keys', whatever the run's size."""
        prefix = run_prefix(run_id)
        if self._layout(txn, env, run_id, prefix) == 1:
            self._move_to_layout(txn, env, run_id, prefix)
        seal = self._seal_entry
        for name, node in nodes.items():
            key = entry_key(prefix, name)
            txn.put(key, seal(b"node", key, pack_entry(name, node.meta)), db=env.nodes)
            if node.output is None:
                txn.delete(key, db=env.outputs)  # a re-run that failed has no output
            else:
                txn.put(key, seal(b"output", key, pack_entry(name, node.output)), db=env.outputs)
        for name, value in data.items():
            key = entry_key(prefix, name)
            if value is None:
                txn.delete(key, db=env.data)
            else:
                txn.put(key, seal(b"data", key, pack_entry(name, value)), db=env.data)

    def _put_entries(
        self,
        txn: _Txn,
        env: Env,
        prefix: bytes,
        nodes: Mapping[str, StoredNode],
        data: Mapping[str, bytes],
    ) -> None:
        """Write a whole run's entries and its layout marker (its range is empty)."""
        seal = self._seal_entry
        metas = [(prefix, seal(b"node", prefix, LAYOUT_MARKER))]
        outputs: list[tuple[bytes, bytes]] = []
        for name, node in nodes.items():
            key = entry_key(prefix, name)
            metas.append((key, seal(b"node", key, pack_entry(name, node.meta))))
            if node.output is not None:
                outputs.append((key, seal(b"output", key, pack_entry(name, node.output))))
        entries = []
        for name, value in data.items():
            key = entry_key(prefix, name)
            entries.append((key, seal(b"data", key, pack_entry(name, value))))
        txn.cursor(env.nodes).putmulti(metas)
        txn.cursor(env.outputs).putmulti(outputs)
        txn.cursor(env.data).putmulti(entries)

    def _move_to_layout(self, txn: _Txn, env: Env, run_id: str, prefix: bytes) -> None:
        """Rewrite a run of layout 1 in this release's layout, in the write's transaction.

        Read (and checked) whole first, then written anew: a crash at any point
        leaves the run as it was, since nothing commits before the transaction.
        """
        run = self._read_run(txn, env, run_id)
        delete_range(txn, env.nodes, prefix)
        delete_range(txn, env.outputs, prefix)
        delete_range(txn, env.data, prefix)
        self._put_entries(txn, env, prefix, run.nodes, run.data)

    def _damaged(self, run_id: str, why: object) -> CorruptStateError:
        return CorruptStateError(
            f"run '{run_id}' in {self._data_path} is damaged ({why}); "
            "restore it from a backup or delete it and run again"
        )

    def _header(self, txn: _Txn, env: Env, run_id: str) -> bytes:
        header = txn.get(run_id.encode(), db=env.runs)
        if header is None:
            raise RunNotFoundError(
                f"run '{run_id}' not found in {self.path}; `flowdag list` shows the stored runs"
            )
        return self._open_entry(run_id, b"run", run_id.encode(), header, "header")

    def _layout(self, txn: _Txn, env: Env, run_id: str, prefix: bytes) -> int:
        """The layout of the run's entries (see ``_lmdb_keys.py``): 1, or `LAYOUT`."""
        marker = txn.get(prefix, db=env.nodes)
        if marker is not None:
            marker = self._open_entry(run_id, b"node", prefix, marker, "layout marker")
        try:
            layout = layout_of(marker)
        except (ValueError, TypeError, msgpack.UnpackException) as exc:
            raise self._damaged(run_id, f"unreadable layout marker: {exc}") from exc
        if layout > LAYOUT:
            raise CorruptStateError(
                f"run '{run_id}' in {self._data_path} has LMDB layout {layout}, which this "
                f"flowdag cannot read (it reads 1 and {LAYOUT}); use the flowdag version that "
                "wrote it"
            )
        return layout

    def _scan(
        self, txn: _Txn, db: lmdb._Database, run_id: str, prefix: bytes, kind: str, layout: int
    ) -> Iterator[tuple[str, bytes]]:
        """Yield (name, blob) for the run's entries in ``db``, checking each name."""
        cursor = txn.cursor(db)
        if not cursor.set_range(prefix):
            return
        key_of = entry_key if layout == LAYOUT else _layout1_key
        unpack = msgpack.unpackb  # hot loop: one lookup
        entry = kind.encode()
        marker = kind == "node" and layout == LAYOUT
        for key, value in cursor.iternext():
            if not key.startswith(prefix):
                return
            if marker and key == prefix:
                continue  # the layout marker, read by _layout
            value = self._open_entry(run_id, entry, key, value, kind)
            try:
                name, blob = unpack(value, raw=False, use_list=False)
                made = key_of(prefix, name)
            except (ValueError, TypeError, AttributeError, msgpack.UnpackException) as exc:
                raise self._damaged(run_id, f"unreadable {kind} entry: {exc}") from exc
            # The key was made from the name: a mismatch means a damaged name.
            if made != key or not isinstance(blob, bytes):
                raise self._damaged(run_id, f"{kind} entry does not match its key")
            yield name, blob

    # -- encryption at rest (see _crypto.py) -------------------------------------------

    def _seal_entry(self, entry: bytes, key: bytes, value: bytes) -> bytes:
        # Bound to the sub-database and the key, which starts with the run id:
        # a value cannot be moved to another entry or run.
        return self._seal(value, b"flowdag\0lmdb\0" + entry + b"\0" + key)

    def _open_entry(self, run_id: str, entry: bytes, key: bytes, value: bytes, kind: str) -> bytes:
        where = f"run '{run_id}' in {self._data_path} ({kind} entry)"
        return self._unseal(value, b"flowdag\0lmdb\0" + entry + b"\0" + key, where)


def _layout1_key(prefix: bytes, name: str) -> bytes:
    return prefix + name_digest(name)
