"""KV entries as the ``kv`` table stores them, the writes (`KVOp`) that change them, and gc's view.

An entry is one record encoded by the store's codec, with a version: the
value (or a `Ref` to the blob holding it), its kept-by-reference flag, the
blobs it points at, when it was written and expires, and the run and node that
wrote it. See `flowdag.kv`. How attempts read committed entries, in this
process or in a worker, is `flowdag._kv_readers`.
"""

from __future__ import annotations

import re
from collections.abc import Iterable, Iterator, Sequence
from dataclasses import dataclass, field, replace
from datetime import UTC, datetime, timedelta
from typing import TYPE_CHECKING, Any

from flowdag._units import Duration, parse_duration
from flowdag.errors import (
    CorruptStateError,
    FlowdagError,
    InvalidArgumentTypeError,
    InvalidKeyError,
    SerializationError,
)
from flowdag.refs import binding, start_collecting, stop_collecting

if TYPE_CHECKING:
    from flowdag.codec import ValueCodec
    from flowdag.gc import GCReport
    from flowdag.stores._blobcopy import BlobCopier
    from flowdag.stores._blobs import RefSource
    from flowdag.stores._tables import TableTxn
    from flowdag.stores.base import Store

__all__ = [
    "ABSENT",
    "INLINE_LIMIT",
    "KVHolder",
    "KVOp",
    "KVWrites",
    "UpdateFailedError",
    "apply_ops",
    "check_fn",
    "check_key",
    "convert_entry",
    "encode_value",
    "has_tables",
    "keep_large",
    "keep_plain",
    "kv_holders",
    "parse_entry",
    "ttl_seconds",
    "value_of",
]

TABLE = "kv"
#: Values encoded above this many bytes are kept in the blob area (a run's default too).
INLINE_LIMIT = 256 * 1024
_ENTRY_VERSION = 1
_KEY = re.compile(r"[A-Za-z0-9_:.-]{1,512}")
#: Values nothing can change in place: carried as they are, and kept decoded between
#: the writes of one transaction (a counter updated by every node of a batch is
#: decoded once, not once per node).
_IMMUTABLE = frozenset({int, float, bool, str, bytes, type(None)})
#: What a read of an absent (or expired) key gives.
ABSENT: Any = object()


def check_key(key: object) -> str:
    """``key`` if it is 1 to 512 of ``A-Z a-z 0-9 _ : . -``, else `InvalidKeyError`."""
    if type(key) is not str or not _KEY.fullmatch(key):
        shown = repr(key) if len(repr(key)) <= 80 else repr(key)[:77] + "..."
        raise InvalidKeyError(
            f"invalid kv key {shown}: use 1 to 512 characters of A-Z a-z 0-9 _ : . -"
        )
    return key


def ttl_seconds(ttl: Duration | None) -> float | None:
    """``ttl`` in seconds (None: never expires); see `flowdag._units.parse_duration`."""
    return None if ttl is None else parse_duration(ttl, "ttl")


@dataclass(slots=True)
class KVOp:
    """One write: ``set`` (``value`` encoded), ``delete``, or ``update`` (``fn`` of the old value).

    ``by_ref``: ``value`` is the encoding of a `Ref` to the blob holding the
    value; ``blobs``: the blobs ``value`` points at (sha256 -> expiry).
    ``fn`` may travel cloudpickled as bytes (from a worker process).
    ``plain``: the value itself when ``has_plain`` (immutable values only, so
    that the commit need not decode ``value`` again).
    """

    kind: str
    key: str
    value: bytes | None = None
    by_ref: bool = False
    blobs: dict[str, datetime | None] | None = None
    ttl: float | None = None
    fn: Any = None
    limit: int | None = INLINE_LIMIT
    plain: Any = None
    has_plain: bool = False


# -- entries -----------------------------------------------------------------------------------


