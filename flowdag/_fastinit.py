"""A faster ``__init__`` for frozen slots dataclasses made once per node by the builder.

A frozen dataclass's generated ``__init__`` sets each field through
``object.__setattr__`` (it must step around the frozen ``__setattr__``): at
twenty fields that is most of the cost of a `flowdag.NodeSpec`, which a
workflow of a million nodes makes a million times. `slot_init` writes the same
``__init__`` (same parameters, order and defaults) but sets the fields on an
unfrozen *twin*: a class with the same slots, in the same order, on the same
base, so that an instance may change between the two (``__class__``
assignment allows it for classes of one layout). The instance becomes the twin,
its fields are set by plain attribute stores (which the interpreter does
quickly for slots), and it becomes the frozen class again: about a third of the
cost of the dataclass's own ``__init__``. Instances stay frozen: only
``__init__`` changes, and it is written from the class's fields, so a field
added later needs no change here.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Callable
from typing import Any, TypeVar

__all__ = ["slot_init", "slot_new"]

T = TypeVar("T")

_FACTORY = object()  # a field with a default_factory left out: call the factory


def slot_init(cls: type[T]) -> type[T]:
    """Give the frozen slots dataclass ``cls`` an ``__init__`` that sets its slots directly.

    Only for plain classes: no ``__post_init__``, no ``InitVar``, every field in
    ``__init__``, no base class but `object`. An instance of a subclass is set up
    by the dataclass's own ``__init__``, as before.
    """
    fields = _fields(cls)
    names: dict[str, Any] = {
        "_FACTORY": _FACTORY,
        "_become": object.__setattr__,
        "_own": cls.__init__,  # the dataclass's: for a subclass, whose layout may differ
    }
    params: list[str] = []
    body: list[str] = []
    for field in fields:
        name = field.name
        if field.default is not dataclasses.MISSING:
            names[f"_default_{name}"] = field.default
            params.append(f"{name}=_default_{name}")
        elif field.default_factory is not dataclasses.MISSING:
            names[f"_factory_{name}"] = field.default_factory
            params.append(f"{name}=_FACTORY")
            body.append(f"if {name} is _FACTORY: {name} = _factory_{name}()")
        else:
            params.append(name)
    every = ", ".join(field.name for field in fields)
    body.append(f"if type(self) is not _cls: return _own(self, {every})")
    body.append("_become(self, '__class__', _twin)")
    init = _written(cls, "__init__", ["self", *params], body, names)
    init.__qualname__ = f"{cls.__qualname__}.__init__"
    init.__doc__ = cls.__init__.__doc__
    cls.__init__ = init  # type: ignore[method-assign]
    return cls


def slot_new(cls: type[T]) -> Callable[..., T]:
    """A function making an instance of ``cls`` (as `slot_init`) from every field, by position.

    Quicker than calling ``cls``: no defaults to fill in, no ``__init__`` to look up.
    """
    _fields(cls)
    made: Callable[..., T] = _written(
        cls,
        f"new_{cls.__name__}",
        [*(field.name for field in dataclasses.fields(cls)), "/"],  # type: ignore[arg-type]
        ["self = _new(_twin)"],
        {"_new": object.__new__},
        returns=True,
    )
    return made


def _fields(cls: type[Any]) -> tuple[dataclasses.Field[Any], ...]:
    if not dataclasses.is_dataclass(cls) or "__slots__" not in vars(cls):
        raise TypeError(f"{cls.__name__} is not a slots dataclass")
    if hasattr(cls, "__post_init__"):
        raise TypeError(f"{cls.__name__} has a __post_init__: slot_init would skip it")
    if cls.__bases__ != (object,):
        raise TypeError(f"{cls.__name__} has a base class: slot_init cannot copy its layout")
    fields = dataclasses.fields(cls)
    for field in fields:
        if not field.init:
            raise TypeError(f"{cls.__name__}.{field.name} is not an __init__ field")
    return fields


def _written(
    cls: type[Any],
    function: str,
    params: list[str],
    head: list[str],
    names: dict[str, Any],
    returns: bool = False,
) -> Any:
    """A function that sets every field of ``cls`` on its twin, then makes it a ``cls``."""
    # Same slots in the same order on the same base: the layout __class__ assignment needs.
    twin = type(f"_{cls.__name__}Init", (), {"__slots__": vars(cls)["__slots__"]})
    names = {**names, "_cls": cls, "_twin": twin}
    body = [*head, *(f"self.{f.name} = {f.name}" for f in dataclasses.fields(cls))]
    body.append("self.__class__ = _cls")
    if returns:
        body.append("return self")
    source = f"def {function}({', '.join(params)}):\n    " + "\n    ".join(body)
    exec(source, names)  # code written above from the class's own field names
    written = names[function]
    written.__module__ = cls.__module__
    return written
