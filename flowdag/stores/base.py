"""The store base class: public methods written once, backend hooks underneath.

A backend keeps bytes, never Python values: the base class turns a `RunState`
into a `StoredRun` with the store's `Codec` and back (the mixin
`flowdag.stores._run_coding.RunCoding`), so every backend stores exactly the
same blobs and a state moved between stores compares equal.

Per run a backend keeps three kinds of entry:

- the *header*: workflow name, metadata and the graph (each node's deps);
- per node, a small *meta* blob (status, attempts, times, error, the history of
  its attempts: see `flowdag.stores._records`) and, apart from it, the node's
  *output* blob, so statuses can be read without decoding outputs;
- per ``ctx.data`` key, its value blob.

`Store.commit` upserts some nodes and applies some data changes in one atomic,
durable step; its cost depends on the size of those records, not of the run.

Beside its runs a store has a *blob area* (`Store.blobs`): outputs kept by
reference (`flowdag.Ref`), one file per content hash beside a disk store, a
dict for `MemoryStore`. Every Ref a store decodes is bound to it, so
``ref.load()`` reads through the store; every node's meta record lists the
blobs its output refers to, which `Store.life` reads for gc without decoding
an output. A run with a ``ttl`` expires that long after its last node
finished: from then on `load` says so (`RunNotFoundError`), and gc deletes it.

Beside its runs a store keeps store-wide *tables* of bytes under string keys
(`flowdag.stores._tables`: key-value state and the cross-run cache), changed in
transactions that may carry a run's commit, so both become durable together.
The table methods (`Store.table_get`, `Store.transact_tables`, `Store.kv`...)
and their hooks live in the mixin `flowdag.stores._storetables.StoreTables`.
"""

from __future__ import annotations

from abc import ABC, abstractmethod
from collections.abc import Callable, Iterator, Mapping, Sequence
from contextlib import contextmanager
from functools import cached_property
from types import TracebackType
from typing import TYPE_CHECKING, Any, ClassVar, Self

from flowdag.codec import Codec, ValueCodec
from flowdag.errors import (
    CorruptStateError,
    RunNotFoundError,
    StoreError,
)
from flowdag.state import NodeRecord, NodeState, RunState, check_times
from flowdag.stores._compaction import Compaction
from flowdag.stores._decoding import RunDecoder
from flowdag.stores._record_reads import run_life
from flowdag.stores._records import check_names, encode_meta
from flowdag.stores._run_coding import RunCoding
from flowdag.stores._stored import (
    RunLife,
    RunLock,
    StoredNode,
    StoredRun,
    check_run_id,
)
from flowdag.stores._storetables import StoreTables
from flowdag.stores._tables import TableTxn
from flowdag.stores._unread import UnreadRuns

if TYPE_CHECKING:
    from flowdag.stores._blobs import BlobArea, RefSource

__all__ = ["RunLife", "RunLock", "Store", "StoredNode", "StoredRun", "check_run_id"]


