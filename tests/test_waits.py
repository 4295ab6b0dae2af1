"""Durable waits for input on every store kind, encrypted ones included (issue 15).

Each test runs the purchase-order workflow of `tests.waits_workflows`
(draft -> approval, an input node -> send, and audit beside them) against a
store of each kind: a run suspends at the approval, a value is given with
`flowdag.provide_input`, a later run continues. Deadlines are crossed by
moving the waits' clock (the ``clock`` fixture), never by sleeping. Kill -9
while waiting or providing, and the CLI, are tested elsewhere.
"""

from __future__ import annotations

import logging
from collections.abc import Iterator
from datetime import timedelta
from pathlib import Path
from typing import Any

import pytest

import flowdag
from flowdag import (
    InputNotFoundError,
    InputValidationError,
    InvalidArgumentTypeError,
    NodeStatus,
    Ref,
    RunStatus,
    Wait,
    Workflow,
)
from flowdag.stores.base import Store
from flowdag.stores.transfer import copy_run, copy_tables
from tests.waits_workflows import (
    APPROVAL,
    CALLS,
    DISK_KINDS,
    ENCRYPTED,
    KINDS,
    NO,
    PROMPT_TEXT,
    YES,
    Clock,
    Opened,
    all_bytes,
    ask,
    audit,
    clock,
    draft,
    opener,
    po_workflow,
    send,
)

__all__ = ["clock"]  # a fixture

RUN = "po-17"
# For what does not depend on the store: a plain, a disk and an encrypted one.
SOME_KINDS = pytest.mark.parametrize("kind", ["memory", "lmdb", "json-encrypted"], indirect=True)


@pytest.fixture(params=KINDS)
def kind(request: pytest.FixtureRequest, tmp_path: Path) -> Opened:
    return opener(request.param, tmp_path)


@pytest.fixture
def store(kind: Opened) -> Iterator[Store]:
    with kind.open() as opened:
        yield opened


@pytest.fixture(autouse=True)
def _calls() -> Iterator[None]:
    CALLS.clear()
    yield
    CALLS.clear()


def suspend(store: Store, wf: Workflow | None = None, **options: Any) -> Wait:
    """Run until the approval waits; its wait, with its key."""
    result = flowdag.run(wf or po_workflow(), run_id=RUN, store=store, **options)
    assert result.status is RunStatus.SUSPENDED, result.errors
    wait = result.waits["approval"]
    assert wait.key is not None
    return wait


# -- suspend, provide, resume -------------------------------------------------------------


def test_suspend_provide_resume(store: Store) -> None:
    result = flowdag.run(po_workflow(), run_id=RUN, store=store)
    assert result.status is RunStatus.SUSPENDED
    # The sibling completed during the wait; downstream of the input waits too.
    assert result.node_status == {
        "draft": NodeStatus.COMPLETED,
        "audit": NodeStatus.COMPLETED,
        "approval": NodeStatus.WAITING,
        "send": NodeStatus.PENDING,
    }
    assert sorted(CALLS) == ["ask", "audit", "draft"]
    wait = result.waits["approval"]
    assert set(result.waits) == {"approval"}
    assert wait.key is not None and wait.key.startswith("fdw_") and len(wait.key) >= 4 + 22
    assert "fdw_" not in repr(wait)  # shown once, never in a repr
    assert (wait.run_id, wait.node, wait.schema) == (RUN, "approval", APPROVAL)
    assert wait.prompt == {"text": PROMPT_TEXT, "total": 120}
    assert wait.expires_at is None and not wait.has_default and wait.state == "waiting"
    # The stored run has the node pending: the waits table says it waits.
    assert store.load(RUN).nodes["approval"].status is NodeStatus.PENDING
    [listed] = flowdag.list_waits(store)
    assert listed.key is None and listed.node == "approval" and listed.state == "waiting"
    assert flowdag.list_waits(store, RUN) == [listed]
    assert flowdag.list_waits(store, "another-run") == []

    answered = flowdag.provide_input(store, wait.key, YES)
    assert answered.key is None and answered.provided_at is not None
    assert answered.state == "provided"
    assert [w.state for w in flowdag.list_waits(store)] == ["provided"]
    assert "send" not in CALLS  # nothing runs until the run is run again

    CALLS.clear()
    done = flowdag.run(po_workflow(), run_id=RUN, store=store)
    assert done.status is RunStatus.COMPLETED and done.waits == {}
    assert done.outputs["approval"] == YES and type(done.outputs["approval"]) is dict
    assert done.outputs["send"] == "PO-1 sent"
    assert CALLS == ["send"]  # draft and audit reused, no prompt asked again
    reason = done.explain()["approval"]
    assert reason.code == "new" and reason.detail.startswith("input given at ")
    assert flowdag.list_waits(store) == []
    assert store.load(RUN).nodes["approval"].output == YES
    with pytest.raises(InputNotFoundError):  # the node completed: no key works
        flowdag.provide_input(store, wait.key, YES)


