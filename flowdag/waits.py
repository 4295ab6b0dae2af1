"""Waiting for external input: `Wait`, `provide_input`, `list_waits`, `reissue_key`.

An input node (``wf.add_input``) that is ready does not run: its run records a
wait (`flowdag._wait_entries`) and goes on with what does not depend on it;
when nothing else can progress, `flowdag.run` returns ``SUSPENDED`` with the
wait's one-time key in ``result.waits``. Nothing stays in memory: the process
may exit. `provide_input` checks a value against the JSON Schema stored with
the wait (no workflow code needed) and records it durably, in one exclusive
transaction over the store's tables, so concurrent providers of one key have
exactly one winner and it works while another process holds the run. The next
`flowdag.run` of the run id completes the node with the value.

Deadlines are fixed when a wait starts and checked lazily, by whoever looks:
`provide_input` refuses an expired wait's key; `flowdag.run` completes the
node with its default, or fails it with `InputTimeoutError`; `flowdag waits`
shows it expired.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable
from dataclasses import dataclass, field, replace
from datetime import datetime
from typing import TYPE_CHECKING, Any

from flowdag import _wait_entries
from flowdag._schemas import json_form, validate
from flowdag._wait_entries import (
    OPEN,
    PROVIDED,
    TABLE,
    WaitEntry,
    decode_entry,
    decode_index,
    encode_entry,
    encode_index,
    hash_key,
    index_key,
    new_key,
    run_prefix,
    wait_key,
)
from flowdag.errors import CorruptStateError, InputNotFoundError, InvalidArgumentTypeError
from flowdag.stores import opened as opened_store
from flowdag.stores.base import check_run_id

if TYPE_CHECKING:
    from flowdag.stores._tables import TableTxn
    from flowdag.stores.base import Store

__all__ = ["Wait", "list_waits", "provide_input", "reissue_key"]


@dataclass(frozen=True, slots=True)
class Wait:
    """An input node waiting for a value.

    ``key`` answers it (`provide_input`); it is shown once: set in the result of
    the run that started the wait and by `reissue_key`, None everywhere else, and
    never in ``repr``. ``schema`` is the JSON Schema the value must fit,
    ``prompt`` what the node's ``prompt`` function made for whoever answers.
    ``expires_at`` is the fixed deadline (None: none); after it the node takes
    its default if it ``has_default``, else fails. ``provided_at`` is set once a
    value was given and the run has not yet taken it.
    """

    run_id: str
    node: str
    key: str | None = field(repr=False)
    prompt: Any
    schema: dict[str, Any]
    started_at: datetime
    expires_at: datetime | None
    has_default: bool
    provided_at: datetime | None = None

    def expired(self, now: datetime | None = None) -> bool:
        """Whether the deadline has passed (at ``now``, default: now) with no value given."""
        if self.expires_at is None or self.provided_at is not None:
            return False
        return (now or _wait_entries.now()) >= self.expires_at

    @property
    def state(self) -> str:
        """``"waiting"``, ``"expired"`` (the next run settles it) or ``"provided"``."""
        if self.provided_at is not None:
            return "provided"
        return "expired" if self.expired() else "waiting"


def wait_of(entry: WaitEntry, key: str | None = None) -> Wait:
    """The public face of a stored wait (with ``key`` when it is being shown once)."""
    return Wait(
        entry.run_id,
        entry.node,
        key,
        entry.prompt,
        entry.schema,
        entry.started_at,
        entry.expires_at,
        bool(entry.default),
        entry.provided_at,
    )


def provide_input(store: Store | str, key: str, value: Any) -> Wait:
    """Give the input a wait asks for: check ``value`` against its schema, record it.

    The value is recorded durably, in one atomic change, and the key stops
    working; the next `flowdag.run` of the wait's run completes the node with
    it (also when another process holds the run now). Of concurrent calls with
    one key, exactly one succeeds.

    Args:
        store: the run's store, or its URL.
        key: the key the run showed when it suspended (or `reissue_key` gave).
        value: a JSON value (dicts, lists, text, numbers, booleans, None), or a
            dataclass or pydantic model instance, which is dumped to JSON.

    Returns:
        The wait it answered (without its key).

    Raises:
        InputNotFoundError: no open wait has this key: it is wrong, was used, was
            reissued, or its wait expired.
        InputValidationError: the value does not fit the wait's schema; its
            ``fields`` name each problem. The wait stays open for a corrected value.
        InvalidArgumentTypeError: ``key`` is not text, or ``value`` is not JSON.
    """
    if not isinstance(key, str):
        raise InvalidArgumentTypeError(f"key must be text, not {type(key).__name__}")
    hashed = hash_key(key)
    with opened_store(store) as opened:
        entry = _entry_for(opened.table_get, hashed, _wait_entries.now())
        where = f"input for node '{entry.node}' of run '{entry.run_id}'"
        answer = json_form(value, where)
        validate(entry.schema, answer, node=entry.node)

        def record(txn: TableTxn) -> WaitEntry:
            now = _wait_entries.now()
            current = _entry_for(txn.get, hashed, now)  # the winner of a race deleted the key
            answered = replace(current, state=PROVIDED, value=answer, provided_at=now)
            txn.put(TABLE, wait_key(current.run_id, current.node), encode_entry(answered))
            txn.delete(TABLE, index_key(hashed))
            return answered

        return wait_of(opened.transact_tables(record))


def list_waits(store: Store | str, run_id: str | None = None) -> list[Wait]:
    """The waits of the store (of run ``run_id``, if given), by run and node; no keys.

    Expired and answered waits are listed too until a run settles them: see
    `Wait.state`.
    """
    run_id = None if run_id is None else check_run_id(run_id)
    with opened_store(store) as opened:
        return [
            wait_of(decode_entry(raw, _where(key)))
            for key, raw in opened.table_scan(TABLE, run_prefix(run_id))
        ]


def reissue_key(store: Store | str, run_id: str, node: str) -> Wait:
    """A fresh key for the open wait of ``node`` in run ``run_id``; the old key stops working.

    For whoever holds the store and lost the key. Returns the wait with its new key.

    Raises:
        InputNotFoundError: that node of that run has no open, unexpired wait.
        InvalidRunIdError: ``run_id`` cannot be a run id.
    """

    run_id = check_run_id(run_id)

    def reissue(txn: TableTxn) -> tuple[WaitEntry, str]:
        where = wait_key(run_id, node)
        raw = txn.get(TABLE, where)
        entry = None if raw is None else decode_entry(raw, _where(where))
        now = _wait_entries.now()
        if entry is None or entry.state != OPEN or entry.expired(now):
            what = (
                "its wait expired"
                if entry is not None and entry.expired(now)
                else ("a value was given already" if entry is not None else "it is not waiting")
            )
            raise InputNotFoundError(
                f"run '{run_id}' has no open wait at node '{node}' ({what}); "
                "`flowdag waits` lists the open waits"
            )
        key = new_key()
        txn.delete(TABLE, index_key(entry.key_hash))
        fresh = replace(entry, key_hash=hash_key(key))
        txn.put(TABLE, index_key(fresh.key_hash), encode_index(run_id, node))
        txn.put(TABLE, where, encode_entry(fresh))
        return fresh, key

    with opened_store(store) as opened:
        entry, key = opened.transact_tables(reissue)
    return wait_of(entry, key)


# -- for the runner -------------------------------------------------------------------------


def read_wait(store: Store, run_id: str, node: str) -> WaitEntry | None:
    """The stored wait of ``node`` in run ``run_id``, or None."""
    where = wait_key(run_id, node)
    raw = store.table_get(TABLE, where)
    return None if raw is None else decode_entry(raw, _where(where))


def start_wait(store: Store, entry: WaitEntry) -> tuple[WaitEntry, str]:
    """Record the new wait ``entry`` under a new key; return it as stored, and the key."""
    key = new_key()
    entry = replace(entry, key_hash=hash_key(key))

    def record(txn: TableTxn) -> None:
        txn.put(TABLE, index_key(entry.key_hash), encode_index(entry.run_id, entry.node))
        txn.put(TABLE, wait_key(entry.run_id, entry.node), encode_entry(entry))

    store.transact_tables(record)
    return entry, key


def clearing(entry: WaitEntry) -> dict[tuple[str, str], bytes | None]:
    """The table writes that end ``entry``: they commit with the node's record."""
    return {
        (TABLE, wait_key(entry.run_id, entry.node)): None,
        (TABLE, index_key(entry.key_hash)): None,
    }


