"""The plans of `flowdag.overrides`: which nodes an override rewrites, and why. Pure.

Each function takes the stored statuses (node -> `NodeStatus`) and the stored
graph (node -> its deps) and returns the nodes the override rewrites, in the
graph's order (deps first), with their new status. The rule both share: a
skipped node below the changed ones becomes pending when no failed or skipped
node is left above it (it was skipped because of them).
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from graphlib import TopologicalSorter

from flowdag.state import NodeStatus

__all__ = ["downstream_whys", "plan_invalidate", "plan_mark_done"]

#: What stops a node from running: a node above it in one of these.
_BLOCKING = frozenset({NodeStatus.FAILED, NodeStatus.SKIPPED})


def plan_mark_done(
    statuses: Mapping[str, NodeStatus], deps: Mapping[str, Sequence[str]], node: str
) -> dict[str, NodeStatus]:
    """The nodes `mark_done` rewrites, in the graph's order: node -> its new status.

    ``node`` becomes completed; each skipped node below it with no failed or
    skipped node left above it becomes pending.
    """
    new = dict(statuses)
    new[node] = NodeStatus.COMPLETED
    changed = {node: NodeStatus.COMPLETED}
    changed.update(_unskipped(new, deps, [node]))
    return _ordered(changed, deps)


def plan_invalidate(
    statuses: Mapping[str, NodeStatus],
    deps: Mapping[str, Sequence[str]],
    nodes: Sequence[str],
    *,
    downstream: bool,
) -> dict[str, NodeStatus]:
    """The nodes `invalidate` rewrites, in the graph's order: node -> its new status (pending).

    The named nodes always (an audit entry, even for one already pending);
    with ``downstream`` every node below them that is not pending yet; else
    only the skipped ones below them left with no failed or skipped node above.
    """
    new = dict(statuses)
    changed = dict.fromkeys(nodes, NodeStatus.PENDING)
    if downstream:
        for name in _below(deps, nodes):
            if new[name] is not NodeStatus.PENDING:
                changed[name] = NodeStatus.PENDING
    new.update(changed)
    changed.update(_unskipped(new, deps, nodes))
    return _ordered(changed, deps)


def _unskipped(
    new: dict[str, NodeStatus], deps: Mapping[str, Sequence[str]], roots: Sequence[str]
) -> dict[str, NodeStatus]:
    """The skipped nodes below ``roots`` with no failed or skipped node above them any more.

    ``new`` (statuses after the override) is updated with them. In the graph's
    order, so a skipped node freed here frees the ones below it in turn.
    """
    below = _below(deps, roots)
    freed: dict[str, NodeStatus] = {}
    blocked: dict[str, bool] = {}  # node -> a failed or skipped node above it
    for name in _order(deps):
        blocked[name] = any(new[dep] in _BLOCKING or blocked[dep] for dep in deps[name])
        if name in below and new[name] is NodeStatus.SKIPPED and not blocked[name]:
            new[name] = freed[name] = NodeStatus.PENDING
    return freed


def _below(deps: Mapping[str, Sequence[str]], roots: Sequence[str]) -> set[str]:
    """Every node below ``roots`` (their descendants), ``roots`` themselves left out."""
    children: dict[str, list[str]] = {}
    for name, its_deps in deps.items():
        for dep in its_deps:
            children.setdefault(dep, []).append(name)
    seen: set[str] = set()
    stack = list(roots)
    while stack:
        for child in children.get(stack.pop(), ()):
            if child not in seen:
                seen.add(child)
                stack.append(child)
    return seen - set(roots)


def _order(deps: Mapping[str, Sequence[str]]) -> list[str]:
    """The nodes, deps first (the stored graph is acyclic: its header was checked)."""
    return list(TopologicalSorter(deps).static_order())


def _ordered(
    changed: dict[str, NodeStatus], deps: Mapping[str, Sequence[str]]
) -> dict[str, NodeStatus]:
    return {name: changed[name] for name in _order(deps) if name in changed}


def downstream_whys(
    deps: Mapping[str, Sequence[str]],
    after: Mapping[str, NodeStatus],
    roots: Sequence[str],
    what: str,
) -> dict[str, str]:
    """Why each node of ``after`` changes: ``what`` for the roots, else the root above it."""
    origin: dict[str, str] = dict.fromkeys(roots, "")
    for name in _order(deps):
        if name not in origin:
            found = next((origin[d] or d for d in deps[name] if d in origin), None)
            if found is not None:
                origin[name] = found
    return {
        name: what if name in roots else f"downstream of '{origin.get(name, roots[0])}'"
        for name in after
    }
