"""Schemas for input nodes: JSON Schema out of Python types, JSON values, validation.

Design note. A wait stores its schema as a plain JSON Schema dict, so whoever provides
the input later (the CLI, a web handler, another process) validates without the
workflow's code. This module is the pure layer under that, with no store and no I/O:

* `json_schema_of` turns what the workflow declared (a pydantic v2 model, a dataclass,
  a TypedDict or a JSON Schema dict) into that dict. Classes go through pydantic, which
  is an optional extra (``flowdag[schemas]``); a dict is checked against its dialect's
  meta-schema with jsonschema (a core dependency). Only local ``$ref`` are allowed: a
  remote one would make jsonschema fetch it over the network at validation time.
* `json_form` turns a value (the provided input, a ``default=``) into plain JSON, the
  form in which the node's output is stored and validated.
* `validate` checks a JSON value against a stored schema and reports every failing
  field at once (`InputValidationError.fields`), named by path.
* `schema_digest` fingerprints a schema, to notice it changed in code after a wait began.

jsonschema (about 90 ms) and pydantic are imported on first use, never by
``import flowdag``.
"""

from __future__ import annotations

import dataclasses
import datetime
import enum
import functools
import hashlib
import json
import math
import re
import sys
import typing
from collections.abc import Iterator, Mapping
from typing import TYPE_CHECKING, Any

from flowdag.errors import (
    FieldProblem,
    InputValidationError,
    InvalidArgumentError,
    InvalidArgumentTypeError,
    OptionalDependencyError,
)

if TYPE_CHECKING:
    from jsonschema.exceptions import ValidationError
    from jsonschema.protocols import Validator

__all__ = ["json_form", "json_schema_of", "schema_digest", "validate"]

DRAFT_2020_12 = "https://json-schema.org/draft/2020-12/schema"  # what pydantic emits
_ROOT = "(value)"  # the field name of the whole value in a FieldProblem
_MAX_MESSAGE = 200  # jsonschema quotes the offending value whole; a big one would drown the rest
_NAME = re.compile(r"[A-Za-z_][A-Za-z0-9_-]*\Z")
_KINDS = "a pydantic model class, a dataclass, a TypedDict or a JSON Schema dict"
_JSON_KINDS = "dict with str keys, list, tuple, str, int, float, bool, None"
# Keywords whose values are data, not subschemas: a "$ref" in there is not a reference.
_DATA_KEYWORDS = frozenset({"const", "enum", "default", "examples"})
_NAMED_SUBSCHEMAS = frozenset(
    {"properties", "patternProperties", "$defs", "definitions", "dependentSchemas"}
)


def json_schema_of(schema: object, where: str) -> dict[str, Any]:
    """The JSON Schema dict for what a workflow declared as an input's schema.

    Args:
        schema: a pydantic (v2) model class, a dataclass type, a TypedDict type, or a
            JSON Schema dict (dialect from its ``"$schema"``, default Draft 2020-12).
        where: what the schema belongs to, for messages (``"input node 'approval'"``).

    Raises:
        InvalidArgumentTypeError: `schema` is none of those kinds.
        InvalidArgumentError: the dict is not a valid JSON Schema, has a non-local
            ``$ref``, or pydantic cannot describe the class.
        OptionalDependencyError: a class was given and pydantic is not installed.
    """
    if isinstance(schema, Mapping):
        return _checked_dict(json_form(schema, f"{where}: schema"), where)
    if not isinstance(schema, type):
        kind = type(schema).__name__
        hint = "pass the class, not an instance" if _is_model_instance(schema) else f"pass {_KINDS}"
        raise InvalidArgumentTypeError(f"{where}: schema is of type {kind}; {hint}")
    if not (_is_model_class(schema) or dataclasses.is_dataclass(schema) or _is_typeddict(schema)):
        raise InvalidArgumentTypeError(
            f"{where}: schema is the class {schema.__qualname__}, which is not a pydantic "
            f"model, dataclass or TypedDict; pass {_KINDS}"
        )
    pydantic = _pydantic(where, schema)
    try:
        if issubclass(schema, pydantic.BaseModel):
            made = typing.cast(Any, schema).model_json_schema()
        else:
            made = pydantic.TypeAdapter(schema).json_schema()
    except pydantic.PydanticUserError as exc:
        if exc.code == "typed-dict-version":
            raise InvalidArgumentTypeError(
                f"{where}: schema {schema.__qualname__} is a typing.TypedDict, which pydantic "
                "cannot read on Python < 3.12; define it with typing_extensions.TypedDict"
            ) from exc
        raise InvalidArgumentError(
            f"{where}: pydantic cannot make a JSON Schema of {schema.__qualname__}: "
            f"{_first_line(str(exc))}; give its fields JSON-friendly types or pass a "
            "JSON Schema dict"
        ) from exc
    made = {"$schema": DRAFT_2020_12, **made}
    return _checked_dict(json_form(made, f"{where}: schema"), where)


