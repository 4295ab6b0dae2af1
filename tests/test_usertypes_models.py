"""attrs classes and pydantic models as user types: every store, exactly, no code run on
decode, refusals that say how to allow them, no import of attrs or pydantic unless used."""

from __future__ import annotations

import contextlib
import os
import subprocess
import sys
from pathlib import Path
from typing import Any

import attrs
import msgpack
import pydantic
import pytest

import flowdag
from flowdag._usertypes import UserValue, neutral_user_types
from flowdag.codec import Codec
from flowdag.errors import CorruptStateError, SerializationError
from flowdag.json_codec import JSONCodec
from flowdag.stores import open_store
from tests import usertypes_models as models
from tests.test_codec import seal
from tests.test_usertypes import exactly
from tests.usertypes_values import MODEL_VALUES

ROOT = Path(__file__).resolve().parents[1]
flowdag.register_types("tests.usertypes_models")
CODECS = {"msgpack": Codec(), "json": JSONCodec()}
STORES = ["memory", "lmdb", "json", "flatbuffers"]


class NotAllowed:
    """Types of this test module, which no test registers."""

    @attrs.define
    class Record:
        x: int

    class Model(pydantic.BaseModel):
        x: int


def _url(kind: str, tmp_path: Path) -> str:
    return "memory://" if kind == "memory" else f"{kind}://{tmp_path / kind}"


@pytest.mark.parametrize("kind", STORES)
@pytest.mark.parametrize("name", sorted(MODEL_VALUES))
def test_every_store_gives_the_value_back_exactly(kind: str, name: str, tmp_path: Path) -> None:
    # Through a real run (the commit path) and back with load, output and ctx.data alike.
    value = MODEL_VALUES[name]
    wf = flowdag.Workflow("models")

    @wf.node()
    def make(ctx: flowdag.Context) -> Any:
        ctx.data["kept"] = value
        return value

    with open_store(_url(kind, tmp_path)) as store:
        result = flowdag.run(wf, run_id="r", store=store)
        assert result.status == "completed", result.nodes["make"].error
        loaded = store.load("r")
    assert exactly(loaded.nodes["make"].output, value), (value, loaded.nodes["make"].output)
    assert exactly(loaded.data["kept"], value)


@pytest.mark.parametrize("codec", CODECS.values(), ids=CODECS.keys())
def test_decode_runs_none_of_the_class_code(codec: Any) -> None:
    values = [models.Legacy(1), MODEL_VALUES["pydantic_nested"]]
    del models.POST_INITS[:]
    for value in values:
        assert exactly(codec.decode(codec.encode(value)), value)
    # __attrs_post_init__ and model_post_init ran for the originals only, and no
    # validator ran either: model_construct's int price comes back an int.
    assert models.POST_INITS == []
    raw = codec.decode(codec.encode(MODEL_VALUES["pydantic_constructed"]))
    assert type(raw.price) is int


def test_layout() -> None:
    encode = JSONCodec().encode
    assert encode(models.Sealed(1, None)) == (
        b'{"$user":["tests.usertypes_models:Sealed",{"code":1,"inner":null}]}'
    )
    assert encode(models.Legacy(2)) == (
        b'{"$user":["tests.usertypes_models:Legacy",{"x":2,"_hidden":0,"total":2}]}'
    )
    # A model validated with every field given: just its fields.
    assert encode(models.FrozenModel(key="k", pair=(1, 2))) == (
        b'{"$user":["tests.usertypes_models:FrozenModel",{"key":"k","pair":{"$tuple":[1,2]}}]}'
    )
    # The rest of a model's state only when it is not the default.
    assert encode(MODEL_VALUES["pydantic_extra"]) == (
        b'{"$user":["tests.usertypes_models:Loose",{"a":1,"_fields_set":["a","b"],'
        b'"_extra":{"b":[2,{"$set":[3]}]}}]}'
    )
    assert encode(MODEL_VALUES["pydantic_private"]).endswith(b'{"a":1,"_private":{"_seen":5}}]}')


