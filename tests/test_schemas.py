"""The schema layer of input nodes (flowdag/_schemas.py): pure, no store.

Schemas of each kind become JSON Schema dicts; values become plain JSON; validation
names every failing field. A property test checks json_form against a JSON round trip
and validate against schemas built from the values' own types.
"""

from __future__ import annotations

import dataclasses
import datetime
import enum
import json
import math
import pickle
import re
import subprocess
import sys
import textwrap
import typing
from typing import Any, Literal

import pydantic
import pytest
import typing_extensions
from hypothesis import given, settings
from hypothesis import strategies as st

from flowdag._schemas import DRAFT_2020_12, json_form, json_schema_of, schema_digest, validate
from flowdag.errors import (
    FieldProblem,
    FlowdagError,
    InputValidationError,
    InvalidArgumentError,
    InvalidArgumentTypeError,
)

WHERE = "input node 'approval'"


class Item(pydantic.BaseModel):
    model_config = pydantic.ConfigDict(extra="forbid")
    sku: str
    qty: int


class Approval(pydantic.BaseModel):
    approved: bool
    by: str
    items: list[Item] = []
    main: Item | None = None
    note: str | None = None
    level: Literal["low", "high"] = "low"
    at: datetime.datetime | None = None


@dataclasses.dataclass
class Line:
    sku: str
    qty: int = 1


@dataclasses.dataclass
class Order:
    lines: list[Line]
    placed: datetime.date
    rush: bool = False


class Reply(typing_extensions.TypedDict):
    approved: bool
    by: typing_extensions.NotRequired[str]


def problems(schema: dict[str, Any], value: Any) -> dict[str, str]:
    with pytest.raises(InputValidationError) as info:
        validate(schema, value, node="approval")
    return {p.field: p.message for p in info.value.fields}


# --- json_schema_of -----------------------------------------------------------------


def test_pydantic_model() -> None:
    schema = json_schema_of(Approval, WHERE)
    assert schema["$schema"] == DRAFT_2020_12
    assert schema["required"] == ["approved", "by"]
    assert set(schema["$defs"]) == {"Item"}
    assert json.loads(json.dumps(schema)) == schema  # plain JSON: no tuples, str keys
    validate(schema, {"approved": True, "by": "ana"})
    full = Approval(
        approved=False,
        by="bo",
        items=[Item(sku="a", qty=2)],
        main=Item(sku="b", qty=1),
        level="high",
        at=datetime.datetime(2026, 1, 2, 3, 4, 5),
    )
    value = json_form(full, "value")
    assert value["at"] == "2026-01-02T03:04:05" and value["items"] == [{"sku": "a", "qty": 2}]
    validate(schema, value)
    assert Approval.model_validate(value) == full


def test_dataclass() -> None:
    schema = json_schema_of(Order, WHERE)
    assert schema["required"] == ["lines", "placed"]
    value = json_form(Order([Line("a"), Line("b", 3)], datetime.date(2026, 5, 1)), "value")
    assert value == {
        "lines": [{"sku": "a", "qty": 1}, {"sku": "b", "qty": 3}],
        "placed": "2026-05-01",
        "rush": False,
    }
    validate(schema, value)
    assert problems(schema, {**value, "placed": "May 1st"}) == {
        "placed": "'May 1st' is not a 'date'"
    }


def test_typeddict() -> None:
    schema = json_schema_of(Reply, WHERE)
    assert schema["required"] == ["approved"]
    validate(schema, {"approved": True})
    assert problems(schema, {"by": 1}) == {
        "approved": "'approved' is a required property",
        "by": "1 is not of type 'string'",
    }


@pytest.mark.skipif(sys.version_info >= (3, 12), reason="pydantic reads typing.TypedDict")
def test_typing_typeddict_before_3_12() -> None:
    class Old(typing.TypedDict):
        a: int

    with pytest.raises(InvalidArgumentTypeError, match=r"typing_extensions\.TypedDict"):
        json_schema_of(Old, WHERE)


def test_dict_is_checked_and_kept() -> None:
    given_schema = {"type": "object", "properties": {"n": {"type": "integer", "minimum": 1}}}
    assert json_schema_of(given_schema, WHERE) == given_schema
    draft7 = {"$schema": "http://json-schema.org/draft-07/schema#", "type": "array"}
    assert json_schema_of(draft7, WHERE) == draft7
    tuples = {"type": "object", "required": ("a",)}
    assert json_schema_of(tuples, WHERE) == {"type": "object", "required": ["a"]}
    local = {"$defs": {"n": {"type": "integer"}}, "items": {"$ref": "#/$defs/n"}}
    assert json_schema_of(local, WHERE) == local
    assert problems(local, [1, "x"]) == {"[1]": "'x' is not of type 'integer'"}


