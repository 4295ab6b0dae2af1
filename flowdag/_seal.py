"""Seals: a completed run's plan, kept with it, so that running it again reads no node.

Design
------
Running a completed run again with the same code is the commonest call of a
batch job that is re-invoked (a cron, a retry of a whole script); the plan
`flowdag.resume.plan_call` makes of it reuses every node ("its code and inputs
are unchanged"), and costs a load of every node and a fingerprint comparison
each: seconds at a million nodes, for a call that runs nothing.

So when `flowdag.run` ends with every node completed, and a plan of the run
as stored now, with the code that just ran, reuses every node unchanged
(`sealable`), it gives the store a *seal*: the digest of the DAG's shape and
code fingerprints and the run's ttl (`run_digest`), and when the run expires.
The store keeps it with the run until the run's next write of any kind drops
it (LMDB: in the run's marker, which every write rewrites; the journal stores:
in a file beside the run's files, good while they are the same; memory: beside
the run).

A later call (`reuse_sealed`) with a seal whose digest is the DAG's now, and
nothing that changes the plan (``rerun``, ``rerun_from``, ``refresh``, another
ttl), returns the plan the seal stands for without reading a node: the run as
stored is the run as sealed, and `flowdag._decide.decide` is a function of it,
the DAG and the fingerprints. Maps and input nodes are never sealed (their
items and waits are decided as the run goes). The result's nodes and data are
read from the store when first read (`SealedRun`; a disk store closed
meanwhile is opened anew), and refused with `RunChangedError` if the run
changed in the store meanwhile.
"""

from __future__ import annotations

import hashlib
import threading
from collections.abc import Iterator, Mapping
from datetime import UTC, datetime, timedelta
from typing import TYPE_CHECKING, Any, TypeVar

import msgpack

from flowdag._decide import UNCHANGED, decide
from flowdag._ledger import FORGOTTEN
from flowdag.errors import FlowdagError, RunChangedError, RunNotFoundError
from flowdag.state import NodeState, NodeStatus, Reason, RunState, RunStatus

if TYPE_CHECKING:
    from flowdag._fingerprint import Fingerprint
    from flowdag.dag import DAG
    from flowdag.runner import RunResult
    from flowdag.stores.base import Store

__all__ = [
    "SealedNodes",
    "SealedRun",
    "reuse_sealed",
    "run_digest",
    "seal_completed",
    "sealable",
    "sealed_result",
]

_VERSION = 1  # of the seal's fields and of `run_digest`
_V = TypeVar("_V")


def run_digest(dag: DAG, fingerprints: Mapping[str, Fingerprint], ttl: timedelta | None) -> bytes:
    """The digest of what a plan of a completed run depends on besides the run:
    the workflow's name, each node's name, deps and code fingerprint (its
    `Fingerprint.identity`: no node's digest is made), and the ttl."""
    pack = msgpack.Packer(use_bin_type=True).pack
    ttl_micros = None if ttl is None else ttl // timedelta(microseconds=1)
    digest = hashlib.sha256(pack((_VERSION, dag.name, ttl_micros)))
    update = digest.update
    for name, spec in dag.specs.items():  # as they were added: the same for the same code
        fingerprint = fingerprints[name]
        try:
            update(pack((name, spec.deps, fingerprint.identity())))
        except OverflowError:  # a captured int past 64 bits: the digest, always for it
            update(pack((name, spec.deps, fingerprint.digest)))
    return digest.digest()


def _planned_alone(dag: DAG) -> bool:
    """Whether a plan of ``dag`` is all a call decides: no map (its items are added
    as the run goes) and no input node (its wait is decided as the run goes)."""
    return not dag.maps and not dag.inputs


def sealable(dag: DAG, state: RunState, fingerprints: Mapping[str, Fingerprint]) -> bool:
    """Whether a run that ended as ``state`` may be sealed: a plan of it with
    ``fingerprints`` reuses every node unchanged, and no node is a map or an input."""
    nodes = state.nodes
    if not _planned_alone(dag) or len(nodes) != len(dag):
        return False
    # A node the ledger forgot completed in this call, from these fingerprints, and
    # no node reads it: unchanged, and no verdict is kept for it (a million leaves).
    kept = [name for name in dag.nodes if nodes[name] is not FORGOTTEN]
    verdicts = decide(dag, state, fingerprints, names=kept)
    return all(verdict is UNCHANGED for verdict in verdicts.values())


def seal_completed(
    store: Store,
    dag: DAG,
    state: RunState,
    fingerprints: Mapping[str, Fingerprint],
) -> bytes | None:
    """Seal a run that just completed, if `sealable`: the token the store keeps it
    with (`Store._sealed`), or None if it was not sealed. Its lock is held."""
    if not sealable(dag, state, fingerprints):
        return None
    expires = state.expires_at
    seal = msgpack.packb(
        {
            "v": _VERSION,
            "digest": run_digest(dag, fingerprints, state.ttl),
            "expires": None if expires is None else expires.timestamp(),
        },
        use_bin_type=True,
    )
    store._put_seal(state.run_id, seal)
    found = store._sealed(state.run_id)
    return found[0] if found is not None and found[1] == seal else None