@pytest.mark.parametrize("codec", CODECS.values(), ids=CODECS.keys())
@pytest.mark.parametrize("value", [NotAllowed.Record(1), NotAllowed.Model(x=1)])
def test_a_type_not_allowed_is_refused_saying_how_to_allow_it(codec: Any, value: Any) -> None:
    with pytest.raises(SerializationError) as info:
        codec.encode({"k": value})
    message = str(info.value)
    what = "an attrs class" if attrs.has(type(value)) else "a pydantic model"
    assert f"type '{type(value).__qualname__}' (at ['k']): {what} of a type not allowed" in message
    assert "flowdag.register_types('tests.test_usertypes_models')" in message
    assert f"flowdag.register_types({type(value).__qualname__})" in message


@pytest.mark.parametrize("kind", STORES)
def test_a_node_returning_a_model_not_allowed_fails_saying_how(kind: str, tmp_path: Path) -> None:
    wf = flowdag.Workflow("refused")
    wf.add_node("ok", lambda: models.Box("b", []))
    wf.add_node("record", lambda: NotAllowed.Record(1))
    wf.add_node("model", lambda: [NotAllowed.Model(x=1)])
    with open_store(_url(kind, tmp_path)) as store:
        result = flowdag.run(wf, run_id="r", store=store)
    assert result.outputs["ok"] == models.Box("b", [])
    for name in ("record", "model"):
        error = result.nodes[name].error
        assert error is not None and error.type == "SerializationError"
        assert "flowdag.register_types('tests.test_usertypes_models')" in error.message


def test_classes_can_be_registered_as_themselves() -> None:
    @attrs.frozen
    class LocalRecord:
        v: int

    class LocalModel(pydantic.BaseModel):
        v: int

    flowdag.register_types(LocalRecord, LocalModel)
    for codec in CODECS.values():
        values = [LocalRecord(1), LocalModel(v=2)]
        assert exactly(codec.decode(codec.encode(values)), values)


PREFIX = "tests.usertypes_models:"
CRAFTED = {
    "attrs_missing_field": ["Box", {"label": "x", "items": []}],
    "attrs_reordered": ["Box", {"items": [], "label": "x", "where": None}],
    "attrs_as_list": ["Sealed", [1, None]],
    "model_not_a_dict": ["FrozenModel", ["k", [1, 2]]],
    "model_missing_field": ["FrozenModel", {"key": "k"}],
    "model_extra_field": ["FrozenModel", {"key": "k", "pair": [1, 2], "other": 1}],
    "model_unknown_state": ["FrozenModel", {"key": "k", "pair": [1, 2], "_dict": {}}],
    "model_state_reordered": ["Loose", {"a": 1, "_extra": {"b": 2}, "_fields_set": ["a", "b"]}],
    "model_fields_set_default": [
        "FrozenModel",
        {"key": "k", "pair": [1, 2], "_fields_set": ["key", "pair"]},
    ],
    "model_fields_set_unsorted": [
        "Item",
        {"name": "n", "price": 1, "tags": [], "_fields_set": ["price", "name"]},
    ],
    "model_fields_set_unknown": [
        "Item",
        {"name": "n", "price": 1, "tags": [], "_fields_set": ["zzz"]},
    ],
    "model_fields_set_not_str": ["Item", {"name": "n", "price": 1, "tags": [], "_fields_set": [1]}],
    "model_extra_not_dict": ["Loose", {"a": 1, "_extra": [1]}],
    "model_extra_key_not_str": ["Loose", {"a": 1, "_extra": {1: 2}}],
    "model_private_unknown": ["WithPrivate", {"a": 1, "_private": {"_other": 1}}],
    "root_with_extra": ["Ids", {"root": [], "_extra": {}}],
}


@pytest.mark.parametrize("payload", CRAFTED.values(), ids=CRAFTED.keys())
def test_crafted_payloads_are_refused(payload: Any) -> None:
    payload = [PREFIX + payload[0], payload[1]]
    with pytest.raises(CorruptStateError):
        Codec().decode(seal(msgpack.packb(msgpack.ExtType(26, msgpack.packb(payload)))))


