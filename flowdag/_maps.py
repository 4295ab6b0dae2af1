"""Map nodes (``Workflow.map``): their items' names, specs and values. Pure: no I/O.

A map node ``transform`` over ``extract`` is a node of the DAG like any other;
when it becomes ready, the driver (`flowdag._map_run`) expands it: one *item*
node per item of ``extract``'s output, named ``transform[0]``,
``transform[1]``, ..., each with the map's function and options, called with
its item as the first positional argument and the map's other deps by keyword.
Items are stored like any node, under those names; they are not in the DAG, so
a store's loader (`flowdag.stores.base`) and the resume plan
(`flowdag.resume`) know them by their name: ``MAP[INDEX]`` where ``MAP`` is a
node of the run.
"""

from __future__ import annotations

import inspect
from collections import Counter
from collections.abc import Callable, Container, Iterable, Mapping
from dataclasses import dataclass, replace
from typing import TYPE_CHECKING, Any, TypedDict

from flowdag._shapes import shape_of
from flowdag._units import Duration, Size
from flowdag.errors import DAGError, NodeError, SignatureError

if TYPE_CHECKING:
    from flowdag.dag import NodeSpec, _RunDefault

__all__ = [
    "ItemCounts",
    "MapOptions",
    "item_counts",
    "item_name",
    "items_of",
    "map_deps",
    "map_items",
    "map_of",
    "map_spec",
    "mapped_fn",
]


class MapOptions(TypedDict, total=False):
    """The options of `Workflow.map`: those of `Workflow.add_node` but ``deps``
    and ``inputs`` (`flowdag.workflow._NodeOptions` adds them). Caching keys
    each item on its own item (`flowdag._cache.RunCache.lookup`)."""

    retries: int
    retry_delay: Duration
    backoff: float
    max_retry_delay: Duration
    timeout: Duration | None
    pool: str | None
    inline_limit: Size | _RunDefault | None
    extract: Callable[[Any], Any] | None
    preview: Callable[[Any], Any] | None
    ttl: Duration | None
    version: str | int | None
    on_code_change: str | None
    args: tuple[Any, ...]
    kwargs: Mapping[str, Any] | None
    cache: bool
    cache_key: Callable[..., Any] | None
    cache_ttl: Duration | None
    cache_version: str | int | None


#: Types refused as the list a map goes over: iterating them is most likely a mistake.
_NOT_LISTS = (str, bytes, bytearray, memoryview)
_POSITIONAL = (inspect.Parameter.POSITIONAL_ONLY, inspect.Parameter.POSITIONAL_OR_KEYWORD)


def item_name(map_name: str, index: int) -> str:
    """The name of item ``index`` of map node ``map_name``: ``map_name[index]``."""
    return f"{map_name}[{index}]"


def map_of(name: str, maps: Container[str]) -> tuple[str, int] | None:
    """(map node, index) if ``name`` names an item of one of ``maps``, else None."""
    if not name.endswith("]"):
        return None
    base, bracket, index = name[:-1].rpartition("[")
    if not bracket or not index.isdigit() or base not in maps:
        return None
    if index != str(int(index)):  # "t[01]" is no item's name
        return None
    return base, int(index)


def map_items(stored: Iterable[str], nodes: Mapping[str, Any]) -> list[tuple[str, str]]:
    """(name, map node) of each name in ``stored`` not in ``nodes`` that names an item
    of one of them, ordered by map node and index."""
    found = []
    for name in stored:
        if name not in nodes:
            item = map_of(name, nodes)
            if item is not None:
                found.append((item, name))
    found.sort()
    return [(name, base) for (base, _), name in found]


@dataclass(slots=True)
class ItemCounts:
    """The items of a run's map nodes, as ``flowdag status`` shows them."""

    item_of: dict[str, str]  # item -> its map node
    counts: dict[str, str]  # map node -> "8/10 items completed, 2 failed"

    def __bool__(self) -> bool:
        return bool(self.item_of)


