"""The allow-list of user types: dataclasses, NamedTuples and Enums stored without pickle.

A user type is stored as its name (``"module:qualname"``) and its data: a
dataclass's fields (by name), a NamedTuple's items, an Enum member's name.
Both codecs write the same pair (msgpack ext 26, JSON tag ``"$user"``).

**Trust model.** Decoding turns a name the blob chose into a class, so it must
not be able to reach any class, nor run an import: `register_types` is the only
way a type becomes reachable, and it is done by the program itself, never by a
blob. A name is looked up only

- in the types registered as classes (`register_types(Point)`), or
- in a module registered by name (`register_types("myproject.models")`),
  which `register_types` imports at once, so decoding only reads attributes of
  a module already in ``sys.modules`` and checks that what it finds is a
  dataclass, NamedTuple or Enum defined in that very module.

Building the value runs no code of the type besides ``__new__`` of a
dataclass: fields are set with ``object.__setattr__`` (no ``__init__`` or
``__post_init__``, frozen and slotted classes alike), NamedTuples are built
with ``tuple.__new__``, Enum members are looked up by name. The registry is
per process and meant to be filled at import time (a workflow file, before
any run); reading it takes no lock.
"""

from __future__ import annotations

import dataclasses
import enum
import importlib
import sys
import threading
from typing import Any

from flowdag._values import Unsupported, invalid
from flowdag.errors import CorruptStateError, InvalidArgumentError, InvalidArgumentTypeError

__all__ = ["register_types", "user_from", "user_parts"]

_lock = threading.Lock()  # writers only: registration is rare, lookups are not
_classes: dict[str, type] = {}  # "module:qualname" -> a class registered as itself
_modules: set[str] = set()  # modules whose every supported type is allowed


def _kind(cls: type) -> str | None:
    """ "enum", "namedtuple" or "dataclass" for a type flowdag can store by name."""
    if issubclass(cls, enum.Enum):
        return "enum"
    if issubclass(cls, tuple) and isinstance(getattr(cls, "_fields", None), tuple):
        return "namedtuple"
    if dataclasses.is_dataclass(cls):
        return "dataclass"
    return None


def _name(cls: type) -> str:
    return f"{cls.__module__}:{cls.__qualname__}"


def register_types(*allowed: str | type) -> None:
    """Allow dataclass, NamedTuple and Enum values of these types in every store.

    Each argument is a class (a dataclass, a NamedTuple or an Enum) or the name
    of a module, which is imported now: every such class it defines is
    allowed. Without this, a node returning one fails with `SerializationError`.
    Decoding never imports anything: see the README's Security section.

    Raises:
        InvalidArgumentTypeError: an argument is neither a str nor a class of
            one of those kinds.
        InvalidArgumentError: a module name that cannot be imported.
    """
    for item in allowed:
        if type(item) is str:
            try:
                importlib.import_module(item)
            except ImportError as exc:
                raise InvalidArgumentError(
                    f"register_types: cannot import module {item!r} ({exc}); pass the "
                    "name of an importable module, or the classes themselves"
                ) from exc
            with _lock:
                _modules.add(item)
        elif isinstance(item, type) and _kind(item) is not None:
            with _lock:
                _classes[_name(item)] = item
        else:
            raise InvalidArgumentTypeError(
                "register_types takes module names and dataclass, NamedTuple or Enum "
                f"classes, not {item!r}"
            )


def _allowed(cls: type) -> bool:
    name = _name(cls)
    return _classes.get(name) is cls or (cls.__module__ in _modules and _lookup(name) is cls)


def _lookup(name: str) -> type | None:
    """The allowed class ``name`` spells, found without importing anything; else None."""
    found = _classes.get(name)
    if found is not None:
        return found
    module_name, _, qualname = name.partition(":")
    module = sys.modules.get(module_name) if module_name in _modules else None
    if module is None or not qualname:
        return None
    value: Any = module
    for part in qualname.split("."):
        value = vars(value).get(part) if hasattr(value, "__dict__") else None
        if value is None:
            return None
    if (
        isinstance(value, type)
        and value.__module__ == module_name
        and value.__qualname__ == qualname
        and _kind(value) is not None
    ):
        return value
    return None


def user_parts(value: Any) -> tuple[str, Any] | None:
    """(name, data) of a value of an allowed user type; None if not a user type.

    Raises `Unsupported` saying how to allow the type when it is not allowed.
    """
    cls = type(value)
    kind = _kind(cls)
    if kind is None:
        return None
    if not _allowed(cls):
        raise Unsupported(
            value,
            f"{'an' if kind == 'enum' else 'a'} {kind} of a type not allowed; allow it with "
            f"flowdag.register_types({cls.__module__!r}) (its module) or "
            f"flowdag.register_types({cls.__qualname__}) before the run",
        )
    if kind == "enum":
        return _name(cls), value.name
    if kind == "namedtuple":
        return _name(cls), list(value)
    try:
        fields = {f.name: getattr(value, f.name) for f in dataclasses.fields(value)}
    except AttributeError as exc:
        raise Unsupported(value, f"a dataclass with a field not set ({exc})") from exc
    return _name(cls), fields


def user_from(payload: Any) -> Any:
    """The value of ``[name, data]`` as `user_parts` made it; `CorruptStateError` otherwise."""
    if type(payload) is not list or len(payload) != 2 or type(payload[0]) is not str:
        raise invalid("user type", payload)
    name, data = payload
    cls: Any = _lookup(name)  # Any: the user's class
    if cls is None:
        module = name.partition(":")[0]
        raise CorruptStateError(
            f"blob holds a value of type {name!r}, which is not allowed in this process "
            f"(nothing was imported); call flowdag.register_types({module!r}) before "
            "loading it, if you trust that module"
        )
    kind = _kind(cls)
    if kind == "enum":
        member = cls.__members__.get(data) if type(data) is str else None
        if member is None:
            raise invalid(f"{name} member", data)
        return member
    if kind == "namedtuple":
        if type(data) is not list or len(data) != len(cls._fields):
            raise invalid(name, data)
        return tuple.__new__(cls, data)
    names = [f.name for f in dataclasses.fields(cls)]
    if type(data) is not dict or list(data) != names:
        raise invalid(name, data)
    obj = cls.__new__(cls)
    for key, item in data.items():
        object.__setattr__(obj, key, item)  # frozen dataclasses too; no __init__ runs
    return obj
