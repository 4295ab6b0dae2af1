"""A property test of the wait state machine against a model (hypothesis.stateful).

The workflow has two input nodes and a sibling: ``a`` (a default at its
deadline) and ``b`` (none: it fails at its deadline, and the next run asks
again), ``side`` beside them and ``end`` after both. Hypothesis runs it, gives
values with the current key, a used or revoked key or a random one, gives
invalid values, reissues keys and moves the waits' clock, in any order, on a
`MemoryStore` and on an LMDB store. The model says what each call must do;
after each step `list_waits` must agree with it. So: a key works at most once
and only while its wait is open and before its deadline, each wait takes
exactly one value, and a node's output is the value accepted or its default.
"""

from __future__ import annotations

import shutil
import tempfile
from dataclasses import dataclass, field
from datetime import datetime, timedelta
from typing import Any

import pytest
from hypothesis import HealthCheck, settings
from hypothesis import strategies as st
from hypothesis.stateful import RuleBasedStateMachine, invariant, precondition, rule

import flowdag
from flowdag import (
    InputNotFoundError,
    InputValidationError,
    NodeStatus,
    RunStatus,
    Workflow,
    _wait_entries,
)
from flowdag._wait_entries import new_key
from flowdag.stores.base import Store
from tests.waits_workflows import Clock

RUN = "prop"
SCHEMA = {"type": "object", "properties": {"v": {"type": "integer"}}, "required": ["v"]}
TIMEOUTS = {"a": 100.0, "b": 50.0}
DEFAULTS: dict[str, Any] = {"a": {"v": -1}}
INPUTS = ("a", "b")


def side() -> str:
    return "side"


def end(a: dict[str, int], b: dict[str, int]) -> int:
    return a["v"] + b["v"]


def workflow() -> Workflow:
    wf = Workflow("prop")
    wf.add_node("side", side)
    wf.add_input("a", schema=SCHEMA, timeout=TIMEOUTS["a"], default=DEFAULTS["a"])
    wf.add_input("b", schema=SCHEMA, timeout=TIMEOUTS["b"], deps=["side"], prompt=lambda side: side)
    wf.add_node("end", end, deps=["a", "b"])
    return wf


@dataclass
class Model:
    """One input node as the model sees it."""

    state: str = "none"  # none | open | provided | done | failed
    key: str | None = None  # the key that works while it is open
    deadline: datetime | None = None
    value: Any = None  # the value given, then the node's output


@dataclass
class Keys:
    dead: list[str] = field(default_factory=list)  # used, revoked or expired: never work again