def test_invalid_value_is_rejected_and_a_corrected_one_accepted(store: Store) -> None:
    wait = suspend(store)
    assert wait.key is not None
    with pytest.raises(InputValidationError) as caught:
        flowdag.provide_input(store, wait.key, {"approved": "yes", "extra": 1})
    fields = {problem.field for problem in caught.value.fields}
    assert {"approved", "by"} <= fields  # a wrong type, a missing field: each named
    for name in ("approved", "by"):
        assert name in str(caught.value)
    with pytest.raises(InputValidationError):
        flowdag.provide_input(store, wait.key, "not an object")
    with pytest.raises(InvalidArgumentTypeError):  # not JSON at all
        flowdag.provide_input(store, wait.key, {"approved": object()})
    [listed] = flowdag.list_waits(store)
    assert listed.state == "waiting"  # the wait stays open
    flowdag.provide_input(store, wait.key, NO)
    done = flowdag.run(po_workflow(), run_id=RUN, store=store)
    assert done.ok and done.outputs["approval"] == NO
    assert done.outputs["send"] == "PO-1 dropped"


def test_a_key_works_once_and_a_wrong_key_never(store: Store) -> None:
    wait = suspend(store)
    assert wait.key is not None
    for wrong in ("fdw_" + "A" * 32, "", wait.key[:-1], wait.key + "x"):
        with pytest.raises(InputNotFoundError):
            flowdag.provide_input(store, wrong, YES)
    with pytest.raises(InvalidArgumentTypeError):
        flowdag.provide_input(store, 42, YES)  # type: ignore[arg-type]
    flowdag.provide_input(store, wait.key, YES)
    with pytest.raises(InputNotFoundError):
        flowdag.provide_input(store, wait.key, NO)  # used
    with pytest.raises(InputNotFoundError):  # answered: no new key for it either
        flowdag.reissue_key(store, RUN, "approval")
    assert flowdag.run(po_workflow(), run_id=RUN, store=store).outputs["approval"] == YES


def test_reissue_revokes_the_old_key(store: Store) -> None:
    wait = suspend(store)
    assert wait.key is not None
    fresh = flowdag.reissue_key(store, RUN, "approval")
    assert fresh.key is not None and fresh.key != wait.key
    assert (fresh.node, fresh.prompt, fresh.started_at) == (
        "approval",
        wait.prompt,
        wait.started_at,
    )
    with pytest.raises(InputNotFoundError):
        flowdag.provide_input(store, wait.key, YES)
    again = flowdag.reissue_key(store, RUN, "approval")
    assert again.key is not None
    with pytest.raises(InputNotFoundError):
        flowdag.provide_input(store, fresh.key, YES)
    flowdag.provide_input(store, again.key, YES)
    for run_id, node in ((RUN, "send"), (RUN, "nope"), ("other", "approval")):
        with pytest.raises(InputNotFoundError):
            flowdag.reissue_key(store, run_id, node)
    assert flowdag.run(po_workflow(), run_id=RUN, store=store).ok


# -- deadlines ----------------------------------------------------------------------------