def item_counts(nodes: Mapping[str, Any]) -> ItemCounts:
    """Count the stored items of each map node of ``nodes`` (name -> `NodeState`) by status."""
    item_of: dict[str, str] = {}
    statuses: dict[str, Counter[str]] = {}
    for name, node in nodes.items():
        item = map_of(name, nodes) if name.endswith("]") else None
        if item is not None:
            item_of[name] = item[0]
            statuses.setdefault(item[0], Counter())[str(node.status)] += 1
    counts = {}
    for base, counter in statuses.items():
        total = sum(counter.values())
        others = ", ".join(
            f"{n} {status}" for status, n in sorted(counter.items()) if status != "completed"
        )
        counts[base] = f"{counter['completed']}/{total} items completed" + (
            f", {others}" if others else ""
        )
    return ItemCounts(item_of, counts)


def map_deps(
    name: str, over: object, deps: Iterable[str] | Mapping[str, str] | str
) -> tuple[str, ...] | Mapping[str, str]:
    """The deps of map node ``name`` for `Workflow.add_node`: ``over`` first, then
    ``deps``; a mapping ``{parameter: node}`` as it is (`map_spec` adds ``over``).

    Raises:
        DAGError: ``over`` is no node name, or is in ``deps`` too.
    """
    if not isinstance(over, str) or not over:
        raise DAGError(f"map node '{name}': over= must name a node, not {over!r}")
    others = (deps,) if isinstance(deps, str) else deps
    if over in (others.values() if isinstance(others, Mapping) else others):
        raise DAGError(
            f"map node '{name}': '{over}' is over=, its items come first; drop it from deps"
        )
    return others if isinstance(others, Mapping) else (over, *others)


def mapped_fn(name: str, fn: Callable[..., Any]) -> Callable[..., Any]:
    """``fn`` with its first positional parameter (the item) bound, for signature checks.

    Raises:
        SignatureError: ``fn`` takes no positional parameter for the item.
    """
    import functools

    if not callable(fn):
        raise SignatureError(f"map node '{name}' is not callable: got {type(fn).__name__}")
    try:
        params = list(inspect.signature(fn).parameters.values())
    except (TypeError, ValueError):
        return fn  # no signature (some builtins): called as it is
    first = params[0] if params else None
    if first is None or first.kind not in (*_POSITIONAL, inspect.Parameter.VAR_POSITIONAL):
        raise SignatureError(
            f"map node '{name}': its function must take the item as its first positional "
            "parameter, e.g. def clean(item, ...)"
        )
    return functools.partial(fn, None)


def map_spec(spec: NodeSpec, fn: Callable[..., Any], over: str) -> NodeSpec:
    """The spec of map node ``spec.name`` over ``over``, from the spec `Workflow.add_node`
    made for ``mapped_fn(fn)``: its function is ``fn``, and ``over`` is no keyword input.

    Raises:
        DAGError: the node is an input node.
    """
    if spec.input is not None:
        raise DAGError(f"map node '{spec.name}' cannot be an input node")
    kwarg_deps = tuple(dep for dep in spec.kwarg_deps if dep != over)
    # The item is a value, as any input is (an item kept by reference is loaded),
    # unless its parameter is annotated `flowdag.Ref`: on every executor alike.
    shape = shape_of(fn)
    item_is_ref = bool(shape.positionals) and shape.positionals[0] in shape.ref_params
    return replace(
        spec,
        deps=spec.deps if over in spec.deps else (over, *spec.deps),  # deps given as a mapping
        fn=fn,
        is_async=inspect.iscoroutinefunction(fn),
        kwarg_deps=kwarg_deps,
        ref_deps=spec.ref_deps | {over} if item_is_ref else spec.ref_deps - {over},
        map_over=over,
    )


def items_of(value: Any, name: str, over: str) -> list[Any]:
    """The items map node ``name`` runs over: ``over``'s output, as a list.

    Raises:
        NodeError: the output is not iterable (or a str or bytes), naming its type.
    """
    what = type(value).__name__
    if isinstance(value, _NOT_LISTS):
        raise NodeError(
            f"map node '{name}' maps over the output of '{over}', which is a {what}, not a "
            f"list of items; make '{over}' return a list (e.g. [value])"
        )
    try:
        iterator = iter(value)
    except TypeError:
        raise NodeError(
            f"map node '{name}' maps over the output of '{over}', which is a {what} and "
            f"not iterable; make '{over}' return a list (or any iterable) of items"
        ) from None
    try:
        return list(iterator)
    except Exception as exc:
        raise NodeError(
            f"map node '{name}': iterating the output of '{over}' (a {what}) raised "
            f"{type(exc).__name__}: {exc}"
        ) from exc