def ending_waits(
    store: Store, run_id: str, nodes: Iterable[str]
) -> dict[str, dict[tuple[str, str], bytes | None]]:
    """Node -> the table writes that end its wait, for those of ``nodes`` that have one.

    An operator override (`flowdag.mark_done`, `flowdag.invalidate`) commits them
    with the node's record: a node it settles or resets waits no more, and its
    key stops working at once.
    """
    wanted = set(nodes)
    prefix = run_prefix(run_id)
    return {
        node: clearing(decode_entry(raw, _where(key)))
        for key, raw in store.table_scan(TABLE, prefix)
        if (node := key[len(prefix) :]) in wanted
    }


def drop_waits(store: Store, run_id: str) -> int:
    """End every wait of run ``run_id`` (it was deleted); how many there were."""
    prefix = run_prefix(run_id)
    if not store.table_keys(TABLE, prefix):
        return 0  # the usual case: one read, no transaction

    def drop(txn: TableTxn) -> int:
        found = list(txn.scan(TABLE, prefix))
        for key, raw in found:
            txn.delete(TABLE, key)
            try:
                entry = decode_entry(raw, _where(key))
            except CorruptStateError:
                continue  # its key entry, if any, goes with gc's sweep
            txn.delete(TABLE, index_key(entry.key_hash))
        return len(found)

    return store.transact_tables(drop)


# -- helpers --------------------------------------------------------------------------------


def _entry_for(get: Callable[[str, str], bytes | None], hashed: str, now: datetime) -> WaitEntry:
    """The open, unexpired wait whose key hashes to ``hashed``, else `InputNotFoundError`.

    ``get`` reads a table entry: the store's committed one, or a transaction's.
    """
    where = index_key(hashed)
    raw = get(TABLE, where)
    entry = None
    if raw is not None:
        run_id, node = decode_index(raw, _where(where))
        stored = get(TABLE, wait_key(run_id, node))
        if stored is not None:
            entry = decode_entry(stored, _where(wait_key(run_id, node)))
    if entry is None or entry.key_hash != hashed or entry.state != OPEN:
        raise InputNotFoundError(
            "no open wait has this key: it is wrong, was used already or was reissued; "
            "`flowdag waits` lists the open waits and `flowdag waits --reissue RUN NODE` "
            "gives a new key"
        )
    if entry.expired(now):
        assert entry.expires_at is not None
        outcome = "takes its default" if entry.default else "fails"
        raise InputNotFoundError(
            f"the wait of node '{entry.node}' in run '{entry.run_id}' expired at "
            f"{entry.expires_at:%Y-%m-%d %H:%M:%S} UTC; the node {outcome} on the next run"
        )
    return entry


def _where(table_key: str) -> str:
    return "waits entry " + table_key.replace("\0", "/")