@pytest.mark.parametrize("codec", CODECS.values(), ids=CODECS.keys())
def test_item_limits_look_inside_user_types(codec: Any) -> None:
    # A value the same codec could not load back is refused when it is stored.
    small = type(codec)(max_items=10)
    for value in (
        models.Box("b", list(range(11))),
        models.Item(name="n", price=1, tags={str(i) for i in range(11)}),
        models.Point(list(range(11)), 0),
        UserValue(PREFIX + "Point", {"x": list(range(11)), "y": 0}),
    ):
        with pytest.raises(SerializationError, match="over max_items=10"):
            small.encode(value)
        with pytest.raises(CorruptStateError):
            small.decode(codec.encode(value))


@pytest.mark.parametrize("codec", CODECS.values(), ids=CODECS.keys())
def test_neutral_decoding_gives_name_and_data(codec: Any) -> None:
    blob = codec.encode(
        [models.Box("b", [models.Color.RED]), models.Pair(1), MODEL_VALUES["pydantic_extra"]]
    )
    with neutral_user_types():
        box, pair, loose = codec.decode(blob)
    assert box == UserValue(
        PREFIX + "Box",
        {"label": "b", "items": [UserValue(PREFIX + "Color", "RED")], "where": None},
    )
    assert repr(box) == "Box(label='b', items=[Color.RED], where=None)"
    assert repr(pair) == "Pair(1, None)"
    assert loose.data["_extra"] == {"b": [2, {3}]}
    # Written back, it is the same blob; outside the context, the real values again.
    assert codec.encode([box, pair, loose]) == blob
    assert type(codec.decode(blob)[0]) is models.Box


def test_flowdag_imports_neither_attrs_nor_pydantic_for_plain_values(tmp_path: Path) -> None:
    code = f"""
import sys
import flowdag
from flowdag.codec import Codec
from flowdag.json_codec import JSONCodec

wf = flowdag.Workflow("plain")
wf.add_node("a", lambda: {{"x": [1, 2.5, (3,)], "when": __import__("datetime").date(2026, 1, 1)}})
for url in ("memory://", "json://{tmp_path / "j"}", "lmdb://{tmp_path / "l"}"):
    assert flowdag.run(wf, run_id="r", store=url).status == "completed"
for codec in (Codec(), JSONCodec()):
    try:
        codec.encode(object())  # refused: flowdag looks for a user type, importing nothing
    except flowdag.SerializationError:
        pass
loaded = [m for m in ("attr", "attrs", "pydantic", "pydantic_core") if m in sys.modules]
print(loaded)
"""
    out = subprocess.run(
        [sys.executable, "-c", code],
        env={**os.environ, "PYTHONPATH": str(ROOT)},
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert out.returncode == 0, out.stderr
    assert out.stdout.strip() == "[]"


FUZZED = [
    [MODEL_VALUES["pydantic_nested"], MODEL_VALUES["attrs_frozen"], models.Pair(models.Color.RED)],
    {"m": MODEL_VALUES["pydantic_extra"], "p": MODEL_VALUES["pydantic_private"]},
]


@pytest.mark.parametrize("neutral", [False, True], ids=["classes", "neutral"])
@pytest.mark.parametrize("codec", CODECS.values(), ids=CODECS.keys())
@pytest.mark.parametrize("value", FUZZED, ids=["list", "dict"])
def test_fuzzed_blobs_give_a_value_or_corrupt_state(codec: Any, value: Any, neutral: bool) -> None:
    # Damaged user-type payloads, with or without the classes: a value or
    # CorruptStateError within the time and memory limits, never another error.
    from hypothesis import given
    from hypothesis import strategies as st

    from tests.stores.test_fuzz_loads import FUZZ, fuzzed, guarded

    blob = codec.encode(value)
    mode = neutral_user_types if neutral else contextlib.nullcontext

    @FUZZ
    @given(data=st.data())
    def check(data: st.DataObject) -> None:
        damaged = data.draw(fuzzed(blob))
        with mode():
            guarded(lambda: codec.decode(damaged))

    check()
