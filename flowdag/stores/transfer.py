"""Copy runs between stores and check that runs load: the library behind ``flowdag store``.

A copy goes through `RunState`, not bytes: the JSON store keeps values in its
own codec, the others in msgpack, so only the decoded states can be compared.

A copy is crash-safe: it is written aside where the destination never looks
(the snapshot's temp file of a journaled store, LMDB's open write
transaction), read back from there and compared with the source state
(exactly: see `same_value`), and only then published, atomically (a rename, a
transaction commit). Killed at any moment, the destination holds either no
new copy or a checked one, never a run that silently differs from its source.

Refs: the blobs a run's refs point at (outputs and ``ctx.data``, at any
depth) are copied first, each checked against its hash as it is read, and
only then is the run written, so a crash leaves at most orphan blobs (gc
removes them), never a record whose blob is missing. A ref whose value is
encoded with the source's codec is re-encoded when the destination reads
with another (JSON <-> msgpack): a store decodes refs with its own codec.
`check_run` reads every blob a run refers to and checks its hash.

Tables: `copy_tables` copies the store-wide entries (kv, cache, waits) the same way,
blobs first (`flowdag.stores._blobcopy`), each entry converted by the layer
that owns its table (`TABLE_CONVERTERS`), then all entries in one transaction.
"""

from __future__ import annotations

import math
from collections.abc import Callable
from dataclasses import dataclass, field, replace
from datetime import UTC, datetime
from decimal import Decimal
from typing import Any

from flowdag._equality import equal
from flowdag._frames import is_frame
from flowdag.errors import (
    CorruptStateError,
    SerializationError,
    StoreError,
)
from flowdag.refs import Ref, collecting
from flowdag.state import AttemptInfo, NodeState, RunState
from flowdag.stores._blobcopy import BlobCopier, Copied, Subject
from flowdag.stores._refwalk import refs_in, replace_refs
from flowdag.stores._tables import TABLES, TableTxn
from flowdag.stores.base import Store, StoredRun

__all__ = [
    "TABLE_CONVERTERS",
    "Copied",
    "RunCheck",
    "TablesCopied",
    "check_run",
    "check_tables",
    "copy_run",
    "copy_tables",
    "same_value",
    "verify_run",
]


def copy_run(src: Store, dst: Store, run_id: str) -> Copied:
    """Copy one run from ``src`` to ``dst`` (replacing any run of that id there) and verify it.

    The destination run is locked while it is written and read back, so a run
    that is running there is never overwritten. The blobs the run's refs point
    at are copied first (a blob already there is not copied again; an expired
    ref's blob is not copied), then the run is checked before it is published
    (see the module docstring).

    Raises:
        RunNotFoundError: ``src`` holds no such run (or it expired).
        CorruptStateError: the run is damaged in ``src``, or a blob it refers to
            does not match its hash; the run was not written to ``dst``.
        BlobMissingError: a blob the run refers to is missing from ``src``;
            nothing was written to ``dst``.
        RunLockedError: the run is running in ``dst``.
        StoreError: the run holds a value ``dst``'s codec cannot store, or the
            copy read back from ``dst`` is damaged, differs from the source or
            cannot be compared with it; it was not published and ``dst`` is as
            it was (blobs copied for it stay, unreferenced, until gc).
    """
    with collecting() as held:  # every Ref the load decodes: none, most of the time
        state = src.load(run_id)
    where = _refs_of(state) if held else []
    stored = _stored(dst, state, run_id)
    done = Copied()

    def check(read_back: Callable[[], StoredRun]) -> None:
        try:
            with collecting() as copied:
                problem = _difference(state, dst._from_stored(run_id, read_back()))
            problem = problem or _missing_blobs(dst, copied)
        except CorruptStateError as exc:  # raised by dst: not the source's damage
            problem = f"the copy cannot be read back ({exc})"
        except Exception as exc:  # a value whose == raises: the copy is not verified
            problem = f"the copy cannot be compared ({type(exc).__name__}: {exc})"
        if problem is not None:
            raise StoreError(
                f"copy of run '{run_id}' to {dst.describe(run_id)} differs from the source: "
                f"{problem}; the copy was not kept"
            )

    with dst.lock(run_id):
        if where:
            # Blobs first, the record last: a crash in between leaves orphans only.
            subject = Subject(
                f"run '{run_id}'", run_id, "the run was not copied", "run the node again"
            )
            new = BlobCopier(src, dst, done).refs(subject, where)
            if new:
                state = _with_refs(state, new, where)
                stored = _stored(dst, state, run_id)
        dst._unread.read(run_id)
        dst._save_checked(run_id, stored, check)
    return done


