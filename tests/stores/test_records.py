"""Names, keys and records that every store refuses alike, with a clear error.

Keys and names no store can keep (text UTF-8 cannot encode) are refused by
every store before anything is written, and a node that sets such a
``ctx.data`` key fails alone. Records of the wrong shape behind valid
checksums (a plain store's, or one forged with the key) are written with the
real codec into real stores: each loads as `CorruptStateError` naming the run
and its file, and ``flowdag store verify`` reports the run and goes on.
"""

from __future__ import annotations

import hashlib
import math
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import pytest
from hypothesis import given
from hypothesis import strategies as st
from msgpack import packb, unpackb

import flowdag
from flowdag.errors import (
    CorruptStateError,
    InvalidArgumentError,
    InvalidArgumentTypeError,
    SerializationError,
)
from flowdag.state import (
    AttemptInfo,
    ErrorInfo,
    NodeRecord,
    NodeState,
    NodeStatus,
    Override,
    Provenance,
    Reason,
    RunState,
)
from flowdag.stores import open_store
from flowdag.stores._crypto import generate_key
from flowdag.stores._provenance import (
    digest_text,
    packed_digest,
    provenance_record,
    read_provenance,
)
from flowdag.stores.base import Store, StoredNode, StoredRun
from flowdag.stores.transfer import verify_run

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
T0 = datetime.fromtimestamp(1_795_000_000, UTC)
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


# -- forged records behind valid checksums ------------------------------------------------

T0_MICROS = 1_795_000_000_000_000
GOOD_META = ["completed", 1, T0_MICROS, T0_MICROS + 42, None]
GOOD_HEADER = {"format": 1, "workflow": "wf", "metadata": {}, "deps": {"a": [], "b": ["a"]}}


def meta_with(field: int, value: Any) -> list[Any]:
    meta = list(GOOD_META)
    meta[field] = value
    return meta


def header_with(**fields: Any) -> dict[str, Any]:
    return {**GOOD_HEADER, **fields}