def test_expiry_with_a_default(store: Store, clock: Clock) -> None:
    wf = po_workflow(timeout=60, default=NO)
    wait = suspend(store, wf)
    assert wait.key is not None
    assert wait.expires_at == clock.at + timedelta(seconds=60)
    assert wait.has_default
    clock.advance(59)
    assert flowdag.list_waits(store)[0].state == "waiting"
    clock.advance(1)
    assert flowdag.list_waits(store)[0].state == "expired"
    with pytest.raises(InputNotFoundError, match="expired"):
        flowdag.provide_input(store, wait.key, YES)
    with pytest.raises(InputNotFoundError, match="expired"):
        flowdag.reissue_key(store, RUN, "approval")
    done = flowdag.run(wf, run_id=RUN, store=store)
    assert done.ok and done.outputs["approval"] == NO
    assert done.outputs["send"] == "PO-1 dropped"
    reason = done.explain()["approval"]
    assert reason.code == "timed_out_default" and "deadline" in reason.detail
    assert flowdag.list_waits(store) == []
    with pytest.raises(InputNotFoundError):
        flowdag.provide_input(store, wait.key, YES)


def test_expiry_without_a_default_fails_then_a_new_wait_starts(store: Store, clock: Clock) -> None:
    wf = po_workflow(timeout=60)
    first = suspend(store, wf)
    clock.advance(61)
    failed = flowdag.run(wf, run_id=RUN, store=store)
    assert failed.status is RunStatus.FAILED
    assert failed.node_status["approval"] is NodeStatus.FAILED
    assert failed.node_status["send"] is NodeStatus.SKIPPED
    assert failed.node_status["audit"] is NodeStatus.COMPLETED
    assert failed.errors["approval"].type == "InputTimeoutError"
    assert "deadline" in failed.errors["approval"].message
    assert failed.waits == {} and flowdag.list_waits(store) == []
    assert "send" not in CALLS
    # A later run asks again: a new wait, a new key, a new deadline.
    second = suspend(store, wf)
    assert second.key is not None and second.key != first.key
    assert second.expires_at is not None and first.expires_at is not None
    assert second.expires_at > first.expires_at
    assert first.key is not None
    with pytest.raises(InputNotFoundError):
        flowdag.provide_input(store, first.key, YES)
    flowdag.provide_input(store, second.key, YES)
    assert flowdag.run(wf, run_id=RUN, store=store).outputs["send"] == "PO-1 sent"


@pytest.mark.parametrize("kind_name", DISK_KINDS)
def test_the_deadline_holds_across_restarts(kind_name: str, tmp_path: Path, clock: Clock) -> None:
    kind = opener(kind_name, tmp_path)
    wf = po_workflow(timeout=3600, default=NO)
    results = []
    for _ in range(3):  # three processes' worth of runs: each opens the store afresh
        with kind.open() as store:
            results.append(flowdag.run(wf, run_id=RUN, store=store))
            assert len(flowdag.list_waits(store)) == 1
        clock.advance(600)
    waits = [result.waits["approval"] for result in results]
    assert all(result.status is RunStatus.SUSPENDED for result in results)
    assert len({wait.expires_at for wait in waits}) == 1  # fixed when the wait started
    assert len({wait.started_at for wait in waits}) == 1
    assert waits[0].key is not None
    assert [wait.key for wait in waits[1:]] == [None, None]  # no new key: shown once
    assert CALLS.count("ask") == 1
    with kind.open() as store:
        flowdag.provide_input(store, waits[0].key, YES)  # the first key still works
        assert flowdag.run(wf, run_id=RUN, store=store).outputs["approval"] == YES


# -- a value given while the run goes on --------------------------------------------------

STORES: dict[str, Store] = {}  # run id -> the store the answering node writes to


def answer_it() -> str:
    """A node that answers its run's wait itself, while the run goes on."""
    store = STORES[RUN]
    fresh = flowdag.reissue_key(store, RUN, "approval")  # the key is only in the result
    assert fresh.key is not None
    flowdag.provide_input(store, fresh.key, YES)
    return "answered"


def prep() -> int:
    return 1


def test_a_value_given_during_the_run_is_taken_by_that_run(store: Store) -> None:
    wf = Workflow("po")
    # The approval has no deps: it waits from the first dispatch, before any attempt ends.
    wf.add_input("approval", schema=APPROVAL, prompt=lambda: PROMPT_TEXT)
    wf.add_node("prep", prep)
    wf.add_node("answer", answer_it, deps=["prep"])
    wf.add_node("send", lambda approval: approval["by"], deps=["approval"])
    STORES[RUN] = store
    try:
        result = flowdag.run(wf, run_id=RUN, store=store)
    finally:
        STORES.clear()
    assert result.status is RunStatus.COMPLETED, result.errors
    assert result.outputs["approval"] == YES and result.outputs["send"] == "ana"
    assert result.waits == {} and flowdag.list_waits(store) == []


