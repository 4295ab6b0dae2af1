"""Benchmark workflow shapes, one definition for ``flowdag bench`` and ``benchmarks/``.

``benchmarks/`` is not installed, so its ``_shapes.py`` imports these. Node
functions are trivial on purpose: what is measured is flowdag's cost per node.
"""

from __future__ import annotations

from collections.abc import Callable

from flowdag.dag import DAG
from flowdag.workflow import Workflow

__all__ = ["GRID_DEPTH", "SHAPES", "chain", "fanout", "grid"]

GRID_DEPTH = 10


def fanout(width: int, output: object = 2, *, distinct: bool = False) -> DAG:
    """1 -> width -> 1: a root, ``width`` independent nodes returning ``output``, a sink.

    The sink returns how many nodes it received (``width``). ``distinct``
    (``output`` bytes): node ``n{i}`` returns ``output`` with ``i`` in its first
    8 bytes, made when it runs, so outputs kept by reference are one blob per
    node (identical outputs are one blob in all, written once).
    """
    wf = Workflow(f"fanout-{width}")
    wf.add_node("root", lambda: 1)
    for i in range(width):
        wf.add_node(
            f"n{i}", _numbered(output, i) if distinct else lambda root: output, deps=["root"]
        )
    wf.add_node("sink", lambda **kw: len(kw), deps=[f"n{i}" for i in range(width)])
    return wf.build()


def _numbered(output: object, i: int) -> Callable[[object], bytes]:
    if not isinstance(output, bytes):
        raise TypeError(f"distinct outputs are bytes, not {type(output).__name__}")
    prefix = i.to_bytes(8, "big")

    def node(root: object) -> bytes:
        return prefix[: len(output)] + output[len(prefix) :]

    return node


def chain(length: int) -> DAG:
    """``length`` nodes in a line: each waits for the previous one's checkpoint."""
    wf = Workflow(f"chain-{length}")
    wf.add_node("n0", lambda: 0)
    for i in range(1, length):
        wf.add_node(f"n{i}", lambda **kw: next(iter(kw.values())) + 1, deps=[f"n{i - 1}"])
    return wf.build()


def grid(nodes: int, depth: int = GRID_DEPTH) -> DAG:
    """A wide diamond grid: ``depth`` layers of ``nodes // depth``; each node needs two above.

    Node ``g{l}_{i}`` depends on ``g{l-1}_{i}`` and ``g{l-1}_{i+1}`` (wrapping), so
    every layer fans in and out at once: diamonds side by side, layer after layer.
    """
    width = nodes // depth
    wf = Workflow(f"grid-{nodes}")
    for i in range(width):
        wf.add_node(f"g0_{i}", lambda: 1)
    for layer in range(1, depth):
        for i in range(width):
            deps = [f"g{layer - 1}_{i}", f"g{layer - 1}_{(i + 1) % width}"]
            wf.add_node(f"g{layer}_{i}", lambda **kw: max(kw.values()) + 1, deps=deps)
    return wf.build()


#: Shape name -> a function of a size that builds it.
SHAPES: dict[str, Callable[[int], DAG]] = {"fanout": fanout, "chain": chain, "grid": grid}
