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
changed in the store meanwhile. The call that completes a run on a store on
disk returns such a result too, when its ledger let go of the states of nodes
no other node reads (`flowdag._ledger`); LMDB reads one node of it alone.
"""

from __future__ import annotations

import hashlib
import threading
from collections.abc import ItemsView, Iterable, Iterator, Mapping, MutableMapping, ValuesView
from datetime import UTC, datetime, timedelta
from typing import TYPE_CHECKING, Any, TypeVar

import msgpack

from flowdag._decide import UNCHANGED, decide
from flowdag._ledger import FORGOTTEN
from flowdag.errors import FlowdagError, RunChangedError, RunNotFoundError
from flowdag.state import NodeState, NodeStatus, Reason, RunState, RunStatus

if TYPE_CHECKING:
    from flowdag._fingerprint import Fingerprint
    from flowdag.dag import DAG, NodeSpec
    from flowdag.runner import RunResult
    from flowdag.stores.base import Store

__all__ = [
    "SealedNodes",
    "SealedOutputs",
    "SealedRun",
    "reuse_sealed",
    "run_digest",
    "seal_completed",
    "sealable",
    "sealed_result",
]

_VERSION = 1  # of the seal's fields and of `run_digest`
#: Nodes of a sealed run read alone, one by one (`SealedRun.node`); the next read
#: reads the whole run, which costs less than reading most of it node by node.
READ_ALONE = 256
_V = TypeVar("_V")


def run_digest(dag: DAG, fingerprints: Iterable[Fingerprint], ttl: timedelta | None) -> bytes:
    """The digest of what a plan of a completed run depends on besides the run:
    the workflow's name, each node's name, deps and code fingerprint (its
    `Fingerprint.identity`: no node's digest is made; ``fingerprints`` in the
    order of ``dag.specs``), and the ttl."""
    pack = msgpack.Packer(use_bin_type=True).pack
    ttl_micros = None if ttl is None else ttl // timedelta(microseconds=1)
    digest = hashlib.sha256(pack((_VERSION, dag.name, ttl_micros)))
    update = digest.update
    # As the nodes were added: the same for the same code.
    for (name, spec), fingerprint in zip(dag.specs.items(), fingerprints, strict=True):
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
) -> tuple[bytes, float | None] | None:
    """Seal a run that just completed, if `sealable`: the token the store keeps it
    with (`Store._sealed`) and when it expires, or None if it was not sealed. Its
    lock is held."""
    if not sealable(dag, state, fingerprints):
        return None
    expires_at = state.expires_at
    expires = None if expires_at is None else expires_at.timestamp()
    seal = msgpack.packb(
        {
            "v": _VERSION,
            "digest": run_digest(dag, map(fingerprints.__getitem__, dag.specs), state.ttl),
            "expires": expires,
        },
        use_bin_type=True,
    )
    token = store._put_seal(state.run_id, seal)
    return None if token is None else (token, expires)


def reuse_sealed(
    store: Store,
    dag: DAG,
    run_id: str,
    fingerprints: Iterable[Fingerprint],
    ttl: timedelta | None,
) -> RunResult | None:
    """The result of running sealed run ``run_id`` again, if its seal holds for
    ``dag``, its ``fingerprints`` (in the order of ``dag.specs``, taken only if the
    run has a seal) and ``ttl``; else None (plan as usual). Its lock is held."""
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
    reasons = dict.fromkeys(dag.nodes, UNCHANGED.reason)
    return sealed_result(store, dag, run_id, (token, expires), reasons)


def sealed_result(
    store: Store,
    dag: DAG,
    run_id: str,
    sealed: tuple[bytes, float | None],
    reasons: dict[str, Reason],
    data: Mapping[str, Any] | None = None,
) -> RunResult:
    """The result of sealed run ``run_id`` (``sealed``: its seal's token and expiry,
    as `seal_completed` gives them): its nodes, and its ``data`` unless given, read
    from the store when first read."""
    from flowdag.runner import RunResult  # flowdag.runner imports this module

    run = SealedRun(store, run_id, sealed, dag.specs)
    nodes = SealedNodes(run, "nodes")  # holds the run, as its data does
    read = _Read[Any](run, "data") if data is None else data
    return RunResult(run_id, dag.name, RunStatus.COMPLETED, nodes, read, reasons)


class SealedRun:
    """A sealed run's nodes and data, read from the store together when first read.

    The store reads it first, before it writes the run (`UnreadRuns`), so the
    result stays the run as it was returned; a disk store closed meanwhile is
    opened anew to read it (a store in memory reads it as it closes). A store
    that can read one node of it alone (`Store._sealed_node`: LMDB) does so for a
    read of one node or output (`node`), up to `READ_ALONE` of them: a sink's
    output read after a run of a million nodes costs one entry, not the run.
    """

    __slots__ = (
        "__weakref__",
        "_alone",
        "_error",
        "_expires",
        "_guard",
        "_names",
        "_state",
        "_store",
        "_token",
        "run_id",
    )

    def __init__(
        self,
        store: Store,
        run_id: str,
        sealed: tuple[bytes, float | None],
        names: Mapping[str, NodeSpec],
    ) -> None:
        self._store, self.run_id = store, run_id
        self._token, self._expires = sealed  # the marker it was sealed with, and when it expires
        self._names = names  # the DAG's specs: the sealed run's nodes, by name
        self._alone = 0  # nodes read alone so far
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

    def node(self, name: str) -> NodeState:
        """Node ``name`` as stored: read alone if the store can and nothing of the
        run was read yet, else from the whole run (`state`).

        Raises:
            KeyError: no such node.
            RunChangedError: the run changed in the store since the call that returned it.
        """
        spec = self._names[name]
        expires = self._expires
        if (
            self._alone < READ_ALONE
            and self._state is None
            and self._error is None
            and not self._store._closed
            and (expires is None or datetime.now(UTC).timestamp() < expires)
        ):
            self._alone += 1
            try:
                found = self._store._sealed_node(self.run_id, name, self._token, spec.deps)
            except RunNotFoundError:
                found = None
            if found is not None:
                return found
        return self.state().nodes[name]  # changed, gone or expired: it raises

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
    """A sealed run's nodes (`RunResult.nodes` of a call that sealed a run or reused
    a seal). A node read by its name may be read alone (`SealedRun.node`); going
    over them reads the whole run."""

    __slots__ = ()

    def __getitem__(self, name: str) -> NodeState:
        return self._run.node(name)

    def items(self) -> ItemsView[str, NodeState]:
        return self._read().items()

    def values(self) -> ValuesView[NodeState]:
        return self._read().values()

    # The names are the DAG's: known without reading the run.
    def __iter__(self) -> Iterator[str]:
        return iter(self._run._names)

    def __len__(self) -> int:
        return len(self._run._names)

    def __contains__(self, name: object) -> bool:
        return name in self._run._names

    def statuses(self) -> dict[str, NodeStatus]:
        """Node -> its status, without reading the run: every node completed."""
        return dict.fromkeys(self._run._names, NodeStatus.COMPLETED)


class SealedOutputs(MutableMapping[str, Any]):
    """A sealed run's outputs, for `flowdag.refs.LoadedOnRead`: each read with its
    node when first read (`SealedRun.node`) and kept; going over them reads the
    whole run. Every node of a sealed run completed: each has an output."""

    __slots__ = ("_kept", "_nodes")

    def __init__(self, nodes: SealedNodes) -> None:
        self._nodes = nodes
        self._kept: dict[str, Any] = {}

    def __getitem__(self, name: str) -> Any:
        kept = self._kept
        if name not in kept:
            kept[name] = self._nodes[name].output
        return kept[name]

    def __setitem__(self, name: str, value: Any) -> None:  # a Ref's value, once loaded
        self._kept[name] = value

    def __delitem__(self, name: str) -> None:
        raise TypeError("a run's outputs cannot be deleted")

    def __iter__(self) -> Iterator[str]:
        return iter(self._nodes)

    def __len__(self) -> int:
        return len(self._nodes)

    def __contains__(self, name: object) -> bool:
        return name in self._nodes

    def items(self) -> ItemsView[str, Any]:
        kept = self._kept
        return {n: kept.get(n, s.output) for n, s in self._nodes.items()}.items()
