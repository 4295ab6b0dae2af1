"""Map nodes at run time: expanding one into its items, and ending it with their results.

`MapHooks` is the part of the driver (`flowdag._driver`) for map nodes
(``Workflow.map``; names in `flowdag._maps`). A map node is ready twice:

1. when its deps are done, it is *expanded*: ``over``'s output (loaded if kept
   by reference) is listed, each item encoded once for its digest, and the
   expansion (the digest of every item, so their count) is committed as the
   map node's running record, its output while it runs. The commit goes
   before any item's record, in the committer's order, so a crash after an
   item completes always finds the expansion. Items whose stored record
   completed from the same item (same digest at the same index), the same
   other inputs and the same code are reused; the others are added to the
   schedule (`ReadySet.expand`) and run as nodes of their own, with the
   map's spec renamed; a map forced to run (``rerun_from=``) reuses none.
   Stored items past the end of the list are dropped.
2. when every item has completed or failed: it completes with the list of
   their results in item order (kept in its record too, by reference when it
   is above the map's inline limit: a downstream node, a resume or ``flowdag
   show`` reads it from there), or fails naming the
   failed items; then its downstream is skipped as for any failure. An item's
   failure does not stop the other items: a resume runs only the failed ones.

An item's recorded input from ``over`` is its item's digest, not the whole
list's (`Ledger.items`), so a resume over a changed list reruns only the items
that changed. It runs on the driver's thread, on the driver's state.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from dataclasses import dataclass, field, replace
from datetime import UTC, datetime
from typing import TYPE_CHECKING, Any

from flowdag._byref import by_reference
from flowdag._digests import output_digest
from flowdag._maps import item_name, items_of, map_of
from flowdag.attempt import Outcome, failure
from flowdag.dag import RUN_DEFAULT, _RunDefault
from flowdag.errors import NodeError
from flowdag.refs import Ref, start_collecting, stop_collecting
from flowdag.state import NodeRecord, NodeState, NodeStatus, Reason

if TYPE_CHECKING:
    from flowdag._cache import RunCache
    from flowdag._commit import Commits
    from flowdag._fingerprint import Fingerprint
    from flowdag._ledger import Ledger
    from flowdag.codec import ValueCodec
    from flowdag.dag import DAG, NodeSpec
    from flowdag.scheduler import Schedule
    from flowdag.stores._blobs import RefSource

__all__ = ["Expansion", "MapHooks", "stored_items"]


@dataclass(slots=True)
class Expansion:
    """One map node's items in this call of ``run()``."""

    items: list[Any]
    started_at: datetime
    failed: list[str] = field(default_factory=list)  # items that failed, in order


def stored_items(dag: DAG, states: dict[str, NodeState], completed: set[str]) -> dict[str, Any]:
    """Take the stored items of map nodes that may run out of ``states``: they come
    back as their map expands. Items of a reused map stay, up to its list's length."""
    taken: dict[str, NodeState] = {}
    for name in [n for n in states if n.endswith("]")]:
        item = map_of(name, dag.maps)
        if item is None:
            continue
        base, index = item
        if base in completed:
            output = states[base].output  # the list of results, or a Ref to it
            if not isinstance(output, list) or index < len(output):
                continue
            del states[name]  # a stale item of a reused map
            continue
        taken[name] = states.pop(name)
    return taken


