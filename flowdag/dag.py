"""The validated graph: `DAG` checks a workflow's nodes and fixes their order."""

from __future__ import annotations

import bisect
import difflib
import heapq
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass, field
from datetime import timedelta
from enum import Enum
from typing import TYPE_CHECKING, Any, Final

from flowdag._fastinit import slot_init, slot_new
from flowdag._gcpause import cyclic_gc_paused
from flowdag.errors import (
    CycleError,
    DuplicateNodeError,
    InvalidArgumentError,
    InvalidArgumentTypeError,
    MissingDependencyError,
)

if TYPE_CHECKING:
    import networkx as nx

__all__ = [
    "CODE_CHANGE_POLICIES",
    "DAG",
    "RUN_DEFAULT",
    "Binding",
    "CacheOptions",
    "InputOptions",
    "NodeSpec",
    "check_pools",
]


class _RunDefault(Enum):
    RUN_DEFAULT = "the run's"

    def __repr__(self) -> str:
        return "RUN_DEFAULT"


#: A node option left to the run: ``inline_limit`` then is ``run(inline_limit=...)``'s.
RUN_DEFAULT: Final = _RunDefault.RUN_DEFAULT


#: What a resume may do with a completed node whose code changed (``on_code_change=``):
#: run it again, reuse its output with a warning, or reuse it silently.
CODE_CHANGE_POLICIES = ("rerun", "warn", "ignore")


@dataclass(frozen=True, slots=True)
class CacheOptions:
    """A node's cross-run caching (`flowdag._cache`): ``cache_key``, ``cache_ttl``,
    ``cache_version`` as declared."""

    key: Callable[..., Any] | None = None
    ttl: timedelta | None = None
    version: str = ""


@dataclass(frozen=True, slots=True)
class Binding:
    """How a node's function is called when that is more than ``dep=output`` keywords.

    The call is ``fn(*args, [listed outputs], **kwargs, **{param: output of dep},
    ctx=...)``: the constants first, then (``inputs="list"``) one list of the
    ``listed`` deps' outputs in declared order, then each ``(param, dep)`` of
    ``params`` by keyword. `flowdag._binding` checks it against the signature.
    """

    args: tuple[Any, ...] = ()  # constant leading positional arguments
    kwargs: dict[str, Any] = field(default_factory=dict)  # constant keyword arguments
    #: (parameter, dep): the dep's output passed as that keyword argument.
    params: tuple[tuple[str, str], ...] = ()
    #: ``inputs="list"``: these deps' outputs, as one positional list after ``args``.
    listed: tuple[str, ...] | None = None
    #: The fingerprint parts of the constants and of the binding itself
    #: (``"argument n"`` -> digest, ``"input binding"`` -> digest), in a fixed order.
    parts: tuple[tuple[str, str], ...] = ()
    #: The parameters of ``params`` annotated `flowdag.Ref`: they get the Ref itself.
    refs: frozenset[str] = frozenset()


slot_init(Binding)  # one per node bound with constants or a mapping


@dataclass(frozen=True, slots=True)
class InputOptions:
    """An input node's wait (``Workflow.add_input``; see `flowdag.waits`).

    ``schema`` is the JSON Schema a value must fit (``schema_digest`` its
    canonical digest), ``timeout`` the seconds from the wait's start to its
    deadline (None: none), ``default`` a one-item tuple with the JSON value
    taken at the deadline, or empty: then the node fails.
    """

    schema: dict[str, Any]
    schema_digest: str
    timeout: float | None = None
    default: tuple[Any, ...] = ()


