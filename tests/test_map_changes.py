"""Maps after a change of the workflow (``allow_changes=True``), and the type of an item
kept by reference, alike on every executor.

Item calls are counted in a file, as in ``test_map.py``: what the functions did.
"""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

import flowdag
from flowdag import Context, NodeStatus, Workflow
from flowdag.refs import Ref
from flowdag.stores import open_store
from flowdag.stores.base import Store

KINDS = ["memory", "lmdb", "json", "flatbuffers"]


@pytest.fixture(params=KINDS)
def store(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[Store]:
    url = "memory://" if request.param == "memory" else f"{request.param}://{tmp_path / 's'}"
    with open_store(url) as opened:
        yield opened


class Work:
    """A map's function: logs the item's node, fails on the items listed in ``bad``."""

    def __init__(self, root: Path) -> None:
        self.bad, self.log = root / "bad", root / "calls"

    def __call__(self, item: int, ctx: Context, **deps: Any) -> int:
        if self.bad.exists() and str(item) in self.bad.read_text().split():
            raise ValueError(f"bad item {item}")
        with self.log.open("a") as log:
            log.write(ctx.node + "\n")
        return item * 10 + sum(deps.values())

    def calls(self) -> list[str]:
        return sorted(self.log.read_text().split()) if self.log.exists() else []


def _workflow(work: Work, *, extra: bool = False, map_deps: tuple[str, ...] = ()) -> Workflow:
    wf = Workflow("changes")
    wf.add_node("extract", lambda: [0, 1, 2, 3])
    wf.add_node("k", lambda: 1)
    wf.map("work", work, over="extract", deps=list(map_deps))
    wf.add_node("total", lambda work: list(work), deps=["work"])
    if extra:
        wf.add_node("extra", lambda: "new")
    return wf


def test_a_change_elsewhere_keeps_the_completed_items_of_a_map(
    store: Store, tmp_path: Path
) -> None:
    work = Work(tmp_path)
    work.bad.write_text("2")
    assert flowdag.run(_workflow(work), run_id="r", store=store).node_status["work"] is (
        NodeStatus.FAILED
    )
    work.bad.write_text("")
    work.log.unlink()
    # A node added elsewhere: the map's completed items are reused, its failed one runs.
    result = flowdag.run(_workflow(work, extra=True), run_id="r", store=store, allow_changes=True)
    assert result.status == "completed"
    assert result.outputs["total"] == [0, 10, 20, 30]
    assert work.calls() == ["work[2]"]
    assert result.explain()["work[0]"].code == "reused"
    # The map's own deps changed: every item's inputs did, so every item runs.
    work.log.unlink()
    result = flowdag.run(
        _workflow(work, extra=True, map_deps=("k",)), run_id="r", store=store, allow_changes=True
    )
    assert result.outputs["total"] == [1, 11, 21, 31]
    assert work.calls() == ["work[0]", "work[1]", "work[2]", "work[3]"]


def _big(n: int) -> str:
    return "x" * (2000 * n)


def _kind(item: Any) -> str:
    return f"{type(item).__name__} {len(item) if type(item) is str else item.size}"


def _kind_of_ref(item: Ref) -> str:
    return _kind(item)


def _items_kept_by_reference() -> Workflow:
    wf = Workflow("refs")
    wf.add_node("src", lambda: [1, 2])
    wf.map("big", _big, over="src", inline_limit=1000)  # each item's output kept by reference
    wf.map("value", _kind, over="big")
    wf.map("ref", _kind_of_ref, over="big")
    return wf


@pytest.mark.parametrize("executor", ["threads", "processes", "asyncio"])
@pytest.mark.parametrize("kind", ["memory", "lmdb"])
def test_an_item_kept_by_reference_is_a_value_unless_its_parameter_asks_for_the_ref(
    executor: str, kind: str, tmp_path: Path
) -> None:
    # A map over a map whose items are kept by reference: the same on every executor,
    # as any input (a value, loaded; the Ref for a parameter annotated flowdag.Ref).
    url = "memory://" if kind == "memory" else f"lmdb://{tmp_path / 's'}"
    result = flowdag.run(_items_kept_by_reference(), store=url, executor=executor)
    assert result.outputs["value"] == ["str 2000", "str 4000"]
    assert [text.split()[0] for text in result.outputs["ref"]] == ["Ref", "Ref"]