def schema_digest(schema: Mapping[str, Any]) -> str:
    """The sha256 hex digest of a JSON Schema's canonical JSON (sorted keys, compact)."""
    return hashlib.sha256(_canonical(schema).encode()).hexdigest()


def json_form(value: object, where: str) -> Any:
    """`value` as plain JSON: dicts with str keys, lists, str, int, finite float, bool, None.

    Tuples become lists, enum members their values, and pydantic model and dataclass
    instances their JSON dump (through pydantic when it is installed, so their dates,
    UUIDs and such become strings as pydantic writes them).

    Args:
        value: the value to convert; it is not changed.
        where: how the caller names the value (``"value"``, ``"default"``); messages
            extend it with the failing path, as in ``value['items'][2]``.

    Raises:
        InvalidArgumentTypeError: some part of `value` has no JSON form (the message
            names its path and type).
        InvalidArgumentError: a float is NaN or infinite, or the value contains itself.
    """
    return _json(value, where, frozenset())


def validate(schema: Mapping[str, Any], value: Any, *, node: str | None = None) -> None:
    """Check a JSON value (see `json_form`) against a JSON Schema from `json_schema_of`.

    Formats are checked where the dialect's format checker can (``date``, ``email``,
    ``ipv4``, ``uuid``, ...), and ``date-time`` and ``time`` as ISO 8601 (as pydantic
    writes them).

    Raises:
        InputValidationError: `value` does not fit; ``.fields`` lists every failing
            field, sorted by path, a missing required property under its own name.
        InvalidArgumentError: the schema cannot be used (an unresolvable ``$ref``).
    """
    from referencing.exceptions import Unresolvable

    validator = _validator(_canonical(schema))
    try:
        errors = list(validator.iter_errors(value))
    except Unresolvable as exc:
        what = "this input" if node is None else f"input node {node!r}"
        raise InvalidArgumentError(
            f"the schema of {what} has a $ref that cannot be resolved ({exc}); fix the schema"
        ) from exc
    if errors:
        problems = [problem for error in errors for problem in _problems(error)]
        problems.sort(key=lambda item: item[0])
        raise InputValidationError(node, tuple(problem for _, problem in problems))


# --- schemas ------------------------------------------------------------------------


def _checked_dict(schema: Any, where: str) -> dict[str, Any]:
    """`schema` (already plain JSON) if it is a valid JSON Schema of a known dialect."""
    from jsonschema.exceptions import SchemaError

    if not isinstance(schema, dict):  # json_form of a Mapping is always a dict
        raise AssertionError(schema)
    cls = _validator_class(schema, where)
    try:
        cls.check_schema(schema)
    except SchemaError as exc:
        at = "" if not exc.path else f" at {exc.json_path}"
        dialect = cls.__name__.removesuffix("Validator")
        raise InvalidArgumentError(
            f"{where}: schema is not a valid JSON Schema ({dialect}){at}: "
            f"{_short(exc.message)}; fix the schema"
        ) from None
    for ref in _refs(schema):
        if not ref.startswith("#"):
            raise InvalidArgumentError(
                f"{where}: schema has $ref {ref!r}; only local references ('#/$defs/...') "
                "are allowed, since the schema is stored with the wait and validated "
                "offline: inline the referenced schema under $defs"
            )
        if (ref == "#" or ref.startswith("#/")) and not _pointer_resolves(schema, ref[1:]):
            raise InvalidArgumentError(
                f"{where}: schema has $ref {ref!r}, which points at nothing in the schema; "
                "fix the reference or add the definition"
            )
    return schema