@SOME_KINDS
def test_waiting_is_reported_once_per_run(store: Store) -> None:
    events: list[tuple[str, str]] = []
    flowdag.run(
        po_workflow(), run_id=RUN, store=store, on_event=lambda e: events.append((e.kind, e.node))
    )
    assert events.count(("node_waiting", "approval")) == 1
    events.clear()
    flowdag.run(
        po_workflow(), run_id=RUN, store=store, on_event=lambda e: events.append((e.kind, e.node))
    )
    assert events == [("node_waiting", "approval")]


# -- code changed since the wait started --------------------------------------------------


@SOME_KINDS
def test_a_changed_schema_keeps_the_stored_one(
    store: Store, caplog: pytest.LogCaptureFixture
) -> None:
    wait = suspend(store)
    assert wait.key is not None
    stricter = {**APPROVAL, "required": ["approved", "by", "budget"]}
    stricter["properties"] = {**APPROVAL["properties"], "budget": {"type": "integer"}}  # type: ignore[dict-item]
    # provide_input checks against the stored schema: it needs no workflow code.
    flowdag.provide_input(store, wait.key, YES)
    with caplog.at_level(logging.WARNING, logger="flowdag"):
        done = flowdag.run(po_workflow(schema=stricter), run_id=RUN, store=store)
    assert done.ok and done.outputs["approval"] == YES  # fits the stored schema, not the new
    [warning] = [r for r in caplog.records if "new schema" in r.getMessage()]
    assert warning.levelno == logging.WARNING and "approval" in warning.getMessage()


@SOME_KINDS
def test_a_changed_schema_checks_values_against_the_stored_one(store: Store) -> None:
    wait = suspend(store)
    assert wait.key is not None
    looser = {"type": "object"}
    flowdag.run(po_workflow(schema=looser), run_id=RUN, store=store)  # the wait is unchanged
    [listed] = flowdag.list_waits(store)
    assert listed.schema == APPROVAL
    with pytest.raises(InputValidationError):
        flowdag.provide_input(store, wait.key, {"anything": 1})


@SOME_KINDS
def test_a_wait_whose_node_was_marked_done_is_dropped(store: Store) -> None:
    wait = suspend(store)
    assert wait.key is not None
    flowdag.mark_done(store, RUN, "approval", output=NO, reason="approved on paper")
    # Its key stops working with the override itself, not only at the next run.
    assert flowdag.list_waits(store) == []
    with pytest.raises(InputNotFoundError):
        flowdag.provide_input(store, wait.key, YES)
    done = flowdag.run(po_workflow(), run_id=RUN, store=store)
    assert done.ok and done.outputs["send"] == "PO-1 dropped"
    assert flowdag.list_waits(store) == []
    with pytest.raises(InputNotFoundError):
        flowdag.provide_input(store, wait.key, YES)


@SOME_KINDS
def test_a_wait_whose_node_was_removed_is_dropped(store: Store) -> None:
    wait = suspend(store)
    assert wait.key is not None
    wf = Workflow("po")
    wf.add_node("draft", draft)
    wf.add_node("audit", lambda: "audited")
    done = flowdag.run(wf, run_id=RUN, store=store, allow_changes=True)
    assert done.ok
    assert flowdag.list_waits(store) == []
    with pytest.raises(InputNotFoundError):
        flowdag.provide_input(store, wait.key, YES)


# -- prompts ------------------------------------------------------------------------------


class PromptBroken(Exception):
    pass


def broken_prompt(draft: dict[str, Any]) -> str:
    raise PromptBroken(f"no template for {draft['id']}")


@SOME_KINDS
def test_a_prompt_that_raises_fails_the_node(store: Store) -> None:
    result = flowdag.run(po_workflow(prompt=broken_prompt), run_id=RUN, store=store)
    assert result.status is RunStatus.FAILED and result.waits == {}
    assert result.errors["approval"].type == "PromptBroken"
    assert "no template for PO-1" in result.errors["approval"].message
    assert result.node_status["send"] is NodeStatus.SKIPPED
    assert flowdag.list_waits(store) == []
    # Fixed, the next run asks.
    assert suspend(store).prompt == {"text": PROMPT_TEXT, "total": 120}