FORGED_METAS: dict[str, Any] = {
    "started_at 2**62": meta_with(2, 2**62),
    "finished_at -2**62": meta_with(3, -(2**62)),
    "started_at past year 9999": meta_with(2, 253_402_300_800_000_000),
    "started_at a float": meta_with(2, 1.5),
    "started_at a str": meta_with(2, "2026-01-01"),
    "attempts inf": meta_with(1, math.inf),
    "attempts nan": meta_with(1, math.nan),
    "attempts a float": meta_with(1, 1.0),
    "attempts a bool": meta_with(1, True),
    "attempts negative": meta_with(1, -1),
    "attempts 2**64": meta_with(1, 2**64),
    "attempts a str": meta_with(1, "3"),
    "status unknown": meta_with(0, "bogus"),
    "status a list": meta_with(0, ["completed"]),
    "status None": meta_with(0, None),
    "error a str": meta_with(4, "boom"),
    "error too short": meta_with(4, ["E"]),
    "error of ints": meta_with(4, [1, 2, 3]),
    "meta a dict": {"status": "completed"},
    "meta a str of 5": "abcde",
    "meta too short": GOOD_META[:4],
    "meta too long": [*GOOD_META, [1], [["a" * 64, None]], None],
    # The blobs of refs (a 7th field since header format 3).
    "blobs None": [*GOOD_META, [1], None],
    "blobs empty": [*GOOD_META, [1], []],
    "blobs not pairs": [*GOOD_META, [1], ["a" * 64]],
    "blob not a sha256": [*GOOD_META, [1], [["A" * 64, None]]],
    # The provenance (an 8th field since header format 4).
    "provenance a list": [*GOOD_META, [1], None, ["fp"]],
    "provenance unknown key": [*GOOD_META, [1], None, {"fingerprint": "ab"}],
    "provenance fp an int": [*GOOD_META, [1], None, {"fp": 1}],
    "provenance inputs of ints": [*GOOD_META, [1], None, {"in": {"a": 1}}],
    "provenance why of one": [*GOOD_META, [1], None, {"why": ["new"]}],
    "provenance pin a str": [*GOOD_META, [1], None, {"pin": "yes"}],
    "provenance audit time a str": [*GOOD_META, [1], None, {"audit": [["m", "me", "now", ""]]}],
    "provenance audit short": [*GOOD_META, [1], None, {"audit": [["m", "me", T0_MICROS]]}],
    # Since format 5: [code, context, out], code and context msgpack documents.
    "provenance of two": [*GOOD_META, [1], None, [None, None]],
    "provenance code a str": [*GOOD_META, [1], None, ["fp", None, None]],
    "provenance code not msgpack": [*GOOD_META, [1], None, [b"\xc1", None, None]],
    "provenance code trailing bytes": [
        *GOOD_META,
        [1],
        None,
        [packb({"fp": "ab"}) + b"x", None, None],
    ],
    "provenance code a list": [*GOOD_META, [1], None, [packb(["ab"]), None, None]],
    "provenance code empty": [*GOOD_META, [1], None, [packb({}), None, None]],
    "provenance code unknown key": [*GOOD_META, [1], None, [packb({"in": {}}), None, None]],
    "provenance code fp an int": [*GOOD_META, [1], None, [packb({"fp": 1}), None, None]],
    "provenance parts of ints": [*GOOD_META, [1], None, [packb({"parts": {"f": 1}}), None, None]],
    "provenance context why of one": [*GOOD_META, [1], None, [None, packb({"why": ["new"]}), None]],
    "provenance context pin 1": [*GOOD_META, [1], None, [None, packb({"pin": 1}), None]],
    "provenance context audit a dict": [*GOOD_META, [1], None, [None, packb({"audit": {}}), None]],
    "provenance out an int": [*GOOD_META, [1], None, [None, None, 5]],
    "blob expiry a str": [*GOOD_META, [1], [["a" * 64, "soon"]]],
    "meta None": None,
    # The attempt history (a 6th field since header format 2).
    "history None": [*GOOD_META, None],
    "history empty": [*GOOD_META, []],
    "history a dict": [*GOOD_META, {"1": 1}],
    "history own attempt number 0": [*GOOD_META, [0]],
    "history own attempt number a bool": [*GOOD_META, [True]],
    "history own attempt number a float": [*GOOD_META, [1.0]],
    "history own attempt number 2**64": [*GOOD_META, [2**64]],
    "history own attempt not last": [*GOOD_META, [1, 2]],
    "history own attempt of a node with no times": ["failed", 1, None, None, ["E", "m", ""], [1]],
    "history entry too short": [*GOOD_META, [[1, T0_MICROS, T0_MICROS], 2]],
    "history entry a str": [*GOOD_META, ["attempt"]],
    "history entry a tuple-like dict": [*GOOD_META, [{"number": 1}, 2]],
    "history entry number a str": [*GOOD_META, [["1", T0_MICROS, T0_MICROS, None], 2]],
    "history entry number negative": [*GOOD_META, [[-1, T0_MICROS, T0_MICROS, None], 2]],
    "history entry started_at None": [*GOOD_META, [[1, None, T0_MICROS, None], 2]],
    "history entry finished_at a float": [*GOOD_META, [[1, T0_MICROS, 1.5, None], 2]],
    "history entry started_at 2**62": [*GOOD_META, [[1, 2**62, T0_MICROS, None], 2]],
    "history entry error a str": [*GOOD_META, [[1, T0_MICROS, T0_MICROS, "boom"], 2]],
    "history entry error of ints": [*GOOD_META, [[1, T0_MICROS, T0_MICROS, [1, 2, 3]], 2]],
}

FORGED_HEADERS: dict[str, Any] = {
    "deps a list": header_with(deps=["a", "b"]),
    "deps None": header_with(deps=None),
    "deps of a str": header_with(deps={"a": "xy"}),
    "deps of ints": header_with(deps={"a": [1]}),
    "deps keyed by int": header_with(deps={1: []}),
    "workflow None": header_with(workflow=None),
    "workflow a list": header_with(workflow=["wf"]),
    "metadata None": header_with(metadata=None),
    "metadata a list": header_with(metadata=[1]),
    "format True": header_with(format=True),
    "format 7": header_with(format=7),  # a later release's
    "ttl a float": header_with(format=3, ttl_us=1.5),
    "ttl zero": header_with(format=3, ttl_us=0),
    "ttl a str": header_with(format=3, ttl_us="30d"),
    "ttl in format 2": header_with(format=2, ttl_us=1),
    "format 0": header_with(format=0),
    "format missing": {k: v for k, v in GOOD_HEADER.items() if k != "format"},
    "workflow missing": {k: v for k, v in GOOD_HEADER.items() if k != "workflow"},
    "header a list": [1, "wf", {}, {}],
    "header a str": "header",
}


