"""User types without pickle: register_types, exact round trips, refusals, no imports on decode."""

from __future__ import annotations

import dataclasses
import os
import subprocess
import sys
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import msgpack
import pytest

import flowdag
from flowdag.codec import Codec
from flowdag.errors import (
    CorruptStateError,
    InvalidArgumentError,
    InvalidArgumentTypeError,
    SerializationError,
)
from flowdag.json_codec import JSONCodec
from tests import usertypes_models as models
from tests.test_codec import same, seal
from tests.usertypes_values import MODEL_VALUES, same_model

ROOT = Path(__file__).resolve().parents[1]
flowdag.register_types("tests.usertypes_models")

USER_VALUES: dict[str, Any] = {
    "dataclass": models.Point(1, 2.5),
    "frozen_slots_dataclass": models.Event("x", ("a", "b"), datetime(2026, 1, 2, tzinfo=UTC)),
    "init_false_field": models.Tracked([1, 2, 3]),
    "namedtuple": models.Pair((1, 2), {3}),
    "enum": models.Color.GREEN,
    "enum_alias": models.Color.CRIMSON,
    "int_enum": models.Level.HIGH,
    "nested_class": models.Outer.Inner(models.Pair(models.Color.RED)),
    "inside_values": {"p": [models.Point(0, -0.0)], (models.Level.LOW,): models.Pair(None)},
    # attrs classes and pydantic models: tests/test_usertypes_models.py has the rest.
    **MODEL_VALUES,
}
CODECS = {"msgpack": Codec(), "json": JSONCodec()}


class NotAllowed:
    """Types of this test module, which no test registers."""

    @dataclasses.dataclass
    class Data:
        x: int


def exactly(a: Any, b: Any) -> bool:
    """Same types and values, field by field for dataclasses."""
    if dataclasses.is_dataclass(a) and not isinstance(a, type):
        return type(a) is type(b) and all(
            exactly(getattr(a, f.name), getattr(b, f.name)) for f in dataclasses.fields(a)
        )
    if same_model(a, b, exactly) is not None:  # attrs and pydantic
        return bool(same_model(a, b, exactly))
    if isinstance(a, tuple) and hasattr(a, "_fields"):
        return type(a) is type(b) and all(map(exactly, a, b))
    if isinstance(a, dict) and type(a) is dict:
        return (
            type(b) is dict
            and len(a) == len(b)
            and all(
                exactly(ka, kb) and exactly(va, vb)
                for (ka, va), (kb, vb) in zip(a.items(), b.items(), strict=True)
            )
        )
    if isinstance(a, list) and type(a) is list:
        return type(b) is list and len(a) == len(b) and all(map(exactly, a, b))
    if a is b:  # Enum members: the same object
        return True
    return same(a, b)


@pytest.mark.parametrize("codec", CODECS.values(), ids=CODECS.keys())
@pytest.mark.parametrize("value", USER_VALUES.values(), ids=USER_VALUES.keys())
def test_round_trip(codec: Any, value: Any) -> None:
    result = codec.decode(codec.encode(value))
    assert exactly(result, value), (value, result)


def test_decode_runs_no_init_of_the_type() -> None:
    value = models.Tracked([1])
    del models.POST_INITS[:]
    for codec in CODECS.values():
        result = codec.decode(codec.encode(value))
        assert result.total == 1 and result == value
    assert models.POST_INITS == []


def test_layout() -> None:
    assert JSONCodec().encode(models.Point(1, 2.5)) == (
        b'{"$user":["tests.usertypes_models:Point",{"x":1,"y":2.5}]}'
    )
    assert JSONCodec().encode(models.Color.RED) == (
        b'{"$user":["tests.usertypes_models:Color","RED"]}'
    )
    blob = Codec().encode(models.Pair(1))
    ext = msgpack.unpackb(blob[6:])
    assert ext.code == 26
    assert msgpack.unpackb(ext.data) == ["tests.usertypes_models:Pair", [1, None]]


def test_a_class_can_be_registered_as_itself() -> None:
    @dataclasses.dataclass
    class Local:
        v: int

    for codec in CODECS.values():
        with pytest.raises(SerializationError, match="not allowed"):
            codec.encode(Local(1))
    flowdag.register_types(Local)
    for codec in CODECS.values():
        result = codec.decode(codec.encode([Local(1)]))
        assert type(result[0]) is Local and result == [Local(1)]


@pytest.mark.parametrize("codec", CODECS.values(), ids=CODECS.keys())
def test_a_type_not_allowed_is_refused_saying_how_to_allow_it(codec: Any) -> None:
    with pytest.raises(SerializationError) as info:
        codec.encode({"k": NotAllowed.Data(1)})
    message = str(info.value)
    assert "type 'NotAllowed.Data' (at ['k'])" in message
    assert "flowdag.register_types('tests.test_usertypes')" in message
    assert "flowdag.register_types(NotAllowed.Data)" in message
    # Pickle stays the other opt-in.
    pickling = type(codec)(allow_pickle=True)
    assert pickling.decode(pickling.encode(NotAllowed.Data(1))) == NotAllowed.Data(1)


