"""How each kind of user type is taken apart and built again, running none of its code.

`flowdag._usertypes` decides *which* classes may be stored (the allow-list);
this module knows *how*: for each kind, the data stored for a value and the
checks that rebuild exactly that value, whatever a blob says.

========== ================================= =====================================
kind       data                              built with
========== ================================= =====================================
enum       the member's name                 ``cls.__members__[name]``
namedtuple its items (a list)                ``tuple.__new__``
dataclass  {field: value} in field order     ``cls.__new__`` + ``object.__setattr__``
attrs      {attribute: value} in order       the same (slotted and frozen alike)
pydantic   {field: value} in field order,    ``cls.__new__`` + the four slots
           then, only when not the default,  pydantic's own ``__setstate__`` sets
           ``_fields_set`` (sorted names),   (no validation, no
           ``_extra`` and ``_private``       ``model_post_init``)
========== ================================= =====================================

A pydantic field name never starts with ``_`` (such names are private
attributes), so the three ``_`` keys cannot clash with a field. attrs and
pydantic are never imported here: a value of one of their classes means the
library is already in ``sys.modules``, and a class found there is checked
against the module objects it holds.
"""

from __future__ import annotations

import dataclasses
import enum
import sys
from typing import Any

from flowdag._values import Unsupported, invalid

__all__ = ["build", "kind_of", "parts"]

# The keys a pydantic model's data may add after its fields, in this order.
_MODEL_STATE = ("_fields_set", "_extra", "_private")


def kind_of(cls: type) -> str | None:
    """ "enum", "namedtuple", "dataclass", "attrs" or "pydantic"; None for any other class."""
    if issubclass(cls, enum.Enum):
        return "enum"
    if issubclass(cls, tuple) and isinstance(getattr(cls, "_fields", None), tuple):
        return "namedtuple"
    if dataclasses.is_dataclass(cls):
        return "dataclass"
    attr = sys.modules.get("attr")  # attrs classes exist only once attrs is imported
    if attr is not None and attr.has(cls):
        return "attrs"
    main = sys.modules.get("pydantic.main")  # where BaseModel lives (pydantic v2)
    if main is not None and issubclass(cls, main.BaseModel):
        return "pydantic"
    return None


def parts(kind: str, value: Any) -> Any:
    """The data stored for ``value``, a value of a class of ``kind``; `Unsupported` if none."""
    if kind == "enum":
        return value.name
    if kind == "namedtuple":
        return list(value)
    if kind == "pydantic":
        return _model_parts(value)
    names = _field_names(kind, type(value))
    try:
        return {name: getattr(value, name) for name in names}
    except AttributeError as exc:
        raise Unsupported(
            value, f"a{'n' if kind == 'attrs' else ''} {kind} with a field not set ({exc})"
        ) from exc


def build(kind: str, cls: Any, name: str, data: Any) -> Any:
    """The value of class ``cls`` (``name``) that `parts` turned into ``data``.

    `CorruptStateError` for data `parts` could not have written.
    """
    if kind == "enum":
        member = cls.__members__.get(data) if type(data) is str else None
        if member is None:
            raise invalid(f"{name} member", data)
        return member
    if kind == "namedtuple":
        if type(data) is not list or len(data) != len(cls._fields):
            raise invalid(name, data)
        return tuple.__new__(cls, data)
    if kind == "pydantic":
        return _model_from(cls, name, data)
    if type(data) is not dict or list(data) != _field_names(kind, cls):
        raise invalid(name, data)
    obj = cls.__new__(cls)
    for key, item in data.items():
        object.__setattr__(obj, key, item)  # frozen and slotted classes too; no __init__ runs
    return obj


def _field_names(kind: str, cls: Any) -> list[str]:
    if kind == "dataclass":
        return [f.name for f in dataclasses.fields(cls)]
    return [a.name for a in cls.__attrs_attrs__]


# -- pydantic (v2) ---------------------------------------------------------------


def _default_extra(cls: Any) -> dict[str, Any] | None:
    """What a model validated by ``cls`` holds as extra: {} if it allows extra, else None."""
    return {} if cls.model_config.get("extra") == "allow" else None


def _model_parts(value: Any) -> dict[str, Any]:
    cls = type(value)
    state = vars(value)  # the fields' values; a cached_property's value is not kept
    try:
        data = {name: state[name] for name in cls.model_fields}
    except KeyError as exc:
        raise Unsupported(value, f"a pydantic model with field {exc} not set") from exc
    fields_set = value.__pydantic_fields_set__
    if fields_set != set(data):
        data["_fields_set"] = sorted(fields_set)
    extra = value.__pydantic_extra__
    default = _default_extra(cls)
    if extra != default:  # None != {} too: a model may allow extra or not
        data["_extra"] = None if extra is None else dict(extra)
    private = value.__pydantic_private__
    if private is not None:
        data["_private"] = dict(private)
    return data


def _model_from(cls: Any, name: str, data: Any) -> Any:
    if type(data) is not dict:
        raise invalid(name, data)
    names = list(cls.model_fields)
    keys = list(data)
    if keys[: len(names)] != names or keys[len(names) :] != [k for k in _MODEL_STATE if k in data]:
        raise invalid(name, data)
    fields = {key: data[key] for key in names}
    extra = data.get("_extra", _default_extra(cls))
    private = data.get("_private")
    fields_set = data.get("_fields_set", names)
    if (
        not _str_keyed(extra)
        or not _str_keyed(private)
        or (private is not None and not set(private) <= set(cls.__private_attributes__))
        or type(fields_set) is not list
        or not all(type(key) is str for key in fields_set)
        or (
            "_fields_set" in data
            and (fields_set != sorted(set(fields_set)) or set(fields_set) == set(names))
        )
        or not set(fields_set) <= set(names) | set(extra or ())
    ):
        raise invalid(name, data)
    obj = cls.__new__(cls)
    # What pydantic's own __setstate__ sets: no validator or model_post_init runs.
    object.__setattr__(obj, "__dict__", fields)
    object.__setattr__(obj, "__pydantic_fields_set__", set(fields_set))
    if cls.__pydantic_root_model__:
        # A RootModel has neither extra nor private slots (its class says None).
        if extra is not None or private is not None:
            raise invalid(name, data)
        return obj
    object.__setattr__(obj, "__pydantic_extra__", None if extra is None else dict(extra))
    object.__setattr__(obj, "__pydantic_private__", None if private is None else dict(private))
    return obj


def _str_keyed(value: Any) -> bool:
    """None or a dict whose keys are all str."""
    return value is None or (type(value) is dict and all(type(k) is str for k in value))