def _stored(dst: Store, state: RunState, run_id: str) -> StoredRun:
    try:
        return dst._to_stored(state)
    except SerializationError as exc:  # a value the destination's codec cannot hold
        raise StoreError(
            f"run '{run_id}' cannot be stored in {dst.describe(run_id)}: {exc}; nothing was written"
        ) from exc


def _refs_of(state: RunState) -> list[tuple[str, Ref]]:
    """Every Ref of a loaded run, with where it is: ``node 'a'`` or ``ctx.data 'k'``."""
    found = []
    for name, node in state.nodes.items():
        found += [(_node_place(name), ref) for ref in refs_in(node.output)]
    for key, value in state.data.items():
        found += [(_data_place(key), ref) for ref in refs_in(value)]
    return found


def _node_place(name: str) -> str:
    return f"node '{name}'"


def _data_place(key: str) -> str:
    return f"ctx.data {key!r}"


def _with_refs(state: RunState, new: dict[Ref, Ref], where: list[tuple[str, Ref]]) -> RunState:
    """``state`` with the refs ``new`` maps replaced, in the outputs and data that hold them."""
    places = {place for place, ref in where if ref in new}
    nodes = {
        name: replace(node, output=replace_refs(node.output, new))
        if _node_place(name) in places
        else node
        for name, node in state.nodes.items()
    }
    data = {
        key: replace_refs(value, new) if _data_place(key) in places else value
        for key, value in state.data.items()
    }
    return replace(state, nodes=nodes, data=data)


def _missing_blobs(dst: Store, held: dict[str, datetime | None]) -> str | None:
    now = datetime.now(UTC)
    missing = [
        sha256
        for sha256, expires_at in held.items()
        if (expires_at is None or expires_at > now) and not dst.blobs.exists(sha256)
    ]
    if not missing:
        return None
    return f"blob {missing[0]} is not in its blob area" + (
        f" (and {len(missing) - 1} more)" if len(missing) > 1 else ""
    )


# -- store verify ---------------------------------------------------------------------------


@dataclass(slots=True)
class RunCheck:
    """What `check_run` found in one run."""

    damage: str | None = None  # why the run's records cannot be read, if they cannot
    refs: int = 0  # refs whose blob was read and hashed right
    expired: int = 0  # refs past their expires_at: not read, and not damage
    blobs: list[str] = field(default_factory=list)  # each missing or damaged blob: where, why

    @property
    def ok(self) -> bool:
        return self.damage is None and not self.blobs

    def reason(self) -> str | None:
        """Why the run is damaged, in one text; None if it is not."""
        if self.ok:
            return None
        return "; ".join([self.damage] if self.damage is not None else self.blobs)


def check_run(store: Store, run_id: str, seen: dict[str, str | None] | None = None) -> RunCheck:
    """Load one run fully and read every blob its live refs point at, checking each hash.

    Each blob is read through once, a chunk at a time (``seen`` remembers the
    verdicts of blobs read already, across runs: sha256 -> None or why it failed).

    Raises:
        RunNotFoundError: the store holds no such run (or it expired).
        StoreError: the store cannot be read at all (I/O error, closed store);
            damage to the run or its blobs is returned, not raised.
    """
    result = RunCheck()
    try:
        with collecting() as held:
            state = store.load(run_id)
        where = _refs_of(state) if held else []
    except CorruptStateError as exc:
        result.damage = str(exc)
        return result
    verdicts = {} if seen is None else seen
    now = datetime.now(UTC)
    for place, ref in where:
        if ref.expires_at is not None and ref.expires_at <= now:
            result.expired += 1
            continue
        if ref.sha256 not in verdicts:
            try:
                store.blobs.check(ref.sha256, size=ref.size)
                verdicts[ref.sha256] = None
            except (CorruptStateError, StoreError) as exc:  # missing, damaged, unreadable
                verdicts[ref.sha256] = str(exc)
        problem = verdicts[ref.sha256]
        if problem is None:
            result.refs += 1
        else:
            result.blobs.append(f"run '{run_id}', {place}: {problem}")
    return result