@dataclass(slots=True)
class Stored:
    """An entry as stored: the value (a `Ref` to its blob when ``by_ref``) and its facts.

    The value is part of the entry's record, so a store converted to another
    codec re-encodes the whole entry as it does any record.
    """

    value: Any
    by_ref: bool
    blobs: dict[str, datetime | None] | None
    written_at: datetime
    expires_at: datetime | None
    run_id: str | None
    node: str | None

    def live(self, now: datetime) -> bool:
        return self.expires_at is None or self.expires_at > now

    def encode(self, codec: ValueCodec) -> bytes:
        return codec.encode(
            {
                "version": _ENTRY_VERSION,
                "value": self.value,
                "ref": self.by_ref,
                "blobs": self.blobs,
                "written_at": self.written_at,
                "expires_at": self.expires_at,
                "run_id": self.run_id,
                "node": self.node,
            }
        )


def parse_entry(source: RefSource, key: str, raw: bytes) -> Stored:
    """The entry stored under ``key`` (its refs bound to ``source``); `CorruptStateError`
    if it is damaged."""
    try:
        with binding(source, f"kv entry {key!r}"):
            record = source.codec.decode(raw)
        if type(record) is not dict or record.get("version") != _ENTRY_VERSION:
            raise ValueError(f"not a version {_ENTRY_VERSION} kv entry")
        entry = Stored(
            record["value"],
            record["ref"],
            record["blobs"],
            record["written_at"],
            record["expires_at"],
            record["run_id"],
            record["node"],
        )
        if type(entry.written_at) is not datetime or (entry.by_ref and not _is_ref(entry.value)):
            raise ValueError("its time or value is of the wrong type")
    except Exception as exc:
        raise CorruptStateError(
            f"kv entry {key!r} is damaged ({type(exc).__name__}: {exc}); "
            f"delete it (flowdag kv delete {key}) or restore the store from a backup"
        ) from exc
    return entry


def _is_ref(value: Any) -> bool:
    from flowdag.refs import Ref

    return type(value) is Ref


def value_of(entry: Stored) -> Any:
    """The value an entry holds, loaded from its blob when it was kept by reference."""
    return entry.value.load() if entry.by_ref else entry.value


def encode_value(
    codec: ValueCodec, key: str, value: Any
) -> tuple[bytes, dict[str, datetime | None] | None]:
    """``value`` encoded, and the blobs of the refs in it; `SerializationError` names the key."""
    token, seen = start_collecting()
    try:
        encoded = codec.encode(value)
    except SerializationError as exc:
        raise SerializationError(
            f"kv value for key {key!r} ({type(value).__name__}) not storable: {exc}"
        ) from None
    finally:
        stop_collecting(token)
    return encoded, seen or None


def keep_plain(op: KVOp, value: Any) -> None:
    """Let ``op`` carry ``value`` itself when nothing can change it (see `KVOp`)."""
    if type(value) in _IMMUTABLE:
        op.plain, op.has_plain = value, True


def keep_large(op: KVOp, source: RefSource) -> None:
    """Put a ``set`` op's value in the blob area when it is above its limit (once)."""
    assert op.value is not None
    if op.by_ref or op.limit is None or source.codec.plain_size(op.value) <= op.limit:
        return
    info = source.area.put(source.codec.plain(op.value))
    # The ref never expires by itself: the entry's expiry, known at the commit, is
    # what ends it (gc keeps the blobs of live entries only).
    ref = info.ref(encoding=source.codec.name)
    blobs = dict(op.blobs or {})  # the blob holds the refs inside the value: keep them too
    blobs[ref.sha256] = None
    op.value, op.by_ref, op.blobs = source.codec.encode(ref), True, blobs
    op.plain, op.has_plain = None, False