@SOME_KINDS
def test_a_prompt_that_is_not_json_fails_the_node(store: Store) -> None:
    result = flowdag.run(po_workflow(prompt=lambda draft: {1, 2}), run_id=RUN, store=store)
    assert result.status is RunStatus.FAILED
    error = result.errors["approval"]
    assert "approval" in error.message and "prompt" in error.message, error
    assert flowdag.list_waits(store) == []


# -- large values, convert, what is on the disk -------------------------------------------


def test_a_large_input_is_kept_by_reference(store: Store) -> None:
    schema = {**APPROVAL, "additionalProperties": {"type": "array"}}
    wf = po_workflow(schema=schema, prompt=None)
    wait = suspend(store, wf, inline_limit=1024)
    assert wait.key is not None and wait.prompt is None
    big = {**YES, "lines": [f"line {i} of the order" for i in range(500)]}
    flowdag.provide_input(store, wait.key, big)
    done = flowdag.run(wf, run_id=RUN, store=store, inline_limit=1024)
    assert done.status is RunStatus.COMPLETED, done.errors
    assert type(done.nodes["approval"].output) is Ref
    assert done.outputs["approval"] == big
    stored = store.load(RUN).nodes["approval"].output
    assert type(stored) is Ref and stored.load() == big


@pytest.mark.parametrize(
    ("source", "target"),
    [
        ("memory", "json"),
        ("lmdb", "flatbuffers-encrypted"),
        ("json-encrypted", "lmdb"),
        ("flatbuffers", "lmdb-encrypted"),
        ("lmdb-encrypted", "memory"),
    ],
)
def test_convert_copies_open_waits(source: str, target: str, tmp_path: Path) -> None:
    with opener(source, tmp_path).open() as src:
        wait = suspend(src)
        assert wait.key is not None
        dst_kind = opener(target, tmp_path / "converted")
        dst = dst_kind.open()
        with dst:
            copy_run(src, dst, RUN)
            copy_tables(src, dst)
            [listed] = flowdag.list_waits(dst)
            assert (listed.node, listed.prompt, listed.schema) == (
                "approval",
                wait.prompt,
                APPROVAL,
            )
            flowdag.provide_input(dst, wait.key, YES)  # the same key answers the copy
            done = flowdag.run(po_workflow(), run_id=RUN, store=dst)
            assert done.outputs["send"] == "PO-1 sent"
        [still] = flowdag.list_waits(src)  # the source is untouched
        assert still.state == "waiting"


@pytest.mark.parametrize("kind_name", [k for k in KINDS if k != "memory"])
def test_no_key_on_the_disk(kind_name: str, tmp_path: Path) -> None:
    kind = opener(kind_name, tmp_path)
    with kind.open() as store:
        first = suspend(store)
        fresh = flowdag.reissue_key(store, RUN, "approval")
        keys = [first.key, fresh.key]
    assert kind.root is not None
    disk = all_bytes(kind.root)
    for key in keys:
        assert key is not None and key.encode() not in disk
    if kind_name in ENCRYPTED:  # nor the prompt, nor the schema (run ids may show: README)
        for plain in (PROMPT_TEXT.encode(), b"additionalProperties", b"minLength"):
            assert plain not in disk, f"{plain!r} is on the disk in clear"
    else:
        assert PROMPT_TEXT.encode() in disk  # the test sees the table's bytes
    with kind.open() as store:
        assert fresh.key is not None
        flowdag.provide_input(store, fresh.key, YES)
        assert flowdag.run(po_workflow(), run_id=RUN, store=store).ok
    disk = all_bytes(kind.root)
    for key in keys:
        assert key is not None and key.encode() not in disk


@SOME_KINDS
def test_keys_stay_out_of_logs(store: Store, caplog: pytest.LogCaptureFixture) -> None:
    with caplog.at_level(logging.DEBUG):
        wait = suspend(store)
        assert wait.key is not None
        flowdag.provide_input(store, wait.key, YES)
        flowdag.run(po_workflow(), run_id=RUN, store=store)
    assert wait.key not in caplog.text