def save_good_runs(store: Store) -> RunState:
    """Runs "before" and "after" around the one to forge; returns their state."""
    state = RunState("x", "wf", metadata={"m": 1})
    state.nodes["a"] = NodeState()
    state.nodes["b"] = NodeState(deps=("a",))
    for run_id in ("before", "after"):
        store.save(RunState(run_id, state.workflow, dict(state.nodes), metadata={"m": 1}))
    return state


def assert_damaged(store: Store, run_id: str) -> None:
    """Every read of the run is CorruptStateError naming the run and where it lives."""
    for read in (store.load, store.load_statuses):
        with pytest.raises(CorruptStateError) as info:
            read(run_id)
        assert f"run '{run_id}'" in str(info.value)
        assert store.describe(run_id) in str(info.value)
    assert verify_run(store, run_id) is not None
    for other in ("before", "after"):  # verify goes on to the next run
        assert verify_run(store, other) is None


@pytest.mark.parametrize("meta", FORGED_METAS.values(), ids=FORGED_METAS.keys())
def test_forged_node_meta_is_damage(store: Store, meta: Any) -> None:
    save_good_runs(store)
    store.save(RunState("forged", "wf", {"a": NodeState(), "b": NodeState(deps=("a",))}))
    # Written through the store's own commit path: valid checksums, sealed with the key.
    store._commit("forged", {"a": StoredNode(store.codec.encode(meta))}, {})
    assert_damaged(store, "forged")


@pytest.mark.parametrize("header", FORGED_HEADERS.values(), ids=FORGED_HEADERS.keys())
def test_forged_run_header_is_damage(store: Store, header: Any) -> None:
    save_good_runs(store)
    meta = store.codec.encode(GOOD_META)
    store._save("forged", StoredRun(store.codec.encode(header), {"a": StoredNode(meta)}))
    assert_damaged(store, "forged")


def test_the_real_records_pass_the_checks(store: Store) -> None:
    # The good records above are the ones the store writes itself.
    state = RunState("r", "wf")
    state.nodes["a"] = NodeState(NodeStatus.COMPLETED, 1, T0, T0 + timedelta(microseconds=42))
    state.nodes["b"] = NodeState(deps=("a",))
    store.save(state)
    meta = store.codec.encode(GOOD_META)
    store._save("copy", StoredRun(store.codec.encode(GOOD_HEADER), {"a": StoredNode(meta)}))
    loaded = store.load("copy")
    assert loaded == RunState("copy", "wf", state.nodes)


def test_provenance_records_round_trip(store: Store) -> None:
    # Every field of a provenance comes back as written, with and without history or blobs.
    full = Provenance(
        "f" * 32,
        "s" * 32,
        {"function": "1" * 32, "helper clean (etl/helpers.py)": "2" * 32},
        "o" * 32,
        {"a": "3" * 32},
        Reason("code_changed", "helper clean in etl/helpers.py changed"),
        True,
        (Override("mark_done", "ana@host", T0, "loaded by hand"),),
    )
    state = RunState("p", "wf")
    state.nodes["a"] = NodeState(NodeStatus.COMPLETED, 1, T0, T0, 7, provenance=Provenance())
    state.nodes["b"] = NodeState(
        NodeStatus.COMPLETED,
        2,
        T0,
        T0,
        "x",
        deps=("a",),
        provenance=full,
        history=(AttemptInfo(1, T0, T0, ErrorInfo("E", "m")), AttemptInfo(2, T0, T0)),
    )
    state.nodes["c"] = NodeState(deps=("b",), provenance=Provenance(output="9" * 32))
    store.save(state)
    assert store.load("p") == state
    assert store.load("p").nodes["b"].provenance == full
    assert store.load_statuses("p").nodes["c"].provenance == Provenance(output="9" * 32)