def test_a_node_returning_a_type_not_allowed_fails_with_serialization_error() -> None:
    wf = flowdag.Workflow("user-types")
    wf.add_node("ok", lambda: models.Point(1, 2.0))
    wf.add_node("refused", lambda: NotAllowed.Data(1))
    result = flowdag.run(wf, run_id="r", store=flowdag.MemoryStore())
    assert result.outputs["ok"] == models.Point(1, 2.0)
    error = result.nodes["refused"].error
    assert error is not None and error.type == "SerializationError"
    assert "register_types" in error.message


CRAFTED = {
    "not_a_pair": ["tests.usertypes_models:Point"],
    "name_not_str": [1, {}],
    "unknown_class": ["tests.usertypes_models:Nope", {}],
    "not_a_type": ["tests.usertypes_models:helper", {}],
    "imported_name": ["tests.usertypes_models:dataclasses", {}],
    "module_not_allowed": ["os:system", "ls"],
    "no_qualname": ["tests.usertypes_models:", {}],
    "dunder_walk": ["tests.usertypes_models:Point.__init__", {}],
    "missing_field": ["tests.usertypes_models:Point", {"x": 1}],
    "extra_field": ["tests.usertypes_models:Point", {"x": 1, "y": 2, "z": 3}],
    "fields_reordered": ["tests.usertypes_models:Point", {"y": 2, "x": 1}],
    "fields_as_list": ["tests.usertypes_models:Point", [1, 2]],
    "unknown_member": ["tests.usertypes_models:Color", "BLUE"],
    "member_by_value": ["tests.usertypes_models:Color", 1],
    "namedtuple_arity": ["tests.usertypes_models:Pair", [1]],
}


@pytest.mark.parametrize("payload", CRAFTED.values(), ids=CRAFTED.keys())
def test_crafted_user_payloads_are_refused(payload: Any) -> None:
    with pytest.raises(CorruptStateError):
        Codec().decode(seal(msgpack.packb(msgpack.ExtType(26, msgpack.packb(payload)))))
    with pytest.raises(CorruptStateError):
        JSONCodec().decode(JSONCodec().encode(payload).replace(b"[", b'{"$user":[', 1) + b"}")


def test_decoding_a_type_not_allowed_imports_nothing(tmp_path: Path) -> None:
    marker = tmp_path / "imported"
    code = """
import sys
import msgpack
from flowdag.codec import Codec
from flowdag.errors import CorruptStateError
from flowdag.json_codec import JSONCodec
from tests.test_codec import seal

name = "tests.usertypes_trap:Trap"
blobs = [
    (Codec(), seal(msgpack.packb(msgpack.ExtType(26, msgpack.packb([name, {"x": 1}]))))),
    (JSONCodec(), b'{"$user":["tests.usertypes_trap:Trap",{"x":1}]}'),
]
for codec, blob in blobs:
    try:
        codec.decode(blob)
    except CorruptStateError as exc:
        print(exc)
    else:
        raise SystemExit("decoded a type not allowed")
assert "tests.usertypes_trap" not in sys.modules
"""
    env = {**os.environ, "PYTHONPATH": str(ROOT), "FLOWDAG_TRAP_MARKER": str(marker)}
    out = subprocess.run(
        [sys.executable, "-c", code], env=env, capture_output=True, text=True, timeout=60
    )
    assert out.returncode == 0, out.stderr
    assert not marker.exists()
    assert out.stdout.count("nothing was imported") == 2
    assert "flowdag.register_types('tests.usertypes_trap')" in out.stdout
    # The trap is real: registering the module imports it.
    out = subprocess.run(
        [sys.executable, "-c", "import flowdag; flowdag.register_types('tests.usertypes_trap')"],
        env=env,
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert out.returncode == 0, out.stderr
    assert marker.read_text() == "imported"


@pytest.mark.parametrize(
    ("argument", "error", "message"),
    [
        (5, InvalidArgumentTypeError, "not 5"),
        (NotAllowed, InvalidArgumentTypeError, "dataclass, NamedTuple, Enum, attrs or pydantic"),
        (models.Point(1, 2), InvalidArgumentTypeError, "not Point"),
        ("tests.no_such_module", InvalidArgumentError, "cannot import module"),
    ],
)
def test_register_types_checks_its_arguments(argument: Any, error: type, message: str) -> None:
    with pytest.raises(error, match=message):
        flowdag.register_types(argument)