def _validator_class(schema: Mapping[str, Any], where: str) -> type[Validator]:
    """The jsonschema validator class for the dialect `schema` names (default 2020-12)."""
    from jsonschema.validators import Draft202012Validator, validator_for

    dialect = schema.get("$schema")
    if dialect is None:
        return Draft202012Validator
    # default=None: an unknown $schema comes back as None, not as a warning and 2020-12.
    found = (
        validator_for(schema, default=typing.cast(Any, None)) if isinstance(dialect, str) else None
    )
    if found is None:
        raise InvalidArgumentError(
            f"{where}: schema has $schema {dialect!r}, which is not a JSON Schema dialect "
            f"jsonschema knows; use {DRAFT_2020_12!r} or drop $schema"
        )
    return found


def _refs(node: Any, names: bool = False) -> Iterator[str]:
    """Every ``$ref`` string in a schema, skipping values that are data.

    `names` says the dict's keys are names (of properties, of definitions), not keywords.
    """
    if isinstance(node, dict):
        for key, item in node.items():
            if names:
                yield from _refs(item)
            elif key == "$ref" and isinstance(item, str):
                yield item
            elif key not in _DATA_KEYWORDS:
                yield from _refs(item, names=key in _NAMED_SUBSCHEMAS)
    elif isinstance(node, list):
        for item in node:
            yield from _refs(item)


def _pointer_resolves(document: Any, pointer: str) -> bool:
    """Whether a JSON Pointer (RFC 6901, ``""`` or ``"/a/0"``) finds a value in `document`."""
    from urllib.parse import unquote

    for token in unquote(pointer).split("/")[1:]:
        token = token.replace("~1", "/").replace("~0", "~")
        if isinstance(document, dict) and token in document:
            document = document[token]
        elif isinstance(document, list) and token.isdigit() and int(token) < len(document):
            document = document[int(token)]
        else:
            return False
    return True


def _is_model_class(tp: type) -> bool:
    # pydantic is imported only when the user's code already did: a model needs it.
    base = getattr(sys.modules.get("pydantic"), "BaseModel", None)
    return base is not None and issubclass(tp, base)


def _is_model_instance(value: object) -> bool:
    base = getattr(sys.modules.get("pydantic"), "BaseModel", None)
    is_model = base is not None and isinstance(value, base)
    return is_model or (dataclasses.is_dataclass(value) and not isinstance(value, type))


def _is_typeddict(tp: type) -> bool:
    if typing.is_typeddict(tp):
        return True
    extensions = sys.modules.get("typing_extensions")
    return extensions is not None and bool(extensions.is_typeddict(tp))


def _pydantic(where: str, schema: type) -> Any:
    try:
        import pydantic
    except ImportError:
        raise OptionalDependencyError(
            f"{where}: schema {schema.__qualname__} is a class, and turning a class into a "
            "JSON Schema needs pydantic (v2): pip install 'flowdag[schemas]', or pass a "
            "JSON Schema dict"
        ) from None
    return pydantic


def _canonical(schema: Mapping[str, Any]) -> str:
    return json.dumps(schema, sort_keys=True, separators=(",", ":"), allow_nan=False)


# --- JSON form ----------------------------------------------------------------------