@pytest.mark.parametrize(
    ("bad", "error", "match"),
    [
        (3, InvalidArgumentTypeError, r"schema is of type int; pass a pydantic model"),
        (int, InvalidArgumentTypeError, r"the class int, which is not a pydantic model"),
        (
            Approval(approved=True, by="a"),
            InvalidArgumentTypeError,
            "pass the class, not an instance",
        ),
        (Line("a"), InvalidArgumentTypeError, "pass the class, not an instance"),
        ({"type": "nope"}, InvalidArgumentError, r"not a valid JSON Schema \(Draft202012\) at"),
        ({"type": "object", "required": "a"}, InvalidArgumentError, r"at \$\.required"),
        (
            {"$schema": "https://example.com/mine"},
            InvalidArgumentError,
            "not a JSON Schema dialect",
        ),
        ({"$schema": 7}, InvalidArgumentError, "not a JSON Schema dialect"),
        ({"$ref": "https://example.com/s.json"}, InvalidArgumentError, "only local references"),
        ({"$ref": "#/$defs/gone"}, InvalidArgumentError, "points at nothing"),
        ({1: {}}, InvalidArgumentTypeError, r"schema has the key 1 of type int"),
        ({"minimum": math.inf}, InvalidArgumentError, r"schema\['minimum'\] is inf"),
    ],
)
def test_bad_schemas(bad: object, error: type[Exception], match: str) -> None:
    with pytest.raises(error, match=match) as info:
        json_schema_of(bad, WHERE)
    assert str(info.value).startswith(f"{WHERE}: schema")


def test_a_ref_in_data_is_not_a_reference() -> None:
    schema = {"const": {"$ref": "https://example.com"}, "default": {"$ref": "x"}}
    assert json_schema_of(schema, WHERE) == schema
    # ... but one in a property named like a keyword is.
    named = {"properties": {"const": {"$ref": "https://example.com"}}}
    with pytest.raises(InvalidArgumentError, match="only local references"):
        json_schema_of(named, WHERE)


def test_pydantic_cannot_describe() -> None:
    @dataclasses.dataclass
    class Hook:
        fn: typing.Callable[[], None]

    with pytest.raises(InvalidArgumentError, match=r"pydantic cannot make a JSON Schema of"):
        json_schema_of(Hook, WHERE)


def test_digest() -> None:
    one = {"type": "object", "properties": {"a": {"type": "integer"}}}
    two = {"properties": {"a": {"type": "integer"}}, "type": "object"}
    assert schema_digest(one) == schema_digest(two)
    assert len(schema_digest(one)) == 64
    assert schema_digest(one) != schema_digest({**one, "required": ["a"]})
    assert schema_digest(json_schema_of(Approval, WHERE)) == schema_digest(
        json_schema_of(Approval, "elsewhere")
    )


# --- validate -----------------------------------------------------------------------


def test_every_failing_field_is_named() -> None:
    schema = json_schema_of(Approval, WHERE)
    value = {
        "approved": "yes",
        "items": [{"sku": "a", "qty": 1, "color": "red"}, {"sku": 1}],
        "main": {"sku": "b"},
        "note": 3,
        "level": "mid",
        "at": "noon",
    }
    with pytest.raises(InputValidationError) as info:
        validate(schema, value, node="approval")
    err = info.value
    assert [p.field for p in err.fields] == [
        "approved",
        "at",
        "by",
        "items[0].color",
        "items[1].qty",
        "items[1].sku",
        "level",
        "main.qty",
        "note",
    ]
    got = {p.field: p.message for p in err.fields}
    assert got["by"] == "'by' is a required property"  # the missing field, not its parent
    assert got["items[1].qty"] == "'qty' is a required property"
    assert got["items[0].color"] == "'color' is not allowed: the schema has no such field"
    assert got["note"] == "3 is not of type 'string', 'null'"
    assert got["at"] == "'noon' is not a 'date-time'"
    assert got["main.qty"] == "'qty' is a required property"  # inside an Optional[Item]
    assert str(err).startswith(
        "input for node 'approval' is invalid: approved: 'yes' is not of type 'boolean'; "
        "at: 'noon' is not a 'date-time'; by: 'by' is a required property; "
    )
    assert isinstance(err, FlowdagError) and isinstance(err, ValueError)
    again = pickle.loads(pickle.dumps(err))
    assert (str(again), again.fields, again.node) == (str(err), err.fields, "approval")


def test_root_and_odd_field_names() -> None:
    with pytest.raises(InputValidationError) as info:
        validate({"type": "integer"}, "x")
    assert info.value.fields == (FieldProblem("(value)", "'x' is not of type 'integer'"),)
    assert str(info.value) == "input is invalid: (value): 'x' is not of type 'integer'"
    odd = {"properties": {"first name": {"properties": {"a.b": {"type": "string"}}}}}
    assert problems(odd, {"first name": {"a.b": 1}}) == {
        '["first name"]["a.b"]': "1 is not of type 'string'"
    }