class Waits(RuleBasedStateMachine):
    """The wait state machine (see the module docstring); subclasses pick the store."""

    def __init__(self) -> None:
        super().__init__()
        self.clock = Clock()
        self._real_now = _wait_entries.now
        _wait_entries.now = self.clock.now  # the clock this machine moves
        self.wf = workflow()
        self.store = self.open_store()
        self.model = {name: Model() for name in INPUTS}
        self.keys = Keys()
        self.ran = False

    def open_store(self) -> Store:
        raise NotImplementedError

    def teardown(self) -> None:
        _wait_entries.now = self._real_now
        self.store.close()

    def works(self, name: str) -> bool:
        wait = self.model[name]
        return wait.state == "open" and not self.expired(wait)

    def expired(self, wait: Model) -> bool:
        return wait.deadline is not None and self.clock.at >= wait.deadline

    def kill(self, wait: Model) -> None:
        if wait.key is not None:
            self.keys.dead.append(wait.key)
            wait.key = None

    # -- rules ----------------------------------------------------------------------------

    @rule()
    def run(self) -> None:
        result = flowdag.run(self.wf, run_id=RUN, store=self.store)
        self.ran = True
        for name in INPUTS:
            wait = self.model[name]
            if wait.state in ("none", "failed"):  # a new wait (a failed node runs again)
                shown = result.waits[name]
                assert shown.key is not None and shown.key not in self.keys.dead
                wait.state, wait.key = "open", shown.key
                wait.deadline = self.clock.at + timedelta(seconds=TIMEOUTS[name])
                assert shown.expires_at == wait.deadline
            elif wait.state == "open" and self.expired(wait):
                self.kill(wait)
                if name in DEFAULTS:
                    wait.state, wait.value = "done", DEFAULTS[name]
                    assert result.explain()[name].code == "timed_out_default"
                else:
                    wait.state = "failed"
                    assert result.errors[name].type == "InputTimeoutError"
            elif wait.state == "open":
                assert result.waits[name].key is None  # a key is shown once
                assert result.waits[name].expires_at == wait.deadline
            elif wait.state == "provided":
                wait.state = "done"
                assert result.explain()[name].code == "new"
        statuses = result.node_status
        assert statuses["side"] is NodeStatus.COMPLETED
        for name in INPUTS:
            wait = self.model[name]
            expected = {
                "open": NodeStatus.WAITING,
                "done": NodeStatus.COMPLETED,
                "failed": NodeStatus.FAILED,
            }[wait.state]
            assert statuses[name] is expected, (name, statuses)
            if wait.state == "done":
                assert result.outputs[name] == wait.value
        states = {self.model[name].state for name in INPUTS}
        if "open" in states:
            assert result.status is RunStatus.SUSPENDED
            assert set(result.waits) == {n for n in INPUTS if self.model[n].state == "open"}
        elif states == {"done"}:
            assert result.status is RunStatus.COMPLETED
            assert result.outputs["end"] == self.model["a"].value["v"] + self.model["b"].value["v"]
        else:
            assert result.status is RunStatus.FAILED
            assert statuses["end"] is NodeStatus.SKIPPED

    @precondition(lambda self: self.ran)
    @rule(name=st.sampled_from(INPUTS), which=st.sampled_from(["current", "dead", "random"]))
    def provide(self, name: str, which: str) -> None:
        wait = self.model[name]
        if which == "current":
            key = wait.key
        elif which == "dead":
            key = self.keys.dead[-1] if self.keys.dead else None
        else:
            key = new_key()
        if key is None:
            return
        value = {"v": len(self.keys.dead) * 10 + INPUTS.index(name)}
        if which == "current" and self.works(name):
            answered = flowdag.provide_input(self.store, key, value)
            assert (answered.node, answered.state) == (name, "provided")
            self.kill(wait)
            wait.state, wait.value = "provided", value
        else:
            with pytest.raises(InputNotFoundError):
                flowdag.provide_input(self.store, key, value)

    @precondition(lambda self: self.ran)
    @rule(name=st.sampled_from(INPUTS))
    def provide_invalid(self, name: str) -> None:
        key = self.model[name].key
        if key is None:
            return
        error = InputValidationError if self.works(name) else InputNotFoundError
        with pytest.raises(error):
            flowdag.provide_input(self.store, key, {"v": "not a number"})

    @precondition(lambda self: self.ran)
    @rule(name=st.sampled_from(INPUTS))
    def reissue(self, name: str) -> None:
        wait = self.model[name]
        if self.works(name):
            fresh = flowdag.reissue_key(self.store, RUN, name)
            assert fresh.key is not None and fresh.key not in self.keys.dead
            self.kill(wait)
            wait.key = fresh.key
        else:
            with pytest.raises(InputNotFoundError):
                flowdag.reissue_key(self.store, RUN, name)

    @rule(seconds=st.sampled_from([1, 49, 50, 100]))  # exact deadlines too
    def advance(self, seconds: int) -> None:
        self.clock.advance(seconds)

    # -- invariants -------------------------------------------------------------------------

    @invariant()
    def waits_agree_with_the_model(self) -> None:
        listed = {w.node: w for w in flowdag.list_waits(self.store)}
        expected = {}
        for name in INPUTS:
            wait = self.model[name]
            if wait.state == "open":
                expected[name] = "expired" if self.expired(wait) else "waiting"
            elif wait.state == "provided":
                expected[name] = "provided"
        assert {name: w.state for name, w in listed.items()} == expected
        for name, w in listed.items():
            assert w.key is None and w.expires_at == self.model[name].deadline
            if w.state == "provided":
                assert w.provided_at is not None


class MemoryWaits(Waits):
    def open_store(self) -> Store:
        return flowdag.MemoryStore()


class LMDBWaits(Waits):
    def open_store(self) -> Store:
        self.root = tempfile.mkdtemp(prefix="flowdag-waits-")
        return flowdag.open_store(f"lmdb://{self.root}")

    def teardown(self) -> None:
        super().teardown()
        shutil.rmtree(self.root, ignore_errors=True)


_SETTINGS = {
    "deadline": None,
    "stateful_step_count": 14,
    "suppress_health_check": [HealthCheck.too_slow, HealthCheck.filter_too_much],
}
MemoryWaits.TestCase.settings = settings(max_examples=30, **_SETTINGS)  # type: ignore[arg-type]
LMDBWaits.TestCase.settings = settings(max_examples=10, **_SETTINGS)  # type: ignore[arg-type]
test_waits_in_memory = MemoryWaits.TestCase
test_waits_on_lmdb = LMDBWaits.TestCase