def test_real_records_with_history_pass_the_checks(store: Store) -> None:
    # What the runner writes for a node that failed once, then succeeded, under
    # the header it writes (format 2); the previous release's header (format 1)
    # above loads too.
    error = ErrorInfo("ValueError", "boom", "Traceback ...")
    first = [1, T0_MICROS - 100, T0_MICROS - 50, ["ValueError", "boom", "Traceback ..."]]
    meta = store.codec.encode([*GOOD_META[:4], None, [first, 2]])
    header = store.codec.encode(header_with(format=2))
    store._save("h", StoredRun(header, {"a": StoredNode(meta)}))
    node = store.load("h").nodes["a"]
    assert node.history == (
        AttemptInfo(1, T0 - timedelta(microseconds=100), T0 - timedelta(microseconds=50), error),
        AttemptInfo(2, T0, T0 + timedelta(microseconds=42)),
    )
    assert node.duration == pytest.approx(92e-6)
    assert store.load_statuses("h").nodes["a"].history == node.history


@pytest.mark.parametrize(
    ("change", "error"),
    [
        ({"workflow": None}, InvalidArgumentTypeError),
        ({"metadata": [1]}, InvalidArgumentTypeError),
        ({"attempts": math.inf}, InvalidArgumentError),
        ({"attempts": True}, InvalidArgumentError),
        ({"attempts": -1}, InvalidArgumentError),
        ({"status": "bogus"}, InvalidArgumentError),
        ({"deps": (1,)}, SerializationError),
        ({"history": [AttemptInfo(1, T0, T0)]}, InvalidArgumentTypeError),
        ({"history": ("attempt",)}, InvalidArgumentTypeError),
        ({"history": (AttemptInfo(0, T0, T0),)}, InvalidArgumentError),
        ({"history": (AttemptInfo(True, T0, T0),)}, InvalidArgumentError),
        ({"history": (AttemptInfo(1.0, T0, T0),)}, InvalidArgumentError),  # type: ignore[arg-type]
        ({"history": (AttemptInfo(1, None, T0),)}, InvalidArgumentTypeError),  # type: ignore[arg-type]
        ({"history": (AttemptInfo(1, T0.replace(tzinfo=None), T0),)}, InvalidArgumentError),
        ({"history": (AttemptInfo(1, T0, T0, "boom"),)}, InvalidArgumentTypeError),  # type: ignore[arg-type]
    ],
    ids=repr,
)
def test_save_refuses_what_a_load_would_call_damaged(
    store: Store, change: dict[str, Any], error: type[Exception]
) -> None:
    state = RunState("r", change.get("workflow", "wf"), metadata=change.get("metadata", {}))
    node = {k: v for k, v in change.items() if k not in ("workflow", "metadata")}
    state.nodes["a"] = NodeState(**{"status": NodeStatus.FAILED, "attempts": 1, **node})
    with pytest.raises(error):
        store.save(state)
    assert store.list_runs() == []


def test_provenance_documents_follow_their_contents_not_the_objects_holding_them() -> None:
    # Packed documents are remembered by what goes into them: a mapping changed in
    # place, or an equal one in another object, packs as its contents say.
    parts = {"function": "a" * 64}
    first = provenance_record(Provenance("f" * 64, "s" * 64, parts, "o" * 64, {"x": "1" * 64}))
    parts["helper h (h.py)"] = "b" * 64
    second = provenance_record(Provenance("f" * 64, "s" * 64, parts, "o" * 64, {"x": "2" * 64}))
    assert read_provenance(first).parts == {"function": "a" * 64}
    assert read_provenance(second).parts == parts
    assert read_provenance(second).inputs == {"x": "2" * 64}
    again = provenance_record(Provenance("f" * 64, "s" * 64, dict(parts), None, {"x": "2" * 64}))
    assert again[:2] == second[:2] and again[2] is None