class KVWrites:
    """The kv entries a transaction changes, each encoded as it is written.

    Reads go to ``base`` (the transaction, or the writes of the whole batch for
    the writes of one node), so one node's writes can be dropped alone.
    """

    __slots__ = ("_base", "changed", "now", "source")

    def __init__(self, base: KVWrites | TableTxn, source: RefSource, now: datetime) -> None:
        self._base = base
        self.source = source
        self.now = now
        # key -> (entry, or None once deleted; its record; its value if immutable, else ABSENT)
        self.changed: dict[str, tuple[Stored | None, bytes | None, Any]] = {}

    def read(self, key: str) -> tuple[Stored | None, bytes | None, Any]:
        """The live entry under ``key`` (None: none), its record if written here (None:
        the entry was just read, its value is its own), and its value if known."""
        found = self.changed.get(key)
        if found is not None:
            entry = found[0]
            return found if entry is None or entry.live(self.now) else (None, None, ABSENT)
        if isinstance(self._base, KVWrites):
            return self._base.read(key)
        raw = self._base.get(TABLE, key)
        if raw is None:
            return None, None, ABSENT
        entry = parse_entry(self.source, key, raw)
        return (entry if entry.live(self.now) else None), None, ABSENT

    def apply(self, ops: Iterable[KVOp], run_id: str | None, node: str | None) -> Any:
        """Apply ``ops`` in order (written by ``run_id``/``node``); the last result.

        A ``set`` or ``update`` gives the new value, a ``delete`` whether a live
        entry was there. An update function that raises fails the call, naming the key.
        """
        source, now = self.source, self.now
        codec = source.codec
        result: Any = None
        for op in ops:
            key = op.key
            if op.kind == "delete":
                try:
                    result = self.read(key)[0] is not None
                except CorruptStateError:  # a damaged entry can be deleted
                    result = True
                self.changed[key] = (None, None, ABSENT)
                continue
            if op.kind == "update":
                entry, raw, value = self.read(key)
                if entry is None:
                    value = None
                elif value is ABSENT:  # decoded afresh: the function may change it in place
                    value = value_of(entry if raw is None else parse_entry(source, key, raw))
                fn = op.fn
                if type(fn) is bytes:  # sent cloudpickled from a worker process
                    import cloudpickle

                    fn = cloudpickle.loads(fn)
                try:
                    value = result = fn(value)
                except Exception as exc:
                    raise UpdateFailedError(key, exc) from exc
                op = KVOp("set", key, None, ttl=op.ttl, limit=op.limit)
                op.value, op.blobs = encode_value(codec, key, value)
                op.plain, op.has_plain = value, True  # the record is encoded right below
            keep_large(op, source)
            assert op.value is not None
            if op.has_plain and not op.by_ref:
                stored = op.plain
            else:
                with binding(source, f"kv entry {key!r}"):
                    stored = codec.decode(op.value)
            expires_at = None if op.ttl is None else now + timedelta(seconds=op.ttl)
            entry = Stored(stored, op.by_ref, op.blobs, now, expires_at, run_id, node)
            known = stored if type(stored) in _IMMUTABLE else ABSENT
            self.changed[key] = (entry, entry.encode(codec), known)
        return result

    def flush(self, txn: TableTxn) -> None:
        """Write the changed entries to ``txn``."""
        for key, (_, raw, _) in self.changed.items():
            if raw is None:
                txn.delete(TABLE, key)
            else:
                txn.put(TABLE, key, raw)


def apply_ops(
    txn: TableTxn,
    ops: Iterable[KVOp],
    source: RefSource,
    run_id: str | None = None,
    node: str | None = None,
) -> Any:
    """Apply ``ops`` in ``txn`` (see `KVWrites.apply`); the last result."""
    writes = KVWrites(txn, source, datetime.now(UTC))
    result = writes.apply(ops, run_id, node)
    writes.flush(txn)
    return result


class UpdateFailedError(FlowdagError):
    """A kv update function raised; the message names the key."""

    def __init__(self, key: str, exc: BaseException) -> None:
        super().__init__(
            f"kv update of key {key!r} failed: {type(exc).__name__}: {exc}; "
            "the node's kv writes were not applied"
        )
        self.key = key