@SOME_KINDS
def test_an_invalidated_waiting_node_asks_again_with_a_new_key(store: Store) -> None:
    wait = suspend(store)
    assert wait.key is not None
    flowdag.invalidate(store, RUN, "approval", reason="the order changed")
    assert flowdag.list_waits(store) == []
    with pytest.raises(InputNotFoundError):
        flowdag.provide_input(store, wait.key, YES)
    again = suspend(store)
    assert again.key != wait.key


def test_deleting_a_run_ends_its_waits(store: Store) -> None:
    wait = suspend(store)
    assert wait.key is not None
    assert store.delete(RUN)
    assert flowdag.list_waits(store) == []
    with pytest.raises(InputNotFoundError):
        flowdag.provide_input(store, wait.key, YES)


def test_a_new_run_under_a_deleted_runs_id_asks_again(store: Store) -> None:
    old = suspend(store)
    assert old.key is not None
    flowdag.provide_input(store, old.key, YES)
    assert store.delete(RUN)
    # The deleted run's answer is not the new run's: it gets its own wait.
    new = suspend(store)
    assert new.key is not None and new.key != old.key and new.provided_at is None
    assert [w.state for w in flowdag.list_waits(store)] == ["waiting"]
    flowdag.provide_input(store, new.key, NO)
    assert flowdag.run(po_workflow(), run_id=RUN, store=store).outputs["approval"] == NO


# -- input nodes among others -------------------------------------------------------------


def test_an_input_after_an_input_waits_in_turn() -> None:
    store = flowdag.MemoryStore()
    wf = Workflow("chain")
    wf.add_input("first", schema={"type": "integer"})
    wf.add_input("second", schema={"type": "integer"}, deps=["first"], prompt=lambda first: first)
    wf.add_node("total", lambda first, second: first + second, deps=["first", "second"])
    one = flowdag.run(wf, run_id=RUN, store=store)
    assert set(one.waits) == {"first"} and one.node_status["second"] is NodeStatus.PENDING
    assert one.waits["first"].key is not None
    flowdag.provide_input(store, one.waits["first"].key, 2)
    two = flowdag.run(wf, run_id=RUN, store=store)  # first completes, second starts waiting
    assert two.status is RunStatus.SUSPENDED and set(two.waits) == {"second"}
    wait = two.waits["second"]
    assert wait.key is not None and wait.prompt == 2
    flowdag.provide_input(store, wait.key, 40)
    assert flowdag.run(wf, run_id=RUN, store=store).outputs["total"] == 42


def bigger_draft() -> dict[str, Any]:
    return {"id": "PO-1", "total": 990}


def test_a_changed_order_is_asked_again() -> None:
    store = flowdag.MemoryStore()
    first = suspend(store)
    assert first.key is not None
    flowdag.provide_input(store, first.key, YES)
    assert flowdag.run(po_workflow(), run_id=RUN, store=store).ok
    # The draft's code and output change: the approval given was for another order.
    changed = Workflow("po")
    changed.add_node("draft", bigger_draft)
    changed.add_node("audit", audit)
    changed.add_input("approval", deps=["draft"], schema=APPROVAL, prompt=ask)
    changed.add_node("send", send, deps=["draft", "approval"])
    again = flowdag.run(changed, run_id=RUN, store=store)
    assert again.status is RunStatus.SUSPENDED
    wait = again.waits["approval"]
    assert wait.key is not None and wait.prompt["total"] == 990
    flowdag.provide_input(store, wait.key, NO)
    done = flowdag.run(changed, run_id=RUN, store=store)
    assert done.outputs["send"] == "PO-1 dropped"


def test_a_bad_run_id_is_refused_before_any_table_is_read() -> None:
    with pytest.raises(flowdag.InvalidRunIdError):
        flowdag.reissue_key("memory://", "a\0b", "approval")
    with pytest.raises(flowdag.InvalidRunIdError):
        flowdag.list_waits("memory://", run_id="../up")


def test_an_input_node_takes_dep_names_not_a_mapping() -> None:
    wf = Workflow("w")
    wf.add_node("draft", lambda: 1)
    with pytest.raises(flowdag.InvalidArgumentTypeError, match="not a mapping"):
        wf.add_input("ok", deps={"d": "draft"}, schema={"type": "boolean"})