def test_a_context_is_packed_from_its_contents_when_the_same_objects_come_again() -> None:
    # The last context packed is reused for the next node with equal fields: an
    # inputs dict changed in place since is not equal, and packs as it now says.
    reason = Reason("new", "first run")
    inputs = {"x": "1" * 64}
    first = provenance_record(Provenance("f" * 64, "s" * 64, {}, None, inputs, reason))
    again = provenance_record(Provenance("g" * 64, "s" * 64, {}, None, dict(inputs), reason))
    assert again[1] is first[1]
    inputs["x"] = "2" * 64
    changed = provenance_record(Provenance("f" * 64, "s" * 64, {}, None, inputs, reason))
    assert read_provenance(changed).inputs == {"x": "2" * 64}
    assert read_provenance(first).inputs == {"x": "1" * 64}
    pinned = provenance_record(Provenance("f" * 64, "s" * 64, {}, None, inputs, reason, True))
    assert read_provenance(pinned).manual and not read_provenance(changed).manual


# -- format 6: the provenance's digests as bytes --------------------------------------------

SHA = hashlib.sha256(b"x").hexdigest()


@given(st.text(max_size=70) | st.text("0123456789abcdefABCDEF", min_size=62, max_size=66))
def test_a_digest_reads_back_as_the_text_written(text: str) -> None:
    packed = packed_digest(text)
    assert digest_text(packed) == text
    assert type(packed) is bytes or packed is text


def test_digests_are_kept_as_bytes_and_any_other_text_as_it_is(store: Store) -> None:
    odd = {"upper": SHA.upper(), "short": SHA[:-1], "long": SHA + "0", "x": "x" * 64}
    provenance = Provenance(SHA, SHA[::-1], {"function": SHA, **odd}, SHA, {"a": SHA, **odd})
    code, context, out = provenance_record(provenance)
    assert isinstance(code, bytes) and isinstance(context, bytes)
    documents = unpackb(code), unpackb(context)
    assert documents[0]["fp"] == bytes.fromhex(SHA) and documents[0]["src"] == bytes.fromhex(
        SHA[::-1]
    )
    for mapping in (documents[0]["parts"], documents[1]["in"]):
        assert {k: v for k, v in mapping.items() if type(v) is bytes} in (
            {"function": bytes.fromhex(SHA)},
            {"a": bytes.fromhex(SHA)},
        )
        assert {k: v for k, v in mapping.items() if k in odd} == odd  # text stays text
    assert out == SHA
    state = RunState("d", "wf")
    state.nodes["a"] = NodeState(NodeStatus.COMPLETED, 1, T0, T0, 1, provenance=provenance)
    store.save(state)
    assert store.load("d").nodes["a"].provenance == provenance


def test_format_5_documents_of_hex_text_still_load(store: Store) -> None:
    # A run of the release before, resumed by this one, holds both kinds of documents.
    old = [
        packb({"fp": SHA, "src": SHA, "parts": {"function": SHA}}),
        packb({"in": {"a": SHA}}),
        SHA,
    ]
    new = provenance_record(Provenance(SHA, SHA, {"function": SHA}, SHA, {"a": SHA}))
    assert old[:2] != new[:2]
    header = store.codec.encode(header_with(format=5, deps={"a": [], "b": ["a"]}))
    nodes = {
        name: StoredNode(store.codec.encode([*GOOD_META[:4], None, [1], None, record]))
        for name, record in (("a", old), ("b", new))
    }
    store._save("mixed", StoredRun(header, nodes))
    loaded = store.load("mixed").nodes
    assert loaded["a"].provenance == loaded["b"].provenance
    assert loaded["a"].provenance.inputs == {"a": SHA} and loaded["b"].provenance.fingerprint == SHA


@pytest.mark.parametrize(
    "document",
    [
        {"fp": b"\x01" * 31},
        {"parts": {"function": b"\x01" * 33}},
        {"parts": {"function": 7}},
    ],
    ids=repr,
)
def test_a_digest_that_is_no_digest_is_damage(document: dict[str, Any]) -> None:
    with pytest.raises(CorruptStateError, match="node provenance"):
        read_provenance([packb(document), None, None])
