"""The allow-list of user types: dataclasses, NamedTuples, Enums, attrs classes and
pydantic models stored without pickle.

A user type is stored as its name (``"module:qualname"``) and its data (see
`flowdag._userkinds` for each kind's data). Both codecs write the same pair
(msgpack ext 26, JSON tag ``"$user"``).

**Trust model.** Decoding turns a name the blob chose into a class, so it must
not be able to reach any class, nor run an import: `register_types` is the only
way a type becomes reachable, and it is done by the program itself, never by a
blob. A name is looked up only

- in the types registered as classes (`register_types(Point)`), or
- in a module registered by name (`register_types("myproject.models")`),
  which `register_types` imports at once, so decoding only reads attributes of
  a module already in ``sys.modules`` and checks that what it finds is a class
  of a supported kind defined in that very module.

Building the value runs no code of the type besides ``__new__`` of a
dataclass, attrs class or pydantic model: fields are set with
``object.__setattr__`` (no ``__init__``, ``__post_init__``, validator or
``model_post_init``), NamedTuples are built with ``tuple.__new__``, Enum
members are looked up by name. The registry is per process and meant to be
filled at import time (a workflow file, before any run); reading it takes no
lock.

**Read without the classes.** A program that shows a store without importing
the user's modules (``flowdag show`` and ``status``) decodes inside
`neutral_user_types`: every user-type value then comes back as a `UserValue`,
its name and data, and no class is looked up at all.
"""

from __future__ import annotations

import importlib
import sys
import threading
from collections.abc import Iterator
from contextlib import contextmanager
from contextvars import ContextVar
from typing import Any

from flowdag._userkinds import build, kind_of, parts
from flowdag._values import Unsupported, invalid
from flowdag.errors import CorruptStateError, InvalidArgumentError, InvalidArgumentTypeError

__all__ = [
    "UserValue",
    "neutral_user_types",
    "register_types",
    "user_data",
    "user_from",
    "user_parts",
]

_lock = threading.Lock()  # writers only: registration is rare, lookups are not
_classes: dict[str, type] = {}  # "module:qualname" -> a class registered as itself
_modules: set[str] = set()  # modules whose every supported type is allowed
_neutral: ContextVar[bool] = ContextVar("flowdag_neutral_user_types", default=False)
_KINDS = "dataclass, NamedTuple, Enum, attrs or pydantic"
_WHAT = {
    "enum": "an enum",
    "namedtuple": "a namedtuple",
    "dataclass": "a dataclass",
    "attrs": "an attrs class",
    "pydantic": "a pydantic model",
}


class UserValue:
    """A user-type value read without its class: its type's name and its stored data.

    What `neutral_user_types` decodes a user type to. ``type`` is
    ``"module:qualname"``; ``data`` is what was stored (fields by name, a
    NamedTuple's items, an Enum member's name), with the values inside it
    decoded. Encoding one writes that same pair back.
    """

    __slots__ = ("data", "type")

    def __init__(self, type: str, data: Any) -> None:
        self.type = type
        self.data = data

    def __eq__(self, other: object) -> bool:
        if not isinstance(other, UserValue):
            return NotImplemented
        return self.type == other.type and self.data == other.data

    def __hash__(self) -> int:
        # Hashable, since an Enum member may be a set item or a dict key; fields
        # (a list or dict) are not hashable, so values with fields hash by type only.
        return hash((self.type, self.data)) if type(self.data) is str else hash(self.type)

    def __repr__(self) -> str:
        name = self.type.partition(":")[2] or self.type
        data = self.data
        if type(data) is str:
            return f"{name}.{data}"  # an Enum member
        if type(data) is dict:
            return f"{name}({', '.join(f'{k}={v!r}' for k, v in data.items())})"
        return f"{name}({', '.join(map(repr, data))})"


@contextmanager
def neutral_user_types() -> Iterator[None]:
    """Decode every user-type value in this context as a `UserValue`; look no class up."""
    token = _neutral.set(True)
    try:
        yield
    finally:
        _neutral.reset(token)


def _name(cls: type) -> str:
    return f"{cls.__module__}:{cls.__qualname__}"


def register_types(*allowed: str | type) -> None:
    """Allow values of these dataclasses, NamedTuples, Enums, attrs classes and
    pydantic models in every store.

    Each argument is a class of one of those kinds or the name of a module,
    which is imported now: every such class it defines is allowed. Without
    this, a node returning one fails with `SerializationError`. Decoding never
    imports anything: see the README's Security section.

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
        elif isinstance(item, type) and kind_of(item) is not None:
            with _lock:
                _classes[_name(item)] = item
        else:
            raise InvalidArgumentTypeError(
                f"register_types takes module names and {_KINDS} classes, not {item!r}"
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
        and kind_of(value) is not None
    ):
        return value
    return None


def user_parts(value: Any) -> tuple[str, Any] | None:
    """(name, data) of a value of an allowed user type; None if not a user type.

    Raises `Unsupported` saying how to allow the type when it is not allowed.
    """
    cls = type(value)
    if cls is UserValue:  # read without its class: written back as it was read
        return value.type, value.data
    kind = kind_of(cls)
    if kind is None:
        return None
    if not _allowed(cls):
        raise Unsupported(
            value,
            f"{_WHAT[kind]} of a type not allowed; allow it with "
            f"flowdag.register_types({cls.__module__!r}) (its module) or "
            f"flowdag.register_types({cls.__qualname__}) before the run",
        )
    return _name(cls), parts(kind, value)


def user_data(value: Any) -> Any:
    """The data a user-type value is stored as, allowed or not; None for other values.

    For the item limits, which look inside every container before encoding.
    """
    if type(value) is UserValue:
        return value.data
    kind = kind_of(type(value))
    if kind is None:
        return None
    try:
        return parts(kind, value)
    except Unsupported:
        return None  # refused when encoded, saying why


def user_from(payload: Any) -> Any:
    """The value of ``[name, data]`` as `user_parts` made it; `CorruptStateError` otherwise."""
    if type(payload) is not list or len(payload) != 2 or type(payload[0]) is not str:
        raise invalid("user type", payload)
    name, data = payload
    if _neutral.get():
        if not (
            type(data) in (str, list) or (type(data) is dict and all(type(k) is str for k in data))
        ):
            raise invalid(name, data)
        return UserValue(name, data)
    cls: Any = _lookup(name)  # Any: the user's class
    if cls is None:
        module = name.partition(":")[0]
        raise CorruptStateError(
            f"blob holds a value of type {name!r}, which is not allowed in this process "
            f"(nothing was imported); call flowdag.register_types({module!r}) before "
            "loading it, if you trust that module"
        )
    kind = kind_of(cls)
    assert kind is not None  # _lookup found a class of a supported kind
    return build(kind, cls, name, data)
