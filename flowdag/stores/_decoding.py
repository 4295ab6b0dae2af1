"""A run's entries turned into a `RunState` as a store reads them, one entry at a time.

`Store.load` hands a `RunDecoder` to the backend hook ``_load_into``, which
feeds it the run's header, then each node's meta blob and output blob, then
each ``ctx.data`` value, in any order within each kind. Each blob is decoded
and checked (`flowdag.stores._records`) as it arrives and can be freed at
once: a backend that reads entry by entry (LMDB) never holds every blob of a
run beside every decoded node, which at a million nodes is most of the memory
a load takes. The default hook reads the whole stored run and feeds it.

Nodes come out in the header's order; a node without an entry is pending. A
record the header does not list is kept only as an item of a map node
(`flowdag._maps`); an output without its node's record is damage. Feeding
starts over at each header (a backend that retries a read feeds it again).
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from typing import TYPE_CHECKING, Any

from flowdag._gcpause import cyclic_gc_paused
from flowdag._maps import map_items
from flowdag.errors import CorruptStateError
from flowdag.refs import binding, start_binding, stop_binding
from flowdag.state import _SET_FINGERPRINT, _SET_PARTS, NodeState, RunState
from flowdag.stores._record_reads import node_state, run_header

if TYPE_CHECKING:
    from types import TracebackType

    from flowdag.stores._blobs import RefSource
    from flowdag.stores._stored import StoredNode

__all__ = ["RunDecoder"]

#: What a decoding error is turned into: the run, named as damaged by its store.
_DAMAGE = (CorruptStateError, KeyError, TypeError, ValueError)


class RunDecoder:
    """Decodes one run's entries as they are fed (see the module docstring).

    Use as a context manager around the feeding: Refs decoded meanwhile read
    through ``refs`` and name their node, and the cyclic GC is paused (many
    small acyclic objects). ``damaged(why)`` makes the error a decoding error
    becomes.
    """

    __slots__ = (
        "_decode",
        "_deps",
        "_gc",
        "_items",
        "_name",
        "_nodes",
        "_outputs",
        "_refs",
        "_run_id",
        "_state",
        "_token",
        "damaged",
        "known",
    )

    def __init__(
        self,
        run_id: str,
        decode: Callable[[bytes], Any],
        refs: RefSource,
        damaged: Callable[[object], CorruptStateError],
    ) -> None:
        self._run_id = run_id
        self._decode = decode
        self._refs = refs
        self.damaged = damaged
        self._name = ""  # the node being decoded, for the origin of its refs
        self._state: RunState | None = None
        self._deps: dict[str, tuple[str, ...]] = {}
        self._nodes: dict[str, NodeState | None] = {}
        self._items: dict[str, Any] = {}  # records the header does not list: decoded metas
        self._outputs: dict[str, Any] = {}  # their outputs
        self._token: Any = None
        self._gc: Any = None
        #: Node -> the `flowdag._fingerprint.Fingerprint` of the code about to run, if
        #: known: a stored provenance of that very code then holds its digest and
        #: parts, one string and a view instead of a decoded copy per node.
        self.known: Mapping[str, Any] | None = None

    def __enter__(self) -> RunDecoder:
        run_id = self._run_id
        self._gc = cyclic_gc_paused()
        self._gc.__enter__()
        # Bound once per run (the origin is made only for a Ref), not per node.
        self._token = start_binding(self._refs, lambda: f"run '{run_id}', node '{self._name}'")
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        stop_binding(self._token)
        self._gc.__exit__(exc_type, exc, tb)

    def header(self, blob: bytes) -> None:
        """The run's header: every node and its deps. Feeding starts over here."""
        try:
            workflow, metadata, deps, ttl = run_header(self._decode(blob))
        except _DAMAGE as exc:
            raise self.damaged(exc) from exc
        self._state = RunState(self._run_id, workflow, metadata=metadata, ttl=ttl)
        self._deps = deps
        self._nodes = dict.fromkeys(deps)  # the header's order; None: no record yet
        self._items = {}
        self._outputs = {}

    def node(self, name: str, meta: bytes) -> None:
        """A node's meta record (status, attempts, times, error, history, provenance)."""
        self._name = name
        try:
            decoded = self._decode(meta)
            deps = self._deps.get(name)
            if deps is None:  # not in the header: a map's item, placed in `finish`
                self._items[name] = decoded
            else:
                node = self._nodes[name] = node_state(decoded, None, deps)
                known = self.known
                provenance = node.provenance
                if known is not None and provenance is not None:
                    fingerprint = known.get(name)
                    if fingerprint is not None and provenance.fingerprint == fingerprint.digest:
                        # Equal digests, equal parts (the digest is made from them):
                        # set through the slots (as new_provenance does) on the
                        # node's own provenance, just decoded.
                        _SET_FINGERPRINT(provenance, fingerprint.digest)
                        _SET_PARTS(provenance, fingerprint.parts_view())
        except _DAMAGE as exc:
            raise self.damaged(exc) from exc

    def output(self, name: str, blob: bytes) -> None:
        """A node's output blob; its meta record must have come first."""
        self._name = name
        node = self._nodes.get(name)
        if node is None and name not in self._items:
            raise self.damaged(f"output of node {name!r} has no node entry")
        try:
            value = self._decode(blob)
        except _DAMAGE as exc:
            raise self.damaged(exc) from exc
        if node is None:
            self._outputs[name] = value
        else:
            node.output = value

    def alone(
        self, name: str, deps: tuple[str, ...], meta: bytes, output: bytes | None
    ) -> NodeState:
        """One node of a run whose deps are known without its header (a sealed run's:
        the DAG's), decoded from its meta record and output blob."""
        self._name = name
        try:
            node = node_state(self._decode(meta), None, deps)
            if output is not None:
                node.output = self._decode(output)
        except _DAMAGE as exc:
            raise self.damaged(exc) from exc
        return node

    def data(self, values: Mapping[str, bytes]) -> None:
        """The run's ``ctx.data``: key -> value blob."""
        if not values:
            return
        assert self._state is not None
        try:
            with binding(self._refs, f"run '{self._run_id}', ctx.data"):
                self._state.data = {key: self._decode(blob) for key, blob in values.items()}
        except _DAMAGE as exc:
            raise self.damaged(exc) from exc

    def finish(self) -> RunState:
        """The run: its nodes in the header's order, map items after them."""
        state = self._state
        if state is None:
            raise self.damaged("no run header was read")
        nodes = self._nodes
        deps = self._deps
        for name, node in nodes.items():
            if node is None:
                nodes[name] = NodeState(deps=deps[name])
        if self._items:
            items, outputs = self._items, self._outputs
            try:
                for name, base in map_items(items, deps):
                    self._name = name
                    nodes[name] = node_state(items[name], outputs.get(name), deps[base])
            except _DAMAGE as exc:
                raise self.damaged(exc) from exc
        state.nodes = nodes  # type: ignore[assignment]  # every None was replaced above
        return state

    def feed(
        self, header: bytes, nodes: Mapping[str, StoredNode], data: Mapping[str, bytes]
    ) -> None:
        """Feed a whole stored run (what a backend that reads runs whole does)."""
        self.header(header)
        for name, stored in nodes.items():
            self.node(name, stored.meta)
        for name, stored in nodes.items():
            if stored.output is not None:
                self.output(name, stored.output)
        self.data(data)