@pytest.mark.parametrize(
    ("text", "ok"),
    [
        ("2026-01-02T03:04:05", True),
        ("2026-01-02T03:04:05.123+02:00", True),
        ("2026-01-02t03:04:05z", True),
        ("2026-01-02", False),
        ("tomorrow", False),
    ],
)
def test_date_time_format(text: str, ok: bool) -> None:
    schema = {"type": "string", "format": "date-time"}
    if ok:
        validate(schema, text)
    else:
        assert list(problems(schema, text)) == ["(value)"]


def test_formats_the_checker_knows() -> None:
    validate({"format": "email"}, "ana@example.com")
    validate({"format": "email"}, 7)  # formats constrain strings only
    assert problems({"format": "ipv4"}, "1.2.3") == {"(value)": "'1.2.3' is not a 'ipv4'"}
    assert list(problems({"format": "uuid"}, "not-a-uuid")) == ["(value)"]
    assert list(problems({"format": "time"}, "25:00")) == ["(value)"]


def test_long_values_are_cut_in_messages() -> None:
    message = problems({"type": "string"}, list(range(1000)))["(value)"]
    assert len(message) <= 200 and message.endswith("...")


def test_unresolvable_ref_at_validation() -> None:
    # json_schema_of refuses this; a stored schema that slipped past it still fails clearly.
    with pytest.raises(InvalidArgumentError, match="cannot be resolved"):
        validate({"$ref": "#/$defs/gone"}, 1)


# --- json_form ----------------------------------------------------------------------


class Color(enum.Enum):
    RED = "red"


class Size(enum.IntEnum):
    BIG = 3


class Tag(str):
    def __str__(self) -> str:
        return "not me"


@dataclasses.dataclass
class Node:
    name: str
    children: tuple[Node, ...] = ()


def test_json_form_of_tricky_values() -> None:
    value = {
        "t": (1, (2, [3])),
        "e": [Color.RED, Size.BIG],
        "s": Tag("x"),
        Tag("k"): 1.5,
        "n": Node("a", (Node("b"), Node("c", (Node("d"),)))),
        "m": Item(sku="a", qty=1),
    }
    got = json_form(value, "value")
    assert got == {
        "t": [1, [2, [3]]],
        "e": ["red", 3],
        "s": "x",
        "k": 1.5,
        "n": {
            "name": "a",
            "children": [
                {"name": "b", "children": []},
                {"name": "c", "children": [{"name": "d", "children": []}]},
            ],
        },
        "m": {"sku": "a", "qty": 1},
    }
    assert type(got["s"]) is str and type(got["e"][1]) is int
    assert json.loads(json.dumps(got)) == got
    assert value["t"] == (1, (2, [3]))  # the value is not changed


@pytest.mark.parametrize(
    ("bad", "error", "match"),
    [
        ({"items": [1, 2, math.nan]}, InvalidArgumentError, r"value\['items'\]\[2\] is nan"),
        ([-math.inf], InvalidArgumentError, r"value\[0\] is -inf; JSON numbers are finite"),
        ({"a": {1: "x"}}, InvalidArgumentTypeError, r"value\['a'\] has the key 1 of type int"),
        ({("a",): 1}, InvalidArgumentTypeError, r"has the key \('a',\) of type tuple"),
        ({"a": {1, 2}}, InvalidArgumentTypeError, r"value\['a'\] is of type set.*sorted list"),
        ([b"x"], InvalidArgumentTypeError, r"value\[0\] is of type bytes"),
        ([datetime.date(2026, 1, 1)], InvalidArgumentTypeError, r"date, not JSON.*isoformat"),
        (object(), InvalidArgumentTypeError, r"value is of type object"),
        (Color, InvalidArgumentTypeError, r"value is of type EnumType"),
        ({"n": 1j}, InvalidArgumentTypeError, r"value\['n'\] is of type complex"),
    ],
)
def test_json_form_refuses(bad: object, error: type[Exception], match: str) -> None:
    with pytest.raises(error, match=match):
        json_form(bad, "value")


def test_json_form_refuses_cycles() -> None:
    loop: list[Any] = [1]
    loop.append({"again": loop})
    with pytest.raises(InvalidArgumentError, match=r"value\[1\]\['again'\] contains itself"):
        json_form(loop, "value")
    shared = [1]
    assert json_form([shared, shared], "value") == [[1], [1]]  # shared is not a cycle


