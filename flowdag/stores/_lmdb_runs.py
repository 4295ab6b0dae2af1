"""A run's entries in an LMDB transaction: the `LMDBStore` methods that read and write them.

`RunEntries` is mixed into `LMDBStore` (``lmdb_store.py``, which owns the
environment and its transactions): given a transaction, it reads a run's
header, marker and entries, checking each (see ``_lmdb_keys.py`` for both
layouts), and writes a whole run, or one commit's entries.

Numbers
-------
A commit needs the number of each name it writes. The store keeps each run's
numbers (`Numbers`) in memory, with the marker they go with, as stored: a
write first reads the stored marker and uses the numbers kept only if it is
the same bytes. Every write writes a new marker with a fresh nonce, so
another process's or store's writes, a save, or this store's own transaction
that was aborted all show as another marker, and the numbers are read again
from the run's entries (one scan). The same makes a seal in the marker
(`_write_seal`) hold only until the run's next write. A read of the run keeps
the numbers it scanned (the data keys' only when it read the data) if none
are kept, so a resume's first commit does not scan again. Writes of one process are serialized
(``EnvGuard.write_lock``), and only writes change numbers.

A commit to a run of layout 1 (a previous release's) first moves the whole
run to layout 2, in the commit's transaction: the run is never half in one
layout, and a crash leaves it as it was.

With a key, every value is sealed (``_crypto.py``), its associated data naming
the sub-database and the key, which starts with the run id: a value cannot be
moved to another entry or run.
"""

from __future__ import annotations

import threading
from collections.abc import Iterator, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Protocol

import msgpack

from flowdag.errors import CorruptStateError, RunNotFoundError, StoreError
from flowdag.stores._lmdb_keys import (
    LAYOUT,
    MAX_NUMBER,
    SMALL_OUTPUT,
    delete_range,
    entry_key,
    entry_number,
    name_digest,
    pack_marker,
    pack_named,
    run_prefix,
    unpack_marker,
    unpack_named,
)
from flowdag.stores._stored import StoredNode, StoredRun

if TYPE_CHECKING:
    import lmdb

    from flowdag.stores._lmdb_env import Env

    _Txn = lmdb.Transaction[bytes]  # the stubs' generic; not subscriptable at runtime

__all__ = ["Numbers", "RunEntries"]

_KEPT_RUNS = 4  # runs whose numbers a store keeps in memory


@dataclass(slots=True)
class Numbers:
    """A run's numbers as of the marker ``token`` (its stored, sealed bytes)."""

    token: bytes
    next: int
    nodes: dict[str, int]
    data: dict[str, int] | None  # None: not read yet