@dataclass(frozen=True, slots=True)
class NodeSpec:
    """One node as declared: its function, dependencies and run options."""

    name: str
    fn: Callable[..., Any]
    deps: tuple[str, ...] = ()
    retries: int = 0
    retry_delay: float = 0.0
    backoff: float = 2.0
    max_retry_delay: float = 60.0
    timeout: float | None = None
    pool: str | None = None
    #: Dependencies whose outputs the function receives: as keyword arguments of
    #: their own name (all of them when fn takes **kwargs), or as ``binding`` says.
    kwarg_deps: tuple[str, ...] = ()
    wants_ctx: bool = False
    is_async: bool = False  # an ``async def`` function
    #: Outputs encoded to more bytes than this go to the blob area (None: never).
    inline_limit: int | _RunDefault | None = RUN_DEFAULT
    extract: Callable[[Any], Any] | None = None  # small fields kept inline with a Ref
    preview: Callable[[Any], Any] | None = None  # a sample kept inline with a Ref
    ttl: timedelta | None = None  # the output's blob expires this long after the node ends
    #: Dependencies whose parameter is annotated `flowdag.Ref`: they get the Ref, not the value.
    ref_deps: frozenset[str] = frozenset()
    #: A salt of the node's code fingerprint: bumping it runs the node again on resume.
    version: str | int | None = None
    #: What a resume does when the node's code changed ("rerun", "warn", "ignore");
    #: None: ``run(on_code_change=...)``'s.
    on_code_change: str | None = None
    #: Its cross-run caching (`flowdag._cache`); None: not cached.
    cache: CacheOptions | None = None
    #: Constant arguments, inputs bound to other parameters or passed as a list;
    #: None: each input goes as the keyword argument of its dep's name.
    binding: Binding | None = None
    #: An input node's wait; its ``fn`` then makes the prompt. None: a node that runs.
    input: InputOptions | None = None
    #: A map node (``Workflow.map``) and its items: the dep whose output is mapped
    #: over; each item is passed as the first positional argument. None: not mapped.
    map_over: str | None = None

    def retry_wait(self, retry: int) -> float:
        """Seconds to wait before retry number ``retry`` (1-based), before jitter."""
        return float(min(self.max_retry_delay, self.retry_delay * self.backoff ** (retry - 1)))


slot_init(NodeSpec)  # the builder makes one per node: set its slots directly, twice as fast
#: NodeSpec from every field, by position: what the builder calls once per node.
_new_spec = slot_new(NodeSpec)


class DAG:
    """A workflow's nodes, validated: no duplicates, no missing deps, no cycles.

    Attributes:
        name: the workflow's name.
        graph: a `networkx.DiGraph` with an edge ``dep -> node`` per dependency
            and each node's `NodeSpec` in its ``spec`` attribute (made on first use).
        nodes: node names in a deterministic topological order (ties broken by name).
        specs: node name -> `NodeSpec`.
        pools: pool name -> cap, the workflow's defaults (``run(pools=)`` overrides).
        maps: the map nodes (``Workflow.map``), whose items are added as a run goes.
        inputs: the input nodes (``Workflow.add_input``), which wait for a value.
    """

    def __init__(
        self, name: str, specs: Iterable[NodeSpec], pools: Mapping[str, int] | None = None
    ) -> None:
        self.name = name
        self.pools: Mapping[str, int] = check_pools(pools)
        # A few objects per node and none in a cycle, and no user code runs here: at a
        # million nodes the collector's passes would cost more than the build.
        with cyclic_gc_paused():
            self.specs: Mapping[str, NodeSpec] = _unique(specs)
            self._dependents, waiting = _dependents(self.specs)
            self.nodes: list[str] = _order(self.specs, self._dependents, waiting)
        self._graph: nx.DiGraph | None = None
        self.maps = frozenset([n for n, spec in self.specs.items() if spec.map_over is not None])
        self.inputs = frozenset([n for n, spec in self.specs.items() if spec.input is not None])
        if self.maps:
            _check_item_names(self.specs, self.maps)

    @property
    def graph(self) -> nx.DiGraph:
        """The `networkx.DiGraph`, made on first use: running a workflow needs none."""
        graph = self._graph
        if graph is None:  # two threads may both make it: equal graphs, one is kept
            graph = self._graph = _graph_of(self.specs)
        return graph

    def deps(self, node: str) -> tuple[str, ...]:
        """The names ``node`` depends on, as declared."""
        return self.specs[node].deps

    def dependents(self, node: str) -> tuple[str, ...]:
        """The names of the nodes that depend on ``node``, each once, in the order added.

        The same as ``tuple(dag.graph.successors(node))``, without making the graph.

        Raises:
            KeyError: ``node`` is not a node of the DAG (as `deps`).
        """
        found = self._dependents.get(node)
        if found is not None:
            return found
        if node in self.specs:
            return ()
        raise KeyError(node)

    def __len__(self) -> int:
        return len(self.nodes)

    def __contains__(self, node: object) -> bool:
        return node in self.specs

    def __repr__(self) -> str:
        return f"DAG({self.name!r}, nodes={len(self.nodes)})"