class MapHooks:
    """The driver's handling of map nodes (a mixin; see the module docstring)."""

    # The driver's state these hooks work on (see `flowdag._driver._Driver`).
    run_id: str
    dag: DAG
    specs: Mapping[str, NodeSpec]
    codec: ValueCodec
    inline_limit: int | None  # the run's
    ref_source: RefSource
    ledger: Ledger
    schedule: Schedule
    commits: Commits
    expansions: dict[str, Expansion]
    stored: dict[str, NodeState]  # items of earlier calls, taken as their map expands
    cache: RunCache | None
    on_event: Callable[..., None] | None

    def skip_downstream(self, failed: str) -> list[NodeRecord]:
        raise NotImplementedError  # the driver's

    def on_map_ready(self, name: str) -> None:
        """Map node ``name`` is ready: expand it, or (its items all ended) end it."""
        self.schedule.gate.release(name)  # seated in its pool by take(); it runs nothing
        expansion = self.expansions.get(name)
        if expansion is None:
            self.expand(name)
        else:
            self.end_map(name, expansion)

    def item_ended(self, name: str) -> bool:
        """If ``name`` is an item of a map expanded in this call, count its failure
        against its map (which ends once all its items have) and return True."""
        item = map_of(name, self.expansions)
        if item is None:
            return False
        self.expansions[item[0]].failed.append(name)
        self.schedule.ready.done(name)  # its map decides: ready once every item ended
        return True

    def item_value(self, name: str) -> Any:
        item = map_of(name, self.expansions)
        assert item is not None
        return self.expansions[item[0]].items[item[1]]

    def expand(self, name: str) -> None:
        spec = self.specs[name]
        over = spec.map_over
        assert over is not None
        ledger, codec = self.ledger, self.codec
        now = datetime.now(UTC)
        try:
            value = ledger.outputs[over]
            if type(value) is Ref:  # a large list kept by reference: read here, once
                value = value.load()
            items = items_of(value, name, over)
            digests = []
            for index, item in enumerate(items):
                try:
                    encoded = codec.encode(item)
                except Exception as exc:
                    raise NodeError(
                        f"map node '{name}': item {index} of the output of '{over}' cannot "
                        f"be stored ({type(exc).__name__}: {exc})"
                    ) from exc
                digests.append(output_digest(codec, encoded, item))
        except Exception as exc:
            self.fail_map(name, failure(exc, now, retryable=False))
            return
        self.expansions[name] = Expansion(items, now)
        states = ledger.states
        fingerprint = ledger.fingerprints[name]
        if not isinstance(ledger.fingerprints, dict):
            ledger.fingerprints = dict(ledger.fingerprints)
        fingerprints = ledger.fingerprints
        others = {
            dep: digest
            for dep in spec.deps
            if dep != over and (digest := states[dep].output_digest) is not None
        }
        specs: dict[str, NodeSpec] = self.specs  # type: ignore[assignment]
        # A map forced to run (rerun_from=, an invalidate) runs every item again;
        # rerun="failed" forces only what did not complete.
        why = ledger.reasons[name]
        forced = why.code == "forced" and not why.detail.startswith("rerun='failed'")
        pending = []
        for index, digest in enumerate(digests):
            item = item_name(name, index)
            stored = self.stored.pop(item, None)
            if (
                stored is not None
                and not forced
                and _holds(stored, {**others, over: digest}, fingerprint)
            ):
                states[item] = stored
                ledger.outputs[item] = stored.output
                ledger.reasons[item] = Reason("reused", f"item {index} of map '{name}' holds")
                ledger.done += 1
                continue
            states[item] = stored or NodeState(deps=spec.deps)
            ledger.reasons[item] = _reason(name, index, stored)
            ledger.items[item] = (over, digest)
            fingerprints[item] = fingerprint
            specs[item] = replace(spec, name=item)
            self.schedule.gate.add(item, spec.pool)
            pending.append(item)
        stale = [item for item in self.stored if map_of(item, (name,)) is not None]
        for item in stale:  # past the end of a list that got shorter
            del self.stored[item]
        # The expansion is durable before any item's record (see the module docstring).
        self.commits.add(
            [
                NodeRecord(
                    name,
                    NodeStatus.RUNNING,
                    states[name].attempts,
                    now,
                    output=codec.encode(digests),
                    provenance=ledger.provenance(name, spec.deps, None),
                )
            ]
        )
        if self.cache is not None and spec.cache is not None:
            self.cache.add_items(name, pending)  # each looked up on its own item
        self.schedule.ready.expand(name, pending)

    def end_map(self, name: str, expansion: Expansion) -> None:
        if expansion.failed:
            shown = ", ".join(expansion.failed[:3]) + (", ..." if len(expansion.failed) > 3 else "")
            error = NodeError(
                f"map node '{name}': {len(expansion.failed)} of {len(expansion.items)} items "
                f"failed ({shown}); see each with "
                f"`flowdag show {self.run_id} '{expansion.failed[0]}'`; "
                "a resume runs only the items not completed"
            )
            self.fail_map(name, failure(error, expansion.started_at, retryable=False))
            return
        ledger = self.ledger
        outputs = ledger.outputs
        value = [outputs[item_name(name, index)] for index in range(len(expansion.items))]
        token, blobs = start_collecting()  # the refs inside, for gc
        try:
            output = self.codec.encode(value)
            digest = output_digest(self.codec, output, value)
            output, value = self.kept(name, output, value, blobs)
        except Exception as exc:  # the blob area failed
            self.fail_map(name, failure(exc, expansion.started_at, retryable=False))
            return
        finally:
            stop_collecting(token)
        now = datetime.now(UTC)
        stored = ledger.states[name]
        self.commits.outcomes[name] = Outcome(expansion.started_at, now, value)
        self.commits.add(
            [
                NodeRecord(
                    name,
                    NodeStatus.COMPLETED,
                    stored.attempts,
                    expansion.started_at,
                    now,
                    output=output,
                    history=stored.history,
                    blobs=blobs or None,
                    provenance=ledger.provenance(name, self.specs[name].deps, digest),
                )
            ]
        )

    def kept(
        self, name: str, output: bytes, value: list[Any], blobs: dict[str, datetime | None]
    ) -> tuple[bytes, Any]:
        """The list of results as stored: by reference when it is above the map's
        inline limit, as an output is (then ``blobs`` gets its blob)."""
        spec = self.specs[name]
        limit = self.inline_limit if spec.inline_limit is RUN_DEFAULT else spec.inline_limit
        assert not isinstance(limit, _RunDefault)
        if limit is None or self.codec.plain_size(output) <= limit:
            return output, value
        # extract= and preview= are the items' (each item's output), not the list's.
        bare = replace(spec, extract=None, preview=None)
        ref = by_reference(
            bare, value, output, self.ref_source, f"run '{self.run_id}', node '{name}'"
        )
        blobs[ref.sha256] = ref.expires_at
        return self.codec.encode(ref), ref

    def fail_map(self, name: str, outcome: Outcome) -> None:
        ledger = self.ledger
        stored = ledger.states[name]
        record = NodeRecord(
            name,
            NodeStatus.FAILED,
            stored.attempts,
            outcome.started_at,
            outcome.finished_at,
            outcome.error,
            history=stored.history,
            provenance=ledger.provenance(name, self.specs[name].deps, None),
        )
        self.commits.add([record, *self.skip_downstream(name)])


def _holds(stored: NodeState, inputs: Mapping[str, str], fingerprint: Fingerprint) -> bool:
    """Whether a stored item completed from these inputs with this code."""
    provenance = stored.provenance
    return (
        stored.status is NodeStatus.COMPLETED
        and provenance is not None
        and provenance.fingerprint == fingerprint.digest
        and dict(provenance.inputs) == dict(inputs)
    )


def _reason(name: str, index: int, stored: NodeState | None) -> Reason:
    where = f"item {index} of map '{name}'"
    if stored is None:
        return Reason("new", f"{where}, first run")
    if stored.status is NodeStatus.RUNNING:
        return Reason("interrupted", f"{where} was in flight when the run stopped")
    if stored.status is NodeStatus.COMPLETED:
        return Reason("input_changed", f"{where}: its item, inputs or code changed")
    return Reason("new", f"{where} did not complete before ({stored.status})")