def verify_run(store: Store, run_id: str) -> str | None:
    """Load one run fully and check its blobs; None if all is well, else why it is damaged.

    Raises:
        RunNotFoundError: the store holds no such run.
        StoreError: the store cannot be read at all (I/O error, closed store);
            damage to the run itself is returned, not raised.
    """
    return check_run(store, run_id).reason()


def _difference(expected: RunState, actual: RunState) -> str | None:
    """What differs between two states, briefly, or None if they are the same."""
    fields = [
        name
        for name in ("run_id", "workflow", "metadata", "ttl", "data")
        if not same_value(getattr(expected, name), getattr(actual, name))
    ]
    names = expected.nodes.keys() | actual.nodes.keys()
    nodes = sorted(
        name
        for name in names
        if name not in expected.nodes
        or name not in actual.nodes
        or not _same_node(expected.nodes[name], actual.nodes[name])
    )
    if nodes:
        shown = ", ".join(repr(name) for name in nodes[:5])
        more = f" and {len(nodes) - 5} more" if len(nodes) > 5 else ""
        fields.append(f"node {shown}{more}")
    return "differs in " + ", ".join(fields) if fields else None


def _same_node(expected: NodeState, actual: NodeState) -> bool:
    return (
        expected.status == actual.status
        and expected.attempts == actual.attempts
        and same_value(expected.started_at, actual.started_at)
        and same_value(expected.finished_at, actual.finished_at)
        and expected.error == actual.error
        and expected.deps == actual.deps
        and len(expected.history) == len(actual.history)
        and all(map(_same_attempt, expected.history, actual.history))
        and same_value(expected.output, actual.output)
        and expected.provenance == actual.provenance
    )


def _same_attempt(expected: AttemptInfo, actual: AttemptInfo) -> bool:
    return (
        type(actual) is AttemptInfo
        and expected.number == actual.number
        and same_value(expected.started_at, actual.started_at)
        and same_value(expected.finished_at, actual.finished_at)
        and expected.error == actual.error
    )


def same_value(expected: Any, actual: Any) -> bool:
    """Whether a value came back exactly: same types all the way down, NaN equal to NaN.

    Stricter than ``==`` (5.0 is not 5, -0.0 is not 0.0, a tuple is not a list,
    ``Decimal("1.10")`` is not ``Decimal("1.1")``) and usable where ``==`` is not
    (NaN, numpy arrays). Iterative: values nested as deep as the codecs allow
    (1024 levels) are compared without recursion.
    """
    pending = [(expected, actual)]
    while pending:
        left, right = pending.pop()
        if type(left) is not type(right):
            return False
        if isinstance(left, list | tuple):
            if len(left) != len(right):
                return False
            pending.extend(zip(left, right, strict=True))
        elif isinstance(left, dict):
            if len(left) != len(right):
                return False
            for key, value in left.items():
                if key not in right:
                    return False
                pending.append((value, right[key]))
        elif not _same_leaf(left, right):
            return False
    return True


def _same_leaf(expected: Any, actual: Any) -> bool:
    """`same_value` for two values of the same type that are not lists, tuples or dicts."""
    if isinstance(expected, float):  # -0.0 is not 0.0; NaN is NaN
        if math.isnan(expected) or math.isnan(actual):
            return math.isnan(expected) and math.isnan(actual)
        return bool(expected == actual) and math.copysign(1, expected) == math.copysign(1, actual)
    if isinstance(expected, Decimal):
        return bool(expected.as_tuple() == actual.as_tuple())
    if isinstance(expected, datetime):  # aware and naive, or two zones, are not the same
        return bool(expected == actual and expected.utcoffset() == actual.utcoffset())
    if type(expected).__module__ == "numpy" and hasattr(expected, "dtype"):
        return _same_array(expected, actual)
    if is_frame(expected):  # a DataFrame's == is elementwise
        return equal(expected, actual)
    return bool(expected == actual)


def _same_array(expected: Any, actual: Any) -> bool:
    import numpy as np  # an array implies numpy is imported already

    if expected.dtype != actual.dtype or expected.shape != actual.shape:
        return False
    equal_nan = expected.dtype.kind in "fc"
    return bool(np.array_equal(expected, actual, equal_nan=equal_nan))