def reuse_sealed(
    store: Store,
    dag: DAG,
    run_id: str,
    fingerprints: Mapping[str, Fingerprint],
    ttl: timedelta | None,
) -> RunResult | None:
    """The result of running sealed run ``run_id`` again, if its seal holds for
    ``dag``, its ``fingerprints`` and ``ttl``; else None (plan as usual). Its lock is held."""
    if not _planned_alone(dag):
        return None
    try:
        sealed = store._sealed(run_id)
    except RunNotFoundError:
        return None
    if sealed is None:
        return None
    token, seal = sealed
    try:
        fields = msgpack.unpackb(seal, raw=False)
        version, digest, expires = fields["v"], fields["digest"], fields["expires"]
    except (ValueError, TypeError, KeyError, msgpack.UnpackException):
        return None  # a seal this release cannot read: plan as usual
    if version != _VERSION or digest != run_digest(dag, fingerprints, ttl):
        return None
    if expires is not None and datetime.now(UTC).timestamp() >= expires:
        return None  # expired: gone for every reader, and a new run starts
    return sealed_result(store, dag, run_id, token, dict.fromkeys(dag.nodes, UNCHANGED.reason))


def sealed_result(
    store: Store,
    dag: DAG,
    run_id: str,
    token: bytes,
    reasons: dict[str, Reason],
    data: Mapping[str, Any] | None = None,
) -> RunResult:
    """The result of sealed run ``run_id`` (sealed as ``token``): its nodes, and its
    ``data`` unless given, read from the store when first read."""
    from flowdag.runner import RunResult  # flowdag.runner imports this module

    run = SealedRun(store, run_id, token, dag.specs)
    nodes = SealedNodes(run, "nodes")  # holds the run, as its data does
    read = _Read[Any](run, "data") if data is None else data
    return RunResult(run_id, dag.name, RunStatus.COMPLETED, nodes, read, reasons)


class SealedRun:
    """A sealed run's nodes and data, read from the store together when first read.

    The store reads it first, before it writes the run (`UnreadRuns`), so the
    result stays the run as it was returned; a disk store closed meanwhile is
    opened anew to read it (a store in memory reads it as it closes).
    """

    __slots__ = (
        "__weakref__",
        "_error",
        "_guard",
        "_names",
        "_state",
        "_store",
        "_token",
        "run_id",
    )

    def __init__(
        self, store: Store, run_id: str, token: bytes, names: Mapping[str, object]
    ) -> None:
        self._store, self.run_id, self._token = store, run_id, token
        self._names = names  # the DAG's specs: the sealed run's nodes, by name
        self._state: RunState | None = None
        self._error: FlowdagError | None = None
        self._guard = threading.Lock()  # the store's committer thread may read it too
        store._unread.add(self)  # weakly: held by its nodes and data only (no cycle)

    def state(self) -> RunState:
        """The run as stored (read once).

        Raises:
            RunChangedError: the run changed in the store since the call that returned it.
        """
        with self._guard:
            if self._state is None and self._error is None:
                try:
                    self._state = self._read()
                except FlowdagError as exc:
                    self._error = exc
                self._store._unread.discard(self)
            if self._error is not None:
                raise self._error
            assert self._state is not None
            return self._state

    def _read(self) -> RunState:
        store, run_id = self._store, self.run_id
        reopened = store._reopened() if store._closed else None  # closed since: as it was
        try:
            state = (reopened or store).load(run_id)
            now = (reopened or store)._sealed(run_id)  # the load saw the sealed run iff so
        except RunNotFoundError:
            now = None
        finally:
            if reopened is not None:
                reopened.close()
        if now is None or now[0] != self._token:
            raise RunChangedError(
                f"run '{run_id}' changed in {store.describe(run_id)} (written by another "
                "process or store) after the call of run() that returned this result, "
                "before its nodes were read (a completed run run again reads them when "
                "first read); call flowdag.run() or store.load() again for the run as it is now"
            )
        return state


class _Read(Mapping[str, _V]):
    """``nodes`` or ``data`` of a `SealedRun`: names known, values read when first read."""

    __slots__ = ("_part", "_run")

    def __init__(self, run: SealedRun, part: str) -> None:
        self._run, self._part = run, part

    def _read(self) -> dict[str, _V]:
        found: dict[str, _V] = getattr(self._run.state(), self._part)
        return found

    def __getitem__(self, name: str) -> _V:
        return self._read()[name]

    def __iter__(self) -> Iterator[str]:
        return iter(self._read())

    def __len__(self) -> int:
        return len(self._read())

    def __contains__(self, name: object) -> bool:
        return name in self._read()

    def __repr__(self) -> str:
        return repr(self._read())

    def __reduce__(self) -> tuple[type[dict[str, _V]], tuple[dict[str, _V]]]:
        return dict, (dict(self._read()),)  # pickled and copied as what it reads


class SealedNodes(_Read[NodeState]):
    """A sealed run's nodes (`RunResult.nodes` of a call that reused a seal)."""

    __slots__ = ()

    # The names are the DAG's: known without reading the run.
    def __len__(self) -> int:
        return len(self._run._names)

    def __contains__(self, name: object) -> bool:
        return name in self._run._names

    def statuses(self) -> dict[str, NodeStatus]:
        """Node -> its status, without reading the run: every node completed."""
        return dict.fromkeys(self._run._names, NodeStatus.COMPLETED)
