"""A faster ``__init__`` for frozen slots dataclasses made once per node by the builder.

A frozen dataclass's generated ``__init__`` sets each field through
``object.__setattr__`` (it must step around the frozen ``__setattr__``): at
twenty fields that is most of the cost of a `flowdag.NodeSpec`, which a
workflow of a million nodes makes a million times. `slot_init` writes the same
``__init__`` (same parameters, order and defaults) but sets each field through
its slot's descriptor, as `flowdag.state.new_attempt` does by hand: about half
the time. Instances stay frozen: only ``__init__`` changes, and it is written
from the class's fields, so a field added later needs no change here.
"""

from __future__ import annotations

import dataclasses
from typing import Any, TypeVar

__all__ = ["slot_init"]

T = TypeVar("T")

_FACTORY = object()  # a field with a default_factory left out: call the factory


def slot_init(cls: type[T]) -> type[T]:
    """Give the frozen slots dataclass ``cls`` an ``__init__`` that sets its slots directly.

    Only for plain classes: no ``__post_init__``, no ``InitVar``, every field in ``__init__``.
    """
    if not dataclasses.is_dataclass(cls) or "__slots__" not in vars(cls):
        raise TypeError(f"{cls.__name__} is not a slots dataclass")
    if hasattr(cls, "__post_init__"):
        raise TypeError(f"{cls.__name__} has a __post_init__: slot_init would skip it")
    names: dict[str, Any] = {"_FACTORY": _FACTORY}
    params, body = [], []
    for field in dataclasses.fields(cls):
        if not field.init:
            raise TypeError(f"{cls.__name__}.{field.name} is not an __init__ field")
        name = field.name
        names[f"_set_{name}"] = vars(cls)[name].__set__
        if field.default is not dataclasses.MISSING:
            names[f"_default_{name}"] = field.default
            params.append(f"{name}=_default_{name}")
        elif field.default_factory is not dataclasses.MISSING:
            names[f"_factory_{name}"] = field.default_factory
            params.append(f"{name}=_FACTORY")
            body.append(f"if {name} is _FACTORY: {name} = _factory_{name}()")
        else:
            params.append(name)
        body.append(f"_set_{name}(self, {name})")
    source = f"def __init__(self, {', '.join(params)}):\n    " + "\n    ".join(body or ["pass"])
    exec(source, names)  # code written above from the class's own field names
    init = names["__init__"]
    init.__qualname__ = f"{cls.__qualname__}.__init__"
    init.__module__ = cls.__module__
    init.__doc__ = cls.__init__.__doc__
    cls.__init__ = init  # type: ignore[method-assign]
    return cls
