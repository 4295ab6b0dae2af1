"""A workflow with outputs kept by reference, importable by worker processes."""

from __future__ import annotations

import flowdag

BIG = list(range(100_000))  # about 360 KiB of msgpack, above the default 256 KiB
wf = flowdag.Workflow("refs-remote")


@wf.node
def fetch() -> list[int]:
    return BIG


@wf.node(deps=["fetch"])
def total(fetch: list[int]) -> int:
    return sum(fetch)


@wf.node(deps=["fetch"])
def route(fetch: flowdag.Ref) -> str:
    return type(fetch).__name__


@wf.node
def dump(ctx: flowdag.Context) -> None:
    with ctx.output_file() as f:
        for i in range(100):
            f.write(bytes([i]) * 1000)


@wf.node(deps=["dump"])
def dumped(dump: bytes) -> int:
    return len(dump)


#: The same without the streamed output: for stores whose blob area workers cannot reach.
values_only = flowdag.Workflow("refs-values")
values_only.add_node("fetch", fetch, extract=lambda rows: {"rows": len(rows)})
values_only.add_node("total", total, deps=["fetch"])
values_only.add_node("route", route, deps=["fetch"])