def _unique(specs: Iterable[NodeSpec]) -> dict[str, NodeSpec]:
    if not isinstance(specs, list | tuple):
        specs = list(specs)
    by_name = {spec.name: spec for spec in specs}
    if len(by_name) < len(specs):
        seen: set[str] = set()
        duplicates: dict[str, None] = {}  # in the order each is seen a second time
        for spec in specs:
            if spec.name in seen:
                duplicates[spec.name] = None
            seen.add(spec.name)
        names = ", ".join(f"'{n}'" for n in duplicates)
        raise DuplicateNodeError(f"duplicate node names: {names}; give each node a unique name")
    return by_name


def _dependents(
    specs: Mapping[str, NodeSpec],
) -> tuple[dict[str, tuple[str, ...]], dict[str, int]]:
    """(node -> its dependents, node -> how many distinct deps it has, for those with two or more).

    Raises:
        MissingDependencyError: a dep names no node.
    """
    found: dict[str, list[str]] = {}
    waiting: dict[str, int] = {}
    for name, spec in specs.items():
        deps = spec.deps
        if not deps:
            continue
        if len(deps) > 1:
            if len(set(deps)) < len(deps):
                deps = tuple(dict.fromkeys(deps))  # a dep listed twice is one edge
            if len(deps) > 1:
                waiting[name] = len(deps)
        for dep in deps:
            dependents = found.get(dep)
            if dependents is not None:
                dependents.append(name)
            elif dep in specs:
                found[dep] = [name]
            else:
                _check_deps(specs)  # raises, naming every missing dep
    # One tuple per distinct list: the leaves of a fan-out share their sink's.
    shared: dict[tuple[str, ...], tuple[str, ...]] = {}
    return {name: shared.setdefault(t := tuple(names), t) for name, names in found.items()}, waiting


def _check_deps(specs: Mapping[str, NodeSpec]) -> None:
    problems = []
    for spec in specs.values():
        for dep in spec.deps:
            if dep not in specs:
                hint = difflib.get_close_matches(dep, specs, n=1)
                suggestion = f" (did you mean '{hint[0]}'?)" if hint else ""
                problems.append(f"node '{spec.name}' depends on unknown node '{dep}'{suggestion}")
    if problems:
        raise MissingDependencyError("; ".join(problems))


def _check_item_names(specs: Mapping[str, NodeSpec], maps: frozenset[str]) -> None:
    from flowdag._maps import map_of

    for name in specs:
        item = map_of(name, maps)
        if item is not None:
            raise DuplicateNodeError(
                f"node '{name}' has the name of item {item[1]} of map node '{item[0]}'; "
                "rename one of them"
            )


