"""A property test of ctx.kv's staging and commit against a model.

Random nodes each make random get/set/delete/update calls over a few keys, then
succeed, raise, or stage an update whose function raises at commit. The nodes
run one at a time, each after the one before committed, so the model is
sequential: a node sees the committed state plus its own writes; a node that
completes applies its writes in order; one that fails, or whose update fails
at commit, applies none.
"""

from __future__ import annotations

from typing import Any

from hypothesis import given, settings
from hypothesis import strategies as st

import flowdag
from flowdag import Context, NodeStatus, Workflow
from flowdag.executors import ThreadExecutor
from flowdag.stores import MemoryStore

KEYS = ["a", "b", "c"]
BAD: Any = "<an update that raises>"

op = st.one_of(
    st.tuples(st.just("get"), st.sampled_from(KEYS)),
    st.tuples(st.just("set"), st.sampled_from(KEYS), st.integers(-5, 5)),
    st.tuples(st.just("delete"), st.sampled_from(KEYS)),
    st.tuples(st.just("update"), st.sampled_from(KEYS), st.integers(1, 3)),
    st.tuples(st.just("bad_update"), st.sampled_from(KEYS)),
)
node = st.tuples(st.lists(op, max_size=6), st.booleans())  # (calls, raises at the end)


def raise_it(old: Any) -> Any:
    raise ValueError("bad update")


def body(calls: list[tuple[Any, ...]], fails: bool, seen: list[Any]) -> Any:
    def fn(ctx: Context) -> None:
        kv = ctx.kv
        for call in calls:
            kind, key = call[0], call[1]
            if kind == "get":
                seen.append(kv.get(key, default="absent"))
            elif kind == "set":
                kv.set(key, call[2])
            elif kind == "delete":
                seen.append(kv.delete(key))
            elif kind == "update":
                amount = call[2]
                kv.update(key, lambda old, amount=amount: (old or 0) + amount)
            else:
                kv.update(key, raise_it)
        if fails:
            raise RuntimeError("the node fails")

    return fn


def model(
    committed: dict[str, Any], calls: list[tuple[Any, ...]], fails: bool
) -> tuple[list[Any], dict[str, Any] | None]:
    """What the node reads, and the committed state after it (None: it failed)."""
    view = dict(committed)
    seen: list[Any] = []
    for call in calls:
        kind, key = call[0], call[1]
        if kind in ("get", "delete") and view.get(key) is BAD:
            return seen, None  # the read runs the bad function: the node raises
        if kind == "get":
            seen.append(view.get(key, "absent"))
        elif kind == "set":
            view[key] = call[2]
        elif kind == "delete":
            seen.append(key in view)
            view.pop(key, None)
        elif kind == "update":
            view[key] = BAD if view.get(key) is BAD else (view.get(key) or 0) + call[2]
        else:
            view[key] = BAD
    if fails or any(call[0] == "bad_update" for call in calls):
        return seen, None
    return seen, view


@settings(max_examples=60, deadline=None)
@given(st.lists(node, min_size=1, max_size=5))
def test_committed_state_follows_the_model(nodes: list[tuple[list[Any], bool]]) -> None:
    with MemoryStore() as store:
        wf = Workflow("model")
        seen: list[list[Any]] = [[] for _ in nodes]
        for i, (calls, fails) in enumerate(nodes):
            wf.add_node(f"n{i}", body(calls, fails, seen[i]))
        # One at a time, in declaration order, each after the one before committed:
        # the model is sequential. Nodes without deps are promised no more than
        # committed reads; a pool of one thread that queues nothing ahead, on a
        # store that commits before the next start, gives this order.
        with ThreadExecutor(1) as one:
            result = flowdag.run(wf, store=store, executor=one)

        committed: dict[str, Any] = {}
        for i, (calls, fails) in enumerate(nodes):
            expected_seen, after = model(committed, calls, fails)
            assert seen[i] == expected_seen, f"node n{i}"
            status = result.nodes[f"n{i}"].status
            assert status is (NodeStatus.FAILED if after is None else NodeStatus.COMPLETED)
            if after is not None:
                committed = after
        assert store.kv().items() == sorted(committed.items())