def _json(value: object, path: str, seen: frozenset[int]) -> Any:
    # Exact types first: they are nearly every value, and need no conversion.
    kind = type(value)
    if value is None or kind is bool or kind is str or kind is int:
        return value
    if kind is float:
        return _finite(value, path)  # type: ignore[arg-type]
    if isinstance(value, enum.Enum):
        return _json(value.value, path, seen)
    if isinstance(value, str):
        return str.__str__(value)  # a plain str, whatever the subclass's __str__ does
    if isinstance(value, int):
        return int(value)
    if isinstance(value, float):
        return _finite(float(value), path)
    if isinstance(value, Mapping | list | tuple):
        if id(value) in seen:
            raise InvalidArgumentError(f"{path} contains itself; JSON values are trees")
        inner = seen | {id(value)}
        if isinstance(value, Mapping):
            out: dict[str, Any] = {}
            for key, item in value.items():
                if not isinstance(key, str):  # a StrEnum key is a str: its value
                    raise InvalidArgumentTypeError(
                        f"{path} has the key {_short(repr(key))} of type "
                        f"{type(key).__name__}; JSON object keys are str: convert the keys"
                    )
                out[str.__str__(key)] = _json(item, f"{path}[{key!r}]", inner)
            return out
        return [_json(item, f"{path}[{index}]", inner) for index, item in enumerate(value)]
    dumped = _dump_object(value, path, seen)
    if dumped is not _NO_DUMP:
        return dumped
    hint = (
        "convert it to a sorted list"
        if isinstance(value, set | frozenset)
        else "pass an ISO 8601 string (value.isoformat())"
        if isinstance(value, datetime.date | datetime.time)
        else f"pass plain JSON ({_JSON_KINDS}), a pydantic model or a dataclass instance"
    )
    raise InvalidArgumentTypeError(f"{path} is of type {kind.__qualname__}, not JSON; {hint}")


_NO_DUMP = object()


def _dump_object(value: object, path: str, seen: frozenset[int]) -> Any:
    """The JSON form of a pydantic model or dataclass instance, or `_NO_DUMP`."""
    if id(value) in seen:
        raise InvalidArgumentError(f"{path} contains itself; JSON values are trees")
    inner = seen | {id(value)}
    base = getattr(sys.modules.get("pydantic"), "BaseModel", None)
    if base is not None and isinstance(value, base):
        import pydantic_core

        try:
            dumped = typing.cast(Any, value).model_dump(mode="json")
        except pydantic_core.PydanticSerializationError as exc:
            raise InvalidArgumentTypeError(
                f"{path} cannot be written as JSON by pydantic: {_first_line(str(exc))}"
            ) from None
        return _json(dumped, path, inner)
    if not dataclasses.is_dataclass(value) or isinstance(value, type):
        return _NO_DUMP
    adapter = _dataclass_adapter(type(value))
    if adapter is not None:
        import pydantic_core

        try:
            return _json(adapter.dump_python(value, mode="json"), path, inner)
        except pydantic_core.PydanticSerializationError:
            pass  # field by field below, to name the field pydantic cannot write
    # Without pydantic (or past its failure): field by field, naming a failing field's path.
    return {
        field.name: _json(getattr(value, field.name), f"{path}.{field.name}", inner)
        for field in dataclasses.fields(value)
    }


@functools.lru_cache(maxsize=256)
def _dataclass_adapter(tp: type) -> Any:
    """A pydantic TypeAdapter for a dataclass type, or None (no pydantic, or it refuses)."""
    try:
        import pydantic
    except ImportError:
        return None
    try:
        return pydantic.TypeAdapter(tp)
    except pydantic.PydanticUserError:  # e.g. a field type pydantic has no schema for
        return None


def _finite(value: float, path: str) -> float:
    if not math.isfinite(value):
        raise InvalidArgumentError(f"{path} is {value!r}; JSON numbers are finite")
    return value


# --- validation ---------------------------------------------------------------------


@functools.lru_cache(maxsize=128)
def _validator(canonical: str) -> Validator:
    """A validator for one schema (by canonical JSON): built once, reused per provide."""
    schema = json.loads(canonical)
    cls = _validator_class(schema, "the stored schema")
    return cls(schema, format_checker=_format_checker(cls))