def test_json_form_of_a_dataclass_field_pydantic_cannot_read() -> None:
    @dataclasses.dataclass
    class Odd:
        fn: typing.Callable[[], None]
        n: int = 1

    # pydantic cannot write it: field by field, and the bad field is named.
    with pytest.raises(InvalidArgumentTypeError, match=r"value\.fn is of type builtin_func"):
        json_form(Odd(print), "value")


# --- properties ---------------------------------------------------------------------

scalars = (
    st.none() | st.booleans() | st.integers() | st.floats(allow_nan=False, allow_infinity=False)
)
scalars |= st.text(max_size=5)
json_like = st.recursive(
    scalars,
    lambda inner: (
        st.lists(inner, max_size=4)
        | st.lists(inner, max_size=3).map(tuple)
        | st.dictionaries(st.text(max_size=4), inner, max_size=4)
    ),
    max_leaves=12,
)


def schema_from(value: Any) -> dict[str, Any]:
    """The JSON Schema that says exactly the value's types, all keys required."""
    if value is None:
        return {"type": "null"}
    if isinstance(value, bool):
        return {"type": "boolean"}
    if isinstance(value, int):
        return {"type": "integer"}
    if isinstance(value, float):
        return {"type": "number"}
    if isinstance(value, str):
        return {"type": "string"}
    if isinstance(value, list | tuple):
        if not value:
            return {"type": "array", "maxItems": 0}
        return {"type": "array", "prefixItems": [schema_from(v) for v in value], "items": False}
    return {
        "type": "object",
        "properties": {k: schema_from(v) for k, v in value.items()},
        "required": sorted(value),
        "additionalProperties": False,
    }


def leaf_paths(value: Any, path: tuple[Any, ...] = ()) -> list[tuple[Any, ...]]:
    if isinstance(value, list) and value:
        return [p for i, v in enumerate(value) for p in leaf_paths(v, (*path, i))]
    if isinstance(value, dict) and value:
        return [p for k, v in value.items() for p in leaf_paths(v, (*path, k))]
    return [path]


def replaced(value: Any, path: tuple[Any, ...], new: Any) -> Any:
    if not path:
        return new
    copy = list(value) if isinstance(value, list) else dict(value)
    copy[path[0]] = replaced(value[path[0]], path[1:], new)
    return copy


@settings(max_examples=150, deadline=None)
@given(json_like, st.data())
def test_json_form_and_validate_agree_with_the_value_types(value: Any, data: Any) -> None:
    plain = json_form(value, "value")
    assert plain == json.loads(json.dumps(plain))
    assert json_form(plain, "value") == plain  # already JSON: unchanged
    schema = json_schema_of(schema_from(plain), WHERE)  # a valid JSON Schema
    validate(schema, plain)
    # A leaf (or empty container) of another type fails, named by its path.
    path = data.draw(st.sampled_from(leaf_paths(plain)))
    old = plain
    for part in path:
        old = old[part]
    broken = replaced(plain, path, 1 if isinstance(old, str) else "x")
    with pytest.raises(InputValidationError) as info:
        validate(schema, broken)
    assert [p.field for p in info.value.fields] == [field_name(path)]


def field_name(path: tuple[Any, ...]) -> str:
    """``a.b[2]``, ``["odd key"]``, or ``(value)`` for the root."""
    out = ""
    for part in path:
        if isinstance(part, int):
            out += f"[{part}]"
        elif re.fullmatch(r"[A-Za-z_][A-Za-z0-9_-]*", part):
            out += f".{part}" if out else part
        else:
            out += f"[{json.dumps(part)}]"
    return out or "(value)"


# --- without pydantic --------------------------------------------------------------


def test_without_pydantic() -> None:
    # A real process where pydantic cannot be imported; import flowdag pays for neither.
    script = textwrap.dedent(
        """
        import dataclasses, sys
        sys.modules["pydantic"] = None  # import pydantic now raises ImportError
        import flowdag
        assert "jsonschema" not in sys.modules and "pydantic_core" not in sys.modules
        from flowdag._schemas import json_form, json_schema_of, validate
        from flowdag.errors import OptionalDependencyError

        @dataclasses.dataclass
        class Line:
            sku: str
            qty: int = 1

        try:
            json_schema_of(Line, "input node 'a'")
        except OptionalDependencyError as exc:
            print(exc)
        schema = json_schema_of({"type": "object", "required": ["sku"]}, "input node 'a'")
        value = json_form({"lines": (Line("x"),)}, "value")
        validate({"type": "object"}, value)
        print(value)
        """
    )
    done = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True)
    assert done.returncode == 0, done.stderr
    lines = done.stdout.splitlines()
    assert lines[0].startswith("input node 'a': schema Line is a class")
    assert "pip install 'flowdag[schemas]', or pass a JSON Schema dict" in lines[0]
    assert lines[1] == "{'lines': [{'sku': 'x', 'qty': 1}]}"