class RunEntries:
    """Reads and writes of one run's entries in a given transaction (mixed into `LMDBStore`)."""

    __slots__ = ()
    path: Path
    _data_path: Path
    _numbers: dict[str, Numbers]  # run id -> its numbers (see the module docstring)
    _numbers_lock: threading.Lock
    if TYPE_CHECKING:  # provided by DirectoryStore

        def _seal(self, content: bytes | memoryview, aad: bytes) -> bytes: ...
        def _unseal(self, content: bytes, aad: bytes, where: str) -> bytes: ...

    # -- reading --------------------------------------------------------------------------

    def _read_run(self, txn: _Txn, env: Env, run_id: str) -> StoredRun:
        whole = _WholeRun()
        self._feed_run(txn, env, run_id, whole)
        return StoredRun(whole.blob, whole.nodes, whole.values)

    def _feed_run(self, txn: _Txn, env: Env, run_id: str, sink: RunSink) -> None:
        """Feed ``sink`` the run's entries as they are read (header, metas, outputs, data)."""
        prefix = run_prefix(run_id)
        header = self._header(txn, env, run_id)
        token = txn.get(prefix, db=env.nodes)
        if token is None:
            run = self._read_layout1(txn, env, run_id, prefix, header)
            sink.feed(run.header, run.nodes, run.data)
            return
        next_number = self._marker(run_id, prefix, token)[0]
        sink.header(header)
        numbers: dict[str, int] = {}
        small: set[str] = set()  # nodes whose output is in their entry
        nodes = self._scan(txn, env.nodes, run_id, prefix, "node", next_number)
        for number, name, meta, output in nodes:
            if numbers.setdefault(name, number) != number:
                raise self._damaged(run_id, f"node {name!r} has two entries")
            sink.node(name, meta)
            if output is not None:
                small.add(name)
                sink.output(name, output)
        outputs = self._scan(txn, env.outputs, run_id, prefix, "output", next_number)
        for number, name, output, _ in outputs:
            if numbers.get(name) != number:
                raise self._damaged(run_id, f"output of node {name!r} has no node entry")
            if name in small:
                raise self._damaged(run_id, f"node {name!r} has two outputs")
            sink.output(name, output)
        data, data_numbers = self._read_data(txn, env, run_id, prefix, next_number)
        sink.data(data)
        self._keep(run_id, Numbers(token, next_number, numbers, data_numbers), read=True)

    def _read_metas(self, txn: _Txn, env: Env, run_id: str) -> tuple[bytes, dict[str, bytes]]:
        """Header, node -> meta blob: ``runs`` and ``nodes`` only, outputs never read."""
        prefix = run_prefix(run_id)
        header = self._header(txn, env, run_id)
        token = txn.get(prefix, db=env.nodes)
        if token is None:
            return header, dict(self._scan_layout1(txn, env.nodes, run_id, prefix, "node"))
        next_number = self._marker(run_id, prefix, token)[0]
        metas: dict[str, bytes] = {}
        numbers: dict[str, int] = {}
        for number, name, meta, _ in self._scan(
            txn, env.nodes, run_id, prefix, "node", next_number
        ):
            if numbers.setdefault(name, number) != number:
                raise self._damaged(run_id, f"node {name!r} has two entries")
            metas[name] = meta
        self._keep(run_id, Numbers(token, next_number, numbers, None), read=True)
        return header, metas

    def _read_data(
        self, txn: _Txn, env: Env, run_id: str, prefix: bytes, next_number: int
    ) -> tuple[dict[str, bytes], dict[str, int]]:
        data: dict[str, bytes] = {}
        numbers: dict[str, int] = {}
        for number, key, value, _ in self._scan(txn, env.data, run_id, prefix, "data", next_number):
            if key in data:
                raise self._damaged(run_id, f"data key {key!r} has two entries")
            data[key], numbers[key] = value, number
        return data, numbers

    def _read_layout1(
        self, txn: _Txn, env: Env, run_id: str, prefix: bytes, header: bytes
    ) -> StoredRun:
        nodes = {
            name: StoredNode(meta)
            for name, meta in self._scan_layout1(txn, env.nodes, run_id, prefix, "node")
        }
        for name, output in self._scan_layout1(txn, env.outputs, run_id, prefix, "output"):
            node = nodes.get(name)
            if node is None:
                raise self._damaged(run_id, f"output of node {name!r} has no node entry")
            node.output = output
        data = dict(self._scan_layout1(txn, env.data, run_id, prefix, "data"))
        return StoredRun(header, nodes, data)

    def _scan(
        self, txn: _Txn, db: lmdb._Database, run_id: str, prefix: bytes, kind: str, end: int
    ) -> Iterator[tuple[int, str, bytes, bytes | None]]:
        """Yield (number, name, blob, output in the entry) for the run's layout 2
        entries in ``db``, checked; only a node's entry may hold an output."""
        cursor = txn.cursor(db)
        if not cursor.set_range(prefix):
            return
        start = len(prefix)
        entry = kind.encode()
        for key, value in cursor.iternext():
            if not key.startswith(prefix):
                return
            if key == prefix and kind == "node":
                continue  # the marker, read by _marker
            number = entry_number(start, key)
            if number is None or number >= end:
                raise self._damaged(run_id, f"a {kind} entry has a malformed key")
            name, blob, output = self._unpacked(run_id, entry, key, value, kind)
            if output is not None and kind != "node":
                raise self._damaged(run_id, f"a {kind} entry holds an output")
            yield number, name, blob, output

    def _unpacked(
        self, run_id: str, entry: bytes, key: bytes, value: bytes, kind: str
    ) -> tuple[str, bytes, bytes | None]:
        """(name, blob, output in it) of a layout 2 entry's ``value``, opened and checked."""
        value = self._open_entry(run_id, entry, key, value, kind)
        try:
            return unpack_named(value)
        except (ValueError, TypeError, msgpack.UnpackException) as exc:
            raise self._damaged(run_id, f"unreadable {kind} entry: {exc}") from exc

    def _scan_layout1(
        self, txn: _Txn, db: lmdb._Database, run_id: str, prefix: bytes, kind: str
    ) -> Iterator[tuple[str, bytes]]:
        """Yield (name, blob) for the run's layout 1 entries in ``db``, checking each name."""
        cursor = txn.cursor(db)
        if not cursor.set_range(prefix):
            return
        unpack = msgpack.unpackb  # hot loop: one lookup
        entry = kind.encode()
        for key, value in cursor.iternext():
            if not key.startswith(prefix):
                return
            value = self._open_entry(run_id, entry, key, value, kind)
            try:
                name, blob = unpack(value, raw=False, use_list=False)
                made = prefix + name_digest(name)
            except (ValueError, TypeError, AttributeError, msgpack.UnpackException) as exc:
                raise self._damaged(run_id, f"unreadable {kind} entry: {exc}") from exc
            # The key was hashed from the name: a mismatch means a damaged name.
            if made != key or not isinstance(blob, bytes):
                raise self._damaged(run_id, f"{kind} entry does not match its key")
            yield name, blob

    def _marker(self, run_id: str, prefix: bytes, token: bytes) -> tuple[int, bytes | None]:
        """The next free number a run's stored marker names, and its seal, checked."""
        marker = self._open_entry(run_id, b"node", prefix, token, "marker")
        try:
            layout, next_number, seal = unpack_marker(marker)
        except (ValueError, TypeError, AttributeError, msgpack.UnpackException) as exc:
            raise self._damaged(run_id, f"unreadable layout marker: {exc}") from exc
        if layout > LAYOUT:
            raise CorruptStateError(
                f"run '{run_id}' in {self._data_path} has LMDB layout {layout}, which this "
                f"flowdag cannot read (it reads 1 and {LAYOUT}); use the flowdag version that "
                "wrote it"
            )
        return next_number, seal

    def _keep(self, run_id: str, numbers: Numbers, *, read: bool = False) -> None:
        """Keep a run's numbers; ``read``: only if none are kept (a write's are newer)."""
        kept = self._numbers
        with self._numbers_lock:  # reads keep numbers too, from any thread
            if read and run_id in kept:
                return
            kept.pop(run_id, None)
            while len(kept) >= _KEPT_RUNS:
                del kept[next(iter(kept))]  # the least recently kept
            kept[run_id] = numbers

    # -- writing --------------------------------------------------------------------------

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
        numbers = self._numbers_in(txn, env, run_id, prefix)
        self._check_room(run_id, numbers.next, len(nodes) + len(data))
        named, seal, put, delete = numbers.nodes, self._seal_entry, txn.put, txn.delete
        # Until the marker is written below, the numbers kept match no stored marker: if
        # this transaction is aborted (a full map, an error), they are read again.
        numbers.token = b""
        append = True  # until an entry is not the last key of all (another run's are after)
        for name, node in nodes.items():
            number = named.get(name)
            earlier = number is not None  # else no entry of it exists: nothing to delete
            if number is None:  # first written now: the next number, appended at the end
                number = named[name] = numbers.next
                numbers.next += 1
            key = entry_key(prefix, number)
            entry, apart = self._node_entries(key, name, node)
            # Appended, a full page is left full when it splits (LMDB splits a page in
            # half for an insert): a run of new nodes takes 4/5 of the pages.
            if append and not earlier:
                append = put(key, entry, db=env.nodes, append=True)  # False: not the last key
            if earlier or not append:
                put(key, entry, db=env.nodes)
            if apart is not None:
                put(key, apart, db=env.outputs)
            elif earlier:  # an output it had apart: now in its entry, or none (a failure)
                delete(key, db=env.outputs)
        if data:
            keys = numbers.data
            if keys is None:
                keys = numbers.data = self._read_data(txn, env, run_id, prefix, numbers.next)[1]
            for name, value in data.items():
                number = keys.get(name)
                if value is None:
                    if number is not None:
                        delete(entry_key(prefix, number), db=env.data)
                    continue
                if number is None:
                    number = keys[name] = numbers.next
                    numbers.next += 1
                key = entry_key(prefix, number)
                put(key, seal(b"data", key, pack_named(name, value)), db=env.data)
        self._put_marker(txn, env, run_id, prefix, numbers)  # every write: a seal goes

    def _node_entries(self, key: bytes, name: str, node: StoredNode) -> tuple[bytes, bytes | None]:
        """A node's ``nodes`` value, and its ``outputs`` value if its output is too
        large for its entry (`SMALL_OUTPUT`; a small one costs no write of its own)."""
        output, seal = node.output, self._seal_entry
        if output is not None and len(output) <= SMALL_OUTPUT:
            return seal(b"node", key, pack_named(name, node.meta, output)), None
        entry = seal(b"node", key, pack_named(name, node.meta))
        return entry, None if output is None else seal(b"output", key, pack_named(name, output))

    def _numbers_in(self, txn: _Txn, env: Env, run_id: str, prefix: bytes) -> Numbers:
        """The run's numbers as stored in ``txn`` (moving a layout 1 run to layout 2)."""
        token = txn.get(prefix, db=env.nodes)
        if token is None:
            return self._move_to_layout(txn, env, run_id, prefix)
        numbers = self._numbers.get(run_id)
        if numbers is not None and numbers.token == token:
            return numbers
        next_number = self._marker(run_id, prefix, token)[0]
        named: dict[str, int] = {}
        nodes = self._scan(txn, env.nodes, run_id, prefix, "node", next_number)
        for number, name, _, _ in nodes:
            if named.setdefault(name, number) != number:
                raise self._damaged(run_id, f"node {name!r} has two entries")
        numbers = Numbers(token, next_number, named, None)
        self._keep(run_id, numbers)
        return numbers

    def _check_room(self, run_id: str, next_number: int, more: int) -> None:
        if next_number + more > MAX_NUMBER:
            raise StoreError(
                f"run '{run_id}' in {self._data_path} would number more than {MAX_NUMBER} "
                "node names and data keys, more than an LMDB run holds; split the workflow"
            )

    def _put_marker(
        self,
        txn: _Txn,
        env: Env,
        run_id: str,
        prefix: bytes,
        numbers: Numbers,
        seal: bytes | None = None,
    ) -> None:
        # Set before the transaction commits: if it aborts, the stored marker differs
        # from this token, and the numbers are read again (see the module docstring).
        numbers.token = self._seal_entry(b"node", prefix, pack_marker(numbers.next, seal))
        txn.put(prefix, numbers.token, db=env.nodes)

    # -- seals (`flowdag._seal`) ------------------------------------------------------------

    def _read_seal(self, txn: _Txn, env: Env, run_id: str) -> tuple[bytes, bytes] | None:
        """(marker, seal) of a run whose marker holds a seal; None for any other run."""
        prefix = run_prefix(run_id)
        self._header(txn, env, run_id)  # RunNotFoundError
        token = txn.get(prefix, db=env.nodes)
        if token is None:  # layout 1: never sealed
            return None
        seal = self._marker(run_id, prefix, token)[1]
        return None if seal is None else (token, seal)

    def _write_seal(self, txn: _Txn, env: Env, run_id: str, seal: bytes) -> bytes:
        """Put ``seal`` in the run's marker, which it holds until the run's next
        write; the marker's bytes (`Store._sealed`'s token)."""
        prefix = run_prefix(run_id)
        self._header(txn, env, run_id)  # RunNotFoundError aborts the transaction
        numbers = self._numbers_in(txn, env, run_id, prefix)
        self._put_marker(txn, env, run_id, prefix, numbers, seal)
        return numbers.token

    def _put_entries(
        self,
        txn: _Txn,
        env: Env,
        run_id: str,
        prefix: bytes,
        nodes: Mapping[str, StoredNode],
        data: Mapping[str, bytes],
    ) -> Numbers:
        """Write a whole run's entries and its marker (its range is empty), numbered in order."""
        seal = self._seal_entry
        metas: list[tuple[bytes, bytes]] = []
        outputs: list[tuple[bytes, bytes]] = []
        entries: list[tuple[bytes, bytes]] = []
        self._check_room(run_id, 0, len(nodes) + len(data))
        keys: dict[str, int] = {}
        numbers = Numbers(b"", 0, {}, keys)
        for number, (name, node) in enumerate(nodes.items()):
            key = entry_key(prefix, number)
            numbers.nodes[name] = number
            entry, apart = self._node_entries(key, name, node)
            metas.append((key, entry))
            if apart is not None:
                outputs.append((key, apart))
        for number, (name, value) in enumerate(data.items(), len(nodes)):
            key = entry_key(prefix, number)
            keys[name] = number
            entries.append((key, seal(b"data", key, pack_named(name, value))))
        numbers.next = len(nodes) + len(data)
        self._put_marker(txn, env, run_id, prefix, numbers)
        txn.cursor(env.nodes).putmulti(metas)
        txn.cursor(env.outputs).putmulti(outputs)
        txn.cursor(env.data).putmulti(entries)
        self._keep(run_id, numbers)
        return numbers

    def _move_to_layout(self, txn: _Txn, env: Env, run_id: str, prefix: bytes) -> Numbers:
        """Rewrite a run of layout 1 in this release's layout, in the write's transaction.

        Read (and checked) whole first, then written anew: a crash at any point
        leaves the run as it was, since nothing commits before the transaction.
        """
        run = self._read_run(txn, env, run_id)
        delete_range(txn, env.nodes, prefix)
        delete_range(txn, env.outputs, prefix)
        delete_range(txn, env.data, prefix)
        return self._put_entries(txn, env, run_id, prefix, run.nodes, run.data)

    # -- the header, errors ---------------------------------------------------------------

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

    # -- encryption at rest (see _crypto.py) -------------------------------------------

    def _seal_entry(self, entry: bytes, key: bytes, value: bytes) -> bytes:
        # Bound to the sub-database and the key, which starts with the run id:
        # a value cannot be moved to another entry or run.
        return self._seal(value, b"flowdag\0lmdb\0" + entry + b"\0" + key)

    def _open_entry(self, run_id: str, entry: bytes, key: bytes, value: bytes, kind: str) -> bytes:
        where = f"run '{run_id}' in {self._data_path} ({kind} entry)"
        return self._unseal(value, b"flowdag\0lmdb\0" + entry + b"\0" + key, where)