class Store(StoreTables, RunCoding, ABC):
    """Base of every store. Subclasses implement the ``_hooks``; users call the rest.

    Stores are context managers and safe to use from several threads.
    """

    #: URL scheme of the store, as `open_store` knows it.
    scheme: str = ""
    #: Whether a commit waits for the disk. The runner commits to durable stores
    #: from a background thread, grouping the nodes that finish meanwhile.
    durable: bool = True
    #: Whether a run may read back from the store what it stored, instead of holding it.
    _reads_back: ClassVar[bool] = False

    #: What codec the store's files need: "json" (a `JSONCodec`), "binary"
    #: (any codec but a `JSONCodec`), or "" (any codec).
    codec_kind: ClassVar[str] = ""

    def __init__(self, *, codec: ValueCodec | None = None) -> None:
        self.codec: ValueCodec = codec if codec is not None else self._default_codec()
        self._closed = False
        self._unread = UnreadRuns()  # results to read before their run changes here
        self._check_codec_kind()

    def _default_codec(self) -> ValueCodec:
        """The codec used when none is given."""
        return Codec()

    # -- public API ---------------------------------------------------------

    def save(self, state: RunState) -> None:
        """Write a whole run, replacing any stored run with the same id, atomically.

        Raises:
            InvalidRunIdError: the run id is not valid.
            InvalidArgumentError: a state no load would accept: a naive node
                time, a status or attempt count out of range, a ``workflow``
                that is not a str or ``metadata`` that is not a dict.
            SerializationError: a value the codec cannot store, or a node
                name, dependency or ``data`` key that is not text UTF-8 can encode.
        """
        run_id = check_run_id(state.run_id)
        check_times(state)  # and check_state, in _to_stored
        self._check_open()
        self._unread.read(run_id)
        self._save(run_id, self._to_stored(state))

    def load(self, run_id: str) -> RunState:
        """Read a whole run.

        Raises:
            RunNotFoundError: the store holds no such run.
            CorruptStateError: the run's data is damaged (never wrong data).
        """
        return self._load_known(run_id, {})

    def _load_known(
        self, run_id: str, known: Mapping[str, Any], *, expired: bool = False
    ) -> RunState:
        """`load`, for a run about to resume with code whose fingerprints are ``known``
        (node -> `flowdag._fingerprint.Fingerprint`): see `RunDecoder.known`; with
        ``expired``, a run past its ttl too (the call that just ran it reads it back)."""
        run_id = check_run_id(run_id)
        self._check_open()
        with self._decoder(run_id) as decoder:
            decoder.known = known or None
            self._load_into(run_id, decoder)
            state = decoder.finish()
        return state if expired else self._unexpired(state)

    def load_statuses(self, run_id: str) -> RunState:
        """Read a run without outputs or data: statuses, attempts, times, errors.

        Cheaper than `load` for status displays and resume planning; every
        ``output`` is None and ``data`` is empty.

        Raises:
            RunNotFoundError: the store holds no such run, or it expired.
            CorruptStateError: the run's data is damaged (never wrong data).
        """
        run_id = check_run_id(run_id)
        self._check_open()
        header, metas = self._load_metas(run_id)
        nodes = {n: StoredNode(m) for n, m in metas.items()}
        return self._unexpired(self._decode_run(run_id, header, nodes, {}))

    def life(self, run_id: str) -> RunLife:
        """When the run expires and which blobs it refers to; no output is decoded.

        Unlike `load`, an expired run is read too: gc looks at it to delete it.

        Raises:
            RunNotFoundError: the store holds no such run.
            CorruptStateError: the run's records are damaged.
        """
        run_id = check_run_id(run_id)
        self._check_open()
        run = self._load(run_id)
        try:
            return run_life(run, self.codec.decode)
        except (CorruptStateError, KeyError, TypeError, ValueError) as exc:
            raise self._damaged(run_id, exc) from exc

    @cached_property
    def blobs(self) -> BlobArea:
        """The store's blob area, where outputs kept by reference live."""
        return self._blob_area()

    @cached_property
    def ref_source(self) -> RefSource:
        """What the Refs this store loads read through: its blob area and codec."""
        from flowdag.stores._blobs import RefSource

        return RefSource(self.blobs, self.codec)

    def commit(
        self,
        run_id: str,
        records: Sequence[NodeRecord],
        tables: Callable[[TableTxn, Sequence[NodeRecord]], Sequence[NodeRecord]] | None = None,
    ) -> None:
        """Make finished nodes durable, all of them or none, before returning.

        Each record upserts one node (status, attempts, times, error, output) and
        applies its ``ctx.data`` changes; later records win where they overlap.
        Several records in one call share one transaction and one sync: that is
        how the runner's group commit pays one fsync per batch.

        With ``tables``, the commit is also a transaction over the store's tables
        (see `transact_tables`): ``tables(txn, records)`` stages its table writes
        and returns the records to commit with them (it may replace some), and
        records and table writes become durable together.
        """
        run_id = check_run_id(run_id)
        self._check_open()
        self._unread.read(run_id)
        if tables is None:
            nodes, data = self._stored_records(run_id, records)
            if nodes:
                self._commit(run_id, nodes, data)
            return

        def work(txn: TableTxn) -> tuple[dict[str, StoredNode], dict[str, bytes | None]]:
            return self._stored_records(run_id, tables(txn, records))

        self._transact_tables(run_id, work)

    def _stored_records(
        self, run_id: str, records: Sequence[NodeRecord]
    ) -> tuple[dict[str, StoredNode], dict[str, bytes | None]]:
        nodes: dict[str, StoredNode] = {}
        data: dict[str, bytes | None] = {}
        encode = self.codec.encode
        for record in records:
            name, changes = record.node, record.data
            if type(name) is not str or not name.isascii():  # else nothing to refuse
                check_names(run_id, (name,), "node name")
            if changes:
                check_names(run_id, changes, "ctx.data key")
                data.update(changes)
            nodes[name] = StoredNode(encode_meta(encode, record, record.blobs), record.output)
        return nodes, data

    def list_runs(self) -> list[str]:
        """The ids of all stored runs, sorted."""
        self._check_open()
        return sorted(self._list_runs())

    def delete(self, run_id: str) -> bool:
        """Remove a run; True if it existed.

        Raises:
            RunLockedError: the run is running (its lock is held by another
                process, or in this process); nothing is deleted.
        """
        run_id = check_run_id(run_id)
        self._check_open()
        # Under the run's lock: a run being written is never deleted under its writer.
        with self.lock(run_id):
            self._unread.read(run_id)
            existed = self._delete(run_id)
            if self._keeps_tables():  # its waits end too (gc sweeps any a crash left)
                from flowdag.waits import drop_waits  # waits build on stores: not at the top

                drop_waits(self, run_id)
            return existed

    @contextmanager
    def lock(self, run_id: str) -> Iterator[None]:
        """Hold the run's lock for the duration of the block.

        Raises:
            RunLockedError: another process, or another run in this process,
                holds it. A lock held by a process that died is free again.
        """
        run_id = check_run_id(run_id)
        self._check_open()
        held = self._lock(run_id)
        try:
            yield
        finally:
            held.release()

    def lock_holder(self, run_id: str) -> int | None:
        """Who holds the run's lock now: a pid (0 when it is held but the holder is
        not named), or None when no live process holds it. Only looks: the lock is
        never kept, and nothing is created.
        """
        run_id = check_run_id(run_id)
        self._check_open()
        return self._lock_holder(run_id)

    def compact(self) -> Compaction:
        """Give disk space back where deleting runs does not (``flowdag store compact``).

        LMDB copies its environment with compaction and swaps the copy in; the
        JSON and FlatBuffers stores fold every run's journal into its snapshot
        (a running run is skipped and reported); a memory store has nothing to
        do. A crash at any moment leaves a store that loads. See ``_compaction.py``.

        Raises:
            StoreError: LMDB only: the store is in use (a run is running,
                another process or another store of this process has it open).
        """
        self._check_open()
        return self._compact_store()

    def close(self) -> None:
        """Release the store's resources; further calls raise `StoreError`."""
        if not self._closed:
            if type(self)._reopened is Store._reopened:  # nothing to read them from after
                self._unread.read()
            self._closed = True
            self._close()

    def describe(self, run_id: str) -> str:
        """Where the run lives, for messages (a file or database path)."""
        return f"{self.scheme}://"

    def __enter__(self) -> Self:
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.close()

    # -- backend hooks --------------------------------------------------------

    @abstractmethod
    def _save(self, run_id: str, run: StoredRun) -> None:
        """Replace the whole run atomically and durably."""

    @abstractmethod
    def _load(self, run_id: str) -> StoredRun:
        """Read the whole run; raise `RunNotFoundError` if absent."""

    def _load_into(self, run_id: str, decoder: RunDecoder) -> None:
        """Feed the whole run to ``decoder``; override to feed entries as they are read.

        Raise `RunNotFoundError` if absent. See `flowdag.stores._decoding`.
        """
        run = self._load(run_id)
        decoder.feed(run.header, run.nodes, run.data)

    def _load_metas(self, run_id: str) -> tuple[bytes, dict[str, bytes]]:
        """Read the header and every node's meta blob; override to skip outputs."""
        run = self._load(run_id)
        return run.header, {name: node.meta for name, node in run.nodes.items()}

    @abstractmethod
    def _commit(
        self, run_id: str, nodes: Mapping[str, StoredNode], data: Mapping[str, bytes | None]
    ) -> None:
        """Upsert ``nodes`` and apply ``data`` (None deletes) in one durable transaction.

        Raise `RunNotFoundError` if the run was never saved.
        """

    # Seals (`flowdag._seal`): a completed run's plan, good until the run's next write.
    def _sealed(self, run_id: str) -> tuple[bytes, bytes] | None:
        """(token, seal) if the run as stored carries a seal, else None (also for a
        store that keeps none); the token changes with every write to the run."""
        return None

    def _put_seal(self, run_id: str, seal: bytes) -> bytes | None:
        """Seal the run as stored now (its lock held); its next write drops the seal.
        The token `_sealed` gives with it, or None: this store keeps no seal."""
        return None

    def _sealed_node(
        self, run_id: str, name: str, token: bytes, deps: tuple[str, ...]
    ) -> NodeState | None:
        """Node ``name`` (with ``deps``) of a run sealed as ``token``, read alone while
        the seal holds (`flowdag._seal.SealedRun.node`); None: read the whole run."""
        return None

    def _reopened(self) -> Store | None:
        """This store opened anew, for a result to read its run from after `close`;
        None: what it holds goes with it, so `close` reads such results first."""
        return None

    @abstractmethod
    def _list_runs(self) -> list[str]: ...

    @abstractmethod
    def _delete(self, run_id: str) -> bool: ...

    @abstractmethod
    def _lock(self, run_id: str) -> RunLock: ...

    def _lock_holder(self, run_id: str) -> int | None:
        """Backend hook of `lock_holder`; stores without locks of their own hold none."""
        return None

    def _blob_area(self) -> BlobArea:
        """Backend hook of `blobs`: a disk store's files; this default keeps them in memory."""
        from flowdag.stores._blobmem import MemoryBlobs

        return MemoryBlobs()

    def _close(self) -> None:
        """Release backend resources."""

    def _compact_store(self) -> Compaction:
        """Backend hook of `compact`; stores with nothing to give back do nothing."""
        return Compaction()

    def _save_checked(
        self, run_id: str, run: StoredRun, check: Callable[[Callable[[], StoredRun]], None]
    ) -> None:
        """Save ``run`` but publish it only once ``check`` passed on it as read back.

        ``check`` is given a function that reads the written run back, and
        raises to refuse it; the store then keeps what it had. This default
        saves, reads back and puts the previous run back on refusal, so a
        crash in between leaves an unchecked run: the disk stores override it
        to write the run where loads never look, check it there and publish it
        atomically.
        """
        try:
            previous: StoredRun | None = self._load(run_id)
        except (RunNotFoundError, CorruptStateError):
            previous = None  # nothing, or nothing worth keeping, to put back
        self._save(run_id, run)
        try:
            check(lambda: self._load(run_id))
        except BaseException:
            if previous is None:
                self._delete(run_id)
            else:
                self._save(run_id, previous)
            raise

    # -- lifecycle -------------------------------------------------------------

    def _check_open(self) -> None:
        if self._closed:
            raise StoreError(f"{type(self).__name__} is closed; open a new store")
