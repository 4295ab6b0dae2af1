"""Names, keys and records that every store refuses alike, with a clear error.

Keys and names no store can keep (text UTF-8 cannot encode) are refused by
every store before anything is written, and a node that sets such a
``ctx.data`` key fails alone. Records of the wrong shape behind valid
checksums (a plain store's, or one forged with the key) are written with the
real codec into real stores: each loads as `CorruptStateError` naming the run
and its file, and ``flowdag store verify`` reports the run and goes on.
"""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest

import flowdag
from flowdag.errors import SerializationError
from flowdag.state import NodeRecord, NodeState, NodeStatus, RunState
from flowdag.stores import open_store
from flowdag.stores._crypto import generate_key
from flowdag.stores.base import Store

KEY = generate_key()
# (url scheme, encrypted): every store, and each disk store with a key.
STORES = [
    ("memory", False),
    ("lmdb", False),
    ("json", False),
    ("flatbuffers", False),
    ("lmdb", True),
    ("json", True),
    ("flatbuffers", True),
]
BAD_TEXT = ["\ud800", "a\udcffb", "\udfff\U0001f600"]


def store_id(param: tuple[str, bool]) -> str:
    return f"{param[0]}-encrypted" if param[1] else param[0]


@pytest.fixture(params=STORES, ids=store_id)
def store(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[Store]:
    scheme, encrypted = request.param
    url = "memory://" if scheme == "memory" else f"{scheme}://{tmp_path / 'store'}"
    with open_store(url, **({"key": KEY} if encrypted else {})) as opened:
        yield opened


# -- keys and names no store can keep ------------------------------------------------------


@pytest.mark.parametrize("name", BAD_TEXT, ids=ascii)
def test_save_refuses_keys_and_node_names_no_store_can_keep(store: Store, name: str) -> None:
    state = RunState("r", "wf")
    state.data = {"fine": 1, name: 2}
    with pytest.raises(SerializationError, match=r"ctx.data key .* lone surrogate") as info:
        store.save(state)
    assert repr(name) in str(info.value)
    state = RunState("r", "wf")
    state.nodes[name] = NodeState()
    with pytest.raises(SerializationError, match=r"node name .* lone surrogate"):
        store.save(state)
    state = RunState("r", "wf")
    state.data = {1: 2}  # type: ignore[dict-item]
    with pytest.raises(SerializationError, match=r"ctx.data key 1 .* must be a str"):
        store.save(state)
    assert store.list_runs() == []


@pytest.mark.parametrize("name", BAD_TEXT, ids=ascii)
def test_commit_refuses_keys_and_node_names_no_store_can_keep(store: Store, name: str) -> None:
    state = RunState("r", "wf")
    state.nodes["a"] = NodeState()
    store.save(state)
    done = store.codec.encode(1)
    bad_key = NodeRecord("a", NodeStatus.COMPLETED, 1, output=done, data={name: done})
    with pytest.raises(SerializationError, match=r"ctx.data key .* lone surrogate"):
        store.commit("r", [bad_key])
    bad_node = NodeRecord(name, NodeStatus.COMPLETED, 1, output=done)
    with pytest.raises(SerializationError, match=r"node name .* lone surrogate"):
        store.commit("r", [NodeRecord("a", NodeStatus.COMPLETED, 1, output=done), bad_node])
    assert store.load("r") == state  # nothing of either commit was written
    store.commit("r", [NodeRecord("a", NodeStatus.COMPLETED, 1, output=done, data={"k": done})])
    assert store.load("r").data == {"k": 1}


def test_a_node_setting_such_a_key_fails_alone(store: Store) -> None:
    wf = flowdag.Workflow("keys")

    @wf.node
    def bad(ctx: flowdag.Context) -> int:
        ctx.data["fine"] = 1
        ctx.data["\ud800"] = 1
        return 1

    @wf.node
    def first() -> int:
        return 1

    @wf.node(deps=["first"])
    def second(first: int, ctx: flowdag.Context) -> int:
        ctx.data["second"] = first
        return first + 1

    @wf.node(deps=["second"])
    def third(second: int) -> int:
        return second + 1

    result = flowdag.run(wf, run_id="r", store=store, max_workers=1)
    assert result.node_status == {
        "bad": NodeStatus.FAILED,
        "first": NodeStatus.COMPLETED,
        "second": NodeStatus.COMPLETED,
        "third": NodeStatus.COMPLETED,
    }
    error = result.errors["bad"]
    assert error.type == "SerializationError"
    assert "ctx.data key '\\ud800'" in error.message and "lone surrogate" in error.message
    loaded = store.load("r")
    assert loaded.data == {"second": 1}  # the failed node's changes are dropped, all of them
    assert loaded.nodes["bad"].status is NodeStatus.FAILED
    assert loaded.nodes["third"].output == 3