class RunSink(Protocol):
    """What `RunEntries._feed_run` feeds: a `flowdag.stores._decoding.RunDecoder`,
    or `_WholeRun` to keep the run as stored."""

    def header(self, blob: bytes) -> None: ...
    def node(self, name: str, meta: bytes) -> None: ...
    def output(self, name: str, blob: bytes) -> None: ...
    def data(self, values: Mapping[str, bytes]) -> None: ...
    def feed(
        self, header: bytes, nodes: Mapping[str, StoredNode], data: Mapping[str, bytes]
    ) -> None: ...


class _WholeRun:
    """A run's entries kept as read (`StoredRun`'s parts)."""

    def __init__(self) -> None:
        self.blob = b""
        self.nodes: dict[str, StoredNode] = {}
        self.values: dict[str, bytes] = {}

    def header(self, blob: bytes) -> None:
        self.blob = blob

    def node(self, name: str, meta: bytes) -> None:
        self.nodes[name] = StoredNode(meta)

    def output(self, name: str, blob: bytes) -> None:
        self.nodes[name].output = blob

    def data(self, values: Mapping[str, bytes]) -> None:
        self.values = dict(values)

    def feed(
        self, header: bytes, nodes: Mapping[str, StoredNode], data: Mapping[str, bytes]
    ) -> None:
        self.blob, self.nodes, self.values = header, dict(nodes), dict(data)
