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
from typing import Any, TypeVar

__all__ = ["slot_init"]

T = TypeVar("T")

_FACTORY = object()  # a field with a default_factory left out: call the factory


def slot_init(cls: type[T]) -> type[T]:
    """Give the frozen slots dataclass ``cls`` an ``__init__`` that sets its slots directly.

    Only for plain classes: no ``__post_init__``, no ``InitVar``, every field in
    ``__init__``, no base class but `object`.
    """
    if not dataclasses.is_dataclass(cls) or "__slots__" not in vars(cls):
        raise TypeError(f"{cls.__name__} is not a slots dataclass")
    if hasattr(cls, "__post_init__"):
        raise TypeError(f"{cls.__name__} has a __post_init__: slot_init would skip it")
    if cls.__bases__ != (object,):
        raise TypeError(f"{cls.__name__} has a base class: slot_init cannot copy its layout")
    # Same slots in the same order on the same base: the layout __class__ assignment needs.
    twin = type(f"_{cls.__name__}Init", (), {"__slots__": vars(cls)["__slots__"]})
    names: dict[str, Any] = {
        "_FACTORY": _FACTORY,
        "_cls": cls,
        "_twin": twin,
        "_become": object.__setattr__,
    }
    params, body = [], ["_become(self, '__class__', _twin)"]
    for field in dataclasses.fields(cls):
        if not field.init:
            raise TypeError(f"{cls.__name__}.{field.name} is not an __init__ field")
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
        body.append(f"self.{name} = {name}")
    body.append("self.__class__ = _cls")
    source = f"def __init__(self, {', '.join(params)}):\n    " + "\n    ".join(body)
    exec(source, names)  # code written above from the class's own field names
    init = names["__init__"]
    init.__qualname__ = f"{cls.__qualname__}.__init__"
    init.__module__ = cls.__module__
    init.__doc__ = cls.__init__.__doc__
    cls.__init__ = init  # type: ignore[method-assign]
    return cls
