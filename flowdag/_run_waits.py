"""The input nodes of one call of `run()`: their waits started, read and settled.

The driver asks `RunWaits.ready` when an input node's deps are done. The
node's wait (`flowdag.waits`) decides what happens:

- none yet: the prompt is made from the deps' outputs and a wait is recorded
  with a new key and a deadline fixed now; the node is *waiting*;
- open, before its deadline: still waiting (its key was shown when it started);
- answered (`flowdag.provide_input`): the node completes with the value;
- past its deadline: the node completes with its default, or fails with
  `InputTimeoutError`.

A settled node's record carries the deletes of its wait (`clearing`), so the
wait ends in the same commit as the node: a crash leaves the wait open and
the node pending, or both done. When nothing else can run, the driver
asks `recheck`: a wait answered or expired meanwhile is settled before the run
returns ``SUSPENDED``.
"""

from __future__ import annotations

import logging
from collections.abc import Mapping
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from typing import Any

from flowdag._schemas import json_form
from flowdag._wait_entries import (
    PROVIDED,
    TABLE,
    WaitEntry,
    decode_entry,
    hash_key,
    run_prefix,
)
from flowdag.dag import DAG, InputOptions
from flowdag.errors import InputTimeoutError
from flowdag.refs import Ref
from flowdag.state import Reason
from flowdag.stores._tables import TableTxn
from flowdag.stores.base import Store
from flowdag.waits import Wait, clearing, read_wait, start_wait, wait_of

__all__ = ["RunWaits", "Settled"]

logger = logging.getLogger("flowdag")


@dataclass(frozen=True, slots=True)
class Settled:
    """How a wait ended: the value the node takes and why, or the error it fails with."""

    started_at: datetime
    value: Any = None
    reason: Reason | None = None
    error: Exception | None = None


class RunWaits:
    """The waits of one run's input nodes (see the module docstring)."""

    __slots__ = ("dag", "ending", "inputs", "keys", "open", "run_id", "store")

    def __init__(self, dag: DAG, store: Store, run_id: str, completed: frozenset[str]) -> None:
        self.dag = dag
        self.store = store
        self.run_id = run_id
        self.inputs: dict[str, InputOptions] = {
            name: spec.input for name, spec in dag.specs.items() if spec.input is not None
        }
        self.open: dict[str, Wait] = {}  # waiting nodes: what `RunResult.waits` shows
        self.ending: dict[str, WaitEntry] = {}  # settling nodes: the wait their record ends
        self.keys: dict[str, str] = {}  # the keys of the waits this call started, shown once
        self._drop_stale(completed)

    def ready(self, name: str, outputs: Mapping[str, Any]) -> Settled | None:
        """Input node ``name``'s deps are done: None if it waits, else how it settled.

        Raises what its prompt function raised, or a store error: it fails the node.
        """
        options = self.inputs[name]
        entry = read_wait(self.store, self.run_id, name)
        now = datetime.now(UTC)
        if entry is None:
            prompt = json_form(self._prompt(name, outputs), f"input node '{name}': prompt")
            deadline = None if options.timeout is None else now + timedelta(seconds=options.timeout)
            entry, key = start_wait(
                self.store,
                WaitEntry(
                    self.run_id,
                    name,
                    "",
                    options.schema,
                    options.schema_digest,
                    prompt,
                    now,
                    deadline,
                    options.default,
                ),
            )
            self.keys[name] = key
            self.open[name] = wait_of(entry, key)
            return None
        if entry.schema_digest != options.schema_digest:
            logger.warning(
                "run %s: input node '%s' has a new schema since its wait started at %s; "
                "the wait's stored schema applies to its value",
                self.run_id,
                name,
                f"{entry.started_at:%Y-%m-%d %H:%M:%S} UTC",
            )
        if entry.state == PROVIDED:
            assert entry.provided_at is not None
            self.ending[name] = entry
            reason = Reason("new", f"input given at {entry.provided_at:%Y-%m-%d %H:%M:%S} UTC")
            return Settled(entry.started_at, entry.value, reason)
        if entry.expired(now):
            assert entry.expires_at is not None
            self.ending[name] = entry
            due = f"{entry.expires_at:%Y-%m-%d %H:%M:%S} UTC"
            if entry.default:
                reason = Reason("timed_out_default", f"no input by its deadline {due}")
                return Settled(entry.started_at, entry.default[0], reason)
            return Settled(
                entry.started_at,
                error=InputTimeoutError(
                    f"input node '{name}' got no input by its deadline {due} and has no "
                    "default; run the run again to start a new wait, or give the node a default="
                ),
            )
        # A key is shown by the call that started the wait (unless reissued since).
        shown = self.keys.get(name)
        if shown is not None and hash_key(shown) != entry.key_hash:
            shown = None
        self.open[name] = wait_of(entry, shown)
        return None

    def recheck(self) -> list[str]:
        """The waiting nodes, now no longer counted as waiting: ask `ready` of each again."""
        names = list(self.open)
        self.open.clear()
        return names

    def clearing(self, name: str) -> dict[tuple[str, str], bytes | None] | None:
        """The table writes that end settling ``name``'s wait, for its record; None if none."""
        entry = self.ending.pop(name, None)
        return None if entry is None else clearing(entry)

    def _prompt(self, name: str, outputs: Mapping[str, Any]) -> Any:
        spec = self.dag.specs[name]
        kwargs = {dep: outputs[dep] for dep in spec.kwarg_deps}
        for dep, value in kwargs.items():
            if type(value) is Ref and dep not in spec.ref_deps:
                kwargs[dep] = value.load()
        return spec.fn(**kwargs)

    def _drop_stale(self, completed: frozenset[str]) -> None:
        """End the waits of this run that no node of it waits on (completed, or gone)."""
        prefix = run_prefix(self.run_id)
        stale = [
            key
            for key in self.store.table_keys(TABLE, prefix)
            if (node := key[len(prefix) :]) in completed or node not in self.inputs
        ]
        if not stale:
            return

        def drop(txn: TableTxn) -> None:
            for key in stale:
                raw = txn.get(TABLE, key)
                if raw is not None:
                    for table, gone in clearing(decode_entry(raw, f"waits entry {key!r}")):
                        txn.delete(table, gone)

        self.store.transact_tables(drop)