def _format_checker(cls: type[Validator]) -> Any:
    from jsonschema import FormatChecker

    checker = FormatChecker(formats=())
    checker.checkers = dict(cls.FORMAT_CHECKER.checkers)
    # jsonschema checks these only with the rfc3339-validator package, and then strictly
    # (an offset is required), which would refuse the naive datetimes pydantic writes.
    checker.checks("date-time", raises=ValueError)(_is_date_time)
    checker.checks("time", raises=ValueError)(_is_time)
    return checker


def _is_date_time(value: object) -> bool:
    if not isinstance(value, str):
        return True  # formats constrain strings only; "type" checks the rest
    if len(value) < 11 or value[10] not in "Tt ":
        return False
    datetime.datetime.fromisoformat(value.replace("z", "Z"))
    return True


def _is_time(value: object) -> bool:
    if isinstance(value, str):
        datetime.time.fromisoformat(value.replace("z", "Z"))
    return True


def _problems(error: ValidationError) -> Iterator[tuple[tuple[Any, ...], FieldProblem]]:
    """The (sort key, problem) pairs for one jsonschema error, named by field path."""
    path = list(error.absolute_path)
    instance = error.instance
    required = error.validator_value
    if error.validator == "required" and isinstance(instance, dict) and isinstance(required, list):
        # Reported under the missing property, not the object that lacks it.
        for name in required:
            if name not in instance and error.message == f"{name!r} is a required property":
                yield _problem([*path, name], error.message)
                return
    if (
        error.validator == "additionalProperties"
        and error.validator_value is False
        and isinstance(instance, dict)
    ):
        schema = error.schema if isinstance(error.schema, dict) else {}
        known = schema.get("properties", {})
        patterns = schema.get("patternProperties", {})
        for name in instance:
            if name not in known and not any(re.search(p, name) for p in patterns):
                yield _problem(
                    [*path, name], f"{name!r} is not allowed: the schema has no such field"
                )
        return
    message = error.message
    if error.validator in ("anyOf", "oneOf") and error.context:
        branches: dict[Any, list[ValidationError]] = {}
        for sub in error.context:
            branches.setdefault(sub.relative_schema_path[0], []).append(sub)
        # A branch that failed only on the value's type was not the one meant (the
        # null of an Optional): if exactly one other branch is left, its errors are it.
        meant = [subs for subs in branches.values() if not all(map(_is_type_error, subs))]
        if len(meant) == 1:
            for sub in meant[0]:
                yield from _problems(sub)
            return
        if not meant:  # e.g. Optional[int] given a str: name the types wanted
            wanted = [t for s in error.context for t in _as_list(s.validator_value)]
            message = f"{instance!r} is not of type {', '.join(map(repr, wanted))}"
    yield _problem(path, message)


def _is_type_error(error: ValidationError) -> bool:
    return error.validator == "type" and not error.relative_path


def _problem(path: list[Any], message: str) -> tuple[tuple[Any, ...], FieldProblem]:
    key = tuple((0, part, "") if isinstance(part, int) else (1, 0, part) for part in path)
    return key, FieldProblem(_field_name(path), _short(message))


def _field_name(path: list[Any]) -> str:
    """``items[2].qty`` for the path ``["items", 2, "qty"]``; ``(value)`` for the root."""
    out = ""
    for part in path:
        if isinstance(part, int):
            out += f"[{part}]"
        elif _NAME.match(part):
            out += f".{part}" if out else part
        else:
            out += f"[{json.dumps(part)}]"
    return out or _ROOT


def _as_list(value: Any) -> list[Any]:
    return value if isinstance(value, list) else [value]


def _short(text: str) -> str:
    return text if len(text) <= _MAX_MESSAGE else text[: _MAX_MESSAGE - 3] + "..."


def _first_line(text: str) -> str:
    return text.strip().splitlines()[0] if text.strip() else text
