"""Every kind of input schema end to end, and waits under every local executor.

Each schema kind (a pydantic model, a dataclass, a TypedDict, a JSON Schema
dict) is declared on an input node, stored with its wait as JSON Schema,
checks a given value (one with a wrong field is refused, naming it) and gives
the node its value in JSON form. The waits' store logic is the same under
every executor, since input nodes settle on the driver's thread; each
executor still gets one cheap end-to-end run (threads, processes, asyncio).
"""

from __future__ import annotations

import dataclasses
import datetime
from typing import Any, Literal

import pydantic
import pytest
from typing_extensions import TypedDict

import flowdag
from flowdag import InputValidationError, NodeStatus, RunStatus, Workflow
from flowdag.executors import AsyncioExecutor, ProcessExecutor, ThreadExecutor
from flowdag.stores.base import Store
from tests.waits_workflows import Clock, clock

__all__ = ["clock"]  # a fixture


class ApprovalModel(pydantic.BaseModel):
    approved: bool
    by: str
    budget: int = 0
    due: datetime.date | None = None


@dataclasses.dataclass
class ApprovalData:
    approved: bool
    by: str
    level: Literal["low", "high"] = "low"


class ApprovalDict(TypedDict):
    approved: bool
    by: str


APPROVAL_SCHEMA = {
    "type": "object",
    "properties": {"approved": {"type": "boolean"}, "by": {"type": "string"}},
    "required": ["approved", "by"],
}

# kind -> (schema, a value to give, its JSON form, a value with a wrong field, that field)
CASES: dict[str, tuple[object, Any, Any, Any, str]] = {
    "pydantic": (
        ApprovalModel,
        ApprovalModel(approved=True, by="ana", due=datetime.date(2026, 12, 1)),
        {"approved": True, "by": "ana", "budget": 0, "due": "2026-12-01"},
        {"approved": True, "by": "ana", "budget": "lots"},
        "budget",
    ),
    "dataclass": (
        ApprovalData,
        ApprovalData(approved=False, by="bo", level="high"),
        {"approved": False, "by": "bo", "level": "high"},
        {"approved": False, "by": "bo", "level": "medium"},
        "level",
    ),
    "typeddict": (
        ApprovalDict,
        {"approved": True, "by": "cy"},
        {"approved": True, "by": "cy"},
        {"approved": 1, "by": "cy"},
        "approved",
    ),
    "dict": (
        APPROVAL_SCHEMA,
        {"approved": True, "by": "di", "note": ("a", "tuple")},
        {"approved": True, "by": "di", "note": ["a", "tuple"]},
        {"by": "di"},
        "approved",
    ),
}


def order() -> int:
    return 120


def checked(approval: dict[str, Any]) -> str:
    assert type(approval) is dict  # JSON form: the node's code gets a dict, never a model
    return f"{approval['by']}: {approval['approved']}"


def workflow(schema: object) -> Workflow:
    wf = Workflow("schemas")
    wf.add_node("order", order)
    wf.add_input("approval", schema=schema, deps=["order"], prompt=lambda order: f"{order}?")
    wf.add_node("send", checked, deps=["approval"])
    return wf


@pytest.mark.parametrize("kind", CASES)
def test_each_schema_kind_end_to_end(kind: str) -> None:
    schema, value, form, wrong, field = CASES[kind]
    store = flowdag.MemoryStore()
    wf = workflow(schema)
    wait = flowdag.run(wf, run_id="r", store=store).waits["approval"]
    assert wait.key is not None and wait.prompt == "120?"
    assert wait.schema["type"] == "object" and "approved" in wait.schema["properties"]
    with pytest.raises(InputValidationError) as caught:
        flowdag.provide_input(store, wait.key, wrong)
    assert field in {problem.field for problem in caught.value.fields}
    flowdag.provide_input(store, wait.key, value)
    done = flowdag.run(wf, run_id="r", store=store)
    assert done.status is RunStatus.COMPLETED, done.errors
    assert done.outputs["approval"] == form and type(done.outputs["approval"]) is dict
    assert done.outputs["send"] == f"{form['by']}: {form['approved']}"


@pytest.mark.parametrize("kind", CASES)
def test_each_schema_kind_as_a_default(kind: str, clock: Clock) -> None:
    schema, value, form, _, _ = CASES[kind]
    wf = Workflow("schemas")
    wf.add_input("approval", schema=schema, timeout=60, default=value)
    store = flowdag.MemoryStore()
    assert flowdag.run(wf, run_id="r", store=store).status is RunStatus.SUSPENDED
    clock.advance(60)
    done = flowdag.run(wf, run_id="r", store=store)
    assert done.outputs["approval"] == form
    assert done.explain()["approval"].code == "timed_out_default"


# -- executors ----------------------------------------------------------------------------


def double(order: int) -> int:
    return order * 2


def approve(approval: dict[str, Any], double: int) -> str:
    return f"{double} approved by {approval['by']}"


@pytest.mark.parametrize("executor", ["threads", "processes", "asyncio"])
def test_a_wait_under_each_executor(executor: str, tmp_path: Any) -> None:
    wf = Workflow("executors")
    wf.add_node("order", order)
    wf.add_node("double", double, deps=["order"])  # a sibling: runs on the executor meanwhile
    wf.add_input("approval", schema=ApprovalData, deps=["order"], prompt=lambda order: order)
    wf.add_node("send", approve, deps=["approval", "double"])
    # One pool for both calls: a process pool's start is the slow part.
    pool = {"threads": ThreadExecutor, "processes": ProcessExecutor, "asyncio": AsyncioExecutor}
    store: Store
    with pool[executor](1) as running, flowdag.open_store(f"lmdb://{tmp_path}") as store:
        first = flowdag.run(wf, run_id="r", store=store, executor=running)
        assert first.status is RunStatus.SUSPENDED
        assert first.node_status["double"] is NodeStatus.COMPLETED
        wait = first.waits["approval"]
        assert wait.key is not None and wait.prompt == 120
        flowdag.provide_input(store, wait.key, ApprovalData(True, "ana"))
        done = flowdag.run(wf, run_id="r", store=store, executor=running)
    assert done.status is RunStatus.COMPLETED, done.errors
    assert done.outputs["send"] == "240 approved by ana"
