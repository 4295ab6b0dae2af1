"""attrs and pydantic values of `tests.usertypes_models`, and their exact comparison."""

from __future__ import annotations

from collections.abc import Callable
from datetime import UTC, datetime
from decimal import Decimal
from pathlib import PurePosixPath
from typing import Any

import attrs
import pydantic

from tests import usertypes_models as models

T0 = datetime(2026, 1, 2, 3, 4, 5, tzinfo=UTC)


def _private() -> models.WithPrivate:
    value = models.WithPrivate(a=1)
    value._seen = 5
    return value


def _constructed() -> models.Item:
    # model_construct: no validation, fields set exactly as given (price stays an int)
    return models.Item.model_construct(name="raw", price=3)


MODEL_VALUES: dict[str, Any] = {
    "attrs_define": models.Box("b", [1, (2, 3)], PurePosixPath("out/x.csv")),
    "attrs_frozen": models.Sealed(7, models.Box("inner", [])),
    "attrs_legacy_private": models.Legacy(3, 4),
    "pydantic": models.Item(name="pen", price=Decimal("1.10"), tags={"a", "b"}),
    "pydantic_defaults_unset": models.Item(name="x", price=Decimal(1)),
    "pydantic_nested": models.Order(
        items=[models.Item(name="i", price=Decimal("2.5"))],
        at=T0,
        point=models.Point(1, 2.5),
        note="n",
    ),
    "pydantic_frozen": models.FrozenModel(key="k", pair=(1, 2)),
    "pydantic_extra": models.Loose(a=1, b=[2, {3}]),
    "pydantic_extra_none": models.Loose(a=1),
    "pydantic_private": _private(),
    "pydantic_root": models.Ids([1, 2, 3]),
    "pydantic_constructed": _constructed(),
    "models_inside_values": {
        "box": [models.Box("x", [models.Item(name="y", price=Decimal(0))])],
        (models.Level.LOW,): models.Sealed(0, models.Color.RED),
    },
}


def same_model(a: Any, b: Any, same: Callable[[Any, Any], bool]) -> bool | None:
    """Whether ``b`` is exactly ``a`` when ``a`` is an attrs or pydantic value, else None.

    attrs: the same class and every attribute exactly. pydantic: the same class,
    fields, fields set, extra and private attributes (``==`` ignores the fields set).
    """
    if attrs.has(type(a)):
        return type(a) is type(b) and all(
            same(getattr(a, f.name), getattr(b, f.name)) for f in attrs.fields(type(a))
        )
    if isinstance(a, pydantic.BaseModel):
        return (
            type(a) is type(b)
            and same(dict(vars(a)), dict(vars(b)))
            and a.__pydantic_fields_set__ == b.__pydantic_fields_set__
            and same(a.__pydantic_extra__, b.__pydantic_extra__)
            and same(a.__pydantic_private__, b.__pydantic_private__)
        )
    return None