def check_fn(key: str, fn: object) -> None:
    if not callable(fn):
        raise InvalidArgumentTypeError(
            f"kv update of key {key!r} needs a function of the old value, not {type(fn).__name__}"
        )


def has_tables(store: Store) -> bool:
    """Whether ``store``'s backend keeps tables (every kind does)."""
    return store._keeps_tables()


# -- store convert ---------------------------------------------------------------------------


def convert_entry(copier: BlobCopier, key: str, raw: bytes) -> bytes:
    """The entry ``raw`` as ``copier.dst`` must hold it, once the blobs it refers to are there.

    A blob of a ref in the value (kept by reference, or inside) is copied as
    it is or, between codecs, re-encoded into a new blob the entry then holds;
    other blobs it lists (refs inside a blob) are copied as they are. An
    expired entry is converted without its blobs.

    Raises:
        CorruptStateError: the entry, or a blob it refers to, is damaged in the source.
        BlobMissingError: a blob the live entry refers to is missing from the source.
        SerializationError: the entry cannot be encoded with the destination's codec.
    """
    from flowdag.stores._blobcopy import Subject
    from flowdag.stores._refwalk import refs_in, replace_refs

    entry = parse_entry(copier.src.ref_source, key, raw)
    subject = Subject(
        f"kv entry {key!r}", "", "no table entry was copied", "delete the key", alone=False
    )
    refs = refs_in(entry.value) if entry.live(copier.now) else []
    new = copier.refs(subject, [("its value", ref) for ref in refs])
    if refs:
        inside = (entry.blobs or {}).keys() - {ref.sha256 for ref in refs}
        held = [("a ref in its value", sha, (entry.blobs or {})[sha]) for sha in sorted(inside)]
        copier.blobs(subject, held)
    if not new and not copier.recoding:
        return raw  # the same codec and the same blobs: the entry as it is
    blobs = dict(entry.blobs or {})
    for old, ref in new.items():  # the entry holds the re-encoded blobs now
        blobs[ref.sha256] = blobs.pop(old.sha256, ref.expires_at)
    value = replace_refs(entry.value, new) if new else entry.value
    return replace(entry, value=value, blobs=blobs or None).encode(copier.dst.codec)


# -- gc ----------------------------------------------------------------------------------------


@dataclass(slots=True)
class KVHolder:
    """gc's view of a store's kv table: live entries hold their blobs; expired ones go."""

    store: Store
    removed: list[str] = field(default_factory=list)

    def held(self, now: datetime, report: GCReport) -> Iterator[str]:
        if not has_tables(self.store):
            return
        source = self.store.ref_source
        expired: list[str] = []
        for key, raw in self.store.table_scan(TABLE):
            try:
                entry = parse_entry(source, key, raw)
            except CorruptStateError as exc:
                report.unreadable[f"kv:{key}"] = str(exc)
                continue
            if not entry.live(now):
                expired.append(key)
                continue
            for sha256, expires_at in (entry.blobs or {}).items():
                if expires_at is None or expires_at > now:
                    yield sha256
        if report.dry_run:
            report.kv += len(expired)
            return
        report.kv += self.store.transact_tables(lambda txn: _remove_expired(txn, source, expired))


def _remove_expired(txn: TableTxn, source: RefSource, keys: Sequence[str]) -> int:
    """Delete the entries of ``keys`` still expired now (one may have been rewritten)."""
    now = datetime.now(UTC)
    removed = 0
    for key in keys:
        raw = txn.get(TABLE, key)
        if raw is not None and not parse_entry(source, key, raw).live(now):
            txn.delete(TABLE, key)
            removed += 1
    return removed


def kv_holders(store: Store) -> list[KVHolder]:
    """gc's holders for kv entries (`flowdag.gc.HOLDER_KINDS`)."""
    return [KVHolder(store)]