@dataclass(slots=True)
class TablesCopied:
    """What `copy_tables` did: entries copied, entries left behind, and their blobs."""

    entries: int = 0
    left: int = 0  # cache entries not copied (another codec, or a blob gone: misses anyway)
    blobs: Copied = field(default_factory=Copied)


#: What converts one table entry for another store: given the blob copier (which
#: knows both stores), the entry's key and its bytes in the source, it copies the
#: blobs the entry refers to (re-encoding them between codecs) and returns the
#: entry's bytes for the destination, or None to leave it behind. The layer that
#: owns a table's entries owns its converter (kv: `flowdag._kv_entries`, cache:
#: `flowdag._cache`); transfer never reads an entry itself.
Converter = Callable[[BlobCopier, str, bytes], bytes | None]


def _kv_entry(copier: BlobCopier, key: str, raw: bytes) -> bytes | None:
    from flowdag._kv_entries import convert_entry  # imported here: kv needs nothing of this

    return convert_entry(copier, key, raw)


def _cache_entry(copier: BlobCopier, key: str, raw: bytes) -> bytes | None:
    from flowdag._cache_entries import convert_entry  # likewise

    return convert_entry(copier, key, raw)


def _wait_entry(copier: BlobCopier, key: str, raw: bytes) -> bytes:
    return raw  # JSON values only (`flowdag._wait_entries`): the same in every codec


TABLE_CONVERTERS: dict[str, Converter] = {
    "kv": _kv_entry,
    "cache": _cache_entry,
    "waits": _wait_entry,
}


def copy_tables(src: Store, dst: Store) -> TablesCopied:
    """Copy the entries of ``src``'s tables (kv, cache, waits), and their blobs, to ``dst`` at once.

    Each entry goes through its table's converter (`TABLE_CONVERTERS`): the
    blobs an entry refers to (a kv value kept by reference, a cached output
    kept as a ref) are copied first, each checked against its hash, so the
    entries that are then written never point at a missing blob; between
    codecs (JSON <-> msgpack) a kv entry is re-encoded, and so is the value in
    its blob (into a new blob, which the entry then holds). Cache entries are
    left behind between codecs: an entry holds its output as the source codec
    stored it, and is keyed on digests of the source codec's encodings, which
    no run on the destination would compute (the cache fills again as it
    runs); a cache entry whose blob is gone is left behind too (it is a miss
    in the source already). Expired entries are copied, their blobs not.
    Entries ``dst`` has and ``src`` has not are kept. The copy is read back
    and compared before the transaction commits, so a destination never holds
    a copy that differs.

    Raises:
        CorruptStateError: an entry, or a blob it refers to, is damaged in ``src``;
            no entry was written (blobs copied before stay unreferenced until gc).
        BlobMissingError: a blob a live kv entry refers to is missing from ``src``;
            no entry was written (likewise).
        StoreError: an entry cannot be stored in ``dst``, or reads back otherwise.
    """
    copier = BlobCopier(src, dst)
    done = TablesCopied(blobs=copier.done)
    entries: list[tuple[str, str, bytes]] = []
    for table in TABLES:
        convert = TABLE_CONVERTERS[table]
        for key, value in src.table_scan(table):
            try:
                converted = convert(copier, key, value)
            except SerializationError as exc:
                raise StoreError(
                    f"table {table!r} entry {key!r} cannot be stored in {dst.describe('')}: "
                    f"{exc}; no table entry was copied"
                ) from exc
            if converted is None:
                done.left += 1
            else:
                entries.append((table, key, converted))

    def write(txn: TableTxn) -> None:
        for table, key, value in entries:
            txn.put(table, key, value)
        for table, key, value in entries:
            if txn.get(table, key) != value:
                raise StoreError(f"table {table!r} entry {key!r} reads back otherwise")

    dst.transact_tables(write)
    done.entries = len(entries)
    return done


def check_tables(store: Store) -> str | None:
    """Read every table entry (each is checked as it is read); None if all is well, else why.

    Raises:
        StoreError: the store cannot be read at all (I/O error, closed store);
            damage is returned, not raised.
    """
    try:
        for table in TABLES:
            store.table_scan(table)
    except CorruptStateError as exc:
        return str(exc)
    return None