def _order(
    specs: Mapping[str, NodeSpec],
    dependents: Mapping[str, tuple[str, ...]],
    waiting: dict[str, int],
) -> list[str]:
    """The nodes in topological order, the smallest name first among those ready.

    Kahn's algorithm, in the order of ``networkx.lexicographical_topological_sort``
    without a heap over all nodes: the nodes ready at the start, and those a
    placed node makes ready, each form a sorted *run*; the next node placed is
    the smallest head of the runs (a heap of runs, by head). A fan-out's N
    leaves are one run, placed in one sort and one slice. ``waiting`` (consumed)
    counts the distinct deps not yet placed of each node with two or more.

    Raises:
        CycleError: some nodes are never ready; the message shows one cycle.
    """
    order: list[str] = []
    place, get = order.append, dependents.get
    runs: list[tuple[str, int, list[str], bool]] = []  # (head, its index, run, ends?)

    def add_run(run: list[str]) -> None:
        run.sort()
        # A long run of nodes without dependents is placed by slices (a fan-out's leaves).
        ends = len(run) > 8 and not dependents.keys() & run
        heapq.heappush(runs, (run[0], 0, run, ends))

    first = [name for name, spec in specs.items() if not spec.deps]
    if first:
        add_run(first)
    while runs:
        _, at, run, ends = runs[0]
        end = len(run)
        # The top run may go on while its next name is below every other run's head.
        bound = None
        if len(runs) > 1:
            bound = runs[1][0] if len(runs) == 2 else min(runs[1][0], runs[2][0])
        released: list[str] = []
        if ends:  # none makes another ready: up to the bound at once
            stop = end if bound is None else bisect.bisect_right(run, bound, at)
            order += run[at:stop]
            at = stop
        else:
            while True:
                name = run[at]
                at += 1
                place(name)
                for dependent in get(name, ()):
                    left = waiting.get(dependent, 1) - 1
                    if left:
                        waiting[dependent] = left
                    else:
                        released.append(dependent)
                if released or at == end or (bound is not None and run[at] > bound):
                    break
        if at < end:
            heapq.heapreplace(runs, (run[at], at, run, ends))
        else:
            heapq.heappop(runs)
        if released:
            add_run(released)
    if len(order) < len(specs):
        _check_acyclic(_graph_of(specs))  # raises: the cycle, from the same search as before
    return order


def _graph_of(specs: Mapping[str, NodeSpec]) -> nx.DiGraph:
    import networkx as nx  # imported here: running a workflow needs no graph

    graph = nx.DiGraph()
    with cyclic_gc_paused():
        graph.add_nodes_from((name, {"spec": spec}) for name, spec in specs.items())
        graph.add_edges_from((dep, name) for name, spec in specs.items() for dep in spec.deps)
    return graph


def _check_acyclic(graph: nx.DiGraph) -> None:
    import networkx as nx

    try:
        edges = nx.find_cycle(graph)
    except nx.NetworkXNoCycle:
        return
    cycle = [u for u, _ in edges]
    first = cycle.index(min(cycle))  # start at the smallest name: same message in any order
    cycle = cycle[first:] + cycle[:first]
    path = [*cycle, cycle[0]]
    raise CycleError(
        "dependency cycle: " + " -> ".join(path) + "; remove one of these dependencies"
    )


def check_pools(pools: Mapping[str, int] | None) -> dict[str, int]:
    """``pools`` checked: pool name -> a cap >= 1 (``run(pools=)``, ``Workflow(pools=)``)."""
    if pools is None:
        return {}
    if not isinstance(pools, Mapping):
        raise InvalidArgumentTypeError(
            f"pools must map pool names to caps, e.g. {{'db': 2}}, not {type(pools).__name__}"
        )
    checked = dict(pools)
    for name, cap in checked.items():
        if not isinstance(name, str):
            raise InvalidArgumentTypeError(
                f"pool names must be strings (as in pool='db'), not {name!r}"
            )
        if isinstance(cap, bool) or not isinstance(cap, int) or cap < 1:
            raise InvalidArgumentError(f"pools[{name!r}] must be a whole number >= 1, not {cap!r}")
    return checked
